//! Domain types of the cloud layer, in the autoscaler's words rather than VPSie's.

use serde::{Deserialize, Serialize};

/// Hours in a billing month: VPSie bills hourly on a 720-hour month.
pub const HOURS_PER_MONTH: f64 = 720.0;

/// A machine size that a node group can be built from, with its price.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offering {
    /// The numeric size id VPSie expects when creating a node group (`KubeSizeID`).
    pub id: u64,
    /// The plan's UUID, when the catalogue gives one.
    pub identifier: Option<String>,
    /// Human name / nickname of the plan (used as the node's instance type).
    pub name: String,
    pub cpu: u32,
    pub ram_mib: u64,
    pub disk_gb: u64,
    /// Monthly price in USD, as the catalogue quotes it.
    pub monthly_price: f64,
    /// Hourly price in USD: the catalogue's hourly field if it has one, else monthly / 720.
    pub hourly_price: f64,
}

impl Offering {
    /// The hourly price to use when the catalogue does not quote one.
    pub fn hourly_from_monthly(monthly: f64) -> f64 {
        monthly / HOURS_PER_MONTH
    }
}

/// One VPSie node group of a cluster. Each VPSie group has exactly one plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloudGroup {
    /// Numeric id: the add-worker path takes it.
    pub id: u64,
    pub identifier: Option<String>,
    pub name: String,
    /// The size id (`boxsize_id`) the group was created with, if reported.
    pub offering_id: Option<u64>,
    /// VPSie's own count of workers in the group.
    pub nodes_count: u32,
}

/// What the provider can tell about a worker's life. Coarse on purpose: the API reports
/// little, and Kubernetes (not the cloud) is the authority on readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Accepted or being built; not yet a running VM.
    Provisioning,
    /// The VM runs but has not (yet) joined the cluster.
    Running,
    /// Joined the cluster (VPSie says ready/joined).
    Ready,
    /// Delete requested, not gone yet.
    Deleting,
    /// Creation failed; VPSie will drop it.
    Failed,
    /// The API gave no status we recognise (or none at all).
    Unknown,
}

impl WorkerState {
    /// Maps VPSie's free-form status strings. Unknown values stay `Unknown` rather than
    /// failing, because the real status vocabulary is undocumented.
    pub fn from_api(status: &str) -> Self {
        match status.trim().to_ascii_lowercase().as_str() {
            "accepted" | "pending" | "provisioning" | "creating" | "building" | "queued" => Self::Provisioning,
            "running" | "active" | "started" | "running_not_joined" => Self::Running,
            "joined" | "ready" | "joined_ready" => Self::Ready,
            "deleting" | "terminating" | "removing" | "destroying" => Self::Deleting,
            "failed" | "error" | "errored" => Self::Failed,
            _ => Self::Unknown,
        }
    }

    /// A bounded string for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Running => "running",
            Self::Ready => "ready",
            Self::Deleting => "deleting",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }
}

/// One worker VM of a managed cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    /// VPSie's UUID for the worker: what delete takes.
    pub identifier: String,
    /// VPSie's generated hostname; the Kubernetes node name is this, possibly in another case.
    pub hostname: String,
    pub ip: Option<String>,
    pub private_ip: Option<String>,
    /// The node group, if the API says which.
    pub group_id: Option<u64>,
    pub state: WorkerState,
    pub created: Option<jiff::Timestamp>,
}

impl Worker {
    /// Hostnames are compared case-insensitively: VPSie's casing may differ from the node name.
    pub fn hostname_matches(&self, hostname: &str) -> bool {
        self.hostname.eq_ignore_ascii_case(hostname)
    }
}

/// What an add call told us. Usually nothing: VPSie answers `data: true`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddOutcome {
    pub identifier: Option<String>,
    pub hostname: Option<String>,
}

/// A filter over a cluster's workers; empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerQuery {
    pub identifier: Option<String>,
    /// Compared case-insensitively.
    pub hostname: Option<String>,
    /// Matches public or private address.
    pub ip: Option<String>,
    pub group_id: Option<u64>,
}

impl WorkerQuery {
    pub fn hostname(hostname: impl Into<String>) -> Self {
        Self { hostname: Some(hostname.into()), ..Self::default() }
    }

    pub fn identifier(identifier: impl Into<String>) -> Self {
        Self { identifier: Some(identifier.into()), ..Self::default() }
    }

    pub fn matches(&self, w: &Worker) -> bool {
        self.identifier.as_ref().is_none_or(|i| &w.identifier == i)
            && self.hostname.as_ref().is_none_or(|h| w.hostname_matches(h))
            && self
                .ip
                .as_ref()
                .is_none_or(|ip| w.ip.as_deref() == Some(ip.as_str()) || w.private_ip.as_deref() == Some(ip.as_str()))
            && self.group_id.is_none_or(|g| w.group_id == Some(g))
    }
}

/// Circuit breaker position, exported as a gauge (0 closed, 1 half-open, 2 open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub fn as_gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_statuses_map_to_coarse_states_and_unknown_never_fails() {
        assert_eq!(WorkerState::from_api("Running"), WorkerState::Running);
        assert_eq!(WorkerState::from_api(" ready "), WorkerState::Ready);
        assert_eq!(WorkerState::from_api("accepted"), WorkerState::Provisioning);
        assert_eq!(WorkerState::from_api("weird"), WorkerState::Unknown);
        assert_eq!(WorkerState::from_api(""), WorkerState::Unknown);
    }

    #[test]
    fn query_matches_hostname_case_insensitively_and_ip_on_either_address() {
        let w = Worker {
            identifier: "id-1".into(),
            hostname: "HEL-k8s-slave-00ab".into(),
            ip: Some("1.2.3.4".into()),
            private_ip: Some("10.0.0.4".into()),
            group_id: Some(7),
            state: WorkerState::Running,
            created: None,
        };
        assert!(WorkerQuery::hostname("hel-k8s-slave-00AB").matches(&w));
        assert!(WorkerQuery { ip: Some("10.0.0.4".into()), group_id: Some(7), ..Default::default() }.matches(&w));
        assert!(!WorkerQuery { group_id: Some(8), ..Default::default() }.matches(&w));
        assert!(WorkerQuery::default().matches(&w));
    }
}
