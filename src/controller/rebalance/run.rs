//! `Running`: observe every step's objects fresh, let `rebalance::execute::next` decide, act once, and
//! come back. Each act records its intent in the status before it mutates (the replacement's name before
//! it is created, `cordonedByUs` before the cordon, `Removing` before the old VPSieNode is deleted).

use std::{collections::BTreeSet, time::Duration};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{controller::Action, events::EventType},
};

use super::{Error, POLL, PROMPTLY, Shared, crash_point, health, now, objects, publish, start::key, write_status};
use crate::{
    crd::{
        Rebalance, RebalancePhase, RebalanceStatus,
        rebalance::{RollbackRecord, StepPhase},
    },
    drain::{self, DrainError, DrainPolicy},
    rebalance::execute::{self, Next, Settings, View},
    snapshot::PodInfo,
};

pub fn settings(rb: &Rebalance) -> Settings {
    let d = |k: &crate::crd::KubeDuration, fallback: u64| k.to_duration().unwrap_or(Duration::from_secs(fallback));
    Settings {
        strategy: rb.spec.strategy,
        max_concurrent: rb.spec.max_concurrent.max(1) as usize,
        drain_timeout: d(&rb.spec.drain_timeout, 300),
        health_check_interval: d(&rb.spec.health_check_interval, 10).max(Duration::from_millis(500)),
        rollback_on_failure: rb.spec.rollback_on_failure,
    }
}

pub async fn step(shared: &Shared, rb: &Rebalance) -> Result<Action, Error> {
    let settings = settings(rb);
    let mut view = objects::view(shared, rb).await?;
    view.degraded = degraded(shared, rb);
    let status = rb.status.clone().unwrap_or_default();
    if let Some(problem) = withdrawn_offering(shared, rb, &status).await {
        let trigger = crate::crd::rebalance::RollbackTrigger::CannotContinue;
        return fail(shared, rb, status, &settings, trigger, problem).await;
    }
    let next = execute::next(&status, &settings, &view);
    tracing::debug!(rebalance = %key(rb), ?next, "rebalance step");
    act(shared, rb, status, &settings, &view, next).await
}

/// Reads the group's allowed offerings now (the watched NodeGroup, the cached catalogue: no request per
/// pass) and asks the step machine whether an unfinished replacement's offering was taken out. Undecided
/// while VPSie cannot be read: a cloud outage is not a reason to roll back.
async fn withdrawn_offering(shared: &Shared, rb: &Rebalance, status: &RebalanceStatus) -> Option<String> {
    let ns = rb.namespace();
    let watched = shared.stores.groups.state();
    let group = watched.iter().find(|g| g.namespace() == ns && g.name_any() == rb.spec.node_group)?;
    let allowed = crate::controller::autoscale::allowed_offerings(&shared.ctx, group).await.ok()?;
    let allowed: Vec<String> = allowed.into_iter().map(|o| o.id).collect();
    let offerings: Vec<&str> = rb.spec.replacements.iter().map(|r| r.new_offering.as_str()).collect();
    execute::withdrawn_offering(status, &offerings, &allowed)
}

async fn act(
    shared: &Shared,
    rb: &Rebalance,
    mut status: RebalanceStatus,
    settings: &Settings,
    view: &View,
    next: Next,
) -> Result<Action, Error> {
    let ctx = &shared.ctx;
    let ns = rb.namespace().unwrap_or_default();
    match next {
        Next::Provision(i) => {
            let name = objects::replacement_name(rb, i);
            if status.steps[i].phase != StepPhase::Provisioning {
                let step = &mut status.steps[i];
                step.phase = StepPhase::Provisioning;
                step.new_vpsie_node = Some(name.clone());
                step.started_at = Some(now());
                write_status(ctx, rb, &status).await?;
            }
            crash_point("provision");
            let planned = &rb.spec.replacements[i];
            objects::label_vpsienode(shared, &ns, &planned.old_vpsie_node, rb).await?;
            objects::label_node(shared, &planned.old_node, rb).await?;
            let Some(group) = objects::group(shared, &ns, &rb.spec.node_group).await? else {
                return fail(
                    shared,
                    rb,
                    status,
                    settings,
                    crate::crd::rebalance::RollbackTrigger::CannotContinue,
                    format!("NodeGroup {} is gone", rb.spec.node_group),
                )
                .await;
            };
            let mut vn =
                crate::controller::autoscale::new_vpsienode(&group, &planned.new_offering, &name, objects::labels(rb));
            vn.metadata.annotations =
                Some([(crate::crd::CREATED_BY_REBALANCE_ANNOTATION.to_string(), rb.name_any())].into_iter().collect());
            match objects::vpsienodes(shared, &ns).create(&PostParams::default(), &vn).await {
                Ok(_) => {
                    ctx.expectations.created(
                        &format!("{ns}/{name}"),
                        &format!("{ns}/{}", group.name_any()),
                        &planned.new_offering,
                        std::time::Instant::now(),
                    );
                    let note = format!(
                        "rebalance {}: creating replacement {name} ({}) for node {}",
                        key(rb),
                        planned.new_offering,
                        planned.old_node
                    );
                    tracing::info!(rebalance = %key(rb), replacement = %name, offering = %planned.new_offering, old_node = %planned.old_node, "rebalance: creating replacement");
                    publish(ctx, rb, EventType::Normal, "ReplacementCreated", &note).await;
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(source) => return Err(Error::write("VPSieNode", source)),
            }
            Ok(Action::requeue(POLL))
        }
        Next::MarkReady(i) => {
            if let Some(node) = view.steps[i].replacement.as_ref().and_then(|r| r.node.clone()) {
                objects::label_node(shared, &node, rb).await?;
            }
            status.steps[i].phase = StepPhase::ReplacementReady;
            status.steps[i].started_at = Some(now());
            write_status(ctx, rb, &status).await?;
            tracing::info!(rebalance = %key(rb), old_node = %status.steps[i].old_node, "rebalance: replacement is Ready");
            Ok(Action::requeue(PROMPTLY))
        }
        Next::Cordon(i) => {
            let node_name = status.steps[i].old_node.clone();
            let node = objects::nodes(shared)
                .get_opt(&node_name)
                .await
                .map_err(|source| Error::Read { kind: "Node", source })?;
            let schedulable = node.is_some_and(|n| n.spec.and_then(|s| s.unschedulable) != Some(true));
            status.steps[i].phase = StepPhase::Cordoned;
            status.steps[i].cordoned_by_us = schedulable;
            status.steps[i].started_at = Some(now());
            let rb = write_status(ctx, rb, &status).await?;
            crash_point("cordon");
            let changed = drain::cordon(&ctx.client, &node_name).await.map_err(Error::drain)?;
            if changed != schedulable {
                // Someone cordoned between our read and our cordon: the cordon is theirs to keep.
                status.steps[i].cordoned_by_us = changed;
                write_status(ctx, &rb, &status).await?;
            }
            tracing::info!(rebalance = %key(&rb), node = %node_name, cordoned_by_us = changed, "rebalance: cordoned old node");
            node_event(
                shared,
                &node_name,
                EventType::Normal,
                "RebalanceCordon",
                &format!("cordoned by rebalance {} before its migration", key(&rb)),
            )
            .await;
            Ok(Action::requeue(PROMPTLY))
        }
        Next::Work { drain, verify } => work(shared, rb, status, settings, view, drain, verify).await,
        Next::Remove(i) => {
            if status.steps[i].phase != StepPhase::Removing {
                status.steps[i].phase = StepPhase::Removing;
                status.steps[i].started_at = Some(now());
                write_status(ctx, rb, &status).await?;
            }
            crash_point("remove");
            let old = &rb.spec.replacements[i].old_vpsie_node;
            match objects::vpsienodes(shared, &ns).delete(old, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => return Err(Error::write("VPSieNode", source)),
            }
            tracing::info!(rebalance = %key(rb), vpsienode = %old, "rebalance: migration done; removing old VPSieNode");
            Ok(Action::requeue(POLL))
        }
        Next::MarkDone(i) => {
            status.steps[i].phase = StepPhase::Done;
            status.steps[i].message = None;
            status.completed_replacements = status.steps.iter().filter(|s| s.phase == StepPhase::Done).count() as i32;
            let planned = &rb.spec.replacements[i];
            let new_price =
                view.steps[i].replacement.as_ref().and_then(|r| r.hourly_price).unwrap_or(planned.new_hourly_price);
            // Micro-dollar precision: the sum is for people, not for floating-point noise.
            let saved = status.realized_hourly_savings.unwrap_or(0.0) + planned.old_hourly_price - new_price;
            status.realized_hourly_savings = Some((saved * 1e6).round() / 1e6);
            write_status(ctx, rb, &status).await?;
            tracing::info!(rebalance = %key(rb), old_node = %planned.old_node, "rebalance: node replaced");
            Ok(Action::requeue(PROMPTLY))
        }
        Next::MarkDegraded(how) => {
            status.degraded_since = Some(now());
            status.message = Some(format!("cluster health below the pre-flight baseline: {how}"));
            write_status(ctx, rb, &status).await?;
            tracing::warn!(rebalance = %key(rb), %how, "rebalance: cluster health degraded; rollback follows if it lasts");
            Ok(Action::requeue(POLL))
        }
        Next::ClearDegraded => {
            status.degraded_since = None;
            write_status(ctx, rb, &status).await?;
            Ok(Action::requeue(PROMPTLY))
        }
        Next::Succeed => {
            let unlabelled = objects::unlabel_all(shared, rb).await?;
            status.phase = RebalancePhase::Succeeded;
            status.reason = Some("Completed".into());
            status.completed_at = Some(now());
            status.message = Some(format!(
                "replaced {} node(s), saving {:.4} USD/h; removed the rebalance labels from {unlabelled} object(s)",
                status.completed_replacements,
                status.realized_hourly_savings.unwrap_or(0.0)
            ));
            write_status(ctx, rb, &status).await?;
            let note = status.message.clone().unwrap_or_default();
            tracing::info!(rebalance = %key(rb), %note, "rebalance succeeded");
            publish(ctx, rb, EventType::Normal, "RebalanceSucceeded", &note).await;
            Ok(Action::requeue(PROMPTLY))
        }
        Next::Fail { trigger, reason } => fail(shared, rb, status, settings, trigger, reason).await,
        Next::Wait(d) => Ok(Action::requeue(d)),
    }
}

/// Drains what is to be drained for one pass, then checks the health of what was moved.
async fn work(
    shared: &Shared,
    rb: &Rebalance,
    mut status: RebalanceStatus,
    settings: &Settings,
    view: &View,
    drain: Vec<usize>,
    verify: Vec<usize>,
) -> Result<Action, Error> {
    let ctx = &shared.ctx;
    let mut rb = rb.clone();
    let starting: Vec<usize> =
        drain.iter().copied().filter(|i| status.steps[*i].phase == StepPhase::Cordoned).collect();
    if !starting.is_empty() {
        for &i in &starting {
            let owners = owners_on(shared, &status.steps[i].old_node).await?;
            let step = &mut status.steps[i];
            step.phase = StepPhase::Draining;
            step.started_at = Some(now());
            step.moved_owners = owners;
        }
        rb = write_status(ctx, &rb, &status).await?;
        crash_point("drain");
        if crate::controller::test_hooks::pause_requested("draining") {
            // End the pass with the drain recorded but not begun, so the pause can hold it there.
            return Ok(Action::requeue(POLL));
        }
        for &i in &starting {
            tracing::info!(rebalance = %key(&rb), node = %status.steps[i].old_node, "rebalance: draining old node (workload migration)");
        }
    }
    let pass_end = view.now.checked_add(settings.health_check_interval).unwrap_or(Timestamp::MAX);
    let drains = drain.iter().map(|&i| {
        let step = &status.steps[i];
        let started = step.started_at.as_ref().map(|t| t.0).unwrap_or(view.now);
        let deadline = started.checked_add(settings.drain_timeout).unwrap_or(Timestamp::MAX).min(pass_end);
        let budget = deadline.duration_since(started).unsigned_abs();
        let policy = DrainPolicy {
            deadline: budget,
            retry_interval: Duration::from_secs(1),
            force: false,
            evict_bare_pods: false,
        };
        let node = step.old_node.clone();
        let client = ctx.client.clone();
        let cancel = ctx.shutdown.clone();
        async move { (i, drain::drain(&client, &node, &policy, started, &cancel).await) }
    });
    let outcomes = futures::future::join_all(drains).await;
    let mut changed = false;
    for (i, outcome) in outcomes {
        match outcome {
            Ok(_) => {
                status.steps[i].phase = StepPhase::Verifying;
                status.steps[i].started_at = Some(now());
                changed = true;
                tracing::info!(rebalance = %key(&rb), node = %status.steps[i].old_node, "rebalance: old node drained; checking workload health");
            }
            // Not yet: the pass ended before the drain did. The step machine decides when it timed out.
            Err(DrainError::Timeout { .. }) => {}
            Err(e @ DrainError::UnmanagedPods { .. }) => {
                return fail(
                    shared,
                    &rb,
                    status,
                    settings,
                    crate::crd::rebalance::RollbackTrigger::CannotContinue,
                    e.to_string(),
                )
                .await;
            }
            Err(e) => return Err(Error::drain(e)),
        }
    }
    let mut waiting = false;
    for i in verify {
        let problems = health::workloads(shared, &status.steps[i].moved_owners).await?;
        if problems.is_empty() {
            status.steps[i].phase = StepPhase::Removing;
            status.steps[i].message = None;
            status.steps[i].started_at = Some(now());
            tracing::info!(rebalance = %key(&rb), node = %status.steps[i].old_node, "rebalance: moved workloads are healthy");
            changed = true;
        } else {
            let message = problems.join("; ");
            waiting = true;
            if status.steps[i].message.as_deref() != Some(message.as_str()) {
                status.steps[i].message = Some(message);
                changed = true;
            }
        }
    }
    if changed {
        write_status(ctx, &rb, &status).await?;
    }
    Ok(Action::requeue(if waiting && drain.is_empty() { settings.health_check_interval } else { PROMPTLY }))
}

/// Owners of the pods a drain of `node` moves, from a fresh list of the node's pods (the pod cache keeps
/// only what planning needs, not owner names).
async fn owners_on(shared: &Shared, node: &str) -> Result<Vec<String>, Error> {
    let api: Api<Pod> = Api::all(shared.ctx.client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let pods = api.list(&on_node).await.map_err(|source| Error::Read { kind: "Pod", source })?;
    let owners: BTreeSet<String> = pods
        .items
        .iter()
        .filter(|p| PodInfo::from_k8s(p).is_ok_and(|i| i.must_move()))
        .filter_map(health::owner_of)
        .collect();
    Ok(owners.into_iter().collect())
}

/// The cluster against the baseline, from the caches.
fn degraded(shared: &Shared, rb: &Rebalance) -> Option<String> {
    let status = rb.status.as_ref()?;
    let baseline = status.pre_operation.as_ref()?;
    let gone: BTreeSet<String> = status
        .steps
        .iter()
        .filter(|s| matches!(s.phase, StepPhase::Removing | StepPhase::Done))
        .map(|s| s.old_node.clone())
        .collect();
    let unschedulable = crate::controller::podcache::unschedulable_pods(&shared.stores.pods.state());
    let thresholds = &shared.ctx.config.rebalancer.cluster_health;
    health::degraded(baseline, thresholds, &shared.stores.nodes.state(), unschedulable, &gone)
}

/// A fault: roll back, or with `rollbackOnFailure: false` stop where things are and say so.
pub async fn fail(
    shared: &Shared,
    rb: &Rebalance,
    mut status: RebalanceStatus,
    settings: &Settings,
    trigger: crate::crd::rebalance::RollbackTrigger,
    reason: String,
) -> Result<Action, Error> {
    let ctx = &shared.ctx;
    if settings.rollback_on_failure {
        status.phase = RebalancePhase::RollingBack;
        status.reason = Some(trigger.as_str().to_string());
        status.message = Some(format!("rolling back: {reason}"));
        status.rollback = Some(RollbackRecord {
            trigger,
            reason: reason.clone(),
            started_at: now(),
            completed_at: None,
            actions: vec![],
            result: None,
        });
        write_status(ctx, rb, &status).await?;
        tracing::warn!(rebalance = %key(rb), trigger = trigger.as_str(), %reason, "rebalance failed; rollback triggered");
        publish(
            ctx,
            rb,
            EventType::Warning,
            "RollbackTriggered",
            &format!("rollback triggered by {}: {reason}", trigger.as_str()),
        )
        .await;
        return Ok(Action::requeue(Duration::ZERO));
    }
    let cordoned: Vec<&str> = status
        .steps
        .iter()
        .filter(|s| s.cordoned_by_us && !matches!(s.phase, StepPhase::Done | StepPhase::Pending))
        .map(|s| s.old_node.as_str())
        .collect();
    let created: Vec<&str> = status
        .steps
        .iter()
        .filter(|s| s.phase != StepPhase::Done)
        .filter_map(|s| s.new_vpsie_node.as_deref())
        .collect();
    let message = format!(
        "{reason}; rollbackOnFailure is false, so everything is left as it is: cordoned by this operation: [{}]; replacement VPSieNodes: [{}]; follow the runbook's manual rollback steps",
        cordoned.join(", "),
        created.join(", ")
    );
    status.phase = RebalancePhase::Failed;
    status.reason = Some(trigger.as_str().to_string());
    status.message = Some(message.clone());
    status.completed_at = Some(now());
    write_status(ctx, rb, &status).await?;
    tracing::warn!(rebalance = %key(rb), trigger = trigger.as_str(), %message, "rebalance failed; no rollback (rollbackOnFailure: false)");
    publish(ctx, rb, EventType::Warning, "RebalanceFailed", &message).await;
    Ok(Action::await_change())
}

pub async fn node_event(shared: &Shared, node: &str, type_: EventType, reason: &str, note: &str) {
    let n = Node {
        metadata: kube::api::ObjectMeta { name: Some(node.to_string()), ..Default::default() },
        ..Default::default()
    };
    shared.ctx.publish(&n.object_ref(&()), type_, reason, "Rebalance", note).await;
}
