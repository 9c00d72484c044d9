//! The large watch caches (nodes, pods, PDBs) every replica keeps warm: how each initial list is
//! fetched (`listing.rs`), what is stripped before an object is cached, and which events count as a
//! change for the autoscale loop's quiet passes (`changes.rs`) and as watch traffic in the metrics.
//!
//! Pipeline: observe (one watch per kind), strip, count (events and changes), store (a reflector).

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{core::v1::Node, policy::v1::PodDisruptionBudget};
use kube::{
    Api, Client, Resource,
    runtime::{WatchStreamExt, reflector::Store, watcher},
};

use super::{Context, listing, podcache::WatchedPod};

/// The node, pod and PDB caches, and the one future that keeps all three fed.
pub async fn watch(
    ctx: &Context,
) -> (Store<Node>, Store<WatchedPod>, Store<PodDisruptionBudget>, impl Future<Output = ()> + Send + 'static) {
    let client = &ctx.client;
    let initial = listing::probe(client).await;
    let events = |kind| ctx.metrics.controller.watch_events.get_or_create(&crate::metrics::KindLabel { kind }).clone();
    let (node_store, node_watch) = {
        let (wake, mut changes, events) = (ctx.wake.clone(), super::changes::NodeChanges::default(), events("Node"));
        reflect::<Node>(client, initial, "node", strip_node, move |e| {
            count_event(&events, e);
            changes.observe(e, &wake)
        })
    };
    let (pod_store, pod_watch) = super::podcache::watch(client, initial, ctx.wake.clone(), events("Pod"));
    let (pdb_store, pdb_watch) = {
        let (wake, events) = (ctx.wake.clone(), events("PodDisruptionBudget"));
        // A PDB's status moves only with its pods, which count already; counting every event is simpler.
        let observe = move |e: &watcher::Event<PodDisruptionBudget>| {
            count_event(&events, e);
            wake.input_changed()
        };
        reflect::<PodDisruptionBudget>(
            client,
            initial,
            "poddisruptionbudget",
            |p| p.metadata.managed_fields = None,
            observe,
        )
    };
    let fed = async move {
        futures::future::join3(node_watch, pod_watch, pdb_watch).await;
    };
    (node_store, pod_store, pdb_store, fed)
}

/// Waits until a store has listed everything once.
///
/// The store's readiness future keeps only the waker of its latest poller, and a `Controller` polls the
/// same store itself, so a lone `wait_until_ready().await` elsewhere may never wake. Asking again on a
/// short period sidesteps that.
pub async fn synced<K>(
    store: &kube::runtime::reflector::Store<K>,
) -> Result<(), kube::runtime::reflector::store::WriterDropped>
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready()).await {
            Ok(result) => return result,
            Err(_elapsed) => continue,
        }
    }
}

/// A reflector of every object of kind `K`, each stripped of what no decision reads before it is
/// cached and then shown to `observe` (which counts changes), and the future that keeps it fed (errors
/// are logged and the watch backs off and resumes).
fn reflect<K>(
    client: &Client,
    initial: listing::InitialList,
    what: &'static str,
    strip: fn(&mut K),
    mut observe: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> (kube::runtime::reflector::Store<K>, impl std::future::Future<Output = ()> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = kube::runtime::reflector::store::<K>();
    let stream = watcher(Api::<K>::all(client.clone()), initial.watcher_config())
        .default_backoff()
        .modify(strip)
        .map_ok(move |event| {
            observe(&event);
            event
        });
    let fed = kube::runtime::reflector(writer, stream).for_each(move |event| async move {
        if let Err(e) = event {
            tracing::warn!(error = %e, watch = what, "watch error");
        }
    });
    (store, fed)
}

/// Counts an update or a deletion; the initial list's events are not steady-state traffic.
pub fn count_event<K>(events: &prometheus_client::metrics::counter::Counter, event: &watcher::Event<K>) {
    if matches!(event, watcher::Event::Apply(_) | watcher::Event::Delete(_)) {
        events.inc();
    }
}

/// What the snapshot and the health checks read of a Node is its name, labels, taints, allocatable,
/// conditions, `unschedulable` and timestamps; the image list (often the largest part of a Node), the
/// managed fields, the annotations and the conditions' heartbeat times (a heartbeat alone changes no
/// decision, see `changes.rs`) are dropped from the cache.
pub fn strip_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.volumes_attached = None;
        status.volumes_in_use = None;
        for condition in status.conditions.iter_mut().flatten() {
            condition.last_heartbeat_time = None;
        }
    }
}
