//! `Joining` and `Ready`: link the Kubernetes Node that VPSie's join registered, give it the group's
//! label, labels and taints, and keep them there. Without the labels, pods selecting the group would stay
//! Pending and scale-up would repeat until maxNodes; so `Ready` re-applies them if anyone removes them.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;

use super::{POLL, current, elapsed_since, now, transition, write_status};
use crate::{
    controller::{Context, Error},
    crd::{NODEGROUP_LABEL, NodeGroup, VPSieNode, VPSieNodePhase, nodegroup::TaintEffect},
};

/// How often a Ready node is checked for its labels and presence.
const READY_RECHECK: Duration = Duration::from_secs(60);

/// Kubernetes node names are lower case; VPSie's hostname may not be.
pub fn node_name_for(hostname: &str) -> String {
    hostname.to_ascii_lowercase()
}

pub async fn link(vn: Arc<VPSieNode>, ctx: &Context) -> Result<Action, Error> {
    let status = current(&vn);
    let Some(hostname) = status.hostname.clone() else {
        return Ok(Action::requeue(POLL));
    };
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let name = node_name_for(&hostname);
    let node = nodes.get_opt(&name).await.map_err(|source| Error::Read { kind: "Node", source })?;
    let waited = elapsed_since(status.last_phase_transition.as_ref());
    let timeout = ctx.lifecycle.joining_timeout;
    let Some(node) = node else {
        if waited > timeout {
            let msg = format!("node {name} did not register within {}s (joining timeout)", timeout.as_secs());
            transition(ctx, &vn, status, VPSieNodePhase::Failed, "JoinTimeout", msg).await?;
            return Ok(Action::requeue(Duration::ZERO));
        }
        return Ok(Action::requeue(POLL));
    };
    label_and_taint(ctx, &vn, &node).await?;
    let mut status = status;
    let mut vn = vn;
    if status.node_name.is_none() {
        status.node_name = Some(name.clone());
        status.joined_at = Some(now());
        status.reason = Some("NodeRegistered".into());
        status.message = Some(format!("node {name} registered; waiting for it to be Ready"));
        vn = Arc::new(write_status(ctx, &vn, &status).await?);
    }
    if is_ready(&node) {
        status.ready_at = Some(now());
        let msg = format!("node {name} is Ready and labelled for group {}", vn.spec.node_group);
        transition(ctx, &vn, status, VPSieNodePhase::Ready, "NodeReady", msg).await?;
        ctx.metrics
            .lifecycle
            .observe_provisioning(elapsed_since(vn.status.as_ref().and_then(|s| s.provisioning_started_at.as_ref())));
        return Ok(Action::requeue(READY_RECHECK));
    }
    if waited > timeout {
        let msg = format!("node {name} registered but was not Ready within {}s (joining timeout)", timeout.as_secs());
        transition(ctx, &vn, status, VPSieNodePhase::Failed, "JoinTimeout", msg).await?;
        return Ok(Action::requeue(Duration::ZERO));
    }
    Ok(Action::requeue(POLL))
}

pub async fn keep(vn: Arc<VPSieNode>, ctx: &Context) -> Result<Action, Error> {
    let Some(name) = current(&vn).node_name else {
        return Ok(Action::requeue(READY_RECHECK));
    };
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    if let Some(node) = nodes.get_opt(&name).await.map_err(|source| Error::Read { kind: "Node", source })? {
        label_and_taint(ctx, &vn, &node).await?;
    }
    Ok(Action::requeue(READY_RECHECK))
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Puts the group label, the group's labels and its taints on the node, patching only what is missing.
async fn label_and_taint(ctx: &Context, vn: &VPSieNode, node: &Node) -> Result<(), Error> {
    let groups: Api<NodeGroup> = Api::namespaced(ctx.client.clone(), &vn.namespace().unwrap_or_default());
    let group =
        groups.get_opt(&vn.spec.node_group).await.map_err(|source| Error::Read { kind: "NodeGroup", source })?;
    let mut wanted = group.as_ref().map(|g| g.spec.labels.clone()).unwrap_or_default();
    wanted.insert(NODEGROUP_LABEL.to_string(), vn.spec.node_group.clone());
    let have = node.labels();
    let missing_labels: serde_json::Map<String, serde_json::Value> =
        wanted.iter().filter(|(k, v)| have.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), json!(v))).collect();

    let mut taints: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let mut taints_changed = false;
    for t in group.iter().flat_map(|g| g.spec.taints.iter()) {
        let effect = match t.effect {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        };
        if !taints.iter().any(|x| x.key == t.key && x.effect == effect) {
            taints.push(Taint { key: t.key.clone(), value: t.value.clone(), effect: effect.into(), time_added: None });
            taints_changed = true;
        }
    }
    if missing_labels.is_empty() && !taints_changed {
        return Ok(());
    }
    let mut patch = json!({ "metadata": { "labels": missing_labels } });
    if taints_changed {
        // The taint list was read fresh just now; a merge patch replaces the list as a whole.
        patch["spec"] = json!({ "taints": taints });
    }
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    nodes
        .patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Write { kind: "Node labels", source })?;
    tracing::info!(node = %node.name_any(), group = %vn.spec.node_group, "applied group labels and taints");
    Ok(())
}
