//! `RollingBack`: undo what the operation did, one action per reconcile, each decided by
//! `rebalance::execute::undo` from a fresh read and recorded in `status.rollback.actions`. Uncordon
//! exactly the nodes this operation cordoned, terminate the replacements of steps that did not complete
//! (their VMs are released by the VPSieNode finalizer), take every label off, then verify the
//! pre-operation state and record the result. Completed replacements stay and are reported.

use std::time::Duration;

use jiff::Timestamp;
use kube::{
    ResourceExt,
    api::DeleteParams,
    runtime::{controller::Action, events::EventType},
};

use super::{
    Error, POLL, PROMPTLY, Shared, crash_point, now, objects, publish, run::node_event, start::key, write_status,
};
use crate::{
    crd::{
        Rebalance, RebalancePhase, RebalanceStatus,
        rebalance::{RollbackRecord, RollbackTrigger, StepPhase},
    },
    drain,
    rebalance::execute::{self, Undo},
};

/// How long a rollback waits for pods to be Running again before it records what it could not verify.
const SETTLE: Duration = Duration::from_secs(120);

pub async fn step(shared: &Shared, rb: &Rebalance) -> Result<Action, Error> {
    let ctx = &shared.ctx;
    let view = objects::view(shared, rb).await?;
    let (nodes, vpsienodes) = objects::labelled(shared, rb).await?;
    let mut status = rb.status.clone().unwrap_or_default();
    let next = execute::undo(&status, &view, nodes.len() + vpsienodes.len());
    tracing::debug!(rebalance = %key(rb), ?next, "rollback step");
    let ns = rb.namespace().unwrap_or_default();
    match next {
        Undo::Uncordon(i) => {
            let node = status.steps[i].old_node.clone();
            crash_point("rollback-uncordon");
            drain::uncordon(&ctx.client, &node).await.map_err(Error::drain)?;
            record(shared, rb, &mut status, format!("uncordoned node {node}, which this operation had cordoned"))
                .await?;
            node_event(
                shared,
                &node,
                EventType::Warning,
                "RollbackUncordon",
                &format!("rollback of rebalance {}: uncordoned", key(rb)),
            )
            .await;
            Ok(Action::requeue(PROMPTLY))
        }
        Undo::Terminate(i) => {
            let Some(name) = status.steps[i].new_vpsie_node.clone() else { return Ok(Action::requeue(PROMPTLY)) };
            crash_point("rollback-terminate");
            match objects::vpsienodes(shared, &ns).delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => return Err(Error::write("VPSieNode", source)),
            }
            let node = view.steps[i].replacement.as_ref().and_then(|r| r.node.clone());
            let on = node.as_deref().map(|n| format!(" (node {n})")).unwrap_or_default();
            record(
                shared,
                rb,
                &mut status,
                format!("terminating replacement VPSieNode {name}{on}; its VM is released"),
            )
            .await?;
            if let Some(node) = node {
                node_event(
                    shared,
                    &node,
                    EventType::Warning,
                    "RollbackTerminate",
                    &format!("rollback of rebalance {}: replacement terminated", key(rb)),
                )
                .await;
            }
            Ok(Action::requeue(PROMPTLY))
        }
        Undo::WaitForCommitted(_) | Undo::WaitForTermination(_) => Ok(Action::requeue(POLL)),
        Undo::MarkDone(i) => {
            status.steps[i].phase = StepPhase::Done;
            status.completed_replacements = status.steps.iter().filter(|s| s.phase == StepPhase::Done).count() as i32;
            let planned = &rb.spec.replacements[i];
            let saved =
                status.realized_hourly_savings.unwrap_or(0.0) + planned.old_hourly_price - planned.new_hourly_price;
            status.realized_hourly_savings = Some((saved * 1e6).round() / 1e6);
            write_status(ctx, rb, &status).await?;
            Ok(Action::requeue(PROMPTLY))
        }
        Undo::Unlabel => {
            let n = objects::unlabel_all(shared, rb).await?;
            record(shared, rb, &mut status, format!("removed the rebalance-operation label from {n} object(s)"))
                .await?;
            Ok(Action::requeue(PROMPTLY))
        }
        Undo::Verify => verify_and_finish(shared, rb, status).await,
    }
}

/// Appends an action to the rollback record.
async fn record(shared: &Shared, rb: &Rebalance, status: &mut RebalanceStatus, action: String) -> Result<(), Error> {
    tracing::warn!(rebalance = %key(rb), %action, "rollback action");
    let record = status.rollback.get_or_insert_with(|| RollbackRecord {
        trigger: RollbackTrigger::CannotContinue,
        reason: "no trigger was recorded".into(),
        started_at: now(),
        completed_at: None,
        actions: vec![],
        result: None,
    });
    record.actions.push(action);
    write_status(&shared.ctx, rb, status).await.map(|_| ())
}

/// The pre-operation state, checked: every node this operation did not replace is there, as schedulable
/// as it was, and the scheduler's backlog is no longer than before.
async fn verify_and_finish(shared: &Shared, rb: &Rebalance, mut status: RebalanceStatus) -> Result<Action, Error> {
    let ctx = &shared.ctx;
    let baseline = status.pre_operation.clone().unwrap_or_default();
    let mut problems = Vec::new();
    for step in status.steps.iter().filter(|s| s.phase != StepPhase::Done) {
        let node = objects::nodes(shared)
            .get_opt(&step.old_node)
            .await
            .map_err(|source| Error::Read { kind: "Node", source })?;
        let Some(node) = node else {
            problems.push(format!("node {} is gone", step.old_node));
            continue;
        };
        let unschedulable = node.spec.and_then(|s| s.unschedulable).unwrap_or(false);
        let was = baseline.already_cordoned.contains(&step.old_node);
        if unschedulable != was {
            problems.push(format!("node {} is {} but was {}", step.old_node, word(unschedulable), word(was)));
        }
    }
    let pending = crate::controller::podcache::unschedulable_pods(&shared.stores.pods.state()) as i32;
    if pending > baseline.unschedulable_pods {
        problems.push(format!(
            "{pending} pod(s) cannot be scheduled, {} before the operation",
            baseline.unschedulable_pods
        ));
    }
    let started = status.rollback.as_ref().map(|r| r.started_at.0).unwrap_or_else(Timestamp::now);
    let settled = Timestamp::now().duration_since(started).unsigned_abs() >= SETTLE;
    if !problems.is_empty() && !settled {
        tracing::debug!(rebalance = %key(rb), ?problems, "rollback: waiting for the pre-operation state");
        return Ok(Action::requeue(POLL));
    }
    let restored: Vec<String> =
        status.steps.iter().filter(|s| s.phase != StepPhase::Done).map(|s| s.old_node.clone()).collect();
    let kept: Vec<String> =
        status.steps.iter().filter(|s| s.phase == StepPhase::Done).filter_map(|s| s.new_vpsie_node.clone()).collect();
    for step in status.steps.iter_mut().filter(|s| s.phase != StepPhase::Done) {
        step.phase = StepPhase::RolledBack;
    }
    let verdict = if problems.is_empty() {
        "pre-operation state verified (nodes, schedulability, no new unschedulable pods)".to_string()
    } else {
        format!("pre-operation state NOT fully restored: {}", problems.join("; "))
    };
    let result = format!(
        "restored nodes [{}]; kept {} completed replacement(s) [{}]; {verdict}",
        restored.join(", "),
        kept.len(),
        kept.join(", ")
    );
    let trigger = status.rollback.as_ref().map(|r| r.trigger.as_str()).unwrap_or("Unknown");
    if let Some(record) = status.rollback.as_mut() {
        record.completed_at = Some(now());
        record.result = Some(result.clone());
    }
    status.phase = if problems.is_empty() { RebalancePhase::RolledBack } else { RebalancePhase::Failed };
    status.message = Some(format!("rolled back after {trigger}: {result}"));
    status.completed_at = Some(now());
    write_status(ctx, rb, &status).await?;
    tracing::warn!(rebalance = %key(rb), trigger, %result, "rollback completed");
    publish(ctx, rb, EventType::Warning, "RolledBack", &format!("rollback after {trigger} completed: {result}")).await;
    for node in &restored {
        node_event(
            shared,
            node,
            EventType::Warning,
            "RolledBack",
            &format!("rebalance {} rolled back after {trigger}", key(rb)),
        )
        .await;
    }
    Ok(Action::requeue(PROMPTLY))
}

fn word(unschedulable: bool) -> &'static str {
    if unschedulable { "cordoned" } else { "schedulable" }
}
