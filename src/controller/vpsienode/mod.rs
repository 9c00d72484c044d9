//! VPSieNode controller: one worker from the request to its deletion.
//!
//! Pipeline per reconcile: observe (the object, fresh where an action depends on it), decide (the step of
//! the current phase), act (one cloud or Kubernetes call), report (status through server-side apply,
//! an Event per phase transition, metrics). Phases: `Pending → Provisioning → Joining → Ready`, then
//! `Draining → Terminating`, or `Failed`. Every fact a restarted leader needs (the workers the group held
//! before the add, when the add was asked, the worker's identifier) is in the status before it matters.

mod decide;
mod join;
mod provision;
mod terminate;

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
    },
};
use serde_json::json;

use super::{Context, Error};
use crate::crd::{DRAIN_REQUEST_ANNOTATION, VPSieNode, VPSieNodePhase, VPSieNodeStatus};

/// Deleting a VPSieNode waits for this finalizer: it drains the node and deletes the VM first.
pub const FINALIZER: &str = "autoscaler.vpsie.com/vm-cleanup";

/// How often a phase that waits on the outside world looks again.
const POLL: Duration = Duration::from_secs(2);

/// How often a VPSieNode whose namespace is gone tries its step again.
const STRANDED_RECHECK: Duration = Duration::from_secs(30);

/// Boxed so the future's `Send` is proven here, with concrete lifetimes; the controller runtime's generic
/// bound otherwise trips over the references the phase steps hold across awaits.
pub fn reconcile(vn: Arc<VPSieNode>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    reconcile_inner(vn, ctx).boxed()
}

async fn reconcile_inner(vn: Arc<VPSieNode>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.is_leader() {
        return Ok(Action::requeue(super::FOLLOWER_RECHECK));
    }
    // Before the finalizer, so that a deletion's cleanup (a scale-down's VM deletion) can be held too.
    if super::test_hooks::node_paused(&vn) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let ns = vn.namespace().unwrap_or_default();
    let api: Api<VPSieNode> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, vn, move |event| async move {
        match event {
            Finalizer::Apply(vn) => apply(vn, &ctx).await,
            Finalizer::Cleanup(vn) => terminate::cleanup(vn, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    })
}

async fn apply(vn: Arc<VPSieNode>, ctx: &Context) -> Result<Action, Error> {
    let phase = vn.status.as_ref().map(|s| s.phase).unwrap_or_default();
    match phase {
        VPSieNodePhase::Pending => provision::request(vn, ctx).await,
        VPSieNodePhase::Provisioning => provision::discover(vn, ctx).await,
        VPSieNodePhase::Joining => join::link(vn, ctx).await,
        VPSieNodePhase::Ready => match decide::ready_step(&vn, Timestamp::now()) {
            decide::ReadyStep::RepairCordon { node } => terminate::repair_cordon(&vn, &node, ctx).await,
            decide::ReadyStep::StartDrain { request } => terminate::start_drain(&vn, request, ctx).await,
            decide::ReadyStep::Keep => join::keep(vn, ctx).await,
        },
        VPSieNodePhase::Draining => terminate::drain(vn, ctx).await,
        VPSieNodePhase::Terminating => terminate::finish(vn, ctx).await,
        VPSieNodePhase::Failed => terminate::release_failed(vn, ctx).await,
    }
}

pub fn error_policy(_vn: Arc<VPSieNode>, error: &Error, ctx: Arc<Context>) -> Action {
    super::record_error(&ctx, "vpsienode", error);
    // Stranded in a deleted namespace: no write can succeed until someone creates the namespace again,
    // and the stranded sweep releases the VM and Node meanwhile; asking every few seconds only adds noise.
    // Not much rarer, though: once the namespace is back, nothing else wakes this object up.
    if let Error::Write { source, .. } = error
        && super::stranded::namespace_gone(source)
    {
        return Action::requeue(STRANDED_RECHECK);
    }
    Action::requeue(error.retry_after().unwrap_or(Duration::from_secs(10)))
}

/// The status to build on: the object's, or an empty one.
fn current(vn: &VPSieNode) -> VPSieNodeStatus {
    vn.status.clone().unwrap_or_default()
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Seconds since a recorded time; an absent time counts as "just now" so that nothing times out on a
/// field we failed to record.
fn elapsed_since(t: Option<&Time>) -> Duration {
    t.and_then(|t| Timestamp::now().duration_since(t.0).try_into().ok()).unwrap_or_default()
}

/// Writes the whole status with server-side apply under our field manager, conditional on the
/// resourceVersion of `vn`: a status is only ever written over the exact object it was computed from,
/// so a decision taken from a stale copy fails with a conflict (and the reconcile starts over from a
/// fresh read) instead of erasing what a later write recorded. Callers go on from the returned object.
async fn write_status(ctx: &Context, vn: &VPSieNode, status: &VPSieNodeStatus) -> Result<VPSieNode, Error> {
    super::apply_status(&ctx.client, vn, status, "VPSieNode status").await
}

/// Moves to `phase` with a reason, stamping the transition time, and records a Kubernetes Event.
async fn transition(
    ctx: &Context,
    vn: &VPSieNode,
    mut status: VPSieNodeStatus,
    phase: VPSieNodePhase,
    reason: &str,
    message: impl Into<String>,
) -> Result<VPSieNode, Error> {
    let message = message.into();
    let changed = status.phase != phase;
    status.phase = phase;
    status.reason = Some(reason.to_string());
    status.message = Some(message.clone());
    if changed {
        status.last_phase_transition = Some(now());
    }
    let written = write_status(ctx, vn, &status).await?;
    if changed {
        let type_ = if phase == VPSieNodePhase::Failed { EventType::Warning } else { EventType::Normal };
        publish(ctx, vn, type_, reason, phase.as_str(), &message).await;
        tracing::info!(vpsienode = %vn.name_any(), phase = phase.as_str(), reason, %message, "phase transition");
        // Capacity arrived, failed or left: the planner looks again now rather than at its next pass.
        ctx.wake.vpsienode_phase_changed();
    }
    Ok(written)
}

/// Scale-down's hand-over. The autoscale loop never writes a VPSieNode's status (one writer per phase
/// machine): it asks by stamping [`DRAIN_REQUEST_ANNOTATION`] with the time of the request, and the
/// VPSieNode controller starts a drain for each request it has not answered yet.
pub async fn request_drain(ctx: &Context, vn: &VPSieNode, reason: &str) -> Result<(), Error> {
    let api: Api<VPSieNode> = Api::namespaced(ctx.client.clone(), &vn.namespace().unwrap_or_default());
    let request = format!("{}; {reason}", Timestamp::now());
    let patch = json!({ "metadata": { "annotations": { DRAIN_REQUEST_ANNOTATION: request } } });
    api.patch(&vn.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::write("VPSieNode drain request", source))?;
    Ok(())
}

pub(crate) use terminate::delete_node;

/// The name a worker's Node registers under, from the worker's hostname.
pub(crate) fn node_name_for(hostname: &str) -> String {
    join::node_name_for(hostname)
}

/// The worker an add of `vn` created that discovery has not matched yet, if one is listed now.
pub(crate) async fn unmatched_worker(ctx: &Context, vn: &VPSieNode) -> Result<Option<String>, Error> {
    Ok(match provision::claim(ctx, vn, &vn.spec.cluster_identifier).await? {
        provision::Claim::Found(w) => Some(w.identifier),
        provision::Claim::Ambiguous(_) | provision::Claim::NotYet => None,
    })
}

/// Records an Event on the object; a failure to record is logged, never fatal.
async fn publish(ctx: &Context, vn: &VPSieNode, type_: EventType, reason: &str, action: &str, note: &str) {
    ctx.publish(&vn.object_ref(&()), type_, reason, action, note).await;
}
