//! The real VPSie client, managed-Kubernetes dialect (reference §2.3), govpsie paths.

mod auth;
mod catalogue;
pub mod config;
pub mod credentials;
pub mod envelope;
pub mod model;
pub mod resilience;
pub mod routes;
mod transport;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::json;

pub use config::VpsieConfig;
pub use credentials::{Auth, Credentials, Secret};

use self::auth::TokenCache;
use self::resilience::{CircuitBreaker, TokenBucket};
use self::transport::{Body, Call, segment};
use crate::cloud::discovery::ensure_group_by_listing;
use crate::cloud::{AddOutcome, BreakerState, CloudError, CloudGroup, CloudProvider, Offering, Worker, WorkerQuery};

/// HTTP client for the VPSie API. Cheap to share behind an `Arc`; all state is internal.
pub struct VpsieClient {
    cfg: VpsieConfig,
    http: reqwest::Client,
    tokens: TokenCache,
    breaker: CircuitBreaker,
    limiter: TokenBucket,
    /// Secret values to scrub from anything reported.
    secret_values: Vec<String>,
    catalogue_metrics: catalogue::CatalogueMetrics,
}

impl std::fmt::Debug for VpsieClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VpsieClient").field("base_url", &self.cfg.base_url).finish_non_exhaustive()
    }
}

impl VpsieClient {
    /// Builds a client. A `url` in the credentials overrides `cfg.base_url`'s host.
    /// Refuses plain HTTP to anything but loopback unless `cfg.allow_insecure_http`.
    pub fn new(cfg: VpsieConfig, credentials: Credentials) -> Result<Self, CloudError> {
        let cfg = match &credentials.url {
            Some(url) => cfg.with_url_override(url),
            None => cfg,
        };
        check_scheme(&cfg)?;
        // reqwest is built without a bundled crypto provider; make sure one is installed
        // (a no-op when main already did it).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .user_agent(concat!("vpsie-autoscaler/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| CloudError::permanent("could not build the HTTP client"))?;
        Ok(Self {
            breaker: CircuitBreaker::new(cfg.breaker.clone()),
            limiter: TokenBucket::new(cfg.rate_per_sec, cfg.burst),
            tokens: TokenCache::new(credentials.auth.clone()),
            secret_values: credentials.secret_values(),
            catalogue_metrics: Default::default(),
            http,
            cfg,
        })
    }

    fn k8s(&self, rest: &str) -> String {
        format!("{}{}", self.cfg.k8s_prefix, rest)
    }

    async fn get(&self, path: String) -> Result<serde_json::Value, CloudError> {
        self.call(Call { method: Method::GET, path, body: Body::None, idempotent: true }).await.map(|e| e.data)
    }

    async fn list_cluster_workers(&self, cluster: &str) -> Result<Vec<Worker>, CloudError> {
        let data = self.get(self.k8s(&format!("/cluster/byId/{}", segment(cluster)))).await?;
        Ok(model::workers(&data))
    }
}

fn check_scheme(cfg: &VpsieConfig) -> Result<(), CloudError> {
    let url = cfg.base_url.as_str();
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(CloudError::permanent("API URL must be http(s)"));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = matches!(host, "127.0.0.1" | "localhost" | "::1");
    if loopback || cfg.allow_insecure_http {
        Ok(())
    } else {
        Err(CloudError::permanent("refusing plain HTTP to a non-loopback API host (the token would travel in clear)"))
    }
}

#[async_trait]
impl CloudProvider for VpsieClient {
    async fn offerings(&self, datacenter: &str) -> Result<Vec<Offering>, CloudError> {
        self.catalogue(datacenter).await
    }

    async fn groups(&self, cluster: &str) -> Result<Vec<CloudGroup>, CloudError> {
        let data = self.get(self.k8s(&format!("/node/groups/byClusterId/{}", segment(cluster)))).await?;
        Ok(model::groups(&data))
    }

    async fn ensure_group(
        &self,
        cluster: &str,
        offering: &Offering,
        group_name: &str,
    ) -> Result<CloudGroup, CloudError> {
        ensure_group_by_listing(self, cluster, offering, group_name, || async {
            self.call(Call {
                method: Method::POST,
                path: self.k8s("/cluster/add/group"),
                body: Body::Json(json!({
                    "clusterIdentifier": cluster,
                    "groupName": group_name,
                    "KubeSizeID": offering.id,
                })),
                idempotent: false,
            })
            .await
            .map(|_| ())
        })
        .await
    }

    async fn find_workers(&self, cluster: &str, query: &WorkerQuery) -> Result<Vec<Worker>, CloudError> {
        let mut all = self.list_cluster_workers(cluster).await?;
        all.retain(|w| query.matches(w));
        Ok(all)
    }

    async fn add_worker(&self, cluster: &str, group: u64) -> Result<AddOutcome, CloudError> {
        let env = self
            .call(Call {
                method: Method::POST,
                path: self.k8s(&format!("/cluster/byId/{}/add/slave/group/{group}", segment(cluster))),
                body: Body::None,
                idempotent: false,
            })
            .await?;
        Ok(model::add_outcome(&env.data))
    }

    async fn delete_worker(&self, cluster: &str, identifier: &str) -> Result<(), CloudError> {
        self.call(Call {
            method: Method::DELETE,
            path: self.k8s(&format!("/cluster/byId/{}/delete/slave", segment(cluster))),
            body: Body::Json(json!({ "identifier": identifier })),
            idempotent: true,
        })
        .await
        .map(|_| ())
    }

    fn breaker_state(&self) -> Option<BreakerState> {
        Some(self.breaker.state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_except_to_loopback() {
        let cfg = |u: &str| VpsieConfig { base_url: u.into(), ..VpsieConfig::default() };
        assert!(check_scheme(&cfg("http://127.0.0.1:9")).is_ok());
        assert!(check_scheme(&cfg("http://localhost:9")).is_ok());
        assert!(check_scheme(&cfg("http://[::1]:9")).is_ok());
        assert!(check_scheme(&cfg("http://api.vpsie.com")).is_err());
        assert!(check_scheme(&cfg("ftp://x")).is_err());
        let mut c = cfg("http://sim.test:80");
        c.allow_insecure_http = true;
        assert!(check_scheme(&c).is_ok());
    }
}
