//! The large watch caches (nodes, pods, PDBs) every replica keeps warm: how each initial list is
//! fetched (`listing.rs`), what is never parsed (`lean.rs`) or is stripped before an object is cached,
//! and which events count as a change for the autoscale loop's quiet passes (`changes.rs`) and as watch
//! traffic in the metrics (with each complete list logged and counted).
//!
//! Pipeline: observe (one watch per kind, parsed lean), strip, count (events, lists and changes), store
//! (a reflector).

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::{core::v1::Node, policy::v1::PodDisruptionBudget};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, reflector::Store, watcher},
};

use super::{
    Context,
    lean::{self, Lean, Slim},
    listing,
    podcache::WatchedPod,
    wake::Watched,
};

/// The node, pod and PDB caches, and the one future that keeps all three fed.
pub async fn watch(
    ctx: &Context,
) -> (Store<Node>, Store<WatchedPod>, Store<PodDisruptionBudget>, impl Future<Output = ()> + Send + 'static) {
    let client = &ctx.client;
    let initial = listing::probe(client).await;
    let traffic = |kind| Traffic::new(&ctx.metrics.controller, kind);
    let (node_store, node_watch) = {
        let (wake, mut changes) = (ctx.wake.clone(), super::changes::NodeChanges::default());
        let events = watch_lean::<Node>(client, initial, traffic("Node"));
        reflect(events, "node", strip_node, move |e| changes.observe(e, &wake))
    };
    let (pod_store, pod_watch) = super::podcache::watch(watch_lean(client, initial, traffic("Pod")), ctx.wake.clone());
    let (pdb_store, pdb_watch) = {
        let wake = ctx.wake.clone();
        let events = watch_lean::<PodDisruptionBudget>(client, initial, traffic("PodDisruptionBudget"));
        // A PDB's status moves only with its pods, which count already; counting every event is simpler.
        reflect(events, "poddisruptionbudget", |_| {}, move |_| wake.input_changed(Watched::PodDisruptionBudget))
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

/// Every event of kind `K`, parsed lean (`lean.rs`) and counted as traffic; watch errors back off and
/// the watch resumes.
pub fn watch_lean<K>(
    client: &Client,
    initial: listing::InitialList,
    mut traffic: Traffic,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Slim + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    watcher(Api::<Lean<K>>::all(client.clone()), initial.watcher_config()).default_backoff().map_ok(move |event| {
        let event = lean::unwrap_event(event);
        traffic.observe(&event);
        event
    })
}

/// A reflector of `events`, each stripped of what no decision reads before it is cached and then shown
/// to `observe` (which counts changes), and the future that keeps it fed (errors are logged).
fn reflect<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    what: &'static str,
    strip: fn(&mut K),
    mut observe: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> (kube::runtime::reflector::Store<K>, impl std::future::Future<Output = ()> + Send + 'static)
where
    K: Slim + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = kube::runtime::reflector::store::<K>();
    let stream = events.modify(strip).map_ok(move |event| {
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

/// A large watch's traffic: updates and deletions counted (the initial list's objects are not
/// steady-state traffic), and each complete list counted and logged with its size and duration, which
/// shows how the time to ready splits between the watches and how often a watch has to list again.
pub struct Traffic {
    kind: &'static str,
    events: Counter,
    lists: Counter,
    /// When the list in progress started, and how many objects it brought so far.
    listing: Option<(Instant, usize)>,
}

impl Traffic {
    pub fn new(metrics: &crate::metrics::ControllerMetrics, kind: &'static str) -> Self {
        let label = crate::metrics::KindLabel { kind };
        Self {
            kind,
            events: metrics.watch_events.get_or_create(&label).clone(),
            lists: metrics.watch_lists.get_or_create(&label).clone(),
            listing: None,
        }
    }

    pub fn observe<K>(&mut self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(_) | watcher::Event::Delete(_) => {
                self.events.inc();
            }
            watcher::Event::Init => self.listing = Some((Instant::now(), 0)),
            watcher::Event::InitApply(_) => {
                if let Some((_, objects)) = self.listing.as_mut() {
                    *objects += 1;
                }
            }
            watcher::Event::InitDone => {
                let first = self.lists.inc() == 0;
                let (started, objects) = self.listing.take().unwrap_or((Instant::now(), 0));
                let seconds = started.elapsed().as_secs_f64();
                if first {
                    tracing::info!(watch = self.kind, objects, seconds, "watch listed");
                } else {
                    tracing::warn!(watch = self.kind, objects, seconds, "watch listed everything again");
                }
            }
        }
    }
}

/// What the snapshot and the health checks read of a Node is its name, labels, taints, allocatable,
/// conditions, `unschedulable` and timestamps. The watch parses it lean (`lean.rs`: no managed fields,
/// images, addresses or system info); the annotations and the conditions' heartbeat times (a heartbeat
/// alone changes no decision, see `changes.rs`) are dropped before caching.
pub fn strip_node(node: &mut Node) {
    node.metadata.annotations = None;
    if let Some(status) = node.status.as_mut() {
        for condition in status.conditions.iter_mut().flatten() {
            condition.last_heartbeat_time = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Node;
    use kube::runtime::watcher::Event;
    use prometheus_client::{
        metrics::{counter::Counter, family::Family},
        registry::Registry,
    };

    use super::Traffic;
    use crate::metrics::{KindLabel, Metrics};

    #[test]
    fn updates_and_deletions_count_as_traffic_and_each_completed_list_counts_once() {
        let metrics = Metrics::register(&mut Registry::default());
        let mut traffic = Traffic::new(&metrics.controller, "Node");
        let counter = |family: &Family<KindLabel, Counter>| family.get_or_create(&KindLabel { kind: "Node" }).get();
        let node = Node::default();
        for event in [Event::Init, Event::InitApply(node.clone()), Event::InitApply(node.clone()), Event::InitDone] {
            traffic.observe(&event);
        }
        assert_eq!(counter(&metrics.controller.watch_events), 0, "the initial list is not traffic");
        assert_eq!(counter(&metrics.controller.watch_lists), 1);
        traffic.observe(&Event::Apply(node.clone()));
        traffic.observe(&Event::Delete(node.clone()));
        assert_eq!(counter(&metrics.controller.watch_events), 2);
        // The watch lost its place and lists again.
        for event in [Event::Init, Event::InitApply(node), Event::InitDone] {
            traffic.observe(&event);
        }
        assert_eq!(counter(&metrics.controller.watch_lists), 2);
        assert_eq!(counter(&metrics.controller.watch_events), 2);
    }
}
