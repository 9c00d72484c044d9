//! Planner tests. Fixtures keep each test to the few facts it is about: a node is its group, size and
//! pods; a pod its size; a group its bounds and offerings. Everything else has a harmless default.

mod down;
mod fit;
mod props;
mod up;

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::snapshot::{
    GroupInfo, NodeInfo, OfferingInfo, PdbInfo, PodInfo, PodPhase, Resources, ScaleDownSettings, Snapshot, Taint,
    TaintEffect, Toleration, TolerationOperator,
};

pub const GI: i64 = 1 << 30;
pub const MI: i64 = 1 << 20;
/// The datacenter of every [`group`].
pub const DC: &str = "dc-hel1";

/// Lets a fixture be adjusted in place: `pod("a", 100, 128).with(|p| p.do_not_disrupt = true)`.
pub trait With: Sized {
    fn with(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl<T> With for T {}

/// A fixed "now" far from any edge, and times relative to it.
pub fn now() -> Timestamp {
    at(0)
}

pub fn at(offset_secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + offset_secs).expect("a fixed valid timestamp")
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A Ready, schedulable node of `group` (if any), an hour old, with `cores` cpus and `gib` memory.
pub fn node(name: &str, group: Option<&str>, cores: i64, gib: i64) -> NodeInfo {
    let mut node_labels = labels(&[("kubernetes.io/hostname", name), ("kubernetes.io/os", "linux")]);
    if let Some(group) = group {
        node_labels.insert(crate::snapshot::NODEGROUP_LABEL.to_string(), group.to_string());
        node_labels.insert("pool".to_string(), group.to_string());
    }
    NodeInfo {
        name: name.to_string(),
        labels: node_labels,
        taints: vec![],
        allocatable: Resources::new(cores * 1000, gib * GI, 110, 100 * GI),
        extended_allocatable: BTreeMap::new(),
        unschedulable: false,
        ready: true,
        nodegroup: group.map(str::to_string),
        nodegroup_namespace: None,
        created: Some(at(-3600)),
        deleting: false,
    }
}

/// A running ReplicaSet pod in `default` (place it with [`on`]).
pub fn pod(name: &str, cpu_millis: i64, memory_mib: i64) -> PodInfo {
    PodInfo {
        namespace: "default".to_string(),
        name: name.to_string(),
        labels: labels(&[("app", name)]).into(),
        node_name: None,
        requests: Resources::new(cpu_millis, memory_mib * MI, 1, 0),
        extended_requests: BTreeMap::new(),
        node_selector: BTreeMap::new(),
        required_affinity: None,
        tolerations: Vec::new().into(),
        controller_kind: Some("ReplicaSet".to_string()),
        is_daemonset: false,
        is_mirror: false,
        do_not_disrupt: false,
        has_local_storage: false,
        unschedulable: false,
        unschedulable_since: None,
        phase: PodPhase::Running,
        terminating: false,
    }
}

/// A pod the scheduler marked unschedulable a minute ago.
pub fn pending(name: &str, cpu_millis: i64, memory_mib: i64) -> PodInfo {
    pod(name, cpu_millis, memory_mib).with(|p| {
        p.phase = PodPhase::Pending;
        p.unschedulable = true;
        p.unschedulable_since = Some(at(-60));
    })
}

pub fn on(pod: PodInfo, node: &str) -> PodInfo {
    pod.with(|p| p.node_name = Some(node.to_string()))
}

pub fn daemon(name: &str, node: &str, cpu_millis: i64, memory_mib: i64) -> PodInfo {
    on(pod(name, cpu_millis, memory_mib), node).with(|p| {
        p.controller_kind = Some("DaemonSet".to_string());
        p.is_daemonset = true;
    })
}

pub fn offering(id: &str, cores: i64, gib: i64, hourly_price: f64) -> OfferingInfo {
    OfferingInfo::new(id, cores * 1000, gib * GI, hourly_price)
}

/// A group in `default`, datacenter [`DC`], labelled `pool=<name>`, with no nodes, scale-up on, default scale-down policy
/// except that nodes are removed as soon as they are unneeded.
pub fn group(name: &str, min: u32, max: u32, offerings: Vec<OfferingInfo>) -> GroupInfo {
    GroupInfo {
        namespace: "default".to_string(),
        name: name.to_string(),
        min_nodes: min,
        max_nodes: max,
        datacenter: DC.to_string(),
        labels: labels(&[("pool", name)]),
        taints: vec![],
        offerings,
        current_nodes: 0,
        in_flight: vec![],
        leaving_nodes: 0,
        scale_up_enabled: true,
        max_nodes_per_scale_up: None,
        scale_down: ScaleDownSettings { unneeded_time: std::time::Duration::ZERO, ..Default::default() },
        last_scale_up: None,
    }
}

pub fn snapshot(nodes: Vec<NodeInfo>, pods: Vec<PodInfo>, groups: Vec<GroupInfo>) -> Snapshot {
    Snapshot { nodes, pods: pods.into_iter().map(std::sync::Arc::new).collect(), groups, ..Default::default() }
}

pub fn pdb(name: &str, app: &str, disruptions_allowed: i32) -> PdbInfo {
    PdbInfo {
        namespace: "default".to_string(),
        name: name.to_string(),
        selector: Some(crate::snapshot::LabelSelector { match_labels: labels(&[("app", app)]), ..Default::default() }),
        disruptions_allowed,
    }
}

pub fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
    Taint::new(key, Some(value), effect)
}

pub fn tolerate(key: &str, value: &str) -> Toleration {
    Toleration {
        key: Some(key.to_string()),
        operator: TolerationOperator::Equal,
        value: Some(value.to_string()),
        effect: None,
    }
}
