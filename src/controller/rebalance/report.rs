//! What every replica derives from the Rebalance objects it watches: a log line per phase transition
//! (naming the rebalance, the rollback and its cause, as the runbook greps for) and the `rebalancer_*`
//! series. A follower counts too, so `kubectl exec deployment/vpsie-autoscaler` answers on whichever
//! replica it lands. An operation is counted once per process when it is first seen ended, so after a
//! restart the counters again hold every operation on record.

use std::collections::HashMap;

use kube::ResourceExt;

use super::Shared;
use crate::{
    crd::{Rebalance, RebalancePhase},
    metrics::{OperationLabels, OperationResult, RebalanceOperation},
};

/// What a replica last saw of one operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    phase: RebalancePhase,
    rolling_back: bool,
}

pub fn observe(shared: &Shared, rb: &Rebalance) {
    let Some(uid) = rb.uid() else { return };
    let status = rb.status.clone().unwrap_or_default();
    let now = Seen { phase: status.phase, rolling_back: status.rollback.is_some() };
    let before = {
        let mut seen = shared.seen.lock().unwrap_or_else(|p| p.into_inner());
        let before = seen.insert(uid, now);
        set_in_progress(shared, &seen);
        before
    };
    if before == Some(now) {
        return;
    }
    let name = format!("{}/{}", rb.namespace().unwrap_or_default(), rb.name_any());
    let from = before.map(|b| b.phase.as_str()).unwrap_or("(unseen)");
    let message = status.message.clone().unwrap_or_default();
    let reason = status.reason.clone().unwrap_or_default();
    match (&status.rollback, status.phase) {
        (Some(r), RebalancePhase::RollingBack) => tracing::warn!(
            rebalance = %name, from, to = status.phase.as_str(), trigger = r.trigger.as_str(),
            "rebalance {name}: rollback triggered by {}: {}", r.trigger.as_str(), r.reason
        ),
        (Some(r), _) if status.phase.is_terminal() => tracing::warn!(
            rebalance = %name, from, to = status.phase.as_str(), trigger = r.trigger.as_str(),
            "rebalance {name}: rollback after {} ended {}: {}", r.trigger.as_str(), status.phase.as_str(),
            r.result.as_deref().unwrap_or("")
        ),
        (None, RebalancePhase::Failed) => {
            tracing::warn!(rebalance = %name, from, to = "Failed", reason, "rebalance {name} failed: {message}")
        }
        _ => tracing::info!(rebalance = %name, from, to = status.phase.as_str(), reason, "rebalance {name}: {message}"),
    }
    let ended_now = status.phase.is_terminal() && before.is_none_or(|b| !b.phase.is_terminal());
    if ended_now {
        count(shared, rb);
    }
}

fn count(shared: &Shared, rb: &Rebalance) {
    let m = &shared.ctx.metrics.rebalancer;
    let status = rb.status.clone().unwrap_or_default();
    let result =
        if status.phase == RebalancePhase::Succeeded { OperationResult::success } else { OperationResult::failure };
    m.operations.get_or_create(&OperationLabels { operation: RebalanceOperation::rebalance, result }).inc();
    if let Some(r) = &status.rollback {
        let result = if r.completed_at.is_some() && status.phase == RebalancePhase::RolledBack {
            OperationResult::success
        } else {
            OperationResult::failure
        };
        m.operations.get_or_create(&OperationLabels { operation: RebalanceOperation::rollback, result }).inc();
    }
    m.nodes_replaced.inc_by(status.completed_replacements.max(0) as u64);
    if let Some(savings) = status.realized_hourly_savings {
        m.realized_hourly_savings.inc_by(savings.max(0.0));
    }
    if let (Some(start), Some(end)) = (&status.started_at, &status.completed_at) {
        m.duration.observe(end.0.duration_since(start.0).as_secs_f64().max(0.0));
    }
}

fn set_in_progress(shared: &Shared, seen: &HashMap<String, Seen>) {
    let running = seen.values().filter(|s| !s.phase.is_terminal()).count();
    shared.ctx.metrics.rebalancer.in_progress.set(running as i64);
}
