//! `Draining`, `Terminating`, `Failed` and deletion: take a node out without losing pods, then the VM.
//!
//! PDBs are honoured on every path, deletion of the VPSieNode included: a drain that cannot finish leaves
//! the node and its VM in place (a scale-down goes back to `Ready`, a deletion keeps waiting and says
//! why). A VM is deleted by identifier only, and NotFound counts as done, so every step can be repeated.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::Node, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PropagationPolicy},
    runtime::{controller::Action, events::EventType},
};

use super::{POLL, current, elapsed_since, now, publish, transition, write_status};
use crate::{
    cloud::deleted_or_gone,
    controller::{Context, Error},
    crd::{NodeGroup, VPSieNode, VPSieNodePhase, VPSieNodeStatus, conditions},
    drain::{self, DrainError, DrainPolicy},
};

const RELEASED: &str = "VMReleased";

/// Scale-down asked for this node (phase `Draining`): cordon (recording whether we did), drain, then
/// delete ourselves, which lets the finalizer delete the VM.
pub async fn drain(vn: Arc<VPSieNode>, ctx: &Context) -> Result<Action, Error> {
    match drain_node(&vn, ctx).await? {
        Drained::Done | Drained::NoNode => {
            let api: Api<VPSieNode> = Api::namespaced(ctx.client.clone(), &vn.namespace().unwrap_or_default());
            transition(ctx, &vn, current(&vn), VPSieNodePhase::Terminating, "Drained", "node drained; deleting the VM")
                .await?;
            api.delete(&vn.name_any(), &DeleteParams::default())
                .await
                .map_err(|source| Error::Write { kind: "VPSieNode", source })?;
            Ok(Action::requeue(Duration::ZERO))
        }
        Drained::Blocked(e) => {
            // The node stays: uncordon it if we cordoned it, and go back to serving.
            let mut status = current(&vn);
            if status.cordoned_by_us
                && let Some(node) = &status.node_name
            {
                drain::uncordon(&ctx.client, node).await.map_err(Error::drain)?;
            }
            status.cordoned_by_us = false;
            status.draining_started_at = None;
            ctx.metrics.lifecycle.scale_down_result("drain_blocked");
            transition(ctx, &vn, status, VPSieNodePhase::Ready, "DrainTimeout", e.to_string()).await?;
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        Drained::Pending => Ok(Action::requeue(POLL)),
    }
}

enum Drained {
    Done,
    NoNode,
    Blocked(DrainError),
    Pending,
}

async fn drain_node(vn: &VPSieNode, ctx: &Context) -> Result<Drained, Error> {
    let mut status = current(vn);
    let Some(node) = status.node_name.clone() else {
        return Ok(Drained::NoNode);
    };
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let Some(fresh) = nodes.get_opt(&node).await.map_err(|source| Error::Read { kind: "Node", source })? else {
        return Ok(Drained::NoNode);
    };
    if status.draining_started_at.is_none() {
        // Record whether the cordon is ours before making it, so a rollback never uncordons someone else's.
        let already = fresh.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
        status.cordoned_by_us = !already;
        status.draining_started_at = Some(now());
        write_status(ctx, vn, &status, None).await?;
    }
    let started = status.draining_started_at.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now);
    let policy = drain_policy(ctx, vn).await?;
    let began = std::time::Instant::now();
    match drain::drain(&ctx.client, &node, &policy, started, &ctx.shutdown).await {
        Ok(report) => {
            ctx.metrics.lifecycle.observe_drain(elapsed_since(status.draining_started_at.as_ref()));
            let note = format!("evicted {} pods in {:.0?}", report.evicted.len(), began.elapsed());
            publish(ctx, vn, EventType::Normal, "Drained", "Draining", &note).await;
            Ok(Drained::Done)
        }
        Err(e @ DrainError::Timeout { .. }) | Err(e @ DrainError::UnmanagedPods { .. }) => {
            publish(ctx, vn, EventType::Warning, e.kind(), "Draining", &e.to_string()).await;
            Ok(Drained::Blocked(e))
        }
        Err(DrainError::NodeNotFound { .. }) => Ok(Drained::NoNode),
        Err(DrainError::Cancelled { .. }) => Ok(Drained::Pending),
        Err(e) => Err(Error::drain(e)),
    }
}

async fn drain_policy(ctx: &Context, vn: &VPSieNode) -> Result<DrainPolicy, Error> {
    let groups: Api<NodeGroup> = Api::namespaced(ctx.client.clone(), &vn.namespace().unwrap_or_default());
    let group =
        groups.get_opt(&vn.spec.node_group).await.map_err(|source| Error::Read { kind: "NodeGroup", source })?;
    let force = group.and_then(|g| g.spec.scale_down).and_then(|s| s.force_drain).unwrap_or(false);
    Ok(DrainPolicy {
        deadline: ctx.lifecycle.drain_timeout,
        retry_interval: Duration::from_secs(2),
        force,
        evict_bare_pods: false,
    })
}

/// Phase `Terminating` outside deletion: the drain finished; deleting ourselves hands over to cleanup.
pub async fn finish(vn: Arc<VPSieNode>, ctx: &Context) -> Result<Action, Error> {
    let api: Api<VPSieNode> = Api::namespaced(ctx.client.clone(), &vn.namespace().unwrap_or_default());
    api.delete(&vn.name_any(), &DeleteParams::default())
        .await
        .map_err(|source| Error::Write { kind: "VPSieNode", source })?;
    Ok(Action::requeue(Duration::ZERO))
}

/// Phase `Failed`: delete whatever VM and Node exist so a failure never leaks, then wait.
pub async fn release_failed(vn: Arc<VPSieNode>, ctx: &Context) -> Result<Action, Error> {
    let mut status = current(&vn);
    if conditions::is_true(&status.conditions, RELEASED) {
        return Ok(Action::await_change());
    }
    release(ctx, &vn, &mut status).await?;
    Ok(Action::await_change())
}

/// The VPSieNode is being deleted: drain (PDBs honoured), delete the VM, delete the Node.
///
/// The finalizer is removed as soon as this returns `Ok`, so every path that is not finished returns an
/// error (`Waiting` for the normal pauses) and only a completed release returns `Ok`.
pub async fn cleanup(vn: Arc<VPSieNode>, ctx: &Context) -> Result<Action, Error> {
    let mut status = current(&vn);
    let mut latest = (*vn).clone();
    match status.phase {
        VPSieNodePhase::Joining | VPSieNodePhase::Ready | VPSieNodePhase::Draining => {
            if status.phase != VPSieNodePhase::Draining {
                status = transition(ctx, &vn, status, VPSieNodePhase::Draining, "Deleting", "draining before deletion")
                    .await?
                    .status
                    .unwrap_or_default();
            }
            let draining = VPSieNode { status: Some(status), ..(*vn).clone() };
            match drain_node(&draining, ctx).await? {
                Drained::Done | Drained::NoNode => {
                    let status = current(&draining);
                    latest = transition(
                        ctx,
                        &draining,
                        status,
                        VPSieNodePhase::Terminating,
                        "Drained",
                        "node drained; deleting the VM",
                    )
                    .await?;
                }
                Drained::Blocked(e) => {
                    // Deletion was asked for, so keep trying; the reason tells the operator what blocks it.
                    let mut status = current(&draining);
                    status.reason = Some("DrainBlocked".into());
                    status.message = Some(e.to_string());
                    status.draining_started_at = Some(now());
                    write_status(ctx, &draining, &status, None).await?;
                    return Err(Error::drain(e));
                }
                Drained::Pending => return Err(Error::waiting("the drain to finish", POLL)),
            }
        }
        VPSieNodePhase::Provisioning if status.worker_identifier.is_none() => {
            // An add may have landed that discovery has not matched yet: look once more, and give a listing
            // the time it needs before concluding that nothing was created.
            if let super::provision::Claim::Found(w) =
                super::provision::claim(ctx, &vn, &vn.spec.cluster_identifier).await?
            {
                status.worker_identifier = Some(w.identifier);
                status.hostname = Some(w.hostname);
                latest.status = Some(status);
            } else if elapsed_since(status.add_requested_at.as_ref()) < Duration::from_secs(30) {
                return Err(Error::waiting("the requested worker to be listed", POLL));
            }
        }
        _ => {}
    }
    let mut status = current(&latest);
    release(ctx, &latest, &mut status).await?;
    ctx.metrics.lifecycle.scale_down_result("success");
    Ok(Action::await_change())
}

/// Deletes the VM (by identifier) and then the Node object, recording that both are gone.
async fn release(ctx: &Context, vn: &VPSieNode, status: &mut VPSieNodeStatus) -> Result<(), Error> {
    if let Some(id) = &status.worker_identifier {
        deleted_or_gone(ctx.cloud.delete_worker(&vn.spec.cluster_identifier, id).await)
            .map_err(|e| Error::cloud("delete worker", e))?;
        tracing::info!(vpsienode = %vn.name_any(), worker = %id, "deleted VPSie worker");
    }
    let node = status.node_name.clone().or_else(|| status.hostname.as_deref().map(super::join::node_name_for));
    if let Some(node) = node {
        let nodes: Api<Node> = Api::all(ctx.client.clone());
        let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
        match nodes.delete(&node, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => return Err(Error::Write { kind: "Node", source }),
        }
    }
    conditions::set_condition(
        &mut status.conditions,
        conditions::condition(RELEASED, true, "WorkerDeleted", "the VPSie worker and its Node are deleted", None),
        Timestamp::now(),
    );
    write_status(ctx, vn, status, None).await?;
    Ok(())
}
