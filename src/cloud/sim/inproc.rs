//! [`SimCloud`]: the simulator as a [`CloudProvider`], without HTTP.
//!
//! It goes through the same fault pipeline and operations as the HTTP server, and turns
//! injected errors into [`CloudError`]s by rendering the exact bytes the server would send
//! and parsing them with the real client's envelope parser, so both report the same error
//! for the same fault. Transport faults map to what the client reports for them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::api::error_parts;
use super::catalog;
use super::config::AddShape;
use super::core::Sim;
use super::faults::{BodyStyle, Effects, Reject, RequestKey, RetryAfter};
use super::world::SimError;
use crate::cloud::discovery::ensure_group_by_listing;
use crate::cloud::vpsie::envelope::{parse_response, parse_retry_after};
use crate::cloud::{AddOutcome, CloudError, CloudGroup, CloudProvider, Offering, Worker, WorkerQuery};

/// The in-process provider. `timeout` plays the client's request timeout for `hang` faults.
#[derive(Clone)]
pub struct SimCloud {
    sim: Arc<Sim>,
    timeout: Duration,
}

impl SimCloud {
    pub fn new(sim: Arc<Sim>) -> Self {
        Self { sim, timeout: Duration::from_secs(5) }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn sim(&self) -> &Arc<Sim> {
        &self.sim
    }

    /// Runs one simulated request: faults, then `op`, then the request log.
    async fn request<T>(
        &self,
        key: RequestKey<'_>,
        op: impl FnOnce(&Effects) -> Result<T, SimError>,
    ) -> Result<T, CloudError> {
        let fx = self.sim.admit(&key);
        let path = format!("inproc:{}", key.endpoint);
        let delay = fx.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let outcome = match fx.reject() {
            Some(Reject::Drop) => {
                self.sim.log(&key, &path, 0, &fx);
                return Err(CloudError::transient("connection lost while reading the response"));
            }
            Some(Reject::Hang(d)) => {
                self.sim.log(&key, &path, 504, &fx);
                tokio::time::sleep(d.min(self.timeout)).await;
                return Err(CloudError::transient("request timed out"));
            }
            Some(Reject::Respond { status, style, message, retry_after }) => {
                Err(rendered(status, style, &message, retry_after))
            }
            None => op(&fx).map_err(|e| {
                let style = if e.in_200 { BodyStyle::Error200 } else { BodyStyle::Enveloped };
                rendered(e.status, style, &e.message, RetryAfter::None)
            }),
        };
        let status = match &outcome {
            Ok(_) => 200,
            Err((status, _)) => *status,
        };
        self.sim.log(&key, &path, status, &fx);
        outcome.map_err(|(_, e)| e)
    }
}

/// The error the HTTP client would report for this answer, with the HTTP status.
fn rendered(status: u16, style: BodyStyle, message: &str, retry_after: RetryAfter) -> (u16, CloudError) {
    let (http, header, body) = error_parts(status, style, message, retry_after);
    let ra = header.and_then(|h| parse_retry_after(&h, jiff::Timestamp::now()));
    let err = match parse_response(http, &body, ra) {
        Err(e) => e,
        Ok(_) => CloudError::permanent(message.to_string()),
    };
    (http, err)
}

fn key<'a>(endpoint: &'a str, method: &'a str, cluster: Option<&'a str>, group: Option<u64>) -> RequestKey<'a> {
    RequestKey { endpoint, method, cluster, group }
}

#[async_trait]
impl CloudProvider for SimCloud {
    async fn offerings(&self, datacenter: &str) -> Result<Vec<Offering>, CloudError> {
        self.request(key("offers", "POST", None, None), |_| {
            self.sim.offers(datacenter).map(|plans| plans.iter().map(|p| p.offering()).collect())
        })
        .await
    }

    async fn groups(&self, cluster: &str) -> Result<Vec<CloudGroup>, CloudError> {
        self.request(key("groups", "GET", Some(cluster), None), |_| {
            let (_, rows) = self.sim.groups(cluster)?;
            Ok(rows
                .into_iter()
                .map(|(g, n)| CloudGroup {
                    id: g.id,
                    identifier: Some(g.identifier),
                    name: g.name,
                    offering_id: Some(g.plan),
                    nodes_count: n,
                })
                .collect())
        })
        .await
    }

    async fn ensure_group(
        &self,
        cluster: &str,
        offering: &Offering,
        group_name: &str,
    ) -> Result<CloudGroup, CloudError> {
        ensure_group_by_listing(self, cluster, offering, group_name, || async {
            self.request(key("add_group", "POST", Some(cluster), None), |fx| {
                self.sim.add_group(cluster, group_name, offering.id, fx)
            })
            .await
        })
        .await
    }

    async fn find_workers(&self, cluster: &str, query: &WorkerQuery) -> Result<Vec<Worker>, CloudError> {
        self.request(key("cluster", "GET", Some(cluster), None), |fx| {
            let nodes = self.sim.nodes(cluster, fx)?;
            let g = self.sim.lock();
            Ok(nodes.iter().map(|n| n.to_worker(g.world.wall(n.rec.created))).filter(|w| query.matches(w)).collect())
        })
        .await
    }

    async fn add_worker(&self, cluster: &str, group: u64) -> Result<AddOutcome, CloudError> {
        self.request(key("add_worker", "POST", Some(cluster), Some(group)), |fx| {
            let reply = self.sim.add_worker(cluster, Some(group), fx)?;
            if let Some(e) = reply.answer_error {
                return Err(e);
            }
            Ok(match reply.shape {
                AddShape::Object => {
                    AddOutcome { identifier: Some(reply.rec.identifier), hostname: Some(reply.rec.hostname) }
                }
                AddShape::True | AddShape::ObjectWithoutIdentifier => AddOutcome::default(),
            })
        })
        .await
    }

    async fn delete_worker(&self, cluster: &str, identifier: &str) -> Result<(), CloudError> {
        self.request(key("delete_worker", "DELETE", Some(cluster), None), |fx| {
            self.sim.delete_worker(cluster, identifier, fx)
        })
        .await
    }
}

/// The offering of a catalogue plan, for callers seeding tests.
pub fn offering(plan_id: u64) -> Option<Offering> {
    catalog::plan_by_id(plan_id).map(|p| p.offering())
}
