//! A [`CloudProvider`] decorator that records request counts, durations and the breaker state.
//!
//! Labels are bounded: `endpoint` is a route template (never a cluster, node or worker name),
//! `method` an HTTP verb, `code` either `ok` or a [`CloudError::kind`].

use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::vpsie::routes;
use super::{AddOutcome, BreakerState, CloudError, CloudGroup, CloudProvider, Offering, Worker, WorkerQuery};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    endpoint: String,
    method: String,
}

/// The metric handles; cloned cheaply (they are `Arc`s inside).
#[derive(Clone)]
struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    breaker: Gauge,
}

fn duration_histogram() -> Histogram {
    // 10 ms … ~40 s: covers fast lists through the 30 s request timeout plus retries.
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

/// Wraps any provider and meters each operation.
pub struct Metered<P> {
    inner: P,
    metrics: Metrics,
}

impl<P: CloudProvider> Metered<P> {
    /// Registers `vpsie_api_requests_total`, `vpsie_api_request_duration_seconds` and
    /// `vpsie_api_circuit_breaker_state` into `registry`.
    pub fn new(inner: P, registry: &mut Registry) -> Self {
        let metrics = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            breaker: Gauge::default(),
        };
        registry.register(
            "vpsie_api_requests",
            "VPSie API operations by route template, method and outcome (ok or error kind)",
            metrics.requests.clone(),
        );
        registry.register(
            "vpsie_api_request_duration_seconds",
            "Duration of VPSie API operations, retries included",
            metrics.duration.clone(),
        );
        registry.register(
            "vpsie_api_circuit_breaker_state",
            "VPSie client circuit breaker: 0 closed, 1 half-open, 2 open",
            metrics.breaker.clone(),
        );
        let m = Self { inner, metrics };
        m.update_breaker();
        m
    }

    pub fn inner(&self) -> &P {
        &self.inner
    }

    fn update_breaker(&self) {
        let state = self.inner.breaker_state().unwrap_or(BreakerState::Closed);
        self.metrics.breaker.set(state.as_gauge());
    }

    async fn observe<T, F>(&self, route: (&str, &str), fut: F) -> Result<T, CloudError>
    where
        F: std::future::Future<Output = Result<T, CloudError>> + Send,
    {
        let start = Instant::now();
        let result = fut.await;
        let (endpoint, method) = (route.0.to_string(), route.1.to_string());
        self.metrics
            .duration
            .get_or_create(&RouteLabels { endpoint: endpoint.clone(), method: method.clone() })
            .observe(start.elapsed().as_secs_f64());
        let code = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.metrics.requests.get_or_create(&RequestLabels { endpoint, method, code: code.to_string() }).inc();
        self.update_breaker();
        result
    }
}

#[async_trait]
impl<P: CloudProvider> CloudProvider for Metered<P> {
    async fn offerings(&self, datacenter: &str) -> Result<Vec<Offering>, CloudError> {
        self.observe(routes::OFFERINGS, self.inner.offerings(datacenter)).await
    }

    async fn groups(&self, cluster: &str) -> Result<Vec<CloudGroup>, CloudError> {
        self.observe(routes::GROUPS, self.inner.groups(cluster)).await
    }

    async fn ensure_group(
        &self,
        cluster: &str,
        offering: &Offering,
        group_name: &str,
    ) -> Result<CloudGroup, CloudError> {
        self.observe(routes::CREATE_GROUP, self.inner.ensure_group(cluster, offering, group_name)).await
    }

    async fn list_workers(&self, cluster: &str, group: u64) -> Result<Vec<Worker>, CloudError> {
        self.observe(routes::CLUSTER, self.inner.list_workers(cluster, group)).await
    }

    async fn find_workers(&self, cluster: &str, query: &WorkerQuery) -> Result<Vec<Worker>, CloudError> {
        self.observe(routes::CLUSTER, self.inner.find_workers(cluster, query)).await
    }

    async fn get_worker(&self, cluster: &str, identifier: &str) -> Result<Worker, CloudError> {
        self.observe(routes::CLUSTER, self.inner.get_worker(cluster, identifier)).await
    }

    async fn add_worker(&self, cluster: &str, group: u64) -> Result<AddOutcome, CloudError> {
        self.observe(routes::ADD_WORKER, self.inner.add_worker(cluster, group)).await
    }

    async fn delete_worker(&self, cluster: &str, identifier: &str) -> Result<(), CloudError> {
        self.observe(routes::DELETE_WORKER, self.inner.delete_worker(cluster, identifier)).await
    }

    fn breaker_state(&self) -> Option<BreakerState> {
        self.inner.breaker_state()
    }
}
