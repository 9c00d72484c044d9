//! Cordon and uncordon. Both write `spec.unschedulable` with a merge patch, never a full-object update from
//! an old copy (pitfall 4), and uncordon never consults a copy at all (pitfall 1).

use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::DrainError;

/// A node's resourceVersion moves with every status update, so a conditional cordon can lose a race a few
/// times; each loss means a fresh read, and the answer is settled long before this many.
const CORDON_ATTEMPTS: usize = 5;

/// Marks the node unschedulable. Returns whether this call changed it, that is whether the node was
/// schedulable before: a rollback must uncordon only what it cordoned (pitfall 2), so callers persist
/// this. The patch carries the resourceVersion of the read that saw the node schedulable, so if someone
/// else cordons in between, ours fails with a conflict, the next read sees their cordon, and the answer
/// is `false`, never a `true` that would later undo their cordon. Callers persist their intent before the
/// call too: if it is interrupted after the patch landed, only that record says whose cordon it is.
pub async fn cordon(client: &Client, node: &str) -> Result<bool, DrainError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = match nodes.get_opt(node).await {
            Ok(Some(n)) => n,
            Ok(None) => return Err(DrainError::NodeNotFound { node: node.to_string() }),
            Err(source) => return Err(DrainError::Cordon { node: node.to_string(), source }),
        };
        if current.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
            return Ok(false);
        }
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "spec": {"unschedulable": true},
        });
        match nodes.patch(node, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => {
                tracing::info!(node, "cordoned node");
                return Ok(true);
            }
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < CORDON_ATTEMPTS => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(DrainError::NodeNotFound { node: node.to_string() });
            }
            Err(source) => return Err(DrainError::Cordon { node: node.to_string(), source }),
        }
    }
}

/// Marks the node schedulable again, whatever any copy of it says. A node that no longer exists needs no
/// uncordon.
pub async fn uncordon(client: &Client, node: &str) -> Result<(), DrainError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({"spec": {"unschedulable": false}});
    match nodes.patch(node, &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => {
            tracing::info!(node, "uncordoned node");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(DrainError::Uncordon { node: node.to_string(), source }),
    }
}
