//! Safe drain of one node, the step between "this node should go" and deleting it:
//!
//! **cordon → list the node's pods → classify → evict → wait until gone**, one round every
//! `retry_interval`, until nothing is left to move or `started_at + deadline` passes. Then the drain
//! either fails with [`DrainError::Timeout`], naming the pods still there and the PodDisruptionBudgets
//! that blocked them, or, only when the policy says `force`, deletes what is left.
//!
//! Evictions go through the Eviction API, so PDBs are honoured on every path; a refused eviction (HTTP
//! 429) is simply tried again next round. DaemonSet pods, mirror pods and finished pods stay; pods with
//! emptyDir volumes go like any other; bare pods go only when the policy allows it (see [`classify`]).
//!
//! Resumable: every round starts from a fresh list of the node's pods rather than from memory, and the
//! deadline counts from the caller's `started_at`, which the caller persists. After a restart the caller
//! calls [`drain`] again with the same start; pods already evicted are waited for, the rest evicted (again,
//! which is harmless), and the original deadline still holds.
//!
//! A drain touches only the node's `spec.unschedulable` and its pods. It never deletes the node: what a
//! failed drain means is the caller's decision, and a node whose drain failed must stay (pitfall 3).

mod classify;
mod cordon;
mod pdb;

use std::{collections::BTreeSet, time::Duration};

use futures::{StreamExt as _, stream};
use jiff::Timestamp;
use k8s_openapi::api::{core::v1::Pod, policy::v1::PodDisruptionBudget};
use kube::{
    Api, Client,
    api::{DeleteParams, EvictParams, ListParams, Preconditions},
};
use tokio_util::sync::CancellationToken;

pub use classify::{Disposition, MIRROR_ANNOTATION, Plan, PodRef, SkipReason, classify};
pub use cordon::{cordon, uncordon};
pub use pdb::blocking as blocking_pdbs;

/// Evictions in flight at once. Each is one small API call; a few in parallel keep a node with many pods
/// from taking a round trip per pod, without bursting the API server's priority-and-fairness budget.
const EVICTIONS_IN_FLIGHT: usize = 8;

/// How one drain behaves; callers build it from the node group's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainPolicy {
    /// How long after `started_at` the drain gives up (or, with `force`, deletes what is left).
    pub deadline: Duration,
    /// Pause between rounds: refused evictions are retried, and evicted pods looked for, this often.
    pub retry_interval: Duration,
    /// At the deadline, delete the pods still there outright, bypassing PDBs. Never before the deadline.
    pub force: bool,
    /// Evict pods that no controller recreates (they are gone for good). Without it, such a pod fails the
    /// drain at once, before anything is evicted.
    pub evict_bare_pods: bool,
}

impl Default for DrainPolicy {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(300),
            retry_interval: Duration::from_secs(5),
            force: false,
            evict_bare_pods: false,
        }
    }
}

/// A pod the drain left on the node, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedPod {
    pub pod: PodRef,
    pub reason: SkipReason,
}

/// What a completed drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub node: String,
    /// Whether this call cordoned the node. A resumed drain finds it cordoned already and says `false`, so
    /// callers decide what to uncordon from what they persisted around their own [`cordon`] call.
    pub cordoned_by_us: bool,
    /// Pods this call evicted (a resumed drain does not list what an earlier call evicted).
    pub evicted: Vec<PodRef>,
    /// Pods left on the node, as of the last look.
    pub skipped: Vec<SkippedPod>,
    /// Pods deleted outright after the deadline (only with `force`). Their deletion was accepted; like
    /// any deletion, they may still be terminating when the drain returns.
    pub force_deleted: Vec<PodRef>,
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("node {node} not found")]
    NodeNotFound { node: String },
    #[error("cordoning node {node} failed: {source}")]
    Cordon { node: String, source: kube::Error },
    #[error("uncordoning node {node} failed: {source}")]
    Uncordon { node: String, source: kube::Error },
    #[error("listing the pods of node {node} failed: {source}")]
    ListPods { node: String, source: kube::Error },
    #[error("evicting pod {pod} from node {node} failed: {source}")]
    Evict { node: String, pod: PodRef, source: kube::Error },
    #[error("deleting pod {pod} from node {node} after the drain deadline failed: {source}")]
    ForceDelete { node: String, pod: PodRef, source: kube::Error },
    #[error(
        "draining node {node} would lose pods that no controller recreates: {}; the policy does not allow \
         evicting bare pods",
        join(.pods)
    )]
    UnmanagedPods { node: String, pods: Vec<PodRef> },
    /// Worded for the rollback runbook, which greps logs for `timeout` and events for `failed|error`.
    #[error("draining node {node} failed: drain timeout reached; pods still there: {}; {}", join(.pods), blocked_by(.pdbs))]
    Timeout { node: String, pods: Vec<PodRef>, pdbs: Vec<String> },
    #[error("draining node {node} was cancelled")]
    Cancelled { node: String },
}

impl DrainError {
    /// Bounded label for metrics and event reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NodeNotFound { .. } => "NodeNotFound",
            Self::Cordon { .. } => "CordonFailed",
            Self::Uncordon { .. } => "UncordonFailed",
            Self::ListPods { .. } => "ListPodsFailed",
            Self::Evict { .. } => "EvictFailed",
            Self::ForceDelete { .. } => "ForceDeleteFailed",
            Self::UnmanagedPods { .. } => "UnmanagedPods",
            Self::Timeout { .. } => "DrainTimeout",
            Self::Cancelled { .. } => "DrainCancelled",
        }
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn blocked_by(pdbs: &[String]) -> String {
    if pdbs.is_empty() {
        "no PodDisruptionBudget blocks them (still terminating, or evictions failing)".to_string()
    } else {
        format!("blocked by PodDisruptionBudget {}", pdbs.join(", "))
    }
}

/// Drains `node`: see the module documentation. Returns when the node holds nothing more to move, at the
/// deadline (`started_at + policy.deadline`), on an API error (call again with the same `started_at` to
/// resume), or with [`DrainError::Cancelled`] as soon as `cancel` fires; an in-flight request is then
/// dropped, which leaves nothing half-done that a resumed drain would not redo.
pub async fn drain(
    client: &Client,
    node: &str,
    policy: &DrainPolicy,
    started_at: Timestamp,
    cancel: &CancellationToken,
) -> Result<DrainReport, DrainError> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(DrainError::Cancelled { node: node.to_string() }),
        result = run(client, node, policy, started_at) => result,
    }
}

async fn run(
    client: &Client,
    node: &str,
    policy: &DrainPolicy,
    started_at: Timestamp,
) -> Result<DrainReport, DrainError> {
    let deadline = started_at.checked_add(policy.deadline).unwrap_or(Timestamp::MAX);
    let on_node: Api<Pod> = Api::all(client.clone());
    let mut report =
        DrainReport { node: node.to_string(), cordoned_by_us: cordon(client, node).await?, ..Default::default() };
    let mut evicted = BTreeSet::new();
    loop {
        let pods = on_node
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .map_err(|source| DrainError::ListPods { node: node.to_string(), source })?
            .items;
        let plan = Plan::of(&pods, policy);
        report.skipped =
            plan.skipped.iter().map(|(pod, reason)| SkippedPod { pod: pod.clone(), reason: *reason }).collect();
        // Refused before evicting anything: a drain that cannot finish should not disrupt on the way.
        if !plan.unmanaged.is_empty() {
            return Err(DrainError::UnmanagedPods { node: node.to_string(), pods: plan.unmanaged });
        }
        if plan.is_done() {
            tracing::info!(node, evicted = report.evicted.len(), skipped = report.skipped.len(), "drained node");
            return Ok(report);
        }
        if Timestamp::now() >= deadline {
            let remaining: Vec<&Pod> = plan.remaining().collect();
            if policy.force {
                report.force_deleted = force_delete(client, node, &remaining).await?;
                return Ok(report);
            }
            // Only pods whose evictions were refused can be held by a budget; the rest are terminating.
            let pdbs = blocking_budgets(client, &plan.evict).await;
            let pods = remaining.iter().map(|p| PodRef::of(p)).collect();
            return Err(DrainError::Timeout { node: node.to_string(), pods, pdbs });
        }

        // Owned refs, not borrows of `pods`: a closure over borrowed items makes this future !Send, and the
        // controller spawns drains.
        let targets: Vec<PodRef> = plan.evict.iter().map(|pod| PodRef::of(pod)).collect();
        let outcomes: Vec<_> = stream::iter(targets)
            .map(|pod| evict(client, node, pod))
            .buffer_unordered(EVICTIONS_IN_FLIGHT)
            .collect()
            .await;
        for outcome in outcomes {
            if let Evicted::Yes(pod) = outcome?
                && evicted.insert(pod.clone())
            {
                report.evicted.push(pod);
            }
        }

        // Wake at the deadline itself rather than a whole interval after it.
        let until_deadline = Duration::try_from(deadline.duration_since(Timestamp::now())).unwrap_or_default();
        tokio::time::sleep(policy.retry_interval.min(until_deadline)).await;
    }
}

enum Evicted {
    Yes(PodRef),
    /// Refused for now (a PDB, or the API server busy): next round tries again.
    NotYet,
    /// Gone already, or replaced by a new pod of the same name, which the next list will show.
    Gone,
}

async fn evict(client: &Client, node: &str, pod: PodRef) -> Result<Evicted, DrainError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    // The uid precondition keeps a stale round from evicting a same-named successor.
    let params = EvictParams {
        delete_options: Some(DeleteParams {
            preconditions: Some(Preconditions { uid: pod.uid.clone(), resource_version: None }),
            ..DeleteParams::default()
        }),
        ..EvictParams::default()
    };
    match api.evict(&pod.name, &params).await {
        Ok(_) => {
            tracing::info!(node, pod = %pod, "evicted pod");
            Ok(Evicted::Yes(pod))
        }
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(Evicted::Gone),
        // Waits, all bounded by the deadline: 429 is a PDB saying "not now" (or API throttling); 5xx includes
        // the answer for a pod covered by two PDBs, which an operator can fix meanwhile; a 403 because the
        // namespace is being deleted means its controller deletes the pod anyway (as `kubectl drain` does).
        Err(kube::Error::Api(status)) if status.code == 429 || status.code >= 500 || namespace_terminating(&status) => {
            tracing::debug!(node, pod = %pod, code = status.code, message = %status.message, "eviction refused");
            Ok(Evicted::NotYet)
        }
        Err(source) => Err(DrainError::Evict { node: node.to_string(), pod, source }),
    }
}

fn namespace_terminating(status: &kube::core::Status) -> bool {
    status.code == 403
        && status.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
}

/// Deletes what is left after the deadline. Bypasses PDBs by design: the policy asked for it.
async fn force_delete(client: &Client, node: &str, pods: &[&Pod]) -> Result<Vec<PodRef>, DrainError> {
    let mut deleted = Vec::new();
    for pod in pods.iter().map(|p| PodRef::of(p)) {
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: pod.uid.clone(), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&pod.name, &params).await {
            Ok(_) => {
                tracing::warn!(node, pod = %pod, "deleted pod outright after the drain deadline");
                deleted.push(pod);
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(source) => return Err(DrainError::ForceDelete { node: node.to_string(), pod, source }),
        }
    }
    Ok(deleted)
}

/// The PDBs to name in a timeout. Best effort: failing to list them must not hide the timeout itself.
async fn blocking_budgets(client: &Client, pods: &[&Pod]) -> Vec<String> {
    let namespaces: BTreeSet<&str> = pods.iter().filter_map(|p| p.metadata.namespace.as_deref()).collect();
    let mut budgets = Vec::new();
    for ns in namespaces {
        match Api::<PodDisruptionBudget>::namespaced(client.clone(), ns).list(&ListParams::default()).await {
            Ok(list) => budgets.extend(list.items),
            Err(e) => {
                tracing::warn!(namespace = ns, error = %e, "cannot list PodDisruptionBudgets to explain a drain timeout")
            }
        }
    }
    pdb::blocking(pods.iter().copied(), &budgets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> PodRef {
        PodRef { namespace: "shop".into(), name: name.into(), uid: Some(format!("uid-{name}")) }
    }

    #[test]
    fn a_timeout_names_every_pod_left_and_every_blocking_pdb() {
        let err = DrainError::Timeout {
            node: "n1".into(),
            pods: vec![pod("db-0"), pod("db-1")],
            pdbs: vec!["shop/db".into()],
        };
        assert_eq!(
            err.to_string(),
            "draining node n1 failed: drain timeout reached; pods still there: shop/db-0, shop/db-1; blocked by \
             PodDisruptionBudget shop/db"
        );
        assert_eq!(err.kind(), "DrainTimeout");
    }

    #[test]
    fn a_timeout_matches_the_runbooks_log_and_event_greps() {
        let err = DrainError::Timeout { node: "n1".into(), pods: vec![pod("db-0")], pdbs: vec!["shop/db".into()] };
        let message = err.to_string();
        // `grep -i timeout` on the logs, `grep -i "failed\|error"` on the events.
        assert!(message.to_lowercase().contains("timeout"), "{message}");
        assert!(message.to_lowercase().contains("failed"), "{message}");
        for named in ["n1", "shop/db-0", "PodDisruptionBudget shop/db"] {
            assert!(message.contains(named), "{named} missing from {message}");
        }
    }

    #[test]
    fn a_timeout_without_a_blocking_pdb_says_so() {
        let err = DrainError::Timeout { node: "n1".into(), pods: vec![pod("slow")], pdbs: vec![] };
        assert!(err.to_string().contains("no PodDisruptionBudget blocks them"), "{err}");
    }

    #[test]
    fn a_refusal_to_lose_bare_pods_names_them() {
        let err = DrainError::UnmanagedPods { node: "n1".into(), pods: vec![pod("solo")] };
        assert!(err.to_string().contains("shop/solo"), "{err}");
        assert_eq!(err.kind(), "UnmanagedPods");
    }

    #[test]
    fn an_eviction_forbidden_only_because_the_namespace_is_terminating_is_a_wait_not_a_failure() {
        let status = |code: u16, cause: &str| -> kube::core::Status {
            serde_json::from_value(serde_json::json!({"code": code, "details": {"causes": [{"reason": cause}]}}))
                .expect("status fixture")
        };
        assert!(namespace_terminating(&status(403, "NamespaceTerminating")));
        assert!(!namespace_terminating(&status(403, "FieldValueForbidden")));
        assert!(!namespace_terminating(&status(422, "NamespaceTerminating")));
    }

    #[test]
    fn the_default_policy_never_forces_and_never_loses_bare_pods() {
        let policy = DrainPolicy::default();
        assert!(!policy.force && !policy.evict_bare_pods);
        assert!(policy.retry_interval < policy.deadline);
    }
}
