//! `Pending` and `Provisioning`: ask VPSie for exactly one worker, then find the worker it created.
//!
//! The add call returns no identifier, so the new worker is the difference between the group's workers
//! before the call (written to status first) and after it. Adds to one VPSie group are serialized, so a
//! difference can never be claimed by two VPSieNodes; a crash anywhere leaves either nothing asked (the
//! status still says Pending) or a recorded request whose worker discovery finds or times out.

use std::{sync::Arc, time::Duration};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use kube::{Api, ResourceExt, runtime::controller::Action, runtime::events::EventType};
use tokio::sync::OwnedMutexGuard;

use super::{POLL, current, elapsed_since, now, publish, transition, write_status};
use crate::{
    cloud::{
        CloudError, CloudGroup, CloudProvider, NewWorker, Offering, Worker, WorkerState, find_new_worker, group_name,
    },
    controller::{AddLock, Context, Error},
    crd::{VPSieNode, VPSieNodePhase},
};

pub async fn request(vn: Arc<VPSieNode>, ctx: &Context) -> Result<Action, Error> {
    let api: Api<VPSieNode> = Api::namespaced(ctx.client.clone(), &vn.namespace().unwrap_or_default());
    // Act on a fresh copy: a cached Pending may be stale, and adding twice is the one mistake we must not make.
    let fresh = api.get(&vn.name_any()).await.map_err(|source| Error::Read { kind: "VPSieNode", source })?;
    if fresh.status.as_ref().map(|s| s.phase).unwrap_or_default() != VPSieNodePhase::Pending {
        return Ok(Action::requeue(Duration::ZERO));
    }
    if let Some(wait) = remaining(fresh.status.as_ref().and_then(|s| s.add_retry_after.as_ref())) {
        return Ok(Action::requeue(wait));
    }
    let spec = &fresh.spec;
    let offering = match ctx.offering(&spec.datacenter, &spec.offering).await {
        Ok(Some(o)) => o,
        Ok(None) => {
            let msg = format!("offering {} is not offered in datacenter {}", spec.offering, spec.datacenter);
            transition(ctx, &fresh, current(&fresh), VPSieNodePhase::Failed, "UnknownOffering", msg).await?;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(Error::cloud("list offerings", e)),
    };
    let group_name = group_name::build(&fresh.namespace().unwrap_or_default(), &spec.node_group, offering.id);
    let lock = ctx.add_lock(&spec.cluster_identifier, &group_name);
    let (_held, group) =
        match locked_group(lock, ctx.cloud.as_ref(), &spec.cluster_identifier, &offering, &group_name).await {
            Ok(held) => held,
            Err(e) if !e.is_retryable() => return fail_on_cloud(ctx, &fresh, "ensure node group", e).await,
            Err(e) => return Err(Error::cloud("ensure node group", e)),
        };
    if let Some(other) = undiscovered_add(ctx, &spec.cluster_identifier, group.id, &fresh).await? {
        tracing::debug!(vpsienode = %fresh.name_any(), waiting_for = %other, "another add to this VPSie group is being discovered");
        return Ok(Action::requeue(POLL));
    }
    let before = ctx
        .cloud
        .list_workers(&spec.cluster_identifier, group.id)
        .await
        .map_err(|e| Error::cloud("list workers", e))?;

    let mut status = current(&fresh);
    status.add_retry_after = None;
    status.vpsie_group_id = Some(group.id as i64);
    status.workers_before_add = Some(before.iter().map(|w| w.identifier.clone()).collect());
    status.add_requested_at = Some(now());
    status.provisioning_started_at = Some(now());
    // Micro-dollar precision keeps `kubectl get -o wide` readable and loses nothing that matters.
    status.hourly_price = Some((offering.hourly_price * 1e6).round() / 1e6);
    status.phase = VPSieNodePhase::Provisioning;
    status.reason = Some("AddRequested".into());
    status.message = Some(format!("asked VPSie for one {} worker in group {}", offering.name, group.name));
    status.last_phase_transition = Some(now());
    // The intent is recorded against the version we read: if anything moved meanwhile, we add nothing.
    let recorded = match write_status(ctx, &fresh, &status).await {
        Ok(vn) => vn,
        Err(Error::Conflict { .. }) => return Ok(Action::requeue(POLL)),
        Err(e) => return Err(e),
    };
    ctx.metrics.lifecycle.add_calls.inc();
    match ctx.cloud.add_worker(&spec.cluster_identifier, group.id).await {
        Ok(outcome) => {
            publish(
                ctx,
                &recorded,
                EventType::Normal,
                "AddRequested",
                "Provisioning",
                status.message.as_deref().unwrap_or(""),
            )
            .await;
            if let Some(id) = outcome.identifier {
                status.worker_identifier = Some(id);
                status.hostname = outcome.hostname;
                write_status(ctx, &recorded, &status).await?;
            }
            Ok(Action::requeue(POLL))
        }
        // Refused outright: nothing was created, so failing cannot leak a worker.
        Err(e)
            if matches!(
                e,
                CloudError::QuotaExceeded { .. } | CloudError::Unauthorized { .. } | CloudError::Permanent { .. }
            ) =>
        {
            fail_on_cloud(ctx, &recorded, "add worker", e).await
        }
        // Refused before acting (429) or never sent (breaker open): there is no worker to discover, and
        // waiting for one would only end in a provisioning timeout. The intent is withdrawn, on the
        // version that recorded it, and the add is asked again once the API allows.
        Err(e) if e.proves_nothing_was_done() => {
            ctx.metrics.lifecycle.cloud_errors(e.kind());
            let mut back = current(&recorded);
            back.vpsie_group_id = None;
            back.workers_before_add = None;
            back.add_requested_at = None;
            back.provisioning_started_at = None;
            back.hourly_price = None;
            let wait = e.retry_after().unwrap_or(POLL);
            back.add_retry_after = Some(Time(Timestamp::now() + SignedDuration::try_from(wait).unwrap_or_default()));
            let msg = format!("VPSie refused the add before acting ({e}); it will be asked again");
            match transition(ctx, &recorded, back, VPSieNodePhase::Pending, "AddDeferred", msg).await {
                Ok(_) | Err(Error::Conflict { .. }) => Ok(Action::requeue(wait)),
                Err(other) => Err(other),
            }
        }
        // Outcome unknown (timeout, 5xx): the worker may exist. Discovery finds it or the timeout fails it.
        Err(e) => {
            let note = format!("add worker answered {e}; looking for the worker by listing");
            publish(ctx, &recorded, EventType::Warning, "AddOutcomeUnknown", "Provisioning", &note).await;
            Ok(Action::requeue(POLL))
        }
    }
}

/// Takes the add lock of VPSie group `name`, then makes sure the group exists. Creating the group under
/// the lock is what keeps two first adds for a new offering from both creating it.
pub(crate) async fn locked_group(
    lock: AddLock,
    cloud: &dyn CloudProvider,
    cluster: &str,
    offering: &Offering,
    name: &str,
) -> Result<(OwnedMutexGuard<()>, CloudGroup), CloudError> {
    let held = lock.lock_owned().await;
    let group = cloud.ensure_group(cluster, offering, name).await?;
    Ok((held, group))
}

/// Another VPSieNode whose add to the same VPSie group has not been matched to a worker yet.
async fn undiscovered_add(ctx: &Context, cluster: &str, group: u64, this: &VPSieNode) -> Result<Option<String>, Error> {
    let all: Api<VPSieNode> = Api::all(ctx.client.clone());
    let list = all.list(&Default::default()).await.map_err(|source| Error::Read { kind: "VPSieNode", source })?;
    Ok(list.items.into_iter().find_map(|other| {
        let s = other.status.as_ref()?;
        let pending_discovery = s.phase == VPSieNodePhase::Provisioning
            && s.worker_identifier.is_none()
            && s.vpsie_group_id == Some(group as i64)
            && other.spec.cluster_identifier == cluster;
        (pending_discovery && other.uid() != this.uid()).then(|| other.name_any())
    }))
}

pub async fn discover(vn: Arc<VPSieNode>, ctx: &Context) -> Result<Action, Error> {
    let mut status = current(&vn);
    let cluster = vn.spec.cluster_identifier.clone();
    let timeout = ctx.lifecycle.provisioning_timeout;
    let waited = elapsed_since(status.provisioning_started_at.as_ref());

    let worker = match status.worker_identifier.clone() {
        Some(id) => match ctx.cloud.get_worker(&cluster, &id).await {
            Ok(w) => Some(w),
            Err(e) if e.is_not_found() => {
                let msg = format!("worker {id} disappeared while provisioning (VPSie dropped a failed create)");
                transition(ctx, &vn, status, VPSieNodePhase::Failed, "ProvisioningFailed", msg).await?;
                return Ok(Action::requeue(Duration::ZERO));
            }
            Err(e) => return Err(Error::cloud("get worker", e)),
        },
        None => match claim(ctx, &vn, &cluster).await? {
            Claim::Found(w) => Some(w),
            Claim::Ambiguous(n) if waited > timeout => {
                let msg = format!("{n} new workers appeared in the group and none could be told apart as ours");
                transition(ctx, &vn, status, VPSieNodePhase::Failed, "AmbiguousWorker", msg).await?;
                return Ok(Action::requeue(Duration::ZERO));
            }
            Claim::Ambiguous(_) | Claim::NotYet => None,
        },
    };

    let Some(worker) = worker else {
        return provisioning_timeout(ctx, &vn, status, waited, timeout).await;
    };
    status.worker_identifier = Some(worker.identifier.clone());
    status.hostname = Some(worker.hostname.clone());
    status.ip = worker.ip.clone();
    status.private_ip = worker.private_ip.clone();
    match worker.state {
        WorkerState::Running | WorkerState::Ready => {
            let msg = format!("worker {} is running; waiting for node {} to join", worker.identifier, worker.hostname);
            transition(ctx, &vn, status, VPSieNodePhase::Joining, "WorkerRunning", msg).await?;
            Ok(Action::requeue(Duration::ZERO))
        }
        WorkerState::Failed => {
            let msg = format!("VPSie reports worker {} failed to build", worker.identifier);
            transition(ctx, &vn, status, VPSieNodePhase::Failed, "ProvisioningFailed", msg).await?;
            Ok(Action::requeue(Duration::ZERO))
        }
        WorkerState::Provisioning | WorkerState::Unknown | WorkerState::Deleting => {
            let mut latest = (*vn).clone();
            if vn.status.as_ref().and_then(|s| s.worker_identifier.as_ref()).is_none() {
                status.reason = Some("WorkerFound".into());
                status.message = Some(format!("worker {} ({}) is being built", worker.identifier, worker.hostname));
                latest = write_status(ctx, &vn, &status).await?;
            }
            provisioning_timeout(ctx, &latest, status, waited, timeout).await
        }
    }
}

/// Time left until `t`, if `t` is still ahead.
fn remaining(t: Option<&Time>) -> Option<Duration> {
    Duration::try_from(t?.0.duration_since(Timestamp::now())).ok().filter(|d| !d.is_zero())
}

pub(super) enum Claim {
    Found(Worker),
    Ambiguous(usize),
    NotYet,
}

/// Diffs the group's workers against the recorded pre-add list, also excluding workers other VPSieNodes
/// already claimed, and records the one new worker as ours.
pub(super) async fn claim(ctx: &Context, vn: &VPSieNode, cluster: &str) -> Result<Claim, Error> {
    let status = current(vn);
    let Some(group) = status.vpsie_group_id else {
        return Ok(Claim::NotYet);
    };
    let after = match ctx.cloud.list_workers(cluster, group as u64).await {
        Ok(after) => after,
        // The group (or its cluster) is gone, so no worker of ours can be in it: nothing found, and the
        // provisioning timeout, or a deletion, goes on instead of retrying this error for ever.
        Err(e) if e.is_not_found() => return Ok(Claim::NotYet),
        Err(e) => return Err(Error::cloud("list workers", e)),
    };
    let all: Api<VPSieNode> = Api::all(ctx.client.clone());
    let others = all.list(&Default::default()).await.map_err(|source| Error::Read { kind: "VPSieNode", source })?;
    let mut known: Vec<Worker> = status.workers_before_add.unwrap_or_default().into_iter().map(placeholder).collect();
    known.extend(
        others
            .items
            .into_iter()
            .filter(|o| o.uid() != vn.uid())
            .filter_map(|o| o.status.and_then(|s| s.worker_identifier))
            .map(placeholder),
    );
    Ok(match find_new_worker(&known, &after, Some(group as u64), None) {
        NewWorker::Found(w) => Claim::Found(w),
        NewWorker::Ambiguous(ws) => Claim::Ambiguous(ws.len()),
        NewWorker::NotYet => Claim::NotYet,
    })
}

/// A known worker by identifier only (hostnames of the pre-add list are not recorded).
fn placeholder(identifier: String) -> Worker {
    Worker {
        identifier,
        hostname: String::new(),
        ip: None,
        private_ip: None,
        group_id: None,
        state: WorkerState::Unknown,
        created: None,
    }
}

async fn provisioning_timeout(
    ctx: &Context,
    vn: &VPSieNode,
    status: crate::crd::VPSieNodeStatus,
    waited: Duration,
    timeout: Duration,
) -> Result<Action, Error> {
    if waited > timeout {
        let msg =
            format!("no running worker after {}s (provisioning timeout {}s)", waited.as_secs(), timeout.as_secs());
        transition(ctx, vn, status, VPSieNodePhase::Failed, "ProvisioningTimeout", msg).await?;
        return Ok(Action::requeue(Duration::ZERO));
    }
    Ok(Action::requeue(super::POLL))
}

/// A refusal the cloud will repeat: fail with its kind as the reason (e.g. `QuotaExceeded`).
async fn fail_on_cloud(ctx: &Context, vn: &VPSieNode, action: &str, e: CloudError) -> Result<Action, Error> {
    let reason = match &e {
        CloudError::QuotaExceeded { .. } => "QuotaExceeded",
        CloudError::Unauthorized { .. } => "Unauthorized",
        _ => "CloudRefused",
    };
    ctx.metrics.lifecycle.cloud_errors(e.kind());
    transition(ctx, vn, current(vn), VPSieNodePhase::Failed, reason, format!("{action}: {e}")).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cloud::sim::{Sim, SimCloud, SimConfig};
    use crate::controller::AddLocks;

    #[tokio::test]
    async fn two_concurrent_first_adds_for_a_new_offering_create_the_vpsie_group_once() {
        let sim = Sim::new(SimConfig::fast(0.001));
        // A slow create (the delay comes before the simulator acts) lets the second caller list the groups
        // while the first create is under way, unless the lock orders them.
        let slow = serde_json::from_value(json!({"endpoint": "add_group", "fault": {"kind": "latency", "ms": 50}}));
        sim.add_fault(slow.expect("rule parses")).expect("rule accepted");
        let cloud = SimCloud::new(sim.clone());
        let locks = AddLocks::default();
        let cluster = sim.lock().world.clusters[0].identifier.clone();
        let offering = crate::cloud::sim::offering(2).expect("plan 2 exists");
        let name = group_name::build("default", "web", offering.id);
        let first_add = || async {
            let lock = locks.get(&cluster, &name);
            locked_group(lock, &cloud, &cluster, &offering, &name).await.expect("group ensured").1
        };

        let (a, b) = tokio::join!(first_add(), first_add());

        assert_eq!(a.id, b.id);
        let creates = sim.requests().iter().filter(|r| r.endpoint == "add_group").count();
        assert_eq!(creates, 1, "the VPSie group was created {creates} times");
    }
}
