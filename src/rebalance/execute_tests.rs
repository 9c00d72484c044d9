//! The step machine's decisions, from plain status records and views.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::execute::*;
use crate::crd::{
    RebalancePhase, RebalanceStatus,
    nodegroup::RebalanceStrategy,
    rebalance::{NodeStep, RollbackTrigger, StepPhase},
    vpsienode::VPSieNodePhase,
};

fn t0() -> Timestamp {
    "2026-11-29T12:00:00Z".parse().unwrap()
}

fn later(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

fn settings(strategy: RebalanceStrategy, max_concurrent: usize) -> Settings {
    Settings {
        strategy,
        max_concurrent,
        drain_timeout: Duration::from_secs(300),
        health_check_interval: Duration::from_secs(10),
        rollback_on_failure: true,
    }
}

fn rolling() -> Settings {
    settings(RebalanceStrategy::Rolling, 1)
}

fn step(phase: StepPhase) -> NodeStep {
    NodeStep {
        old_node: "old".into(),
        phase,
        new_vpsie_node: (phase != StepPhase::Pending).then(|| "new".into()),
        cordoned_by_us: matches!(phase, StepPhase::Cordoned | StepPhase::Draining | StepPhase::Verifying),
        started_at: Some(Time(t0())),
        ..Default::default()
    }
}

fn running(steps: Vec<NodeStep>) -> RebalanceStatus {
    RebalanceStatus { phase: RebalancePhase::Running, steps, ..Default::default() }
}

fn replacement(phase: VPSieNodePhase, node_ready: bool) -> Option<Replacement> {
    Some(Replacement {
        phase,
        node: Some("new-node".into()),
        node_ready,
        deleting: false,
        detail: "Provisioning: asked".into(),
        hourly_price: None,
    })
}

/// What each step of `status` looks like when all is well at its phase.
fn healthy_view(status: &RebalanceStatus, now: Timestamp) -> View {
    let steps = status
        .steps
        .iter()
        .map(|s| StepView {
            replacement: match s.phase {
                StepPhase::Pending => None,
                StepPhase::Provisioning => replacement(VPSieNodePhase::Provisioning, false),
                _ => replacement(VPSieNodePhase::Ready, true),
            },
            old_vpsienode_exists: s.phase != StepPhase::Done,
            old_vpsienode_deleting: false,
            old_node_unschedulable: Some(s.cordoned_by_us),
        })
        .collect();
    View { now, steps, rollback_requested: None, degraded: None }
}

fn decide(status: &RebalanceStatus, settings: &Settings) -> Next {
    next(status, settings, &healthy_view(status, later(1)))
}

#[test]
fn rolling_with_one_at_a_time_provisions_only_the_first_replacement() {
    let status = running(vec![step(StepPhase::Pending), step(StepPhase::Pending)]);
    assert_eq!(decide(&status, &rolling()), Next::Provision(0));
    let status = running(vec![step(StepPhase::Provisioning), step(StepPhase::Pending)]);
    assert_eq!(decide(&status, &rolling()), Next::Wait(Duration::from_secs(1)));
    let status = running(vec![step(StepPhase::Provisioning), step(StepPhase::Pending)]);
    assert_eq!(decide(&status, &settings(RebalanceStrategy::Rolling, 2)), Next::Provision(1));
}

#[test]
fn rolling_cordons_a_node_as_soon_as_its_own_replacement_is_ready() {
    let status = running(vec![step(StepPhase::ReplacementReady), step(StepPhase::Pending)]);
    assert_eq!(decide(&status, &settings(RebalanceStrategy::Rolling, 2)), Next::Cordon(0));
}

#[test]
fn surge_provisions_every_replacement_before_anything_else() {
    let status = running(vec![step(StepPhase::Provisioning), step(StepPhase::Pending), step(StepPhase::Pending)]);
    assert_eq!(decide(&status, &settings(RebalanceStrategy::Surge, 1)), Next::Provision(1));
}

#[test]
fn surge_cordons_nothing_until_every_replacement_is_ready_then_drains_max_concurrent_at_a_time() {
    let surge = settings(RebalanceStrategy::Surge, 1);
    let waiting = running(vec![step(StepPhase::ReplacementReady), step(StepPhase::Provisioning)]);
    assert_eq!(decide(&waiting, &surge), Next::Wait(Duration::from_secs(1)));
    let ready = running(vec![step(StepPhase::ReplacementReady), step(StepPhase::ReplacementReady)]);
    assert_eq!(decide(&ready, &surge), Next::Cordon(0));
    let one_draining = running(vec![step(StepPhase::Draining), step(StepPhase::ReplacementReady)]);
    assert_eq!(decide(&one_draining, &surge), Next::Work { drain: vec![0], verify: vec![] });
}

#[test]
fn a_replacement_that_became_ready_is_recorded_before_any_drain_pass() {
    let status = running(vec![step(StepPhase::Draining), step(StepPhase::Provisioning)]);
    let mut view = healthy_view(&status, later(1));
    view.steps[1].replacement = replacement(VPSieNodePhase::Ready, true);
    assert_eq!(next(&status, &settings(RebalanceStrategy::Rolling, 2), &view), Next::MarkReady(1));
}

#[test]
fn a_replacement_that_vanished_before_it_was_seen_is_created_again_under_the_same_record() {
    let status = running(vec![step(StepPhase::Provisioning)]);
    let mut view = healthy_view(&status, later(1));
    view.steps[0].replacement = None;
    assert_eq!(next(&status, &rolling(), &view), Next::Provision(0));
}

#[test]
fn a_failed_replacement_triggers_a_provisioning_rollback_naming_its_reason() {
    let status = running(vec![step(StepPhase::Provisioning)]);
    let mut view = healthy_view(&status, later(1));
    view.steps[0].replacement = replacement(VPSieNodePhase::Failed, false);
    match next(&status, &rolling(), &view) {
        Next::Fail { trigger, reason } => {
            assert_eq!(trigger, RollbackTrigger::ProvisioningFailed);
            assert!(reason.contains("Provisioning: asked"), "{reason}");
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
}

#[test]
fn a_drain_is_given_until_its_timeout_and_then_rolls_back() {
    let status = running(vec![step(StepPhase::Draining)]);
    let within = next(&status, &rolling(), &healthy_view(&status, later(299)));
    assert_eq!(within, Next::Work { drain: vec![0], verify: vec![] });
    match next(&status, &rolling(), &healthy_view(&status, later(300))) {
        Next::Fail { trigger, reason } => {
            assert_eq!(trigger, RollbackTrigger::DrainTimeout);
            assert!(reason.contains("timeout"), "{reason}");
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
}

#[test]
fn workloads_still_unhealthy_a_drain_timeout_after_the_drain_roll_back() {
    let mut status = running(vec![step(StepPhase::Verifying)]);
    status.steps[0].message = Some("ReplicaSet/default/web has 1 of 2 replicas ready".into());
    assert_eq!(
        next(&status, &rolling(), &healthy_view(&status, later(10))),
        Next::Work { drain: vec![], verify: vec![0] }
    );
    match next(&status, &rolling(), &healthy_view(&status, later(301))) {
        Next::Fail { trigger, reason } => {
            assert_eq!(trigger, RollbackTrigger::WorkloadUnhealthy);
            assert!(reason.contains("1 of 2 replicas"), "{reason}");
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
}

#[test]
fn a_persons_request_rolls_back_whatever_the_step() {
    let status = running(vec![step(StepPhase::Draining)]);
    let mut view = healthy_view(&status, later(1));
    view.rollback_requested = Some("traffic peak".into());
    assert!(matches!(
        next(&status, &rolling(), &view),
        Next::Fail { trigger: RollbackTrigger::Manual, reason } if reason.contains("traffic peak")
    ));
}

#[test]
fn degradation_is_recorded_first_and_rolls_back_only_once_it_has_lasted_a_health_check_interval() {
    let mut status = running(vec![step(StepPhase::Draining)]);
    let mut view = healthy_view(&status, later(1));
    view.degraded = Some("2 more pods cannot be scheduled".into());
    assert_eq!(next(&status, &rolling(), &view), Next::MarkDegraded("2 more pods cannot be scheduled".into()));
    status.degraded_since = Some(Time(later(1)));
    view.now = later(5);
    assert_eq!(next(&status, &rolling(), &view), Next::Work { drain: vec![0], verify: vec![] });
    view.now = later(11);
    assert!(matches!(next(&status, &rolling(), &view), Next::Fail { trigger: RollbackTrigger::ClusterDegraded, .. }));
    view.degraded = None;
    assert_eq!(next(&status, &rolling(), &view), Next::ClearDegraded);
}

#[test]
fn a_verified_step_deletes_its_old_vpsienode_once_and_is_done_when_it_is_gone() {
    let status = running(vec![step(StepPhase::Removing)]);
    let mut view = healthy_view(&status, later(1));
    assert_eq!(next(&status, &rolling(), &view), Next::Remove(0));
    view.steps[0].old_vpsienode_deleting = true;
    assert_eq!(next(&status, &rolling(), &view), Next::Wait(Duration::from_secs(1)));
    view.steps[0].old_vpsienode_exists = false;
    assert_eq!(next(&status, &rolling(), &view), Next::MarkDone(0));
    let done = running(vec![step(StepPhase::Done), step(StepPhase::Done)]);
    assert_eq!(decide(&done, &rolling()), Next::Succeed);
}

#[test]
fn an_old_node_that_vanished_mid_drain_cannot_be_continued_safely() {
    let status = running(vec![step(StepPhase::Draining)]);
    let mut view = healthy_view(&status, later(1));
    view.steps[0].old_node_unschedulable = None;
    assert!(matches!(next(&status, &rolling(), &view), Next::Fail { trigger: RollbackTrigger::CannotContinue, .. }));
}

fn rolling_back(steps: Vec<NodeStep>) -> RebalanceStatus {
    RebalanceStatus { phase: RebalancePhase::RollingBack, steps, ..Default::default() }
}

#[test]
fn rollback_uncordons_what_it_cordoned_then_terminates_the_replacement_then_unlabels_then_verifies() {
    let status = rolling_back(vec![step(StepPhase::Draining)]);
    let mut view = healthy_view(&status, later(1));
    assert_eq!(undo(&status, &view, 3), Undo::Uncordon(0));
    view.steps[0].old_node_unschedulable = Some(false);
    assert_eq!(undo(&status, &view, 3), Undo::Terminate(0));
    view.steps[0].replacement.as_mut().unwrap().deleting = true;
    assert_eq!(undo(&status, &view, 3), Undo::WaitForTermination(0));
    view.steps[0].replacement = None;
    assert_eq!(undo(&status, &view, 3), Undo::Unlabel);
    assert_eq!(undo(&status, &view, 0), Undo::Verify);
}

#[test]
fn rollback_leaves_a_cordon_it_did_not_make() {
    let mut status = rolling_back(vec![step(StepPhase::Draining)]);
    status.steps[0].cordoned_by_us = false;
    let mut view = healthy_view(&status, later(1));
    view.steps[0].old_node_unschedulable = Some(true);
    assert_eq!(undo(&status, &view, 0), Undo::Terminate(0));
}

#[test]
fn rollback_keeps_completed_replacements_and_lets_a_committed_step_finish() {
    let status = rolling_back(vec![step(StepPhase::Done), step(StepPhase::Removing)]);
    let mut view = healthy_view(&status, later(1));
    view.steps[1].old_vpsienode_deleting = true;
    assert_eq!(undo(&status, &view, 0), Undo::WaitForCommitted(1));
    view.steps[1].old_vpsienode_exists = false;
    assert_eq!(undo(&status, &view, 0), Undo::MarkDone(1));
}

#[test]
fn a_step_recorded_as_removing_whose_deletion_never_started_is_undone_like_any_other() {
    let status = rolling_back(vec![step(StepPhase::Removing)]);
    let view = healthy_view(&status, later(1));
    // Removing steps had their cordon recorded as ours earlier; the fixture's Removing has none.
    assert_eq!(undo(&status, &view, 0), Undo::Terminate(0));
}

#[test]
fn an_offering_taken_out_of_the_group_mid_operation_stops_the_steps_not_yet_committed() {
    let mut first = step(StepPhase::Draining);
    first.old_node = "n1".into();
    let status = running(vec![first, step(StepPhase::Pending)]);
    let allowed = vec!["5".to_string()];
    let found = withdrawn_offering(&status, &["2", "2"], &allowed).expect("a withdrawn offering");
    assert!(found.contains("offering 2") && found.contains("node n1") && found.contains("allowed now: 5"), "{found}");
    assert_eq!(withdrawn_offering(&status, &["2", "2"], &["5".to_string(), "2".to_string()]), None);
}

#[test]
fn committed_and_ended_steps_are_not_stopped_by_a_withdrawn_offering() {
    let status = running(vec![step(StepPhase::Removing), step(StepPhase::Done), step(StepPhase::RolledBack)]);
    assert_eq!(withdrawn_offering(&status, &["2", "2", "2"], &[]), None);
}
