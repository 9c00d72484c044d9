//! The Rebalance controller: carries out one operation, make-before-break, and rolls it back by itself.
//!
//! Pipeline of a reconcile: report (every replica logs the phase transitions it sees and derives the
//! `rebalancer_*` series from them, so whichever replica `kubectl` picks answers the runbook), then, on
//! the leader only: a fresh read of the Rebalance, the finalizer, and one step of the phase at hand:
//! [`start`] (validate, pre-flight, baseline), [`run`] (the step machine of `rebalance::execute`) or
//! [`rollback`]. Every step writes what it is about to do to the status before it mutates anything,
//! conditional on the resourceVersion it decided from, so a controller killed at any instant resumes or
//! rolls back from the API server alone.

mod health;
pub(crate) mod objects;
mod report;
mod rollback;
mod run;
mod start;

use std::{collections::HashMap, sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};
use serde_json::json;

use super::{Context, Error, FOLLOWER_RECHECK, autoscale::Stores};
use crate::crd::{Rebalance, RebalancePhase, RebalanceStatus};

/// Finalizer that keeps a running operation's record until it has ended (rolled back, if deleted).
pub const FINALIZER: &str = "autoscaler.vpsie.com/rebalance";

/// What the Rebalance reconciles share.
pub struct Shared {
    pub ctx: Arc<Context>,
    pub stores: Stores,
    pub rebalances: kube::runtime::reflector::Store<Rebalance>,
    seen: std::sync::Mutex<HashMap<String, report::Seen>>,
}

impl Shared {
    pub fn new(ctx: Arc<Context>, stores: Stores, rebalances: kube::runtime::reflector::Store<Rebalance>) -> Self {
        Self { ctx, stores, rebalances, seen: Default::default() }
    }
}

/// How soon a running operation looks again after a step that moved it on.
const PROMPTLY: Duration = Duration::from_millis(200);
/// How often a running operation looks at its world when nothing asked it to.
const POLL: Duration = Duration::from_secs(1);

pub async fn reconcile(rb: Arc<Rebalance>, shared: Arc<Shared>) -> Result<Action, Error> {
    report::observe(&shared, &rb);
    if !shared.ctx.is_leader() {
        return Ok(Action::requeue(FOLLOWER_RECHECK));
    }
    let api: Api<Rebalance> = Api::namespaced(shared.ctx.client.clone(), &rb.namespace().unwrap_or_default());
    let Some(rb) = api.get_opt(&rb.name_any()).await.map_err(|source| Error::Read { kind: "Rebalance", source })?
    else {
        return Ok(Action::await_change());
    };
    let phase = phase(&rb);
    if phase.is_terminal() || (phase == RebalancePhase::Pending && rb.metadata.deletion_timestamp.is_some()) {
        release(&shared.ctx, &rb).await?;
        return Ok(Action::await_change());
    }
    if test_hooks::paused(&rb) {
        return Ok(Action::requeue(POLL));
    }
    match phase {
        RebalancePhase::Pending | RebalancePhase::PreFlight => start::start(&shared, &rb).await,
        RebalancePhase::Running => run::step(&shared, &rb).await,
        _ => rollback::step(&shared, &rb).await,
    }
}

pub fn error_policy(_rb: Arc<Rebalance>, error: &Error, shared: Arc<Shared>) -> Action {
    super::record_error(&shared.ctx, "rebalance", error);
    Action::requeue(error.retry_after().unwrap_or(Duration::from_secs(5)))
}

fn phase(rb: &Rebalance) -> RebalancePhase {
    rb.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

/// Writes the whole status by server-side apply, conditional on the resourceVersion of `rb`: a newer
/// version means the decision was taken from an old copy, and [`Error::Conflict`] has it taken again.
async fn write_status(ctx: &Context, rb: &Rebalance, status: &RebalanceStatus) -> Result<Rebalance, Error> {
    super::apply_status(&ctx.client, rb, status, "Rebalance status").await
}

/// Adds the finalizer (conditional on the version read) before the first mutation of the cluster.
async fn hold(ctx: &Context, rb: &Rebalance) -> Result<Rebalance, Error> {
    if rb.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(rb.clone());
    }
    let mut finalizers = rb.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    patch_finalizers(ctx, rb, finalizers).await
}

/// Drops the finalizer of an operation that has ended (or never started).
async fn release(ctx: &Context, rb: &Rebalance) -> Result<(), Error> {
    if !rb.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let finalizers: Vec<String> = rb.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    patch_finalizers(ctx, rb, finalizers).await.map(|_| ())
}

async fn patch_finalizers(ctx: &Context, rb: &Rebalance, finalizers: Vec<String>) -> Result<Rebalance, Error> {
    let api: Api<Rebalance> = Api::namespaced(ctx.client.clone(), &rb.namespace().unwrap_or_default());
    let patch = json!({
        "metadata": { "resourceVersion": rb.metadata.resource_version, "finalizers": finalizers },
    });
    api.patch(&rb.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::write("Rebalance finalizers", source))
}

async fn publish(ctx: &Context, rb: &Rebalance, type_: EventType, reason: &str, note: &str) {
    use kube::Resource as _;
    ctx.publish(&rb.object_ref(&()), type_, reason, "Rebalance", note).await;
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

use super::test_hooks::{self, crash_point};
