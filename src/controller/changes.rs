//! What counts as a change to the cluster a planning pass reads, for the autoscale loop's quiet
//! periodic passes (`autoscale/quiet.rs`). The large watches (nodes, PDBs; pods in `podcache.rs`) count
//! their changes as they arrive, through [`Wake::input_changed`]; the small ones (NodeGroups, VPSieNodes,
//! Rebalances) are fingerprinted whole by the loop, which costs less than a pass at any size they reach.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
};

use k8s_openapi::api::core::v1::Node;
use kube::{Resource, ResourceExt, runtime::watcher};

use super::wake::{Wake, Watched};

/// Counts the Node events that change what a decision could read. A kubelet rewrites every node's
/// condition heartbeats every few minutes (KWOK every ten): at 1,000 nodes that is an update every
/// fraction of a second, none of which changes a plan, and counting them would leave no periodic pass
/// quiet.
#[derive(Debug, Default)]
pub struct NodeChanges {
    /// Node name → fingerprint of its last counted version.
    seen: HashMap<String, u64>,
}

impl NodeChanges {
    /// Notes the event on `wake` unless it only restamps heartbeats.
    pub fn observe(&mut self, event: &watcher::Event<Node>, wake: &Wake) {
        match event {
            watcher::Event::Apply(node) => {
                let print = fingerprint(node);
                if self.seen.insert(node.name_any(), print) != Some(print) {
                    wake.input_changed(Watched::Node);
                }
            }
            watcher::Event::Delete(node) => {
                self.seen.remove(&node.name_any());
                wake.input_changed(Watched::Node);
            }
            watcher::Event::Init => self.seen.clear(),
            watcher::Event::InitApply(node) => {
                self.seen.insert(node.name_any(), fingerprint(node));
            }
            // A relist replaces the whole cache: whatever it brought counts as changed.
            watcher::Event::InitDone => wake.input_changed(Watched::Node),
        }
    }
}

/// The node as a decision reads it: identity, timestamps, labels, spec and status. The cache strips
/// the conditions' heartbeat times before this sees a node (`caches::strip_node`), so the fingerprint
/// hashes the cached node's own parts, no copy of it.
fn fingerprint(node: &Node) -> u64 {
    let meta = &node.metadata;
    let parts = (&meta.uid, &meta.creation_timestamp, &meta.deletion_timestamp, &meta.labels, &node.spec, &node.status);
    let mut hasher = DefaultHasher::new();
    // A Node always serialises; were it ever not to, every version would count as a change, the safe side.
    serde_json::to_vec(&parts)
        .unwrap_or_else(|_| node.resource_version().unwrap_or_default().into_bytes())
        .hash(&mut hasher);
    hasher.finish()
}

/// One number for the versions of every object in a small cache: equal readings mean no object was
/// added, removed or changed in between (a change bumps the resource version). Order-independent, so
/// the store's iteration order does not matter.
pub fn versions<K: Resource>(objects: &[std::sync::Arc<K>]) -> u64 {
    objects
        .iter()
        .map(|o| {
            let meta = o.meta();
            let mut hasher = DefaultHasher::new();
            (&meta.namespace, &meta.name, &meta.uid, &meta.resource_version).hash(&mut hasher);
            hasher.finish()
        })
        .fold(objects.len() as u64, u64::wrapping_add)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Node;
    use kube::runtime::watcher;
    use serde_json::json;

    use super::{NodeChanges, versions};
    use crate::controller::wake::{Wake, Watched};

    /// A node as the cache holds it (stripped as the watch strips it).
    fn node(rv: &str, heartbeat: &str, unschedulable: bool) -> Node {
        let mut node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "resourceVersion": rv, "labels": {"pool": "a"}},
            "spec": {"unschedulable": unschedulable},
            "status": {
                "allocatable": {"cpu": "4", "memory": "8Gi"},
                "conditions": [{
                    "type": "Ready", "status": "True",
                    "lastHeartbeatTime": heartbeat, "lastTransitionTime": "2026-11-30T10:00:00Z",
                }],
            },
        }))
        .unwrap();
        crate::controller::caches::strip_node(&mut node);
        node
    }

    #[test]
    fn a_heartbeat_is_not_a_change_and_a_cordon_is() {
        let wake = Wake::default();
        let mut changes = NodeChanges::default();
        changes.observe(&watcher::Event::Apply(node("1", "2026-11-30T10:00:00Z", false)), &wake);
        assert_eq!(wake.changes().of(Watched::Node), 1, "a node not seen before");
        changes.observe(&watcher::Event::Apply(node("2", "2026-11-30T10:10:00Z", false)), &wake);
        assert_eq!(wake.changes().of(Watched::Node), 1, "only the heartbeat and the resource version moved");
        changes.observe(&watcher::Event::Apply(node("3", "2026-11-30T10:10:00Z", true)), &wake);
        assert_eq!(wake.changes().of(Watched::Node), 2, "cordoned");
        changes.observe(&watcher::Event::Delete(node("4", "2026-11-30T10:10:00Z", true)), &wake);
        assert_eq!(wake.changes().of(Watched::Node), 3, "deleted");
        assert_eq!(wake.pending(), 0, "none of it asks for a pass now");
    }

    #[test]
    fn a_relist_counts_as_a_change_once_it_is_done() {
        let wake = Wake::default();
        let mut changes = NodeChanges::default();
        changes.observe(&watcher::Event::Init, &wake);
        changes.observe(&watcher::Event::InitApply(node("1", "2026-11-30T10:00:00Z", false)), &wake);
        assert_eq!(wake.changes().of(Watched::Node), 0);
        changes.observe(&watcher::Event::InitDone, &wake);
        assert_eq!(wake.changes().of(Watched::Node), 1);
        changes.observe(&watcher::Event::Apply(node("2", "2026-11-30T10:01:00Z", false)), &wake);
        assert_eq!(wake.changes().of(Watched::Node), 1, "the relisted version is remembered");
    }

    #[test]
    fn the_versions_reading_moves_with_any_added_removed_or_updated_object_and_not_with_order() {
        let a = |rv: &str| Arc::new(node(rv, "2026-11-30T10:00:00Z", false));
        let mut b = node("7", "2026-11-30T10:00:00Z", false);
        b.metadata.name = Some("n2".into());
        let b = Arc::new(b);
        let both = versions(&[a("1"), b.clone()]);
        assert_eq!(both, versions(&[b.clone(), a("1")]), "order does not matter");
        assert_ne!(both, versions(&[a("2"), b.clone()]), "an update");
        assert_ne!(both, versions(&[a("1")]), "a removal");
        assert_ne!(versions::<Node>(&[]), versions(&[a("1")]), "an addition");
    }
}
