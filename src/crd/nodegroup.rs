//! `NodeGroup`: a set of interchangeable VPSie workers that the autoscaler sizes between `minNodes` and
//! `maxNodes`, scales up for pending pods, scales down when underused, and rebalances to cheaper plans.

// clippy reads the repeated `printcolumn(type_ = ...)` arguments of the derive as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::KubeDuration;

/// Desired shape of a node group.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "autoscaler.vpsie.com",
    version = "v1alpha1",
    kind = "NodeGroup",
    namespaced,
    status = "NodeGroupStatus",
    shortname = "ng",
    category = "vpsie",
    doc = "A group of VPSie workers sized between minNodes and maxNodes by the autoscaler.",
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minNodes"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxNodes"),
    printcolumn(name = "Current", type_ = "integer", json_path = ".status.currentNodes"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyNodes"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".status.desiredNodes"),
    printcolumn(name = "Datacenter", type_ = "string", json_path = ".spec.datacenter", priority = "1"),
    printcolumn(name = "Offerings", type_ = "string", json_path = ".spec.offerings", priority = "1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.minNodes <= self.maxNodes").message("minNodes must be less than or equal to maxNodes"))]
#[x_kube(validation = Rule::new("(has(self.offerings) && size(self.offerings) > 0) || has(self.resources)").message("set offerings (VPSie plan identifiers) or resources (cpu/memory ranges), or both"))]
#[serde(rename_all = "camelCase")]
pub struct NodeGroupSpec {
    /// Fewest nodes the group keeps, even when idle.
    #[schemars(range(min = 0, max = 1000))]
    pub min_nodes: i32,
    /// Most nodes the group may have; scale-up never goes past it.
    #[schemars(range(min = 1, max = 1000))]
    pub max_nodes: i32,
    /// Identifier of the VPSie managed Kubernetes cluster the workers join.
    #[schemars(length(min = 1, max = 128))]
    pub cluster_identifier: String,
    /// Identifier of the VPSie datacenter the workers run in.
    #[schemars(length(min = 1, max = 128))]
    pub datacenter: String,
    /// VPSie plan identifiers the group may use; the cheapest that fits is chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 50))]
    pub offerings: Option<Vec<String>>,
    /// Resource ranges an offering must fall in (used with or instead of `offerings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRange>,
    /// Labels put on every Node of the group once it joins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: BTreeMap<String, String>,
    /// Taints put on every Node of the group once it joins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub taints: Vec<NodeTaint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScaleUpPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScaleDownPolicy>,
    /// Overrides of the controller-wide `rebalancer:` defaults for this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalancePolicy>,
}

/// Bounds on an offering's size, inclusive.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.minCpu) || !has(self.maxCpu) || self.minCpu <= self.maxCpu").message("resources.minCpu must be less than or equal to resources.maxCpu"))]
#[x_kube(validation = Rule::new("!has(self.minMemoryMiB) || !has(self.maxMemoryMiB) || self.minMemoryMiB <= self.maxMemoryMiB").message("resources.minMemoryMiB must be less than or equal to resources.maxMemoryMiB"))]
#[serde(rename_all = "camelCase")]
pub struct ResourceRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 512))]
    pub min_cpu: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 512))]
    pub max_cpu: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "minMemoryMiB")]
    #[schemars(range(min = 256, max = 4194304))]
    pub min_memory_mib: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "maxMemoryMiB")]
    #[schemars(range(min = 256, max = 4194304))]
    pub max_memory_mib: Option<i64>,
}

/// A taint as on a Node.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeTaint {
    #[schemars(
        length(min = 1, max = 316),
        regex(pattern = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
    )]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub value: Option<String>,
    pub effect: TaintEffect,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// How the group grows.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScaleUpPolicy {
    /// `false` stops all scale-up of this group (minNodes is still kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Most VPSieNodes one scale-up decision may create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_nodes_per_scale_up: Option<i32>,
}

/// How the group shrinks.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScaleDownPolicy {
    /// `false` stops all scale-down of this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// A node whose requested cpu and memory both stay under this percentage of its allocatable is unneeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub utilization_threshold_percent: Option<i32>,
    /// How long a node must stay unneeded before it is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unneeded_time: Option<KubeDuration>,
    /// How long after a scale-up no scale-down happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<KubeDuration>,
    /// Whether nodes running pods with emptyDir or hostPath volumes may be removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_local_storage: Option<bool>,
    /// Whether a drain that hits its deadline may delete the remaining pods outright (bypassing PDBs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_drain: Option<bool>,
}

/// Per-group overrides of the rebalancer. Every key left out takes the controller-wide default from the
/// config file's `rebalancer:` block (the runbook's "Safe Defaults").
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.maintenanceWindows) || self.maintenanceWindows.all(w, w.start != w.end)").message("a maintenance window needs different start and end times"))]
#[x_kube(validation = Rule::new("!has(self.drainTimeout) || (duration(self.drainTimeout) >= duration('1s') && duration(self.drainTimeout) <= duration('24h'))").message(super::rebalance::DRAIN_TIMEOUT_MESSAGE))]
#[x_kube(validation = Rule::new("!has(self.healthCheckInterval) || (duration(self.healthCheckInterval) >= duration('1s') && duration(self.healthCheckInterval) <= duration('1h'))").message(super::rebalance::HEALTH_CHECK_INTERVAL_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct RebalancePolicy {
    /// Whether the rebalancer may replace this group's nodes with better-priced ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `rolling` drains an old node before its replacement takes load; `surge` brings replacements up first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RebalanceStrategy>,
    /// Most nodes replaced at the same time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_concurrent: Option<i32>,
    /// How long a drain may take before the operation rolls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<KubeDuration>,
    /// How often workload and cluster health is checked during an operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_interval: Option<KubeDuration>,
    /// Whether a failed operation undoes itself (uncordon, terminate replacements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_on_failure: Option<bool>,
    /// When rebalancing may start; none means any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub maintenance_windows: Vec<MaintenanceWindow>,
    /// Smallest saving, in percent of the replaced nodes' hourly price, worth an operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub min_savings_percent: Option<i32>,
    /// Youngest node the rebalancer may replace (VPSie flags VMs deleted soon after creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_node_age: Option<KubeDuration>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RebalanceStrategy {
    #[default]
    Rolling,
    Surge,
}

/// A weekly window, in UTC unless `timezone` is set.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// Days the window opens on; empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub days: Vec<Weekday>,
    /// Opening time, `HH:MM` (24 h).
    #[schemars(length(max = 5), regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// Closing time, `HH:MM`; earlier than `start` means the window runs past midnight.
    #[schemars(length(max = 5), regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub end: String,
    /// IANA time zone such as `Europe/Berlin`; UTC when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub timezone: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// What the controller last observed of the group.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// VPSieNodes of the group that are not terminating.
    #[serde(default)]
    pub current_nodes: i32,
    /// Size the controller is working towards.
    #[serde(default)]
    pub desired_nodes: i32,
    /// Nodes that joined and are Ready.
    #[serde(default)]
    pub ready_nodes: i32,
    /// VPSie node group ids per offering, created on demand.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vpsie_groups: BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_up: Option<ScaleEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_down: Option<ScaleEvent>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One scale decision that was carried out.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleEvent {
    pub time: Time,
    /// Nodes added or removed.
    pub nodes: i32,
    #[serde(default)]
    pub reason: String,
}
