//! A plain-data view of the cluster: nodes, pods, PDBs and node groups, reduced to what scale decisions
//! need. The planners in [`crate::scale`] read only these types, so they are tested without a cluster
//! and could move to their own crate unchanged.
//!
//! Conversions from the API types live in [`convert`] (k8s-openapi objects) and [`group`] (NodeGroup);
//! a value that cannot be read becomes an error that names it, never a silent zero, and
//! [`Snapshot::from_k8s`] keeps a note of every object it skipped so that scale-down stays away from
//! nodes it cannot fully see.

pub mod convert;
pub mod group;
pub mod intern;
pub mod offerings;
pub mod quantity;
pub mod wellknown;

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use jiff::Timestamp;

pub use convert::{ConvertError, PodRecord, pod_record};
pub use group::GroupError;
pub use quantity::{QuantityError, parse_millis, parse_units};
pub use wellknown::well_known_labels;

/// Label on a Node naming the NodeGroup it belongs to.
pub use crate::crd::{DO_NOT_DISRUPT_ANNOTATION, NODEGROUP_LABEL};

/// Requests or capacity in the four dimensions the scheduler checks for every pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Resources {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub pods: i64,
    pub ephemeral_bytes: i64,
}

impl Resources {
    pub const ZERO: Self = Self { cpu_millis: 0, memory_bytes: 0, pods: 0, ephemeral_bytes: 0 };

    pub fn new(cpu_millis: i64, memory_bytes: i64, pods: i64, ephemeral_bytes: i64) -> Self {
        Self { cpu_millis, memory_bytes, pods, ephemeral_bytes }
    }

    pub fn saturating_add(self, other: Self) -> Self {
        self.zip(other, i64::saturating_add)
    }

    /// What is left; negative where a node is already overcommitted, so nothing more fits there.
    pub fn saturating_sub(self, other: Self) -> Self {
        self.zip(other, i64::saturating_sub)
    }

    /// Per-dimension maximum (the init-container rule).
    pub fn max(self, other: Self) -> Self {
        self.zip(other, i64::max)
    }

    /// Whether every dimension of `self` is at most that of `capacity`.
    pub fn fits_in(&self, capacity: &Self) -> bool {
        self.cpu_millis <= capacity.cpu_millis
            && self.memory_bytes <= capacity.memory_bytes
            && self.pods <= capacity.pods
            && self.ephemeral_bytes <= capacity.ephemeral_bytes
    }

    fn zip(self, other: Self, f: impl Fn(i64, i64) -> i64) -> Self {
        Self {
            cpu_millis: f(self.cpu_millis, other.cpu_millis),
            memory_bytes: f(self.memory_bytes, other.memory_bytes),
            pods: f(self.pods, other.pods),
            ephemeral_bytes: f(self.ephemeral_bytes, other.ephemeral_bytes),
        }
    }
}

impl std::iter::Sum for Resources {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Self::saturating_add)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: TaintEffect,
}

impl Taint {
    pub fn new(key: &str, value: Option<&str>, effect: TaintEffect) -> Self {
        Self { key: key.to_string(), value: value.map(str::to_string), effect }
    }
}

/// `key=value:Effect`, or `key:Effect` without a value, as `kubectl taint` writes it.
impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value.as_deref().filter(|v| !v.is_empty()) {
            Some(value) => write!(f, "{}={}:{}", self.key, value, self.effect.as_str()),
            None => write!(f, "{}:{}", self.key, self.effect.as_str()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TolerationOperator {
    Equal,
    Exists,
}

/// A pod's toleration. An empty key with `Exists` tolerates every taint; no effect means every effect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Toleration {
    pub key: Option<String>,
    pub operator: TolerationOperator,
    pub value: Option<String>,
    pub effect: Option<TaintEffect>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

/// One `matchExpressions` (or `matchFields`) entry of a node selector term or label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: SelectorOperator,
    pub values: Vec<String>,
}

/// A term of required node affinity: every expression and field requirement must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeSelectorTerm {
    pub match_expressions: Vec<Requirement>,
    /// Requirements on node fields; Kubernetes supports only `metadata.name`.
    pub match_fields: Vec<Requirement>,
}

/// A PDB's label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub allocatable: Resources,
    /// Extended resources and hugepages the node offers, by name.
    pub extended_allocatable: BTreeMap<String, i64>,
    /// `spec.unschedulable`: cordoned, by us or by someone else.
    pub unschedulable: bool,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// Value of the [`NODEGROUP_LABEL`] label.
    pub nodegroup: Option<String>,
    /// Namespace of the node's VPSieNode, when the pass knows it: the label names the group but not its
    /// namespace, and groups of the same name may exist in several namespaces.
    pub nodegroup_namespace: Option<String>,
    pub created: Option<Timestamp>,
    /// The Node has a deletion timestamp.
    pub deleting: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// Shared with the other pods that have equal labels (see [`intern`]).
    pub labels: Arc<BTreeMap<String, String>>,
    pub node_name: Option<String>,
    /// What the scheduler reserves for the pod: containers, the init-container maximum, overhead; `pods` is 1.
    pub requests: Resources,
    /// Requests of extended resources and hugepages (`nvidia.com/gpu`, `hugepages-2Mi`), by name.
    pub extended_requests: BTreeMap<String, i64>,
    pub node_selector: BTreeMap<String, String>,
    /// Terms of required node affinity, any one of which must match; `None` means no such affinity.
    pub required_affinity: Option<Vec<NodeSelectorTerm>>,
    /// Shared like the labels.
    pub tolerations: Arc<[Toleration]>,
    /// Kind of the owner reference marked `controller: true`.
    pub controller_kind: Option<String>,
    pub is_daemonset: bool,
    /// A static pod's API mirror; it lives and dies with its node's kubelet config.
    pub is_mirror: bool,
    pub do_not_disrupt: bool,
    /// Has an emptyDir or hostPath volume, whose data is lost when the pod moves.
    pub has_local_storage: bool,
    /// The scheduler gave up on it: `PodScheduled=False`, reason `Unschedulable`, no node.
    pub unschedulable: bool,
    /// When `PodScheduled` last became `False`, if known.
    pub unschedulable_since: Option<Timestamp>,
    pub phase: PodPhase,
    /// The pod has a deletion timestamp.
    pub terminating: bool,
}

impl PodInfo {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Holds resources on its node: bound and not finished. Terminating pods still hold them until gone.
    pub fn occupies_node(&self) -> bool {
        self.node_name.is_some() && !matches!(self.phase, PodPhase::Succeeded | PodPhase::Failed)
    }

    /// Would have to be evicted and scheduled elsewhere if its node went away.
    pub fn must_move(&self) -> bool {
        self.occupies_node() && !self.terminating && !self.is_daemonset && !self.is_mirror
    }

    /// Waiting for capacity that does not exist yet.
    pub fn is_pending_unschedulable(&self) -> bool {
        self.unschedulable && self.node_name.is_none() && !self.terminating && self.phase == PodPhase::Pending
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdbInfo {
    pub namespace: String,
    pub name: String,
    /// `None` selects no pods (policy/v1: a null selector matches nothing, an empty one everything).
    pub selector: Option<LabelSelector>,
    /// From status; 0 when the status is not written yet, so an unknown budget never allows an eviction.
    pub disruptions_allowed: i32,
}

/// One VPSie plan a group may use, with the size VPSie sells and its hourly price (monthly / 720).
#[derive(Debug, Clone, PartialEq)]
pub struct OfferingInfo {
    pub id: String,
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub hourly_price: f64,
    /// Disk size, when the catalogue says; without it ephemeral-storage requests are not checked.
    pub disk_bytes: Option<i64>,
}

impl OfferingInfo {
    pub fn new(id: &str, cpu_millis: i64, memory_bytes: i64, hourly_price: f64) -> Self {
        Self { id: id.to_string(), cpu_millis, memory_bytes, hourly_price, disk_bytes: None }
    }
}

/// A group's scale-down policy with defaults filled in (those of the Kubernetes cluster-autoscaler).
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleDownSettings {
    pub enabled: bool,
    pub utilization_threshold_percent: u8,
    pub unneeded_time: Duration,
    pub cooldown: Duration,
    pub allow_local_storage: bool,
    /// Youngest node scale-down removes; VPSie flags VMs deleted soon after creation (pitfall 22).
    pub min_node_age: Duration,
}

impl Default for ScaleDownSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            utilization_threshold_percent: 50,
            unneeded_time: Duration::from_secs(600),
            cooldown: Duration::from_secs(600),
            allow_local_storage: false,
            min_node_age: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    pub namespace: String,
    pub name: String,
    pub min_nodes: u32,
    pub max_nodes: u32,
    /// VPSie datacenter identifier; the new nodes' region and zone are derived from it.
    pub datacenter: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub offerings: Vec<OfferingInfo>,
    /// Workers that are up (not in flight, not on their way out).
    pub current_nodes: u32,
    /// Offering id of every worker asked for but not Ready yet.
    pub in_flight: Vec<String>,
    /// Workers draining or terminating: they still count against `max_nodes`, not towards `min_nodes`.
    pub leaving_nodes: u32,
    pub scale_up_enabled: bool,
    /// Most nodes one scale-up may add; `None` means only `max_nodes` limits it.
    pub max_nodes_per_scale_up: Option<u32>,
    pub scale_down: ScaleDownSettings,
    pub last_scale_up: Option<Timestamp>,
}

impl NodeInfo {
    /// Whether the node is one of `group`'s: it carries the group's name and, where its VPSieNode is
    /// known, lives in the group's namespace.
    pub fn in_group(&self, group: &GroupInfo) -> bool {
        self.nodegroup.as_deref() == Some(group.name.as_str())
            && self.nodegroup_namespace.as_deref().is_none_or(|ns| ns == group.namespace)
    }
}

impl GroupInfo {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn offering(&self, id: &str) -> Option<&OfferingInfo> {
        self.offerings.iter().find(|o| o.id == id)
    }
}

/// An object left out of the snapshot and why; a node with such a pod is never scaled down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub kind: &'static str,
    /// `namespace/name`, or the name of a cluster-scoped object.
    pub name: String,
    /// Node a skipped pod is bound to.
    pub node_name: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeInfo>,
    /// Shared with the watch cache, which converts each pod once per change rather than once per pass.
    pub pods: Vec<Arc<PodInfo>>,
    pub pdbs: Vec<PdbInfo>,
    pub groups: Vec<GroupInfo>,
    pub skipped: Vec<Skipped>,
    /// Nodes whose last scale-down drain was blocked, by node name: scale-down leaves them alone until
    /// the time given (recorded on their VPSieNodes, so it survives a change of leader).
    pub drain_backoff: BTreeMap<String, DrainBackoff>,
    /// Built on first use, once the snapshot is complete: a pass asks "which pods are on this node" for
    /// every node, and a scan of all pods per node would make the pass quadratic in the cluster size.
    pub(crate) index: LazyIndex,
}

/// Pods by node and nodes by name, as positions in the snapshot's vectors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    nodes: std::collections::HashMap<String, usize>,
    pods_on: std::collections::HashMap<String, OnNode>,
}

/// What holds resources on one node, gathered in the index's one walk over the pods.
#[derive(Debug, Clone, Default)]
struct OnNode {
    /// Positions in `Snapshot::pods`.
    pods: Vec<usize>,
    /// The summed requests of its DaemonSet pods, which every group's planning asks for.
    daemonsets: Resources,
}

/// The lazily built [`Index`]; it is derived data, so it never makes two snapshots unequal.
#[derive(Debug, Clone, Default)]
pub(crate) struct LazyIndex(std::sync::OnceLock<Index>);

impl PartialEq for LazyIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A node that scale-down does not drain again before `until`, and what blocked it last time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainBackoff {
    pub until: Timestamp,
    pub cause: String,
}

impl Snapshot {
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index().nodes.get(name).map(|i| &self.nodes[*i])
    }

    /// Records which namespace each node's VPSieNode lives in (`(node, namespace)` pairs), so that nodes
    /// of same-named groups in different namespaces are told apart.
    pub fn attribute_nodes<'a>(&mut self, owners: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let owners: BTreeMap<&str, &str> = owners.into_iter().collect();
        for node in &mut self.nodes {
            node.nodegroup_namespace = owners.get(node.name.as_str()).map(|ns| ns.to_string());
        }
    }

    /// The pods holding resources on `node`, in snapshot order.
    pub fn pods_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a PodInfo> + 'a {
        self.index().pods_on.get(node).into_iter().flat_map(|on| &on.pods).map(|i| &*self.pods[*i])
    }

    /// The summed requests of the DaemonSet pods holding resources on `node`.
    pub fn daemonsets_on(&self, node: &str) -> Resources {
        self.index().pods_on.get(node).map_or(Resources::ZERO, |on| on.daemonsets)
    }

    /// The index, built once. The snapshot must not change after the first look-up (passes build it whole,
    /// then only read it).
    fn index(&self) -> &Index {
        self.index.0.get_or_init(|| {
            let mut index = Index::default();
            for (i, n) in self.nodes.iter().enumerate() {
                index.nodes.entry(n.name.clone()).or_insert(i);
            }
            for (i, p) in self.pods.iter().enumerate() {
                if p.occupies_node()
                    && let Some(node) = &p.node_name
                {
                    // Looked up before inserting: a node's name is copied once, not once per pod.
                    let on = match index.pods_on.get_mut(node.as_str()) {
                        Some(on) => on,
                        None => index.pods_on.entry(node.clone()).or_default(),
                    };
                    on.pods.push(i);
                    if p.is_daemonset {
                        on.daemonsets = on.daemonsets.saturating_add(p.requests);
                    }
                }
            }
            index
        })
    }

    /// Sum of the requests of the pods holding resources on a node.
    pub fn requested_on(&self, node: &str) -> Resources {
        self.pods_on(node).map(|p| p.requests).sum()
    }
}

#[cfg(test)]
mod tests;
