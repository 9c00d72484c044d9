//! What an operation touches, read fresh from the API server (decisions that mutate never come from a
//! cache), and its labels put on and taken off.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

use super::{Error, Shared};
use crate::{
    crd::{
        NodeGroup, REBALANCE_IN_PROGRESS, REBALANCE_LABEL, REBALANCE_NAME_LABEL, ROLLBACK_ANNOTATION, Rebalance,
        VPSieNode, VPSieNodePhase,
    },
    rebalance::execute::{Replacement, StepView, View},
};

pub fn vpsienodes(shared: &Shared, ns: &str) -> Api<VPSieNode> {
    Api::namespaced(shared.ctx.client.clone(), ns)
}

pub fn nodes(shared: &Shared) -> Api<Node> {
    Api::all(shared.ctx.client.clone())
}

pub async fn group(shared: &Shared, ns: &str, name: &str) -> Result<Option<NodeGroup>, Error> {
    let api: Api<NodeGroup> = Api::namespaced(shared.ctx.client.clone(), ns);
    api.get_opt(name).await.map_err(|source| Error::Read { kind: "NodeGroup", source })
}

/// The labels an operation puts on what it touches.
pub fn labels(rb: &Rebalance) -> BTreeMap<String, String> {
    BTreeMap::from([
        (REBALANCE_LABEL.to_string(), REBALANCE_IN_PROGRESS.to_string()),
        (REBALANCE_NAME_LABEL.to_string(), rb.name_any()),
    ])
}

/// Deterministic name of step `i`'s replacement: recorded before it is created, so a restarted
/// controller finds (or creates) the same one, never a second.
pub fn replacement_name(rb: &Rebalance, i: usize) -> String {
    let uid = rb.uid().unwrap_or_default();
    let short: String = uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
    let base: String = rb.spec.node_group.chars().take(200).collect();
    format!("{base}-rb-{short}-{i}")
}

pub async fn label_vpsienode(shared: &Shared, ns: &str, name: &str, rb: &Rebalance) -> Result<(), Error> {
    let patch = json!({ "metadata": { "labels": labels(rb) } });
    match vpsienodes(shared, ns).patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::write("VPSieNode labels", source)),
    }
}

pub async fn label_node(shared: &Shared, name: &str, rb: &Rebalance) -> Result<(), Error> {
    let patch = json!({ "metadata": { "labels": labels(rb) } });
    match nodes(shared).patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::write("Node labels", source)),
    }
}

/// Names of the Nodes and VPSieNodes still labelled for `rb`.
pub async fn labelled(shared: &Shared, rb: &Rebalance) -> Result<(Vec<String>, Vec<String>), Error> {
    let selector = ListParams::default().labels(&format!("{REBALANCE_NAME_LABEL}={}", rb.name_any()));
    let ns = rb.namespace().unwrap_or_default();
    let n = nodes(shared).list_metadata(&selector).await.map_err(|source| Error::Read { kind: "Node", source })?;
    let v = vpsienodes(shared, &ns)
        .list_metadata(&selector)
        .await
        .map_err(|source| Error::Read { kind: "VPSieNode", source })?;
    Ok((n.items.iter().map(|o| o.name_any()).collect(), v.items.iter().map(|o| o.name_any()).collect()))
}

/// Takes both labels off everything that carries this operation's; returns how many objects.
pub async fn unlabel_all(shared: &Shared, rb: &Rebalance) -> Result<usize, Error> {
    let (node_names, vn_names) = labelled(shared, rb).await?;
    let patch = json!({ "metadata": { "labels": { REBALANCE_LABEL: null, REBALANCE_NAME_LABEL: null } } });
    for name in &node_names {
        match nodes(shared).patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => return Err(Error::write("Node labels", source)),
        }
    }
    let ns = rb.namespace().unwrap_or_default();
    for name in &vn_names {
        match vpsienodes(shared, &ns).patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => return Err(Error::write("VPSieNode labels", source)),
        }
    }
    Ok(node_names.len() + vn_names.len())
}

/// A fresh look at every step's objects. `degraded` is filled in by the caller.
pub async fn view(shared: &Shared, rb: &Rebalance) -> Result<View, Error> {
    let ns = rb.namespace().unwrap_or_default();
    let status = rb.status.clone().unwrap_or_default();
    let mut steps = Vec::new();
    for (i, step) in status.steps.iter().enumerate() {
        let planned = rb.spec.replacements.get(i);
        let replacement = match &step.new_vpsie_node {
            Some(name) => vpsienodes(shared, &ns)
                .get_opt(name)
                .await
                .map_err(|source| Error::Read { kind: "VPSieNode", source })?,
            None => None,
        };
        let replacement = match replacement {
            Some(vn) => Some(replacement_view(shared, &vn).await?),
            None => None,
        };
        let old = match planned {
            Some(p) => vpsienodes(shared, &ns)
                .get_opt(&p.old_vpsie_node)
                .await
                .map_err(|source| Error::Read { kind: "VPSieNode", source })?,
            None => None,
        };
        let node =
            nodes(shared).get_opt(&step.old_node).await.map_err(|source| Error::Read { kind: "Node", source })?;
        steps.push(StepView {
            replacement,
            old_vpsienode_exists: old.is_some(),
            old_vpsienode_deleting: old.as_ref().is_some_and(|o| o.metadata.deletion_timestamp.is_some()),
            old_node_unschedulable: node.map(|n| n.spec.and_then(|s| s.unschedulable).unwrap_or(false)),
        });
    }
    let mut rollback_requested = rb
        .annotations()
        .get(ROLLBACK_ANNOTATION)
        .map(|cause| if cause.trim().is_empty() { "no cause given".to_string() } else { cause.clone() });
    if rb.metadata.deletion_timestamp.is_some() {
        rollback_requested = Some("the Rebalance is being deleted".to_string());
    }
    Ok(View { now: jiff::Timestamp::now(), steps, rollback_requested, degraded: None })
}

async fn replacement_view(shared: &Shared, vn: &VPSieNode) -> Result<Replacement, Error> {
    let s = vn.status.clone().unwrap_or_default();
    let node_ready = match &s.node_name {
        Some(name) if s.phase == VPSieNodePhase::Ready => nodes(shared)
            .get_opt(name)
            .await
            .map_err(|source| Error::Read { kind: "Node", source })?
            .is_some_and(|n| is_ready(&n)),
        _ => false,
    };
    Ok(Replacement {
        phase: s.phase,
        node: s.node_name.clone(),
        node_ready,
        deleting: vn.metadata.deletion_timestamp.is_some(),
        detail: format!("{}: {}", s.reason.unwrap_or_default(), s.message.unwrap_or_default()),
        hourly_price: s.hourly_price,
    })
}

pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
