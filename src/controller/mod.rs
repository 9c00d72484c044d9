//! The controllers of a replica and what they share.
//!
//! Pipeline of every controller: observe (reflector stores fed by watches), decide (pure planners over a
//! snapshot), act (only while this replica holds the leader Lease), report (status, events, metrics).
//! Every replica watches, so a new leader starts with warm caches; only the Lease holder acts.

pub mod autoscale;
pub mod caches;
pub mod changes;
pub mod expectations;
pub mod lean;
pub mod listing;
pub mod orphans;
pub mod podcache;
pub mod rebalance;
pub mod rebalancer;
pub mod stranded;
pub mod test_hooks;
pub mod vpsienode;
pub mod wake;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    Api, Client, Resource,
    runtime::{Controller, controller::Action, events::Recorder, reflector::ObjectRef, watcher},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    cloud::{CloudError, CloudProvider, Offering},
    config::{Config, LifecycleTimeouts},
    crd::{NodeGroup, Rebalance, VPSieNode},
    drain::DrainError,
    metrics::{ControllerLabel, ErrorLabels, Metrics, ReconcileLabels},
    server::Readiness,
};

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub lifecycle: LifecycleTimeouts,
    pub cloud: Arc<dyn CloudProvider>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// True while this replica holds the leader Lease.
    pub leader: watch::Receiver<bool>,
    /// The one shutdown signal; long steps (drains) end early on it.
    pub shutdown: CancellationToken,
    /// VPSieNodes this replica created that its watch has not shown yet.
    pub expectations: expectations::Expectations,
    /// Wakes the autoscale loop when something needs planning before the next periodic pass.
    pub wake: Arc<wake::Wake>,
    offerings: tokio::sync::Mutex<HashMap<String, (Instant, Vec<Offering>)>>,
    add_locks: AddLocks,
}

/// Serializes the adds to one VPSie group until each add's worker is discovered.
pub type AddLock = Arc<tokio::sync::Mutex<()>>;

/// One [`AddLock`] per (cluster, VPSie group name). Keyed by name, not id, because the lock must also
/// cover the group's creation: before it exists there is no id, and two first adds for a new offering
/// would both create it.
#[derive(Default)]
pub struct AddLocks(Mutex<HashMap<(String, String), AddLock>>);

impl AddLocks {
    pub fn get(&self, cluster: &str, group_name: &str) -> AddLock {
        let mut locks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry((cluster.to_string(), group_name.to_string())).or_default().clone()
    }
}

/// Catalogue prices change rarely; asking once per few minutes spares the API's rate limit.
const OFFERINGS_TTL: Duration = Duration::from_secs(300);

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        cloud: Arc<dyn CloudProvider>,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        leader: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) -> Self {
        let lifecycle = config.node_lifecycle.timeouts();
        Self {
            client,
            config,
            lifecycle,
            cloud,
            metrics,
            recorder,
            leader,
            shutdown,
            expectations: Default::default(),
            wake: Default::default(),
            offerings: Default::default(),
            add_locks: Default::default(),
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// The offering a NodeGroup names (by plan identifier, numeric size id or name), from a cached catalogue.
    pub async fn offering(&self, datacenter: &str, wanted: &str) -> Result<Option<Offering>, CloudError> {
        let all = self.offerings(datacenter).await?;
        Ok(all.into_iter().find(|o| {
            o.identifier.as_deref() == Some(wanted) || o.id.to_string() == wanted || o.name.eq_ignore_ascii_case(wanted)
        }))
    }

    pub async fn offerings(&self, datacenter: &str) -> Result<Vec<Offering>, CloudError> {
        let mut cache = self.offerings.lock().await;
        if let Some((at, list)) = cache.get(datacenter)
            && at.elapsed() < OFFERINGS_TTL
        {
            return Ok(list.clone());
        }
        let list = self.cloud.offerings(datacenter).await?;
        cache.insert(datacenter.to_string(), (Instant::now(), list.clone()));
        Ok(list)
    }

    /// Records a Kubernetes Event on `reference`. Series are keyed by reason and action, so a different
    /// cause needs a different action. A failure to record is logged, never fatal.
    pub async fn publish(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        type_: kube::runtime::events::EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let event = kube::runtime::events::Event {
            type_,
            reason: reason.to_string(),
            note: Some(note.chars().take(1024).collect()),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::warn!(error = %e, reason, "could not record event");
        }
    }

    /// One lock per VPSie group name: the group's creation and the adds to it are serialized until
    /// each add's worker is discovered.
    pub fn add_lock(&self, cluster: &str, group_name: &str) -> AddLock {
        self.add_locks.get(cluster, group_name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {kind} failed: {source}")]
    Read { kind: &'static str, source: kube::Error },
    #[error("writing {kind} failed: {source}")]
    Write { kind: &'static str, source: kube::Error },
    #[error("{action} failed: {source}")]
    Cloud { action: &'static str, source: CloudError },
    #[error(transparent)]
    Drain(DrainError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// Not a failure: a step that must not complete yet (a finalizer stays until cleanup is done).
    #[error("waiting for {what}")]
    Waiting { what: &'static str, retry: Duration },
    /// A conditional write lost to a newer version: the decision was taken from an old copy, so it is
    /// dropped and taken again from the newer one.
    #[error("writing {kind} conflicted with a newer version; deciding again from it")]
    Conflict { kind: &'static str },
}

impl Error {
    pub fn cloud(action: &'static str, source: CloudError) -> Self {
        Self::Cloud { action, source }
    }

    /// A failed write; a 409 becomes [`Error::Conflict`].
    pub fn write(kind: &'static str, source: kube::Error) -> Self {
        match &source {
            kube::Error::Api(s) if s.code == 409 => Self::Conflict { kind },
            _ => Self::Write { kind, source },
        }
    }

    pub fn drain(source: DrainError) -> Self {
        Self::Drain(source)
    }

    pub fn waiting(what: &'static str, retry: Duration) -> Self {
        Self::Waiting { what, retry }
    }

    /// Bounded label for metrics and event reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Read { .. } => "KubeRead",
            Self::Write { .. } => "KubeWrite",
            Self::Cloud { source, .. } => source.kind(),
            Self::Drain(e) => e.kind(),
            Self::Finalizer(_) => "Finalizer",
            Self::Waiting { .. } => "Waiting",
            Self::Conflict { .. } => "Conflict",
        }
    }

    /// How long the cloud asked us to wait, when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Cloud { source, .. } => source.retry_after(),
            Self::Waiting { retry, .. } => Some(*retry),
            Self::Conflict { .. } => Some(CONFLICT_RETRY),
            _ => None,
        }
    }
}

/// Writes `status` by server-side apply under our field manager, conditional on the resourceVersion of
/// `obj`: a newer version means the decision was taken from an old copy, and [`Error::Conflict`] has it
/// taken again. `what` names the write in errors.
pub(crate) async fn apply_status<K>(
    client: &Client,
    obj: &K,
    status: &impl serde::Serialize,
    what: &'static str,
) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    use kube::{
        ResourceExt as _,
        api::{Patch, PatchParams},
    };
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let name = obj.name_any();
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": name, "resourceVersion": obj.meta().resource_version },
        "status": status,
    });
    api.patch_status(&name, &PatchParams::apply(crate::crd::FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|source| Error::write(what, source))
}

/// A conflict means a newer version exists and its watch event is on its way; look again shortly.
const CONFLICT_RETRY: Duration = Duration::from_millis(500);

/// While not leading, a controller only keeps its cache warm; it looks again when leadership may have
/// changed hands.
pub(crate) const FOLLOWER_RECHECK: Duration = Duration::from_secs(5);

/// The NodeGroup reconcile: the autoscale loop sizes every group from one view, so this only wakes it
/// when a group's spec is new to it.
async fn observe(group: Arc<NodeGroup>, ctx: Arc<Context>, controller: &'static str) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    if !ctx.is_leader() {
        return Ok(Action::requeue(FOLLOWER_RECHECK));
    }
    tracing::debug!(controller, object = %ObjectRef::from_obj(group.as_ref()), "observed");
    if spec_not_yet_planned(&group) {
        // Created, or its spec changed (minNodes raised, an offering added): planned for at once. Our
        // own status writes also land here, and must not wake the loop into another pass.
        ctx.wake.group_changed();
    }
    ctx.metrics
        .controller
        .duration
        .get_or_create(&ControllerLabel { controller })
        .observe(started.elapsed().as_secs_f64());
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The group's status does not yet answer its current generation.
fn spec_not_yet_planned(group: &NodeGroup) -> bool {
    group.status.as_ref().and_then(|s| s.observed_generation) != group.metadata.generation
}

pub(crate) fn record_error(ctx: &Context, controller: &'static str, error: &Error) {
    match error {
        Error::Waiting { what, .. } => {
            tracing::debug!(controller, what, "waiting");
            return;
        }
        Error::Conflict { kind } => {
            tracing::debug!(controller, kind, "conflict; deciding again from the newer version");
            return;
        }
        _ => {}
    }
    ctx.metrics.controller.errors.get_or_create(&ErrorLabels { controller, kind: error.kind() }).inc();
    tracing::warn!(controller, error = %error, "reconcile failed");
}

fn error_policy<K>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |_obj, error, ctx| {
        record_error(&ctx, controller, error);
        Action::requeue(Duration::from_secs(15))
    }
}

/// The `result` label of one item of a controller's output. A `Waiting` is a step asking to be looked
/// at again (the lifecycle goes on), so it is `requeue`, never `error`. A retry scheduled for an object
/// deleted meanwhile runs no reconcile at all (`ObjectNotFound`, routine after a finalizer is removed),
/// so it is not counted.
fn result_label<K, Q>(
    res: &Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<Error, Q>>,
) -> Option<&'static str>
where
    K: Resource,
    Q: std::error::Error + 'static,
{
    use kube::runtime::controller::Error as Run;
    match res {
        Ok(_) => Some("success"),
        Err(Run::ReconcilerFailed(Error::Waiting { .. }, _)) => Some("requeue"),
        Err(Run::ObjectNotFound(_)) => None,
        Err(_) => Some("error"),
    }
}

fn count(ctx: &Context, controller: &'static str, result: Option<&'static str>) {
    if let Some(result) = result {
        ctx.metrics.controller.reconciles.get_or_create(&ReconcileLabels { controller, result }).inc();
    }
}

/// Observes `reconcile_duration_seconds` around a reconcile. A follower's reconcile only reschedules
/// itself; timing those would bury the real ones, so only reconciles begun while leading are observed.
async fn timed<F>(ctx: Arc<Context>, controller: &'static str, reconcile: F) -> Result<Action, Error>
where
    F: std::future::Future<Output = Result<Action, Error>>,
{
    if !ctx.is_leader() {
        return reconcile.await;
    }
    let started = Instant::now();
    let result = reconcile.await;
    ctx.metrics
        .controller
        .duration
        .get_or_create(&ControllerLabel { controller })
        .observe(started.elapsed().as_secs_f64());
    result
}

/// Runs every controller until `shutdown`; marks `readiness` once all their watches have synced.
pub async fn run(ctx: Arc<Context>, readiness: Readiness, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let nodegroups = Controller::new(Api::<NodeGroup>::all(client.clone()), watcher::Config::default().any_semantic());
    let vpsienodes = Controller::new(Api::<VPSieNode>::all(client.clone()), watcher::Config::default().any_semantic());
    let rebalances = Controller::new(Api::<Rebalance>::all(client.clone()), watcher::Config::default().any_semantic());
    let (node_store, pod_store, pdb_store, watches) = caches::watch(&ctx).await;

    let stores = autoscale::Stores {
        nodes: node_store,
        pods: pod_store,
        pdbs: pdb_store,
        groups: nodegroups.store(),
        vpsienodes: vpsienodes.store(),
        rebalances: rebalances.store(),
    };
    let rebalance_shared = Arc::new(rebalance::Shared::new(ctx.clone(), stores.clone(), rebalances.store()));
    {
        let stores = stores.clone();
        let rebalances = rebalances.store();
        let metrics = ctx.metrics.clone();
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let all_synced = async {
                caches::synced(&stores.groups).await?;
                caches::synced(&stores.vpsienodes).await?;
                caches::synced(&rebalances).await?;
                caches::synced(&stores.nodes).await?;
                caches::synced(&stores.pods).await?;
                caches::synced(&stores.pdbs).await
            };
            if all_synced.await.is_ok() {
                tracing::info!("all watches synced; ready");
                metrics.controller.watches_synced.set(1);
                readiness.set_ready();
                // Deciding from half-listed caches would scale for pods that already have nodes.
                autoscale::run(ctx, stores, shutdown).await;
            }
        });
    }

    macro_rules! drive {
        ($controller:expr, $name:literal) => {{
            let ctx = ctx.clone();
            $controller
                .graceful_shutdown_on({
                    let s = shutdown.clone();
                    async move { s.cancelled().await }
                })
                .run(|obj, ctx| observe(obj, ctx, $name), error_policy($name), ctx.clone())
                .for_each(move |res| {
                    let ctx = ctx.clone();
                    async move {
                        if let Err(e) = &res {
                            tracing::warn!(controller = $name, error = %e, "controller error");
                        }
                        count(&ctx, $name, result_label(&res))
                    }
                })
        }};
    }

    let drive_vpsienodes = {
        let ctx = ctx.clone();
        vpsienodes
            .graceful_shutdown_on({
                let s = shutdown.clone();
                async move { s.cancelled().await }
            })
            .run(
                |vn, ctx| timed(ctx.clone(), "vpsienode", vpsienode::reconcile(vn, ctx)),
                vpsienode::error_policy,
                ctx.clone(),
            )
            .for_each(move |res| {
                let ctx = ctx.clone();
                async move {
                    // Reconcile failures are logged by the error policy; the rest (watch errors) here.
                    if let Err(e) = &res
                        && !matches!(e, kube::runtime::controller::Error::ReconcilerFailed(..))
                    {
                        tracing::warn!(controller = "vpsienode", error = %e, "controller error");
                    }
                    count(&ctx, "vpsienode", result_label(&res))
                }
            })
    };

    let drive_rebalances = {
        let ctx = ctx.clone();
        rebalances
            .graceful_shutdown_on({
                let s = shutdown.clone();
                async move { s.cancelled().await }
            })
            .run(
                |rb, shared| {
                    let ctx = shared.ctx.clone();
                    timed(ctx, "rebalance", rebalance::reconcile(rb, shared))
                },
                rebalance::error_policy,
                rebalance_shared,
            )
            .for_each(move |res| {
                let ctx = ctx.clone();
                async move {
                    if let Err(e) = &res
                        && !matches!(e, kube::runtime::controller::Error::ReconcilerFailed(..))
                    {
                        tracing::warn!(controller = "rebalance", error = %e, "controller error");
                    }
                    count(&ctx, "rebalance", result_label(&res))
                }
            })
    };

    tokio::select! {
        _ = futures::future::join3(
            drive!(nodegroups, "nodegroup"),
            drive_vpsienodes,
            drive_rebalances,
        ) => {}
        _ = watches => {}
        _ = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::controller::Error as ControllerError;

    use super::*;

    type Outcome = Result<(ObjectRef<VPSieNode>, Action), ControllerError<Error, std::io::Error>>;

    fn label_of_failure(error: Error) -> Option<&'static str> {
        let object = Box::new(ObjectRef::<VPSieNode>::new("w").within("ns").erase());
        let outcome: Outcome = Err(ControllerError::ReconcilerFailed(error, object));
        result_label(&outcome)
    }

    #[test]
    fn a_wait_is_counted_as_a_requeue_and_a_failure_as_an_error() {
        let done: Outcome = Ok((ObjectRef::new("w").within("ns"), Action::await_change()));
        assert_eq!(result_label(&done), Some("success"));
        assert_eq!(label_of_failure(Error::waiting("the drain to finish", Duration::from_secs(2))), Some("requeue"));
        assert_eq!(label_of_failure(Error::cloud("add worker", CloudError::transient("boom"))), Some("error"));
    }

    #[test]
    fn a_group_wakes_the_planner_until_its_status_answers_its_generation() {
        let mut group: NodeGroup = serde_json::from_value(serde_json::json!({
            "apiVersion": "autoscaler.vpsie.com/v1alpha1", "kind": "NodeGroup",
            "metadata": {"name": "g", "namespace": "ns", "generation": 2},
            "spec": {"minNodes": 0, "maxNodes": 3, "clusterIdentifier": "c", "datacenter": "d", "offerings": ["1"]},
        }))
        .unwrap();
        assert!(spec_not_yet_planned(&group), "a new group");
        group.status = Some(crate::crd::NodeGroupStatus { observed_generation: Some(1), ..Default::default() });
        assert!(spec_not_yet_planned(&group), "its spec changed since the last pass");
        group.status.as_mut().unwrap().observed_generation = Some(2);
        assert!(!spec_not_yet_planned(&group), "our own status write of the current spec");
    }

    #[test]
    fn a_retry_for_an_object_deleted_meanwhile_is_not_a_reconcile() {
        let gone = Box::new(ObjectRef::<VPSieNode>::new("w").within("ns").erase());
        let outcome: Outcome = Err(ControllerError::ObjectNotFound(gone));
        assert_eq!(result_label(&outcome), None);
    }
}
