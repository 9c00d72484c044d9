//! Stranded VPSieNodes: objects whose namespace is gone.
//!
//! Kubernetes can finish deleting a namespace without its custom objects: when the namespace controller
//! runs while the CRD is not served (an API server just restarted), it finds no VPSieNodes and removes the
//! namespace anyway. The VPSieNodes stay in etcd, and the API server refuses every write to them ("namespaces
//! … not found"), deletions and finalizer removals included. Their own reconcile can then never record a
//! step, so their VMs would bill and their Nodes stay in the cluster for ever. The namespace's deletion
//! asked for them to go, so this sweep does what their finalizer would have done, without status:
//! cordon, drain (PDBs honoured), delete the VM, delete the Node. Every step is idempotent and decided
//! from a fresh read, so a pass that stops half-way (a blocked drain, a new leader) is simply run again.
//!
//! Pipeline: observe (VPSieNodes whose NodeGroup the watch does not show), decide (a dry-run status write
//! refused with "namespaces … not found" proves the namespace gone), act (in a task of its own, one per
//! object, so a long drain never holds up planning), report (a warning saying how to remove the objects,
//! a counter and a gauge).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{
    Context, Error,
    vpsienode::{delete_node, node_name_for, unmatched_worker},
};
use crate::{
    cloud::deleted_or_gone,
    crd::{FIELD_MANAGER, NodeGroup, VPSieNode},
    drain::{self, DrainError, DrainPolicy},
};

/// What this replica knows of each stranded VPSieNode, by uid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Releasing,
    Released,
}

#[derive(Default)]
pub struct Stranded {
    known: Arc<Mutex<BTreeMap<String, State>>>,
}

/// VPSieNodes whose NodeGroup the watch does not show: deleted ones, and stranded ones among them.
pub fn candidates<'a>(groups: &[NodeGroup], vpsienodes: &'a [VPSieNode]) -> Vec<&'a VPSieNode> {
    let live: BTreeSet<(String, String)> =
        groups.iter().map(|g| (g.namespace().unwrap_or_default(), g.name_any())).collect();
    vpsienodes
        .iter()
        .filter(|v| !live.contains(&(v.namespace().unwrap_or_default(), v.spec.node_group.clone())))
        .collect()
}

/// Whether the API server refused a write because the object's namespace does not exist.
pub fn namespace_gone(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) if s.code == 404 => match &s.details {
            Some(d) if !d.kind.is_empty() => d.kind == "namespaces",
            _ => s.message.starts_with("namespaces ") && s.message.ends_with("not found"),
        },
        _ => false,
    }
}

impl Stranded {
    pub async fn run(&self, ctx: &Arc<Context>, groups: &[NodeGroup], vpsienodes: &[VPSieNode]) {
        let candidates = candidates(groups, vpsienodes);
        let uids: BTreeSet<String> = candidates.iter().map(|v| v.uid().unwrap_or_default()).collect();
        self.lock().retain(|uid, _| uids.contains(uid));
        for vn in candidates {
            let uid = vn.uid().unwrap_or_default();
            if self.lock().contains_key(&uid) {
                continue;
            }
            match probe(ctx, vn).await {
                Ok(true) => {}
                Ok(false) => continue,
                // One object's failed probe must not keep the others from being looked at.
                Err(e) => {
                    super::record_error(ctx, "stranded", &e);
                    continue;
                }
            }
            self.lock().insert(uid.clone(), State::Releasing);
            let (ctx, vn, known) = (ctx.clone(), vn.clone(), self.known.clone());
            tokio::spawn(async move {
                let outcome = release(&ctx, &vn).await;
                let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(()) => {
                        known.insert(uid, State::Released);
                        ctx.metrics.lifecycle.stranded_released.inc();
                    }
                    Err(e) => {
                        // Looked at again on the next sweep.
                        known.remove(&uid);
                        super::record_error(&ctx, "stranded", &e);
                    }
                }
            });
        }
        let released = self.lock().values().filter(|s| **s == State::Released).count();
        ctx.metrics.lifecycle.stranded_vpsienodes.set(i64::try_from(released).unwrap_or(i64::MAX));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, State>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A dry-run status write: admission refuses it with "namespaces … not found" exactly when the namespace
/// is gone, and it changes nothing otherwise (a deleted VPSieNode's own reconcile goes on meanwhile).
async fn probe(ctx: &Context, vn: &VPSieNode) -> Result<bool, Error> {
    let api: Api<VPSieNode> = Api::namespaced(ctx.client.clone(), &vn.namespace().unwrap_or_default());
    let params = PatchParams { dry_run: true, field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let patch = json!({ "status": { "phase": vn.status.as_ref().map(|s| s.phase).unwrap_or_default() } });
    match api.patch_status(&vn.name_any(), &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(false),
        Err(e) if namespace_gone(&e) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(source) => Err(Error::write("VPSieNode status (dry run)", source)),
    }
}

/// Cordon and drain the node, then delete the VM and the Node: what the finalizer does, without status.
async fn release(ctx: &Context, vn: &VPSieNode) -> Result<(), Error> {
    let (ns, name) = (vn.namespace().unwrap_or_default(), vn.name_any());
    let status = vn.status.clone().unwrap_or_default();
    let node = status.node_name.clone().or_else(|| status.hostname.as_deref().map(node_name_for));
    tracing::warn!(
        vpsienode = %format!("{ns}/{name}"),
        "namespace {ns} is gone but VPSieNode {name} is still stored; releasing its node and VM"
    );
    if let Some(node) = &node {
        let policy = DrainPolicy { deadline: ctx.lifecycle.drain_timeout, ..DrainPolicy::default() };
        match drain::drain(&ctx.client, node, &policy, Timestamp::now(), &ctx.shutdown).await {
            Ok(_) | Err(DrainError::NodeNotFound { .. }) => {}
            Err(e) => return Err(Error::drain(e)),
        }
    }
    let worker = match status.worker_identifier.clone() {
        Some(id) => Some(id),
        // An add whose worker was never matched: look once, as a deletion does.
        None if status.vpsie_group_id.is_some() => unmatched_worker(ctx, vn).await?,
        None => None,
    };
    if let Some(id) = &worker {
        deleted_or_gone(ctx.cloud.delete_worker(&vn.spec.cluster_identifier, id).await)
            .map_err(|e| Error::cloud("delete worker", e))?;
    }
    if let Some(node) = &node {
        delete_node(ctx, node).await?;
    }
    tracing::warn!(
        vpsienode = %format!("{ns}/{name}"),
        worker = worker.as_deref().unwrap_or("none"),
        node = node.as_deref().unwrap_or("none"),
        "released the VM and Node of VPSieNode {name}, stranded in deleted namespace {ns}; to remove the object \
         itself, create namespace {ns} again and Kubernetes deletes what is left in it"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use kube::core::{Status, response::StatusDetails};
    use serde_json::json;

    use super::*;

    fn group(ns: &str, name: &str) -> NodeGroup {
        serde_json::from_value(json!({
            "apiVersion": "autoscaler.vpsie.com/v1alpha1", "kind": "NodeGroup",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIdentifier": "c", "datacenter": "d", "minNodes": 0, "maxNodes": 3},
        }))
        .expect("NodeGroup fixture")
    }

    fn vpsienode(ns: &str, name: &str, group: &str) -> VPSieNode {
        serde_json::from_value(json!({
            "apiVersion": "autoscaler.vpsie.com/v1alpha1", "kind": "VPSieNode",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}")},
            "spec": {"clusterIdentifier": "c", "datacenter": "d", "nodeGroup": group, "offering": "1"},
        }))
        .expect("VPSieNode fixture")
    }

    #[test]
    fn only_vpsienodes_whose_node_group_is_not_watched_are_candidates() {
        let groups = [group("a", "web"), group("b", "web")];
        let nodes = [vpsienode("a", "web-1", "web"), vpsienode("c", "web-2", "web"), vpsienode("a", "db-1", "db")];
        let names: Vec<String> = candidates(&groups, &nodes).iter().map(|v| v.name_any()).collect();
        assert_eq!(names, ["web-2", "db-1"], "same group name in another namespace is another group");
    }

    fn not_found(message: &str, kind: Option<&str>) -> kube::Error {
        let mut s = Status::failure(message, "NotFound").with_code(404);
        if let Some(kind) = kind {
            let details: StatusDetails = serde_json::from_value(json!({"name": "x", "kind": kind})).expect("details");
            s = s.with_details(details);
        }
        kube::Error::Api(s.boxed())
    }

    #[test]
    fn a_missing_namespace_is_told_apart_from_a_missing_object() {
        assert!(namespace_gone(&not_found("namespaces \"lu-603ab61e\" not found", Some("namespaces"))));
        assert!(namespace_gone(&not_found("namespaces \"lu-603ab61e\" not found", None)));
        assert!(!namespace_gone(&not_found("vpsienodes.autoscaler.vpsie.com \"a\" not found", Some("vpsienodes"))));
        assert!(!namespace_gone(&not_found("vpsienodes.autoscaler.vpsie.com \"a\" not found", None)));
        let conflict =
            kube::Error::Api(Status::failure("namespaces \"x\" not found", "Conflict").with_code(409).boxed());
        assert!(!namespace_gone(&conflict), "only a 404 says the namespace is gone");
    }
}
