//! `Rebalance`: one operation replacing nodes with better-priced ones. Its status is the durable memory
//! of the operation: every mutating step is recorded before it is taken, so a new leader can resume or
//! roll back from the API server alone, and the object stays behind as the audit record.

// clippy reads the repeated `printcolumn(type_ = ...)` arguments of the derive as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::KubeDuration;
use super::nodegroup::RebalanceStrategy;

/// The operation as planned. Immutable: a different plan is a different Rebalance.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "autoscaler.vpsie.com",
    version = "v1alpha1",
    kind = "Rebalance",
    namespaced,
    status = "RebalanceStatus",
    shortname = "rb",
    category = "vpsie",
    doc = "One rebalance operation: replace nodes of a NodeGroup with better-priced ones, or roll back.",
    printcolumn(name = "NodeGroup", type_ = "string", json_path = ".spec.nodeGroup"),
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Trigger", type_ = "string", json_path = ".status.rollback.trigger"),
    printcolumn(name = "Replacements", type_ = "integer", json_path = ".status.completedReplacements", priority = "1"),
    printcolumn(name = "Savings/h", type_ = "number", json_path = ".status.realizedHourlySavings", priority = "1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("a Rebalance's spec is immutable: create a new Rebalance instead"))]
#[x_kube(validation = Rule::new(DRAIN_TIMEOUT_RULE).message(DRAIN_TIMEOUT_MESSAGE))]
#[x_kube(validation = Rule::new(HEALTH_CHECK_INTERVAL_RULE).message(HEALTH_CHECK_INTERVAL_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// NodeGroup (same namespace) whose nodes are replaced.
    #[schemars(length(min = 1, max = 253))]
    pub node_group: String,
    pub strategy: RebalanceStrategy,
    #[schemars(range(min = 1, max = 100))]
    pub max_concurrent: i32,
    pub drain_timeout: KubeDuration,
    pub health_check_interval: KubeDuration,
    pub rollback_on_failure: bool,
    /// The nodes to replace and what replaces them; each old node appears once.
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(o, o.oldNode == r.oldNode))").message("each old node may appear only once in replacements"))]
    pub replacements: Vec<PlannedReplacement>,
}

/// A drain bound of zero would roll back every operation at once, and one of days would keep a node
/// cordoned for that long; both are typing mistakes, refused by the API server.
pub const DRAIN_TIMEOUT_RULE: &str =
    "duration(self.drainTimeout) >= duration('1s') && duration(self.drainTimeout) <= duration('24h')";
pub const DRAIN_TIMEOUT_MESSAGE: &str = "drainTimeout must be between 1s and 24h (e.g. 300s)";
pub const HEALTH_CHECK_INTERVAL_RULE: &str = "duration(self.healthCheckInterval) >= duration('1s') && \
     duration(self.healthCheckInterval) <= duration('1h')";
pub const HEALTH_CHECK_INTERVAL_MESSAGE: &str = "healthCheckInterval must be between 1s and 1h (e.g. 30s)";

/// One node to replace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlannedReplacement {
    /// Kubernetes Node to drain and remove.
    #[schemars(length(min = 1, max = 253))]
    pub old_node: String,
    /// VPSieNode behind the old node.
    #[schemars(length(min = 1, max = 253))]
    pub old_vpsie_node: String,
    #[schemars(length(min = 1, max = 128))]
    pub old_offering: String,
    /// VPSie plan identifier of the replacement.
    #[schemars(length(min = 1, max = 128))]
    pub new_offering: String,
    /// USD per hour; never negative.
    #[schemars(range(min = 0.0))]
    pub old_hourly_price: f64,
    /// USD per hour; never negative.
    #[schemars(range(min = 0.0))]
    pub new_hourly_price: f64,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RebalancePhase {
    #[default]
    Pending,
    PreFlight,
    Running,
    RollingBack,
    Succeeded,
    RolledBack,
    Failed,
}

impl RebalancePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::PreFlight => "PreFlight",
            Self::Running => "Running",
            Self::RollingBack => "RollingBack",
            Self::Succeeded => "Succeeded",
            Self::RolledBack => "RolledBack",
            Self::Failed => "Failed",
        }
    }

    /// Whether the operation has ended (nothing of it is in flight).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::RolledBack | Self::Failed)
    }
}

/// Progress of one replacement.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StepPhase {
    #[default]
    Pending,
    /// The replacement VPSieNode exists and is coming up.
    Provisioning,
    /// The replacement is Ready.
    ReplacementReady,
    /// The old node is cordoned (by us, see `cordonedByUs`).
    Cordoned,
    Draining,
    /// The old node is empty; the moved workloads must be healthy again before it is removed.
    Verifying,
    /// The old VPSieNode is being deleted.
    Removing,
    Done,
    RolledBack,
    Failed,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeStep {
    pub old_node: String,
    #[serde(default)]
    pub phase: StepPhase,
    /// VPSieNode created as the replacement, recorded before it is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_vpsie_node: Option<String>,
    /// Whether this operation cordoned the old node (a node already cordoned by someone else stays so).
    #[serde(default)]
    pub cordoned_by_us: bool,
    /// When the current phase of the step began (a drain's deadline counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// Owners (`Kind/namespace/name`) of the pods the drain moves, whose health is checked afterwards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved_owners: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What must hold again after a rollback.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PreOperationState {
    /// Nodes that were already unschedulable before the operation (never uncordoned by a rollback).
    #[serde(default)]
    pub already_cordoned: Vec<String>,
    /// Nodes of the group before the operation.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Ready nodes of the group before the operation.
    #[serde(default)]
    pub ready_nodes: i32,
    /// Pods the scheduler could not place before the operation.
    #[serde(default)]
    pub unschedulable_pods: i32,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollbackTrigger {
    ProvisioningFailed,
    DrainTimeout,
    WorkloadUnhealthy,
    ClusterDegraded,
    Manual,
    /// A restarted controller found the operation in a state it cannot continue from safely.
    CannotContinue,
}

impl RollbackTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProvisioningFailed => "ProvisioningFailed",
            Self::DrainTimeout => "DrainTimeout",
            Self::WorkloadUnhealthy => "WorkloadUnhealthy",
            Self::ClusterDegraded => "ClusterDegraded",
            Self::Manual => "Manual",
            Self::CannotContinue => "CannotContinue",
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRecord {
    pub trigger: RollbackTrigger,
    pub reason: String,
    pub started_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Every action the rollback took, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// Outcome: which nodes were uncordoned and which replacements terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceStatus {
    #[serde(default)]
    pub phase: RebalancePhase,
    /// Machine-readable cause of the current phase (`InvalidSpec`, `PreFlightFailed`, `DrainTimeout`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<NodeStep>,
    /// Since when cluster health has been below the pre-flight baseline (a rollback follows if it lasts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded_since: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_operation: Option<PreOperationState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRecord>,
    #[serde(default)]
    pub completed_replacements: i32,
    /// Saving per hour from the prices of what actually ran, not of what was planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realized_hourly_savings: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
