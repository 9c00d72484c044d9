//! Before a Rebalance touches anything: is the request well-formed ([`validate`]), and would carrying it
//! out now be safe ([`preflight`])? Both are pure functions of the snapshot the scale planners read, so
//! a refusal leaves nothing behind: no label, no cordon, no VM. Each problem is one sentence saying what
//! to fix, for the Rebalance's status and its Event.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    crd::RebalanceSpec,
    scale::{daemonset_overhead, fit, template},
    snapshot::{NodeInfo, PodInfo, Snapshot},
};

/// What the rebalancer knows of a managed node besides the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOwner {
    /// Namespace and name of the VPSieNode behind the node.
    pub namespace: String,
    pub vpsienode: String,
}

/// The state the operation measures itself against, and what a rollback must restore.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Baseline {
    /// Nodes of the group, by name.
    pub nodes: Vec<String>,
    /// Nodes (of any group) already unschedulable: never uncordoned by a rollback.
    pub already_cordoned: Vec<String>,
    pub ready_nodes: u32,
    pub unschedulable_pods: u32,
}

/// Checks the request against the cluster: each old node exists, belongs to the group, is the node of
/// the VPSieNode named beside it, and each new offering is one the group allows.
pub fn validate(
    snapshot: &Snapshot,
    namespace: &str,
    spec: &RebalanceSpec,
    owners: &BTreeMap<String, NodeOwner>,
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let Some(group) = snapshot.groups.iter().find(|g| g.namespace == namespace && g.name == spec.node_group) else {
        return Err(vec![format!(
            "NodeGroup {namespace}/{} does not exist (or lists no usable offering); name an existing group",
            spec.node_group
        )]);
    };
    for r in &spec.replacements {
        let Some(node) = snapshot.node(&r.old_node) else {
            problems.push(format!("node {} does not exist; name a node of group {}", r.old_node, spec.node_group));
            continue;
        };
        if node.nodegroup.as_deref() != Some(spec.node_group.as_str()) {
            problems.push(format!(
                "node {} belongs to group {}, not {}; a Rebalance replaces nodes of its own group only",
                r.old_node,
                node.nodegroup.as_deref().unwrap_or("(none)"),
                spec.node_group
            ));
        }
        match owners.get(&r.old_node) {
            Some(o) if o.namespace == namespace && o.vpsienode == r.old_vpsie_node => {}
            Some(o) => problems.push(format!(
                "node {} is the node of VPSieNode {}/{}, not of {}; name its own VPSieNode",
                r.old_node, o.namespace, o.vpsienode, r.old_vpsie_node
            )),
            None => problems.push(format!("node {} has no VPSieNode, so it is not ours to replace", r.old_node)),
        }
        if group.offering(&r.new_offering).is_none() {
            let allowed: Vec<&str> = group.offerings.iter().map(|o| o.id.as_str()).collect();
            problems.push(format!(
                "offering {} is not allowed for group {}; allowed: {}",
                r.new_offering,
                spec.node_group,
                allowed.join(", ")
            ));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// What pre-flight needs besides the snapshot.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// Another operation of the same group that has not ended.
    pub other_operation: Option<String>,
    /// Why the VPSie API is not usable right now, if it is not.
    pub cloud_trouble: Option<String>,
    /// Why the group's maintenance window is closed, for operations the rebalancer started itself.
    pub window_closed: Option<String>,
    /// Nodes that carry the group's name but belong to a same-named group of another namespace (the node
    /// label names no namespace): not this group's.
    pub foreign_nodes: BTreeSet<String>,
}

/// Would the operation be safe now? Every failed check is reported, not only the first. Returns the
/// baseline to hold the operation to.
pub fn preflight(
    snapshot: &Snapshot,
    namespace: &str,
    spec: &RebalanceSpec,
    conditions: &Conditions,
) -> Result<Baseline, Vec<String>> {
    let mut problems = Vec::new();
    if let Some(other) = &conditions.other_operation {
        problems.push(format!("operation {other} is still running on group {}; wait for it to end", spec.node_group));
    }
    if let Some(trouble) = &conditions.cloud_trouble {
        problems.push(format!("the VPSie API is not reachable: {trouble}"));
    }
    if let Some(closed) = &conditions.window_closed {
        problems.push(closed.clone());
    }
    let of_group: Vec<&NodeInfo> = snapshot
        .nodes
        .iter()
        .filter(|n| n.nodegroup.as_deref() == Some(spec.node_group.as_str()))
        .filter(|n| !conditions.foreign_nodes.contains(&n.name))
        .collect();
    for n in of_group.iter().filter(|n| !n.ready) {
        problems.push(format!("node {} of the group is not Ready", n.name));
    }
    let unschedulable: Vec<&PodInfo> =
        snapshot.pods.iter().map(|p| &**p).filter(|p| p.is_pending_unschedulable()).collect();
    if let Some(p) = unschedulable.first() {
        problems.push(format!(
            "{} pod(s) cannot be scheduled (first: {}); the cluster must be settled before nodes are replaced",
            unschedulable.len(),
            p.key()
        ));
    }
    let replaced: BTreeSet<&str> = spec.replacements.iter().map(|r| r.old_node.as_str()).collect();
    let moving: Vec<&PodInfo> = replaced.iter().flat_map(|n| snapshot.pods_on(n)).filter(|p| p.must_move()).collect();
    problems.extend(blocking_budgets(snapshot, &moving));
    problems.extend(capacity(snapshot, namespace, spec, &replaced, moving));
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Baseline {
        nodes: of_group.iter().map(|n| n.name.clone()).collect(),
        already_cordoned: snapshot.nodes.iter().filter(|n| n.unschedulable).map(|n| n.name.clone()).collect(),
        ready_nodes: of_group.iter().filter(|n| n.ready).count() as u32,
        unschedulable_pods: unschedulable.len() as u32,
    })
}

/// Budgets that allow no disruption of a pod that has to move: its drain could only time out.
fn blocking_budgets(snapshot: &Snapshot, moving: &[&PodInfo]) -> Vec<String> {
    let mut blocked = BTreeSet::new();
    for pdb in snapshot.pdbs.iter().filter(|b| b.disruptions_allowed < 1) {
        let Some(selector) = &pdb.selector else { continue };
        if let Some(pod) =
            moving.iter().find(|p| p.namespace == pdb.namespace && fit::selector_matches(selector, &p.labels))
        {
            blocked.insert(format!(
                "PodDisruptionBudget {}/{} allows no disruption now and covers pod {}; the drain would time out",
                pdb.namespace,
                pdb.name,
                pod.key()
            ));
        }
    }
    blocked.into_iter().collect()
}

/// Places every pod that has to move, one by one, on the nodes that stay (cordoned and replaced ones do
/// not count) and on the replacements to be made, as the scheduler would have to.
fn capacity(
    snapshot: &Snapshot,
    namespace: &str,
    spec: &RebalanceSpec,
    replaced: &BTreeSet<&str>,
    mut moving: Vec<&PodInfo>,
) -> Vec<String> {
    let Some(group) = snapshot.groups.iter().find(|g| g.namespace == namespace && g.name == spec.node_group) else {
        return vec![];
    };
    let overhead = daemonset_overhead(snapshot, group);
    let mut targets: Vec<fit::Target> = spec
        .replacements
        .iter()
        .filter_map(|r| group.offering(&r.new_offering))
        .map(|o| template(group, o, overhead))
        .collect();
    targets.extend(
        snapshot
            .nodes
            .iter()
            .filter(|n| n.ready && !n.unschedulable && !n.deleting && !replaced.contains(n.name.as_str()))
            .map(|n| fit::Target::from_node(n, snapshot.pods_on(&n.name))),
    );
    moving.sort_by(|a, b| {
        (b.requests.cpu_millis, b.requests.memory_bytes)
            .cmp(&(a.requests.cpu_millis, a.requests.memory_bytes))
            .then_with(|| a.key().cmp(&b.key()))
    });
    let mut problems = Vec::new();
    for pod in moving {
        match targets.iter_mut().find(|t| fit::check(pod, t).is_ok()) {
            Some(target) => target.reserve(pod),
            None => problems.push(format!(
                "pod {} would have nowhere to go: no remaining node or replacement has room for it",
                pod.key()
            )),
        }
    }
    problems
}
