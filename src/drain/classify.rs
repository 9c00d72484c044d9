//! Which pods of a node a drain evicts, waits for, leaves alone, or refuses to touch. Pure, so every rule
//! is a plain unit test.

use std::fmt;

use k8s_openapi::api::core::v1::Pod;

use super::DrainPolicy;

/// The annotation the kubelet puts on the API copy of a static pod. Evicting it does nothing (the kubelet
/// recreates it from its manifest), so a drain must not wait for it.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A pod named the way `kubectl` names it, with the uid that tells it apart from a later pod of the same
/// name (a StatefulSet recreates `web-0` as `web-0`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl PodRef {
    pub fn of(pod: &Pod) -> Self {
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone(),
        }
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a pod is left on the node. Bounded, so it can be a metric label or an event reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// Its DaemonSet tolerates the cordon and would put it straight back; it goes with the node.
    DaemonSet,
    /// The API copy of a static pod; the kubelet owns it.
    Mirror,
    /// Succeeded or Failed: it no longer runs, so there is nothing to move.
    Terminal,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DaemonSet => "DaemonSet",
            Self::Mirror => "Mirror",
            Self::Terminal => "Terminal",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a drain does with one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Ask the Eviction API to remove it (PDBs decide when).
    Evict,
    /// Already being deleted (evicted by us before a restart, or by someone else): wait for it to go.
    /// Evicting it again would change nothing.
    AwaitDeletion,
    /// Leave it on the node.
    Skip(SkipReason),
    /// No controller would recreate it and the policy does not allow losing it.
    Unmanaged,
}

/// Decides one pod. The order matters: a pod the drain never waits for (mirror, DaemonSet, finished)
/// is skipped even while it is being deleted.
pub fn classify(pod: &Pod, policy: &DrainPolicy) -> Disposition {
    if pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(MIRROR_ANNOTATION)) {
        return Disposition::Skip(SkipReason::Mirror);
    }
    let controller = controller_kind(pod);
    if controller == Some("DaemonSet") {
        return Disposition::Skip(SkipReason::DaemonSet);
    }
    if matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")) {
        return Disposition::Skip(SkipReason::Terminal);
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Disposition::AwaitDeletion;
    }
    if controller.is_none() && !policy.evict_bare_pods {
        return Disposition::Unmanaged;
    }
    Disposition::Evict
}

/// The kind of the owner that manages the pod, if any (the ownerReference with `controller: true`).
fn controller_kind(pod: &Pod) -> Option<&str> {
    pod.metadata.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true)).map(|r| r.kind.as_str())
}

/// The pods of one node, sorted by what the drain does with them.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    pub evict: Vec<&'a Pod>,
    pub awaiting: Vec<&'a Pod>,
    pub skipped: Vec<(PodRef, SkipReason)>,
    pub unmanaged: Vec<PodRef>,
}

impl<'a> Plan<'a> {
    pub fn of(pods: &'a [Pod], policy: &DrainPolicy) -> Self {
        let mut plan = Plan::default();
        for pod in pods {
            match classify(pod, policy) {
                Disposition::Evict => plan.evict.push(pod),
                Disposition::AwaitDeletion => plan.awaiting.push(pod),
                Disposition::Skip(reason) => plan.skipped.push((PodRef::of(pod), reason)),
                Disposition::Unmanaged => plan.unmanaged.push(PodRef::of(pod)),
            }
        }
        plan
    }

    /// Nothing left that the drain moves or waits for.
    pub fn is_done(&self) -> bool {
        self.evict.is_empty() && self.awaiting.is_empty()
    }

    /// The pods still holding the drain up.
    pub fn remaining(&self) -> impl Iterator<Item = &'a Pod> + '_ {
        self.evict.iter().chain(&self.awaiting).copied()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A running pod owned by a ReplicaSet; the builders below change one thing each.
    fn pod(name: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                    "uid": "rs-uid", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "pause"}]},
            "status": {"phase": "Running"},
        }))
        .expect("fixture pod")
    }

    fn owned_by(mut pod: Pod, kind: &str) -> Pod {
        if let Some(refs) = pod.metadata.owner_references.as_mut() {
            refs[0].kind = kind.to_string();
        }
        pod
    }

    fn bare(mut pod: Pod) -> Pod {
        pod.metadata.owner_references = None;
        pod
    }

    fn in_phase(mut pod: Pod, phase: &str) -> Pod {
        pod.status.get_or_insert_default().phase = Some(phase.to_string());
        pod
    }

    fn deleting(mut pod: Pod) -> Pod {
        pod.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        pod
    }

    fn mirror(mut pod: Pod) -> Pod {
        pod.metadata.annotations.get_or_insert_default().insert(MIRROR_ANNOTATION.into(), "hash".into());
        pod
    }

    fn with_empty_dir(mut pod: Pod) -> Pod {
        if let Some(spec) = pod.spec.as_mut() {
            spec.volumes =
                Some(vec![serde_json::from_value(json!({"name": "scratch", "emptyDir": {}})).expect("fixture volume")]);
        }
        pod
    }

    fn strict() -> DrainPolicy {
        DrainPolicy { evict_bare_pods: false, ..DrainPolicy::default() }
    }

    fn lenient() -> DrainPolicy {
        DrainPolicy { evict_bare_pods: true, ..DrainPolicy::default() }
    }

    #[test]
    fn a_replicaset_pod_is_evicted() {
        assert_eq!(classify(&pod("web"), &strict()), Disposition::Evict);
    }

    #[test]
    fn a_pod_with_an_empty_dir_volume_is_evicted_like_any_other() {
        assert_eq!(classify(&with_empty_dir(pod("cache")), &strict()), Disposition::Evict);
    }

    #[test]
    fn a_daemonset_pod_is_skipped() {
        assert_eq!(classify(&owned_by(pod("ds"), "DaemonSet"), &strict()), Disposition::Skip(SkipReason::DaemonSet));
    }

    #[test]
    fn a_daemonset_pod_being_deleted_is_still_skipped_rather_than_waited_for() {
        let p = deleting(owned_by(pod("ds"), "DaemonSet"));
        assert_eq!(classify(&p, &strict()), Disposition::Skip(SkipReason::DaemonSet));
    }

    #[test]
    fn a_mirror_pod_is_skipped_even_without_any_owner() {
        assert_eq!(classify(&mirror(bare(pod("etcd"))), &strict()), Disposition::Skip(SkipReason::Mirror));
    }

    #[test]
    fn succeeded_and_failed_pods_are_skipped_as_terminal() {
        for phase in ["Succeeded", "Failed"] {
            let p = in_phase(pod("job"), phase);
            assert_eq!(classify(&p, &strict()), Disposition::Skip(SkipReason::Terminal), "{phase}");
        }
        assert_eq!(
            classify(&in_phase(bare(pod("done")), "Succeeded"), &strict()),
            Disposition::Skip(SkipReason::Terminal)
        );
    }

    #[test]
    fn pending_and_unknown_pods_are_still_evicted() {
        for phase in ["Pending", "Unknown"] {
            assert_eq!(classify(&in_phase(pod("p"), phase), &strict()), Disposition::Evict, "{phase}");
        }
    }

    #[test]
    fn a_pod_being_deleted_is_waited_for_not_evicted_again() {
        assert_eq!(classify(&deleting(pod("web")), &strict()), Disposition::AwaitDeletion);
        assert_eq!(classify(&deleting(bare(pod("solo"))), &strict()), Disposition::AwaitDeletion);
    }

    #[test]
    fn a_bare_pod_is_evicted_only_when_the_policy_allows_it() {
        assert_eq!(classify(&bare(pod("solo")), &strict()), Disposition::Unmanaged);
        assert_eq!(classify(&bare(pod("solo")), &lenient()), Disposition::Evict);
    }

    #[test]
    fn an_owner_reference_that_is_not_the_controller_does_not_make_a_pod_managed() {
        let mut p = pod("adopted");
        if let Some(refs) = p.metadata.owner_references.as_mut() {
            refs[0].controller = None;
        }
        assert_eq!(classify(&p, &strict()), Disposition::Unmanaged);
    }

    #[test]
    fn a_plan_sorts_a_nodes_pods_and_is_done_only_when_nothing_is_left_to_move_or_wait_for() {
        let pods = vec![
            pod("web"),
            owned_by(pod("ds"), "DaemonSet"),
            deleting(pod("old")),
            bare(pod("solo")),
            in_phase(pod("job"), "Succeeded"),
        ];
        let plan = Plan::of(&pods, &strict());
        let names = |v: &[&Pod]| v.iter().map(|p| PodRef::of(p).to_string()).collect::<Vec<_>>();
        assert_eq!(names(&plan.evict), ["ns/web"]);
        assert_eq!(names(&plan.awaiting), ["ns/old"]);
        assert_eq!(plan.unmanaged.iter().map(ToString::to_string).collect::<Vec<_>>(), ["ns/solo"]);
        let skipped: Vec<_> = plan.skipped.iter().map(|(p, r)| (p.name.as_str(), *r)).collect();
        assert_eq!(skipped, [("ds", SkipReason::DaemonSet), ("job", SkipReason::Terminal)]);
        assert_eq!(plan.remaining().count(), 2);
        assert!(!plan.is_done());

        let only_skipped = vec![owned_by(pod("ds"), "DaemonSet"), mirror(pod("static"))];
        assert!(Plan::of(&only_skipped, &strict()).is_done());
    }
}
