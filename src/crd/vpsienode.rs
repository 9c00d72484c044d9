//! `VPSieNode`: one VPSie worker, from the request to add it until its VM is gone. Deleting the object
//! is how a VM is terminated: a finalizer deletes the worker by identifier, then the `Node`.

// clippy reads the repeated `printcolumn(type_ = ...)` arguments of the derive as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What worker to ask VPSie for. Immutable: a different worker is a different VPSieNode.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "autoscaler.vpsie.com",
    version = "v1alpha1",
    kind = "VPSieNode",
    plural = "vpsienodes",
    namespaced,
    status = "VPSieNodeStatus",
    shortname = "vn",
    category = "vpsie",
    doc = "One VPSie worker VM managed by the autoscaler; deleting it terminates the VM.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason"),
    printcolumn(name = "NodeGroup", type_ = "string", json_path = ".spec.nodeGroup"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.nodeName"),
    printcolumn(name = "Offering", type_ = "string", json_path = ".spec.offering", priority = "1"),
    printcolumn(name = "IP", type_ = "string", json_path = ".status.ip", priority = "1"),
    printcolumn(name = "Hourly", type_ = "number", json_path = ".status.hourlyPrice", priority = "1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("a VPSieNode's spec is immutable: delete it and create a new one"))]
#[serde(rename_all = "camelCase")]
pub struct VPSieNodeSpec {
    /// NodeGroup (same namespace) this worker belongs to.
    #[schemars(length(min = 1, max = 253))]
    pub node_group: String,
    /// VPSie plan identifier of the worker.
    #[schemars(length(min = 1, max = 128))]
    pub offering: String,
    /// VPSie managed Kubernetes cluster identifier.
    #[schemars(length(min = 1, max = 128))]
    pub cluster_identifier: String,
    /// VPSie datacenter identifier.
    #[schemars(length(min = 1, max = 128))]
    pub datacenter: String,
}

/// Lifecycle phase of a worker.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum VPSieNodePhase {
    /// Accepted by us; nothing asked of VPSie yet.
    #[default]
    Pending,
    /// VPSie was asked for the worker; waiting for the VM.
    Provisioning,
    /// The VM runs; waiting for its Kubernetes Node to register and become Ready.
    Joining,
    /// The Node is Ready and labelled for its group.
    Ready,
    /// The Node is cordoned and its pods are being evicted.
    Draining,
    /// The VM is being deleted.
    Terminating,
    /// Something went wrong; `reason` and `message` say what. The VM, if any, is deleted.
    Failed,
}

impl VPSieNodePhase {
    pub const ALL: [VPSieNodePhase; 7] = [
        Self::Pending,
        Self::Provisioning,
        Self::Joining,
        Self::Ready,
        Self::Draining,
        Self::Terminating,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Provisioning => "Provisioning",
            Self::Joining => "Joining",
            Self::Ready => "Ready",
            Self::Draining => "Draining",
            Self::Terminating => "Terminating",
            Self::Failed => "Failed",
        }
    }
}

/// What the controller knows of the worker. Everything needed to resume after a crash is here.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VPSieNodeStatus {
    #[serde(default)]
    pub phase: VPSieNodePhase,
    /// Machine-readable cause of the current phase, e.g. `ProvisioningTimeout`, `QuotaExceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Numeric id of the VPSie node group the worker was added to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpsie_group_id: Option<i64>,
    /// Workers the VPSie group held before the add call, written before the call so a restart can find
    /// the new worker by difference instead of adding another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers_before_add: Option<Vec<String>>,
    /// When the add call was made (absent: not yet made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_requested_at: Option<Time>,
    /// After VPSie refused an add before acting (429, or our breaker open), the add is not asked again
    /// before this time (kept here, so neither a status-triggered reconcile nor a new leader asks early).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_retry_after: Option<Time>,
    /// VPSie identifier of the worker, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_identifier: Option<String>,
    /// Hostname VPSie gave the worker (the Node name, up to letter case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Name of the Kubernetes Node once linked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Public IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,
    /// Price per hour of the offering, in USD (monthly / 720).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly_price: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_started_at: Option<Time>,
    /// Whether this controller cordoned the node for the drain (a node already cordoned by someone else is
    /// never uncordoned by us). Recorded before the cordon is made.
    #[serde(default)]
    pub cordoned_by_us: bool,
    /// The scale-down request (the value of the drain-request annotation) this controller answered last,
    /// so a request is acted on once and a new one is told apart by its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_request: Option<String>,
    /// Scale-down drains of this node that were blocked in a row (a PDB, pods that would not leave).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drain_failures: u32,
    /// After a blocked drain, scale-down leaves the node alone until this time (kept here, so a new leader
    /// does not drain it again at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_retry_after: Option<Time>,
    /// When the node was drained and the VM's deletion began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating_started_at: Option<Time>,
    /// When `phase` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_phase_transition: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
