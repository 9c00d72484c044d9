//! The pod watch cache: every pod of the cluster as the snapshot's plain data, converted once when the
//! watch delivers a change instead of once per planning pass, and without the parts of a `Pod` no
//! decision reads (managed fields, container images, env, probes, status details). At 30,000 pods that
//! is the difference between most of a pass and almost none of it, and between hundreds of MiB and tens.
//!
//! Pipeline: observe (a pod watch), convert (to [`PodRecord`] once per change), store (a kube reflector
//! of [`WatchedPod`]), signal (a pod the scheduler gave up on wakes the autoscale loop).

use std::{borrow::Cow, sync::Arc};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{
    reflector::{self, Lookup, Store},
    watcher,
};

use super::wake::{Wake, Watched};
use crate::snapshot::{PodRecord, convert::pod_record_shared, intern::Interner, pod_record};

/// One watched pod: what the snapshot needs of it, or why it cannot be read.
#[derive(Debug, Clone)]
pub struct WatchedPod(pub PodRecord);

impl WatchedPod {
    pub fn from_pod(pod: &Pod) -> Self {
        Self(pod_record(pod))
    }

    fn from_pod_shared(pod: &Pod, interner: &mut Interner) -> Self {
        Self(pod_record_shared(pod, interner))
    }

    fn namespace_and_name(&self) -> (&str, &str) {
        match &self.0 {
            Ok(info) => (&info.namespace, &info.name),
            // An unreadable pod is recorded as `namespace/name`; namespaces cannot contain a slash.
            Err(skipped) => skipped.name.split_once('/').unwrap_or(("", &skipped.name)),
        }
    }

    /// The scheduler gave up on it and it waits for a node that does not exist yet.
    pub fn is_pending_unschedulable(&self) -> bool {
        self.0.as_ref().is_ok_and(|p| p.is_pending_unschedulable())
    }
}

/// Lets the reflector key the converted pods as it keys `Pod`s: by namespace and name.
impl Lookup for WatchedPod {
    type DynamicType = ();

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn name(&self) -> Option<Cow<'_, str>> {
        Some(self.namespace_and_name().1.into())
    }
    fn namespace(&self) -> Option<Cow<'_, str>> {
        Some(self.namespace_and_name().0.into())
    }
    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }
    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

/// Converts one watch event; a pod that became (or still is) unschedulable wakes the planner, whose
/// batching window folds a burst of them into one pass. An update that leaves the converted record as
/// `cached` holds it (a status detail no decision reads) is not counted as a change.
fn convert(
    event: watcher::Event<Pod>,
    cached: &Store<WatchedPod>,
    wake: &Wake,
    interner: &mut Interner,
) -> watcher::Event<WatchedPod> {
    match event {
        watcher::Event::Apply(pod) => {
            let watched = WatchedPod::from_pod_shared(&pod, interner);
            if watched.is_pending_unschedulable() {
                wake.pod_unschedulable();
            } else if cached.get(&reflector::ObjectRef::from_obj(&watched)).is_none_or(|before| before.0 != watched.0) {
                wake.input_changed(Watched::Pod);
            }
            watcher::Event::Apply(watched)
        }
        watcher::Event::Delete(pod) => {
            wake.input_changed(Watched::Pod);
            watcher::Event::Delete(WatchedPod::from_pod(&pod))
        }
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(pod) => watcher::Event::InitApply(WatchedPod::from_pod_shared(&pod, interner)),
        watcher::Event::InitDone => {
            // A relist replaces the whole cache: whatever it brought counts as changed.
            wake.input_changed(Watched::Pod);
            watcher::Event::InitDone
        }
    }
}

/// The pod cache of the pod watch's `events` (`caches::watch_lean`), and the future that keeps it fed
/// (watch errors are logged).
pub fn watch(
    events: impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send + 'static,
    wake: Arc<Wake>,
) -> (Store<WatchedPod>, impl Future<Output = ()> + Send + 'static) {
    let (store, writer) = reflector::store::<WatchedPod>();
    let stream = events.map_ok({
        // One interner for the cache's life: a pod's labels are shared with its replicas'.
        let mut interner = Interner::default();
        // The reflector stores a converted event after this returns: the store still holds the previous one.
        let cached = store.clone();
        move |event| convert(event, &cached, &wake, &mut interner)
    });
    let fed = reflector::reflector(writer, stream).for_each(|event| async move {
        if let Err(e) = event {
            tracing::warn!(error = %e, watch = "pod", "watch error");
        }
    });
    (store, fed)
}

/// Pods the scheduler gave up on, from the cache.
pub fn unschedulable_pods(pods: &[Arc<WatchedPod>]) -> usize {
    pods.iter().filter(|p| p.is_pending_unschedulable()).count()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::{
        reflector::{self, Lookup, Store, store::Writer},
        watcher,
    };
    use serde_json::json;

    use super::{WatchedPod, convert, unschedulable_pods};
    use crate::controller::wake::{Wake, Watched};
    use crate::snapshot::intern::Interner;

    fn pod(name: &str, node: Option<&str>, unschedulable: bool) -> Pod {
        let status = if unschedulable {
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]})
        } else {
            json!({"phase": "Running"})
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": "250m"}}}]},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_watched_pod_is_keyed_by_its_namespace_and_name_even_when_it_cannot_be_read() {
        let good = WatchedPod::from_pod(&pod("web-1", Some("n1"), false));
        assert_eq!((good.namespace().as_deref(), good.name().as_deref()), (Some("shop"), Some("web-1")));
        let mut bad = pod("web-2", Some("n1"), false);
        bad.spec.as_mut().unwrap().containers[0]
            .resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap()
            .insert("cpu".into(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("lots".into()));
        let bad = WatchedPod::from_pod(&bad);
        assert!(bad.0.is_err(), "{bad:?}");
        assert_eq!((bad.namespace().as_deref(), bad.name().as_deref()), (Some("shop"), Some("web-2")));
    }

    /// A pod cache fed by hand: each event is converted against the store, then applied to it, as the
    /// reflector does.
    struct Cache {
        store: Store<WatchedPod>,
        writer: Writer<WatchedPod>,
        wake: Wake,
        interner: Interner,
    }

    impl Cache {
        fn new() -> Self {
            let (store, writer) = reflector::store::<WatchedPod>();
            Self { store, writer, wake: Wake::default(), interner: Interner::default() }
        }

        fn feed(&mut self, event: watcher::Event<Pod>) -> watcher::Event<WatchedPod> {
            let converted = convert(event, &self.store, &self.wake, &mut self.interner);
            self.writer.apply_watcher_event(&converted);
            converted
        }
    }

    #[test]
    fn only_an_unschedulable_pod_wakes_the_planner() {
        let mut cache = Cache::new();
        cache.feed(watcher::Event::Apply(pod("running", Some("n1"), false)));
        cache.feed(watcher::Event::InitApply(pod("listed", None, true)));
        assert_eq!(cache.wake.pending(), 0, "a running pod and a relisted one wake nothing");
        cache.feed(watcher::Event::Apply(pod("waiting", None, true)));
        assert_eq!(cache.wake.pending(), 1);
    }

    #[test]
    fn an_update_no_decision_reads_is_not_counted_as_a_change_and_a_move_is() {
        let mut cache = Cache::new();
        cache.feed(watcher::Event::Apply(pod("web-1", Some("n1"), false)));
        let after_add = cache.wake.changes().of(Watched::Pod);
        assert_eq!(after_add, 1, "a new pod is a change");

        let mut restarted = pod("web-1", Some("n1"), false);
        restarted.status.as_mut().unwrap().container_statuses =
            Some(vec![k8s_openapi::api::core::v1::ContainerStatus { restart_count: 3, ..Default::default() }]);
        restarted.metadata.resource_version = Some("42".into());
        cache.feed(watcher::Event::Apply(restarted));
        assert_eq!(cache.wake.changes().of(Watched::Pod), after_add, "a restart count is not in the record");

        cache.feed(watcher::Event::Apply(pod("web-1", Some("n2"), false)));
        assert_eq!(cache.wake.changes().of(Watched::Pod), after_add + 1, "bound to another node");
        cache.feed(watcher::Event::Delete(pod("web-1", Some("n2"), false)));
        assert_eq!(cache.wake.changes().of(Watched::Pod), after_add + 2, "gone");
        assert_eq!(cache.wake.pending(), 0, "none of it asks for a pass now");
    }

    #[test]
    fn replicas_with_equal_labels_and_tolerations_share_one_copy_in_the_cache() {
        let mut cache = Cache::new();
        let mut cached = |p: Pod| match cache.feed(watcher::Event::InitApply(p)) {
            watcher::Event::InitApply(WatchedPod(Ok(info))) => info,
            other => panic!("{other:?}"),
        };
        let tolerating = |mut p: Pod| {
            p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
            p.spec.as_mut().unwrap().tolerations = Some(vec![k8s_openapi::api::core::v1::Toleration {
                key: Some("node.kubernetes.io/not-ready".into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(300),
                ..Default::default()
            }]);
            p
        };
        let a = cached(tolerating(pod("web-1", Some("n1"), false)));
        let b = cached(tolerating(pod("web-2", Some("n2"), false)));
        assert!(Arc::ptr_eq(&a.labels, &b.labels) && Arc::ptr_eq(&a.tolerations, &b.tolerations));
        assert_eq!(a.tolerations.len(), 1);
        let mut other = pod("api-1", Some("n1"), false);
        other.metadata.labels = Some([("app".to_string(), "api".to_string())].into());
        let c = cached(other);
        assert!(!Arc::ptr_eq(&a.labels, &c.labels));
        assert_eq!(c.labels.get("app").map(String::as_str), Some("api"));
    }

    #[test]
    fn only_unbound_pods_the_scheduler_gave_up_on_are_counted_as_unschedulable() {
        let pods: Vec<Arc<WatchedPod>> =
            [pod("a", None, true), pod("b", None, true), pod("bound", Some("n1"), false), pod("new", None, false)]
                .iter()
                .map(|p| Arc::new(WatchedPod::from_pod(p)))
                .collect();
        assert_eq!(unschedulable_pods(&pods), 2);
    }
}
