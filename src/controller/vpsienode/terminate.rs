//! `Draining`, `Terminating`, `Failed` and deletion: take a node out without losing pods, then the VM.
//!
//! PDBs are honoured on every path, deletion of the VPSieNode included: a drain that cannot finish leaves
//! the node and its VM in place (a scale-down goes back to `Ready`, a deletion keeps waiting and says
//! why). A VM is deleted by identifier only, and NotFound counts as done, so every step can be repeated.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::Node, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ObjectMeta, PropagationPolicy},
    runtime::{controller::Action, events::EventType},
};

use super::{POLL, current, decide, elapsed_since, now, publish, transition, write_status};
use crate::{
    cloud::deleted_or_gone,
    controller::{Context, Error},
    crd::{NodeGroup, VPSieNode, VPSieNodePhase, VPSieNodeStatus, conditions},
    drain::{self, DrainError, DrainPolicy},
};

const RELEASED: &str = "VMReleased";

/// Phase `Ready`, asked by scale-down to go: record the request as answered and move to `Draining`.
pub async fn start_drain(vn: &VPSieNode, request: String, ctx: &Context) -> Result<Action, Error> {
    let mut status = current(vn);
    let cause = request.split_once("; ").map(|(_, cause)| cause).unwrap_or("scale-down asked for it");
    let message = format!("draining: {cause}");
    status.drain_request = Some(request);
    status.draining_started_at = None;
    status.cordoned_by_us = false;
    transition(ctx, vn, status, VPSieNodePhase::Draining, "ScaleDown", message).await?;
    Ok(Action::requeue(Duration::ZERO))
}

/// Phase `Ready` with our cordon still recorded: a drain ended without its uncordon. Uncordon (only the
/// record says the cordon is ours; a node someone else cordoned has no such record) and clear the record.
/// Decided again on a fresh read: a cached record may predate the clearing of a repair already made, and
/// acting on it would undo a cordon a person made since.
pub async fn repair_cordon(vn: &VPSieNode, node: &str, ctx: &Context) -> Result<Action, Error> {
    let fresh = fresh(ctx, vn).await?;
    if decide::ready_step(&fresh, Timestamp::now()) != (decide::ReadyStep::RepairCordon { node: node.to_string() }) {
        return Ok(Action::requeue(Duration::ZERO));
    }
    drain::uncordon(&ctx.client, node).await.map_err(Error::drain)?;
    let mut status = current(&fresh);
    status.cordoned_by_us = false;
    write_status(ctx, &fresh, &status).await?;
    tracing::warn!(vpsienode = %vn.name_any(), node, "uncordoned a node left cordoned by an unfinished drain");
    let note = format!("uncordoned node {node}: a drain had ended without undoing its cordon");
    publish(ctx, vn, EventType::Normal, "CordonRepaired", "Repair", &note).await;
    Ok(Action::requeue(Duration::ZERO))
}

/// Scale-down asked for this node (phase `Draining`): cordon (recording whether we did), drain, then
/// delete ourselves, which lets the finalizer delete the VM. A drain that cannot finish is undone.
pub async fn drain(vn: Arc<VPSieNode>, ctx: &Context) -> Result<Action, Error> {
    let (outcome, latest) = drain_node((*vn).clone(), ctx).await?;
    match outcome {
        Drained::Done | Drained::NoNode => {
            let api: Api<VPSieNode> = Api::namespaced(ctx.client.clone(), &vn.namespace().unwrap_or_default());
            let mut status = current(&latest);
            status.terminating_started_at = Some(now());
            transition(ctx, &latest, status, VPSieNodePhase::Terminating, "Drained", "node drained; deleting the VM")
                .await?;
            api.delete(&vn.name_any(), &DeleteParams::default())
                .await
                .map_err(|source| Error::write("VPSieNode", source))?;
            Ok(Action::requeue(Duration::ZERO))
        }
        Drained::Blocked(e) => {
            give_up(ctx, latest, &e).await?;
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        Drained::Pending => Ok(Action::requeue(POLL)),
    }
}

/// Undoes a scale-down drain that could not finish: the node stays, schedulable again if the cordon was
/// ours, and scale-down leaves it alone for a while. Decided from a fresh read of the record the drain
/// wrote before it cordoned (never from the copy the reconcile began with), and again from a fresher one
/// if the write back to `Ready` conflicts.
async fn give_up(ctx: &Context, written: VPSieNode, e: &DrainError) -> Result<(), Error> {
    let mut target = written;
    for _ in 0..3 {
        target = fresh(ctx, &target).await?;
        let mut status = current(&target);
        if status.phase != VPSieNodePhase::Draining {
            return Ok(());
        }
        let plan = decide::give_up_drain(&status, e, Timestamp::now());
        if let Some(node) = &plan.uncordon {
            drain::uncordon(&ctx.client, node).await.map_err(Error::drain)?;
        }
        let node = status.node_name.clone().unwrap_or_default();
        let message = format!(
            "scale-down of node {node} stopped: {e}; the node stays{}, and scale-down retries it after {}",
            if plan.uncordon.is_some() { " and is schedulable again" } else { "" },
            plan.retry_after
        );
        status.cordoned_by_us = false;
        status.draining_started_at = None;
        status.drain_failures = plan.failures;
        status.drain_retry_after = Some(Time(plan.retry_after));
        match transition(ctx, &target, status, VPSieNodePhase::Ready, plan.reason, message.clone()).await {
            Ok(_) => {
                tracing::warn!(vpsienode = %target.name_any(), node, reason = plan.reason, "scale-down drain timeout or block: {message}");
                ctx.metrics.lifecycle.scale_down_result("drain_blocked");
                if !node.is_empty() {
                    ctx.publish(&node_ref(&node), EventType::Warning, plan.reason, "ScaleDown", &message).await;
                }
                return Ok(());
            }
            Err(Error::Conflict { .. }) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(Error::Conflict { kind: "VPSieNode status" })
}

fn node_ref(name: &str) -> k8s_openapi::api::core::v1::ObjectReference {
    let node =
        Node { metadata: ObjectMeta { name: Some(name.to_string()), ..ObjectMeta::default() }, ..Node::default() };
    node.object_ref(&())
}

async fn fresh(ctx: &Context, vn: &VPSieNode) -> Result<VPSieNode, Error> {
    let api: Api<VPSieNode> = Api::namespaced(ctx.client.clone(), &vn.namespace().unwrap_or_default());
    api.get(&vn.name_any()).await.map_err(|source| Error::Read { kind: "VPSieNode", source })
}

enum Drained {
    Done,
    NoNode,
    Blocked(DrainError),
    Pending,
}

/// Drains the node of `vn`, first recording (before the cordon) whether the cordon is ours. Returns the
/// outcome and the latest version of the VPSieNode, so the caller decides from what was written.
async fn drain_node(vn: VPSieNode, ctx: &Context) -> Result<(Drained, VPSieNode), Error> {
    let mut status = current(&vn);
    let Some(node) = status.node_name.clone() else {
        return Ok((Drained::NoNode, vn));
    };
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let Some(seen) = nodes.get_opt(&node).await.map_err(|source| Error::Read { kind: "Node", source })? else {
        return Ok((Drained::NoNode, vn));
    };
    let mut vn = vn;
    if status.draining_started_at.is_none() {
        // Record whether the cordon is ours before making it, so a rollback never uncordons someone else's.
        let already = seen.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
        status.cordoned_by_us = !already;
        status.draining_started_at = Some(now());
        vn = write_status(ctx, &vn, &status).await?;
        if !already {
            // Someone may cordon between our read and our cordon; then the cordon is theirs, and the
            // record must say so before anything could undo it.
            match drain::cordon(&ctx.client, &node).await {
                Ok(true) => {}
                Ok(false) => {
                    status.cordoned_by_us = false;
                    vn = write_status(ctx, &vn, &status).await?;
                }
                Err(DrainError::NodeNotFound { .. }) => return Ok((Drained::NoNode, vn)),
                Err(e) => return Err(Error::drain(e)),
            }
        }
    }
    let started = status.draining_started_at.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now);
    let policy = drain_policy(ctx, &vn).await?;
    let began = std::time::Instant::now();
    let outcome = match drain::drain(&ctx.client, &node, &policy, started, &ctx.shutdown).await {
        Ok(report) => {
            ctx.metrics.lifecycle.observe_drain(elapsed_since(status.draining_started_at.as_ref()));
            let note = format!("evicted {} pods in {:.0?}", report.evicted.len(), began.elapsed());
            publish(ctx, &vn, EventType::Normal, "Drained", "Draining", &note).await;
            Drained::Done
        }
        Err(e @ DrainError::Timeout { .. }) | Err(e @ DrainError::UnmanagedPods { .. }) => {
            publish(ctx, &vn, EventType::Warning, e.kind(), "Draining", &e.to_string()).await;
            Drained::Blocked(e)
        }
        Err(DrainError::NodeNotFound { .. }) => Drained::NoNode,
        Err(DrainError::Cancelled { .. }) => Drained::Pending,
        Err(e) => return Err(Error::drain(e)),
    };
    Ok((outcome, vn))
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
    api.delete(&vn.name_any(), &DeleteParams::default()).await.map_err(|source| Error::write("VPSieNode", source))?;
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
    let status = current(&vn);
    let mut latest = (*vn).clone();
    // Only a drain that scale-down asked for and that finished is a scale-down; a Failed worker or a
    // VPSieNode deleted by a person is not.
    let scale_down_finished = status.phase == VPSieNodePhase::Terminating && status.drain_request.is_some();
    match status.phase {
        VPSieNodePhase::Joining | VPSieNodePhase::Ready | VPSieNodePhase::Draining => {
            if status.phase != VPSieNodePhase::Draining {
                let mut draining = status;
                draining.draining_started_at = None;
                draining.cordoned_by_us = false;
                latest = transition(
                    ctx,
                    &latest,
                    draining,
                    VPSieNodePhase::Draining,
                    "Deleting",
                    "draining before deletion",
                )
                .await?;
            }
            let (outcome, written) = drain_node(latest, ctx).await?;
            latest = written;
            match outcome {
                Drained::Done | Drained::NoNode => {
                    let mut status = current(&latest);
                    status.terminating_started_at = Some(now());
                    latest = transition(
                        ctx,
                        &latest,
                        status,
                        VPSieNodePhase::Terminating,
                        "Drained",
                        "node drained; deleting the VM",
                    )
                    .await?;
                }
                Drained::Blocked(e) => {
                    // Deletion was asked for, so keep trying; the reason tells the operator what blocks it.
                    let mut status = current(&latest);
                    status.reason = Some("DrainBlocked".into());
                    status.message = Some(e.to_string());
                    status.draining_started_at = Some(now());
                    write_status(ctx, &latest, &status).await?;
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
                let mut status = status;
                status.worker_identifier = Some(w.identifier);
                status.hostname = Some(w.hostname);
                latest = write_status(ctx, &latest, &status).await?;
            } else if elapsed_since(status.add_requested_at.as_ref()) < Duration::from_secs(30) {
                return Err(Error::waiting("the requested worker to be listed", POLL));
            }
        }
        _ => {}
    }
    let mut status = current(&latest);
    release(ctx, &latest, &mut status).await?;
    if scale_down_finished {
        ctx.metrics.lifecycle.scale_down_result("success");
    }
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
        delete_node(ctx, &node).await?;
    }
    conditions::set_condition(
        &mut status.conditions,
        conditions::condition(RELEASED, true, "WorkerDeleted", "the VPSie worker and its Node are deleted", None),
        Timestamp::now(),
    );
    write_status(ctx, vn, status).await?;
    Ok(())
}

/// Deletes a terminated worker's Node object; already gone counts as done.
pub(crate) async fn delete_node(ctx: &Context, node: &str) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
    match nodes.delete(node, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::write("Node", source)),
    }
}
