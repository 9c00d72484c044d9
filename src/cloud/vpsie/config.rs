//! Client settings: host, per-area path prefixes (reference §1.1: VPSie moved prefixes
//! before and may again), timeouts and the protection knobs.

use std::time::Duration;

use super::resilience::{Backoff, BreakerConfig};

#[derive(Clone, Debug)]
pub struct VpsieConfig {
    /// Scheme + host (+ port), no trailing path: `https://api.vpsie.com`.
    pub base_url: String,
    /// Managed-Kubernetes prefix.
    pub k8s_prefix: String,
    /// Client-credentials exchange path.
    pub auth_path: String,
    /// The plan list, asked when the managed-Kubernetes offers endpoint is unusable.
    pub resources_path: String,
    /// Whole-request timeout (connect to last body byte).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub backoff: Backoff,
    pub breaker: BreakerConfig,
    /// Client-side rate limit: average requests per second and burst.
    pub rate_per_sec: f64,
    pub burst: u32,
    /// Larger answers are refused (a misbehaving proxy must not eat our memory).
    pub max_body_bytes: usize,
    /// Plain HTTP is refused except to loopback (the simulator) unless this is set,
    /// because the token would travel in clear.
    pub allow_insecure_http: bool,
}

impl Default for VpsieConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.vpsie.com".into(),
            k8s_prefix: "/apps/v2/k8s".into(),
            auth_path: "/apps/v2/auth/from/api".into(),
            resources_path: "/apps/v2/resources".into(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            breaker: BreakerConfig::default(),
            // The Go autoscaler's 100 requests/minute, burst 100.
            rate_per_sec: 100.0 / 60.0,
            burst: 100,
            max_body_bytes: 10 * 1024 * 1024,
            allow_insecure_http: false,
        }
    }
}

impl VpsieConfig {
    /// Settings for a simulator at `base_url` (loopback): same dialect, short timeouts.
    pub fn for_simulator(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            rate_per_sec: 1000.0,
            burst: 1000,
            ..Self::default()
        }
    }

    /// Accepts a secret's `url`, which may carry the Go autoscaler's `/v2` or govpsie's
    /// `/apps/v2` suffix: only scheme and host matter because our paths are absolute.
    pub fn with_url_override(mut self, url: &str) -> Self {
        let url = url.trim().trim_end_matches('/');
        let host_end = url
            .find("://")
            .map(|i| i + 3)
            .and_then(|start| url[start..].find('/').map(|p| start + p))
            .unwrap_or(url.len());
        self.base_url = url[..host_end].to_string();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_override_keeps_only_scheme_and_host() {
        let c = VpsieConfig::default().with_url_override("https://api2.vpsie.com/apps/v2/");
        assert_eq!(c.base_url, "https://api2.vpsie.com");
        let c = VpsieConfig::default().with_url_override("http://127.0.0.1:8080");
        assert_eq!(c.base_url, "http://127.0.0.1:8080");
    }
}
