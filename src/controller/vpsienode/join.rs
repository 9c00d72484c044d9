//! `Joining` and `Ready`: link the Kubernetes Node that VPSie's join registered, give it the group's
//! label, labels and taints, and keep them there. Without the labels, pods selecting the group would stay
//! Pending and scale-up would repeat until maxNodes; so `Ready` re-applies them if anyone removes them.

#[cfg(test)]
mod tests;
mod wants;

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};

use super::{POLL, current, elapsed_since, now, transition, write_status};
use crate::{
    controller::{Context, Error},
    crd::{NodeGroup, VPSieNode, VPSieNodePhase},
};
pub(crate) use wants::{NodeWants, node_patch};

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

/// Puts the group label, the group's labels and taints, and the well-known labels on the node.
async fn label_and_taint(ctx: &Context, vn: &VPSieNode, node: &Node) -> Result<(), Error> {
    let groups: Api<NodeGroup> = Api::namespaced(ctx.client.clone(), &vn.namespace().unwrap_or_default());
    let group =
        groups.get_opt(&vn.spec.node_group).await.map_err(|source| Error::Read { kind: "NodeGroup", source })?;
    let wants = NodeWants::new(vn, group.as_ref().map(|g| &g.spec));
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    if patch_node(&nodes, node, &wants).await? {
        tracing::info!(node = %node.name_any(), group = %vn.spec.node_group, "applied group labels and taints");
    }
    Ok(())
}

/// A Node's resourceVersion moves with every status update, so a conditional patch can lose a race a few
/// times; each loss means a fresh read, and the taints settle long before this many.
const PATCH_ATTEMPTS: usize = 5;

/// Brings `node` to `wants`; returns whether it had to change anything. When the taint list is written,
/// the patch carries the resourceVersion of the copy it was computed from: a merge patch replaces the
/// whole list, so without that precondition a taint someone else added or removed in between (the node
/// lifecycle controller's `not-ready`) would be undone. On a conflict the node is read again and the patch
/// recomputed; after [`PATCH_ATTEMPTS`] the conflict is returned and the reconcile retries.
pub(crate) async fn patch_node(nodes: &Api<Node>, node: &Node, wants: &NodeWants) -> Result<bool, Error> {
    let name = node.name_any();
    let mut fresh: Option<Node> = None;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(patch) = node_patch(fresh.as_ref().unwrap_or(node), wants) else {
            return Ok(false);
        };
        match nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < PATCH_ATTEMPTS => {
                match nodes.get_opt(&name).await.map_err(|source| Error::Read { kind: "Node", source })? {
                    Some(n) => fresh = Some(n),
                    // Gone: nothing to label; the phase handlers notice the missing Node on their next read.
                    None => return Ok(false),
                }
            }
            Err(source) => return Err(Error::Write { kind: "Node labels", source }),
        }
    }
}
