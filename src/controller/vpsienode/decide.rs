//! The phase machine's decisions, as pure functions of the record the controller last wrote (or read
//! fresh) and the clock. The async steps only carry them out, so every branch is tested here without a
//! cluster, and no branch can read a copy other than the one it is handed.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::{
    crd::{DRAIN_REQUEST_ANNOTATION, VPSieNode, VPSieNodeStatus},
    drain::DrainError,
};

/// First wait after a blocked scale-down drain; each further blocked drain in a row doubles it.
pub const DRAIN_BACKOFF_BASE: Duration = Duration::from_secs(5 * 60);
/// The longest wait between two scale-down drains of one node.
pub const DRAIN_BACKOFF_MAX: Duration = Duration::from_secs(4 * 60 * 60);

/// What a `Ready` VPSieNode does in this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyStep {
    /// The record says we cordoned the node, yet no drain is running: a drain that ended without its
    /// uncordon (a crash, an older version). Uncordon it; a cordon we did not record is never touched.
    RepairCordon { node: String },
    /// Scale-down asked for a drain this controller has not answered yet.
    StartDrain { request: String },
    /// Keep the node labelled and serving.
    Keep,
}

pub fn ready_step(vn: &VPSieNode, now: Timestamp) -> ReadyStep {
    let status = vn.status.clone().unwrap_or_default();
    if status.cordoned_by_us
        && let Some(node) = status.node_name.clone()
    {
        return ReadyStep::RepairCordon { node };
    }
    let request = vn.metadata.annotations.as_ref().and_then(|a| a.get(DRAIN_REQUEST_ANNOTATION));
    match request {
        Some(request) if status.drain_request.as_ref() != Some(request) && !backing_off(&status, now) => {
            ReadyStep::StartDrain { request: request.clone() }
        }
        _ => ReadyStep::Keep,
    }
}

/// Whether a scale-down drain of this node is still held back after a blocked one.
pub fn backing_off(status: &VPSieNodeStatus, now: Timestamp) -> bool {
    status.drain_retry_after.as_ref().is_some_and(|t| t.0 > now)
}

/// How a scale-down drain that could not finish is undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiveUp {
    /// The node to uncordon: only when our record says the cordon is ours.
    pub uncordon: Option<String>,
    /// Reason of the return to `Ready`; says what blocked.
    pub reason: &'static str,
    /// Blocked drains in a row, this one included.
    pub failures: u32,
    /// Scale-down leaves the node alone until then.
    pub retry_after: Timestamp,
}

/// Decides from `written`, the record this reconcile wrote before the drain started (never from the copy
/// the reconcile began with, which predates the cordon record).
pub fn give_up_drain(written: &VPSieNodeStatus, error: &DrainError, now: Timestamp) -> GiveUp {
    let failures = written.drain_failures.saturating_add(1);
    let reason = match error {
        DrainError::UnmanagedPods { .. } => "UnmanagedPods",
        DrainError::Timeout { pdbs, .. } if !pdbs.is_empty() => "DrainBlockedByPDB",
        _ => "DrainTimeout",
    };
    GiveUp {
        uncordon: written.cordoned_by_us.then(|| written.node_name.clone()).flatten(),
        reason,
        failures,
        retry_after: now
            .saturating_add(SignedDuration::try_from(backoff(failures)).unwrap_or(SignedDuration::MAX))
            .unwrap_or(Timestamp::MAX),
    }
}

/// The wait after `failures` blocked drains in a row: the base, doubled per further failure, capped.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    DRAIN_BACKOFF_BASE.saturating_mul(1 << doublings).min(DRAIN_BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::{
        crd::{VPSieNodePhase, VPSieNodeSpec},
        drain::PodRef,
    };

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn ready(status: VPSieNodeStatus, request: Option<&str>) -> VPSieNode {
        let annotations = request.map(|r| BTreeMap::from([(DRAIN_REQUEST_ANNOTATION.to_string(), r.to_string())]));
        VPSieNode {
            metadata: ObjectMeta { name: Some("web-abcde".into()), annotations, ..ObjectMeta::default() },
            spec: VPSieNodeSpec {
                node_group: "web".into(),
                offering: "plan-1".into(),
                cluster_identifier: "c".into(),
                datacenter: "dc".into(),
            },
            status: Some(VPSieNodeStatus { phase: VPSieNodePhase::Ready, node_name: Some("node-a".into()), ..status }),
        }
    }

    fn timeout(pdbs: &[&str]) -> DrainError {
        DrainError::Timeout {
            node: "node-a".into(),
            pods: vec![PodRef { namespace: "ns".into(), name: "web-1".into(), uid: None }],
            pdbs: pdbs.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_new_drain_request_starts_a_drain() {
        let vn = ready(VPSieNodeStatus::default(), Some("t1; unneeded"));
        assert_eq!(ready_step(&vn, now()), ReadyStep::StartDrain { request: "t1; unneeded".into() });
    }

    #[test]
    fn a_request_already_answered_is_not_acted_on_again() {
        let status = VPSieNodeStatus { drain_request: Some("t1; unneeded".into()), ..Default::default() };
        assert_eq!(ready_step(&ready(status, Some("t1; unneeded")), now()), ReadyStep::Keep);
    }

    #[test]
    fn a_new_request_during_the_backoff_waits_for_its_end() {
        let status = VPSieNodeStatus {
            drain_request: Some("t1".into()),
            drain_retry_after: Some(Time(now().saturating_add(SignedDuration::from_secs(1)).unwrap())),
            ..Default::default()
        };
        assert_eq!(ready_step(&ready(status.clone(), Some("t2")), now()), ReadyStep::Keep);
        let later = now().saturating_add(SignedDuration::from_secs(2)).unwrap();
        assert_eq!(ready_step(&ready(status, Some("t2")), later), ReadyStep::StartDrain { request: "t2".into() });
    }

    #[test]
    fn a_ready_node_recorded_as_cordoned_by_us_is_uncordoned_before_anything_else() {
        let status = VPSieNodeStatus { cordoned_by_us: true, ..Default::default() };
        assert_eq!(ready_step(&ready(status, Some("t1")), now()), ReadyStep::RepairCordon { node: "node-a".into() });
    }

    #[test]
    fn a_ready_node_without_our_cordon_record_is_left_as_it_is() {
        assert_eq!(ready_step(&ready(VPSieNodeStatus::default(), None), now()), ReadyStep::Keep);
    }

    #[test]
    fn a_blocked_drain_uncordons_when_the_written_record_says_the_cordon_is_ours() {
        let written = VPSieNodeStatus {
            cordoned_by_us: true,
            node_name: Some("node-a".into()),
            draining_started_at: Some(Time(now())),
            ..Default::default()
        };
        let plan = give_up_drain(&written, &timeout(&[]), now());
        assert_eq!(plan.uncordon.as_deref(), Some("node-a"));
        assert_eq!(plan.reason, "DrainTimeout");
    }

    #[test]
    fn a_blocked_drain_never_uncordons_a_cordon_someone_else_made() {
        let written = VPSieNodeStatus { cordoned_by_us: false, node_name: Some("node-a".into()), ..Default::default() };
        assert_eq!(give_up_drain(&written, &timeout(&[]), now()).uncordon, None);
    }

    #[test]
    fn the_reason_says_what_blocked_the_drain() {
        let written = VPSieNodeStatus::default();
        assert_eq!(give_up_drain(&written, &timeout(&["ns/web-pdb"]), now()).reason, "DrainBlockedByPDB");
        let unmanaged = DrainError::UnmanagedPods { node: "node-a".into(), pods: vec![] };
        assert_eq!(give_up_drain(&written, &unmanaged, now()).reason, "UnmanagedPods");
    }

    #[test]
    fn each_blocked_drain_in_a_row_doubles_the_wait_up_to_the_cap() {
        let first = give_up_drain(&VPSieNodeStatus::default(), &timeout(&[]), now());
        assert_eq!(first.failures, 1);
        assert_eq!(first.retry_after, now().saturating_add(SignedDuration::from_secs(300)).unwrap());
        let third = VPSieNodeStatus { drain_failures: 2, ..Default::default() };
        assert_eq!(give_up_drain(&third, &timeout(&[]), now()).failures, 3);
        assert_eq!(backoff(3), Duration::from_secs(1200));
        assert_eq!(backoff(40), DRAIN_BACKOFF_MAX);
    }
}
