//! Pure scale decisions: a [`Snapshot`] and the time in, a plan out. No client, no I/O, no clock.
//!
//! - [`up::plan_scale_up`]: which VPSieNodes to create, in which group, on which offering, and for which pods.
//! - [`down::plan_scale_down`]: which node to remove per group, or why each under-used node stays.
//! - [`fit`]: the per-pod, per-node feasibility both share.
//!
//! Nodes that do not exist yet (in flight or planned) are modelled by [`template`]: the group's labels and
//! taints on the offering's size, minus what the kubelet keeps and what DaemonSets will take.

pub mod down;
pub mod fit;
pub mod up;

mod pack;

#[cfg(test)]
pub(crate) mod tests;

use std::{fmt, time::Duration};

pub use down::{Blocked, BlockedNode, Closest, NodeRemoval, PodMove, ScaleDownPlan, UnneededSince, plan_scale_down};
pub use fit::{Misfit, Target};
pub use up::{GroupScaleUp, NewNode, NewNodeReason, NoGroup, Rejection, ScaleUpPlan, plan_scale_up};

use crate::snapshot::{GroupInfo, NODEGROUP_LABEL, OfferingInfo, PodInfo, Resources, Snapshot, well_known_labels};

/// A namespaced object named in a plan (a pod, a node group, a PDB).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self { namespace: namespace.to_string(), name: name.to_string() }
    }

    pub fn pod(pod: &PodInfo) -> Self {
        Self::new(&pod.namespace, &pod.name)
    }

    pub fn group(group: &GroupInfo) -> Self {
        Self::new(&group.namespace, &group.name)
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Pods per node the kubelet allows unless configured otherwise.
pub const DEFAULT_MAX_PODS: i64 = 110;

/// Memory a VPSie plan's nominal size loses before pods see it: the kernel's share and the kubelet's
/// eviction threshold. Overestimating a new node would leave pods pending and repeat the scale-up.
pub fn reserved_memory(memory_bytes: i64) -> i64 {
    memory_bytes / 20 + (100 << 20)
}

/// A node of `group` on `offering` that does not exist yet, with `overhead` (its DaemonSet pods) taken.
///
/// Its labels are the group's, the node-group label the controller applies, and the well-known labels
/// (os, arch, region, zone, instance type) the node gets when it joins; nothing else is assumed, so a pod
/// that selects on more is not promised a node. Group labels win over well-known ones, as on the Node.
pub fn template(group: &GroupInfo, offering: &OfferingInfo, overhead: Resources) -> Target {
    let mut labels = well_known_labels(&group.datacenter, &offering.id);
    labels.extend(group.labels.clone());
    labels.insert(NODEGROUP_LABEL.to_string(), group.name.clone());
    let allocatable = Resources {
        cpu_millis: offering.cpu_millis,
        memory_bytes: offering.memory_bytes.saturating_sub(reserved_memory(offering.memory_bytes)),
        pods: DEFAULT_MAX_PODS,
        // Without a disk size from the catalogue ephemeral storage is not what limits a node.
        ephemeral_bytes: offering.disk_bytes.unwrap_or(i64::MAX),
    };
    Target {
        name: None,
        labels,
        taints: group.taints.clone(),
        unschedulable: false,
        free: allocatable.saturating_sub(overhead),
        free_extended: Default::default(),
    }
}

/// What DaemonSet pods take on a node of the group: the most they take on any of its nodes, or on any
/// node of the cluster while the group has none (a new node runs the same DaemonSets).
pub fn daemonset_overhead(snapshot: &Snapshot, group: &GroupInfo) -> Resources {
    let on = |n: &crate::snapshot::NodeInfo| snapshot.daemonsets_on(&n.name);
    let mut of_group = snapshot.nodes.iter().filter(|n| n.in_group(group)).peekable();
    if of_group.peek().is_some() {
        of_group.map(on).fold(Resources::ZERO, Resources::max)
    } else {
        snapshot.nodes.iter().map(on).fold(Resources::ZERO, Resources::max)
    }
}

/// An offering whose price can be compared: finite and not negative. Others are never planned.
pub(crate) fn priced(offering: &OfferingInfo) -> bool {
    offering.hourly_price.is_finite() && offering.hourly_price >= 0.0
}

/// `1h30m`, `10m`, `45s`: durations as the CRD's users write them.
pub(crate) fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}
