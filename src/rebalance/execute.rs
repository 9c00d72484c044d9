//! The step machine of one running operation, pure: from what the Rebalance's status records and a fresh
//! look at what its steps touch, the one next thing to do. The controller acts on it, writes the
//! outcome, and asks again; a controller that restarts asks the same question of the same record, so
//! resuming needs no memory of its own.
//!
//! Per replacement: `Pending → Provisioning → ReplacementReady → Cordoned → Draining → Verifying →
//! Removing → Done`. `rolling` keeps at most `maxConcurrent` replacements between `Provisioning` and
//! `Removing`; `surge` provisions every replacement at once and cordons none before all are Ready, then
//! drains `maxConcurrent` at a time. Once the old VPSieNode is being deleted (`Removing`) a step is
//! committed: a rollback lets it finish and keeps the replacement.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::crd::{
    RebalancePhase, RebalanceStatus,
    nodegroup::RebalanceStrategy,
    rebalance::{RollbackTrigger, StepPhase},
    vpsienode::VPSieNodePhase,
};

/// The group's settings in force for the operation (from its spec).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub strategy: RebalanceStrategy,
    pub max_concurrent: usize,
    pub drain_timeout: Duration,
    pub health_check_interval: Duration,
    pub rollback_on_failure: bool,
}

/// A replacement VPSieNode as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Replacement {
    pub phase: VPSieNodePhase,
    /// Its linked Node.
    pub node: Option<String>,
    /// Its Node is linked and Ready.
    pub node_ready: bool,
    pub deleting: bool,
    /// `reason: message` of its status, for the rollback record.
    pub detail: String,
    /// What VPSie charges for it, once known.
    pub hourly_price: Option<f64>,
}

/// One step's objects as read now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepView {
    pub replacement: Option<Replacement>,
    pub old_vpsienode_exists: bool,
    /// The old VPSieNode has a deletion timestamp: its VM is on its way out, the step is committed.
    pub old_vpsienode_deleting: bool,
    /// `spec.unschedulable` of the old node; `None` when the node is gone.
    pub old_node_unschedulable: Option<bool>,
}

/// The operation's world as read now.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub now: Timestamp,
    /// One per status step, same order.
    pub steps: Vec<StepView>,
    /// The cause a person gave when asking for a rollback.
    pub rollback_requested: Option<String>,
    /// How the cluster falls below the baseline right now, if it does.
    pub degraded: Option<String>,
}

/// The next action of a running operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Record the replacement's name, then create it (again, if it vanished before it was seen).
    Provision(usize),
    /// The replacement is Ready: record it.
    MarkReady(usize),
    /// Record the intent, then cordon the old node.
    Cordon(usize),
    /// Drain the old nodes of `drain` (one pass, at most one health-check interval long), then check that
    /// the workloads moved off the old nodes of `verify` are healthy again.
    Work {
        drain: Vec<usize>,
        verify: Vec<usize>,
    },
    /// Delete the old VPSieNode; its finalizer releases the VM.
    Remove(usize),
    /// The old VPSieNode is gone.
    MarkDone(usize),
    /// The cluster just fell below the baseline: record since when.
    MarkDegraded(String),
    /// It recovered before a rollback was due.
    ClearDegraded,
    Succeed,
    /// Roll back (or, with `rollbackOnFailure: false`, stop in `Failed`).
    Fail {
        trigger: RollbackTrigger,
        reason: String,
    },
    Wait(Duration),
}

/// Pause before looking again when nothing can move yet.
const IDLE: Duration = Duration::from_secs(1);

/// Decides the next action of an operation in `Running`.
pub fn next(status: &RebalanceStatus, settings: &Settings, view: &View) -> Next {
    debug_assert_eq!(status.phase, RebalancePhase::Running);
    if let Some(cause) = &view.rollback_requested {
        return Next::Fail { trigger: RollbackTrigger::Manual, reason: format!("rollback requested: {cause}") };
    }
    if let Some(fault) = fault(status, settings, view) {
        return fault;
    }
    match (&view.degraded, status.degraded_since.as_ref()) {
        (Some(how), None) => return Next::MarkDegraded(how.clone()),
        (Some(how), Some(since)) => {
            if elapsed(view.now, since.0) >= settings.health_check_interval {
                return Next::Fail {
                    trigger: RollbackTrigger::ClusterDegraded,
                    reason: format!("cluster health degraded for {:?}: {how}", settings.health_check_interval),
                };
            }
        }
        (None, Some(_)) => return Next::ClearDegraded,
        (None, None) => {}
    }
    progress(status, settings, view)
}

/// A step that can no longer succeed.
fn fault(status: &RebalanceStatus, settings: &Settings, view: &View) -> Option<Next> {
    use StepPhase::*;
    for (i, (step, seen)) in status.steps.iter().zip(&view.steps).enumerate() {
        let new = step.new_vpsie_node.as_deref().unwrap_or("?");
        let live = matches!(step.phase, Provisioning | ReplacementReady | Cordoned | Draining | Verifying);
        if !live {
            continue;
        }
        let provisioning_failed = |why: String| {
            Some(Next::Fail {
                trigger: RollbackTrigger::ProvisioningFailed,
                reason: format!("replacement {new} for node {}: {why}", step.old_node),
            })
        };
        match &seen.replacement {
            Some(r) if r.phase == VPSieNodePhase::Failed => {
                return provisioning_failed(format!("failed ({})", r.detail));
            }
            Some(r) if r.deleting => return provisioning_failed("is being deleted".into()),
            None if step.phase != Provisioning => return provisioning_failed("disappeared".into()),
            _ => {}
        }
        if step.phase != Provisioning && seen.old_node_unschedulable.is_none() {
            return Some(Next::Fail {
                trigger: RollbackTrigger::CannotContinue,
                reason: format!("old node {} disappeared while step {i} was {:?}", step.old_node, step.phase),
            });
        }
        let since = step.started_at.as_ref().map(|t| t.0).unwrap_or(view.now);
        if step.phase == Draining && elapsed(view.now, since) >= settings.drain_timeout {
            return Some(Next::Fail {
                trigger: RollbackTrigger::DrainTimeout,
                reason: format!(
                    "drain timeout: node {} was not drained within {:?}",
                    step.old_node, settings.drain_timeout
                ),
            });
        }
        if step.phase == Verifying && elapsed(view.now, since) >= settings.drain_timeout {
            return Some(Next::Fail {
                trigger: RollbackTrigger::WorkloadUnhealthy,
                reason: format!(
                    "workloads moved off node {} were not healthy again within {:?}: {}",
                    step.old_node,
                    settings.drain_timeout,
                    step.message.as_deref().unwrap_or("not yet checked")
                ),
            });
        }
    }
    None
}

fn progress(status: &RebalanceStatus, settings: &Settings, view: &View) -> Next {
    use StepPhase::*;
    let steps = &status.steps;
    let count = |f: fn(StepPhase) -> bool| steps.iter().filter(|s| f(s.phase)).count();
    // Quick record-keeping first, so a slow drain never delays noticing a Ready replacement.
    for (i, (step, seen)) in steps.iter().zip(&view.steps).enumerate() {
        match step.phase {
            Provisioning => match &seen.replacement {
                None => return Next::Provision(i),
                Some(r) if r.phase == VPSieNodePhase::Ready && r.node_ready => return Next::MarkReady(i),
                Some(_) => {}
            },
            Removing if !seen.old_vpsienode_exists => return Next::MarkDone(i),
            _ => {}
        }
    }
    let draining = count(|p| matches!(p, Cordoned | Draining | Verifying | Removing));
    let in_flight =
        count(|p| matches!(p, Provisioning | ReplacementReady | Cordoned | Draining | Verifying | Removing));
    let all_ready = steps.iter().all(|s| !matches!(s.phase, Pending | Provisioning));
    for (i, (step, seen)) in steps.iter().zip(&view.steps).enumerate() {
        match step.phase {
            Removing if !seen.old_vpsienode_deleting => return Next::Remove(i),
            Pending if settings.strategy == RebalanceStrategy::Surge => return Next::Provision(i),
            Pending if in_flight < settings.max_concurrent => return Next::Provision(i),
            ReplacementReady if settings.strategy == RebalanceStrategy::Rolling => return Next::Cordon(i),
            ReplacementReady if all_ready && draining < settings.max_concurrent => return Next::Cordon(i),
            _ => {}
        }
    }
    let of = |f: fn(StepPhase) -> bool| -> Vec<usize> {
        steps.iter().enumerate().filter(|(_, s)| f(s.phase)).map(|(i, _)| i).collect()
    };
    let (drain, verify) = (of(|p| matches!(p, Cordoned | Draining)), of(|p| p == Verifying));
    if !drain.is_empty() || !verify.is_empty() {
        return Next::Work { drain, verify };
    }
    if steps.iter().all(|s| s.phase == Done) {
        return Next::Succeed;
    }
    Next::Wait(IDLE.min(settings.health_check_interval.max(Duration::from_millis(500))))
}

/// Whether a verified step may remove its old node: called with the health check's findings.
fn elapsed(now: Timestamp, since: Timestamp) -> Duration {
    let d = now.duration_since(since);
    if d <= SignedDuration::ZERO { Duration::ZERO } else { d.unsigned_abs() }
}

/// The first replacement still to be made or finished onto an offering its group no longer allows (a
/// person took the offering out of the NodeGroup mid-operation): finishing would leave a node the group
/// forbids, so the operation rolls back. Committed (`Removing`) and ended steps are left alone.
/// `new_offerings` are the spec's, step by step; `allowed` the group's offering identifiers now.
pub fn withdrawn_offering(status: &RebalanceStatus, new_offerings: &[&str], allowed: &[String]) -> Option<String> {
    use StepPhase::*;
    status.steps.iter().zip(new_offerings).find_map(|(step, offering)| {
        let open = matches!(step.phase, Pending | Provisioning | ReplacementReady | Cordoned | Draining | Verifying);
        (open && !allowed.iter().any(|a| a == offering)).then(|| {
            format!(
                "offering {offering} of the replacement for node {} is no longer allowed by the NodeGroup \
                 (allowed now: {})",
                step.old_node,
                if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
            )
        })
    })
}

/// What a rollback still has to do, in order: uncordon what this operation cordoned, terminate the
/// replacements of steps that did not complete, take every label off, verify.
#[derive(Debug, Clone, PartialEq)]
pub enum Undo {
    Uncordon(usize),
    Terminate(usize),
    /// A committed step (its old VPSieNode is being deleted) must finish first.
    WaitForCommitted(usize),
    /// A replacement is being deleted; its VM is released when it is gone.
    WaitForTermination(usize),
    /// Mark the committed step whose old VPSieNode is gone as done.
    MarkDone(usize),
    Unlabel,
    Verify,
}

/// Decides the next action of an operation in `RollingBack`. `labelled` counts the objects still
/// carrying this operation's label.
pub fn undo(status: &RebalanceStatus, view: &View, labelled: usize) -> Undo {
    use StepPhase::*;
    for (i, (step, seen)) in status.steps.iter().zip(&view.steps).enumerate() {
        match step.phase {
            Removing if !seen.old_vpsienode_exists => return Undo::MarkDone(i),
            Removing if seen.old_vpsienode_deleting => return Undo::WaitForCommitted(i),
            Done | RolledBack => {}
            _ if step.cordoned_by_us && seen.old_node_unschedulable == Some(true) => return Undo::Uncordon(i),
            _ => {}
        }
    }
    for (i, (step, seen)) in status.steps.iter().zip(&view.steps).enumerate() {
        if matches!(step.phase, Done | RolledBack) || (step.phase == Removing && seen.old_vpsienode_deleting) {
            continue;
        }
        match &seen.replacement {
            Some(r) if r.deleting => return Undo::WaitForTermination(i),
            Some(_) => return Undo::Terminate(i),
            None => {}
        }
    }
    if labelled > 0 {
        return Undo::Unlabel;
    }
    Undo::Verify
}
