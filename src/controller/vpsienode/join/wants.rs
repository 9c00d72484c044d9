//! What a group wants on each of its Nodes, and the patch that gets it there: a pure function of the
//! Node as read and the group, so the rules below are tested without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::{
    crd::{NODEGROUP_LABEL, NodeGroupSpec, VPSieNode, nodegroup::TaintEffect},
    snapshot::well_known_labels,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeWants {
    /// The group's labels and the group label: a different value on the Node is corrected.
    pub labels: BTreeMap<String, String>,
    /// Well-known labels (topology, instance type, os, arch): set only where missing, so a value VPSie or
    /// the kubelet set is never overwritten.
    pub defaults: BTreeMap<String, String>,
    /// Group taints, as `(key, value, effect)`.
    pub taints: Vec<(String, Option<String>, &'static str)>,
}

impl NodeWants {
    /// `group` is `None` when the NodeGroup is gone; the VPSieNode still names it, so its label stays.
    pub fn new(vn: &VPSieNode, group: Option<&NodeGroupSpec>) -> Self {
        let mut labels = group.map(|g| g.labels.clone()).unwrap_or_default();
        labels.insert(NODEGROUP_LABEL.to_string(), vn.spec.node_group.clone());
        let defaults = well_known_labels(&vn.spec.datacenter, &vn.spec.offering);
        let taints = group
            .iter()
            .flat_map(|g| g.taints.iter())
            .map(|t| {
                let effect = match t.effect {
                    TaintEffect::NoSchedule => "NoSchedule",
                    TaintEffect::PreferNoSchedule => "PreferNoSchedule",
                    TaintEffect::NoExecute => "NoExecute",
                };
                (t.key.clone(), t.value.clone(), effect)
            })
            .collect();
        Self { labels, defaults, taints }
    }
}

/// The JSON merge patch that brings `node` to `wants`, or `None` when it is there already.
///
/// Labels merge key by key, so they need no precondition. A taint is the group's when key and effect
/// match (the API server allows one taint per pair); a different value is corrected in that entry only.
/// Taints are a list, which a merge patch replaces whole: the patch then carries the resourceVersion of
/// `node`, and the API server refuses it if the Node changed since.
pub fn node_patch(node: &Node, wants: &NodeWants) -> Option<Value> {
    let have = node.labels();
    let mut labels: serde_json::Map<String, Value> =
        wants.labels.iter().filter(|(k, v)| have.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), json!(v))).collect();
    for (k, v) in &wants.defaults {
        if !have.contains_key(k) && !wants.labels.contains_key(k) {
            labels.insert(k.clone(), json!(v));
        }
    }

    let mut taints: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let mut taints_changed = false;
    for (key, value, effect) in &wants.taints {
        let wanted = Taint { key: key.clone(), value: value.clone(), effect: effect.to_string(), time_added: None };
        match taints.iter_mut().find(|t| t.key == *key && t.effect == *effect) {
            Some(t) if t.value.as_deref().unwrap_or_default() == value.as_deref().unwrap_or_default() => {}
            Some(t) => {
                *t = wanted;
                taints_changed = true;
            }
            None => {
                taints.push(wanted);
                taints_changed = true;
            }
        }
    }

    if labels.is_empty() && !taints_changed {
        return None;
    }
    let mut patch = json!({ "metadata": {} });
    if !labels.is_empty() {
        patch["metadata"]["labels"] = Value::Object(labels);
    }
    if taints_changed {
        patch["metadata"]["resourceVersion"] = json!(node.metadata.resource_version);
        patch["spec"] = json!({ "taints": taints });
    }
    Some(patch)
}
