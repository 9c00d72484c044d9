//! Rebalance operations end to end, against the real control plane, the simulator and the controller:
//! the happy paths (rolling and surge), one rollback per trigger ending in the exact pre-operation state,
//! a person's cordon kept, `rollbackOnFailure: false`, bad input refused, and the runbook's diagnosis
//! commands run with kubectl against a rolled-back operation. Crash-and-resume is in
//! `e2e_rebalance_crash.rs`.

mod support;

use k8s_openapi::api::{core::v1::Node, policy::v1::PodDisruptionBudget};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{
    env, eventually,
    rebalance::{CHEAPER, WAIT, create, group_on_dearer_plan, labelled, picture, reaches, rebalance, settles_to},
    stack::Stack,
};
use vpsie_autoscaler::crd::{
    RebalancePhase, VPSieNode,
    rebalance::{RollbackTrigger, StepPhase},
};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn stack() -> &'static Stack {
    support::stack::stack("nodeLifecycle:\n  provisioningTimeout: 30s\n  joiningTimeout: 30s\n  drainTimeout: 20s\n")
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
}

const ROLLBACK_OK: &str = "rebalancer_operations_total{operation=\"rollback\",result=\"success\"}";
const REBALANCE_OK: &str = "rebalancer_operations_total{operation=\"rebalance\",result=\"success\"}";

#[tokio::test]
async fn a_rolling_rebalance_moves_the_node_to_a_cheaper_plan_and_leaves_no_label_or_vm_behind() {
    let _serial = SERIAL.lock().await;
    let s = stack();
    let setup = group_on_dearer_plan(s, "rb-rolling", 1).await;
    let before = picture(s, &setup).await;
    let old_node = setup.nodes.keys().next().unwrap().clone();
    let succeeded_before = metric(&s.metrics().await, REBALANCE_OK);
    let api = create(&setup, &rebalance("cheaper", &setup, &[&old_node], json!({}))).await;
    let done = reaches(&api, "cheaper", RebalancePhase::Succeeded).await;
    let status = done.status.unwrap();
    assert_eq!(status.completed_replacements, 1);
    assert_eq!(status.steps[0].phase, StepPhase::Done);
    assert!(status.realized_hourly_savings.unwrap() > 0.0, "{status:?}");
    let vns: Api<VPSieNode> = Api::namespaced(setup.client.clone(), &setup.ns.name);
    let now = eventually("only the replacement VPSieNode is left", WAIT, || async {
        let list = vns.list(&ListParams::default()).await.ok()?.items;
        (list.len() == 1 && list[0].spec.offering == CHEAPER).then_some(list)
    })
    .await;
    assert_eq!(now[0].name_any(), status.steps[0].new_vpsie_node.clone().unwrap());
    let after = picture(s, &setup).await;
    assert!(!after.nodes.contains_key(&old_node), "the old node is gone: {after:?}");
    assert_eq!(after.nodes.len(), 1);
    assert_eq!(after.workers.len(), 1);
    assert_ne!(after.workers, before.workers, "the old VM was released and a new one runs");
    assert!(labelled(&setup.client, &setup.ns.name).await.is_empty());
    let pods = Api::namespaced(setup.client.clone(), &setup.ns.name);
    eventually("the app runs again", WAIT, || async {
        (support::fixtures::running_app_pods(&pods).await == 1).then_some(())
    })
    .await;
    eventually("the success is counted", WAIT, || async {
        (metric(&s.metrics().await, REBALANCE_OK) > succeeded_before).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_surge_rebalance_of_two_nodes_replaces_both() {
    let _serial = SERIAL.lock().await;
    let s = stack();
    let setup = group_on_dearer_plan(s, "rb-surge", 2).await;
    let names: Vec<String> = setup.nodes.keys().cloned().collect();
    let olds: Vec<&str> = names.iter().map(String::as_str).collect();
    let api = create(&setup, &rebalance("surge", &setup, &olds, json!({"strategy": "surge"}))).await;
    let done = reaches(&api, "surge", RebalancePhase::Succeeded).await;
    assert_eq!(done.status.as_ref().unwrap().completed_replacements, 2);
    let after = eventually("both old nodes are gone", WAIT, || async {
        let p = picture(s, &setup).await;
        names.iter().all(|n| !p.nodes.contains_key(n)).then_some(p)
    })
    .await;
    assert_eq!(after.nodes.len(), 2, "{after:?}");
    assert!(labelled(&setup.client, &setup.ns.name).await.is_empty());
}

#[tokio::test]
async fn a_replacement_that_fails_to_provision_rolls_back_to_the_exact_pre_operation_state_and_the_runbook_shows_it() {
    let _serial = SERIAL.lock().await;
    let s = stack();
    let setup = group_on_dearer_plan(s, "rb-provfail", 1).await;
    let before = picture(s, &setup).await;
    let old_node = setup.nodes.keys().next().unwrap().clone();
    let rollbacks = metric(&s.metrics().await, ROLLBACK_OK);
    let _fault = s
        .fault(json!({"endpoint": "add_worker", "times": 1, "fault": {"kind": "fail_create", "immediate": false}}))
        .await;
    let api = create(&setup, &rebalance("doomed", &setup, &[&old_node], json!({}))).await;
    let rolled = reaches(&api, "doomed", RebalancePhase::RolledBack).await;
    let record = rolled.status.as_ref().unwrap().rollback.clone().unwrap();
    assert_eq!(record.trigger, RollbackTrigger::ProvisioningFailed);
    assert!(record.actions.iter().any(|a| a.contains("terminating replacement")), "{record:?}");
    assert!(record.result.as_deref().unwrap().contains("pre-operation state verified"), "{record:?}");
    settles_to(s, &setup, &before).await;
    assert!(labelled(&setup.client, &setup.ns.name).await.is_empty());
    eventually("the rollback is counted", WAIT, || async {
        (metric(&s.metrics().await, ROLLBACK_OK) > rollbacks).then_some(())
    })
    .await;
    runbook_shows_the_rollback(s, &setup.ns.name, &old_node).await;
}

/// The runbook's diagnosis commands, as written there (scoped to the test's namespace where the
/// runbook says `-A`), each checked for what the runbook says it shows.
async fn runbook_shows_the_rollback(s: &Stack, ns: &str, old_node: &str) {
    let env = env();
    let metrics = s.metrics().await;
    let rebalancer: Vec<&str> = metrics.lines().filter(|l| l.contains("rebalancer")).collect();
    assert!(rebalancer.iter().any(|l| l.starts_with(ROLLBACK_OK)), "{rebalancer:?}");
    assert!(
        rebalancer
            .iter()
            .any(|l| l.starts_with("rebalancer_operations_total{operation=\"rebalance\",result=\"failure\"}"))
    );
    let log = s.controller_logs();
    let grep: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("rebalanc") || l.contains("rollback") || l.contains("migration")
        })
        .collect();
    assert!(grep.iter().any(|l| l.contains("rollback triggered by ProvisioningFailed")), "{grep:#?}");
    assert!(grep.iter().any(|l| l.contains("rollback completed")), "{grep:#?}");
    let (ok, nodes, _) = env.kubectl(&["get", "nodes"]);
    assert!(ok);
    let cordoned: Vec<&str> = nodes.lines().filter(|l| l.contains("SchedulingDisabled")).collect();
    assert!(!cordoned.iter().any(|l| l.starts_with(old_node)), "{cordoned:?}");
    let (ok, wide, _) = env.kubectl(&["get", "vpsienodes", "-n", ns, "-o", "wide"]);
    assert!(ok && wide.contains("Ready") && wide.contains("OFFERING"), "{wide}");
    let (ok, described, _) = env.kubectl(&["describe", "vpsienodes", "-n", ns]);
    assert!(ok);
    assert!(described.lines().any(|l| l.trim_start().starts_with("Phase:") && l.contains("Ready")), "{described}");
    let (ok, held, err) = env.kubectl(&["get", "vpsienodes", "-n", ns, "-l", "rebalance-operation=in-progress"]);
    assert!(ok && held.trim().is_empty() && err.contains("No resources found"), "{held}{err}");
    let (ok, events, _) = env.kubectl(&["get", "events", "-n", ns]);
    assert!(ok);
    let failures: Vec<&str> =
        events.lines().filter(|l| l.to_ascii_lowercase().contains("failed") || l.contains("error")).collect();
    assert!(failures.iter().any(|l| l.contains("RollbackTriggered")), "{events}");
    let (ok, rb, _) = env.kubectl(&["get", "rebalances", "-n", ns]);
    assert!(ok && rb.contains("RolledBack") && rb.contains("ProvisioningFailed"), "{rb}");
}

#[tokio::test]
async fn a_drain_past_its_timeout_rolls_back_and_a_node_a_person_cordoned_stays_cordoned() {
    let _serial = SERIAL.lock().await;
    let s = stack();
    let setup = group_on_dearer_plan(s, "rb-drain", 2).await;
    let names: Vec<String> = setup.nodes.keys().cloned().collect();
    let (ours, persons) = (&names[0], &names[1]);
    let nodes: Api<Node> = Api::all(setup.client.clone());
    nodes
        .patch(persons, &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": true}})))
        .await
        .unwrap();
    let before = picture(s, &setup).await;
    let spec = json!({"maxConcurrent": 2, "drainTimeout": "5s"});
    let api = create(&setup, &rebalance("held", &setup, &[ours, persons], spec)).await;
    reaches(&api, "held", RebalancePhase::Running).await;
    // From now on no app pod may be evicted, so the drains can only time out.
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "app"}}},
    }))
    .unwrap();
    Api::<PodDisruptionBudget>::namespaced(setup.client.clone(), &setup.ns.name)
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
    let rolled = reaches(&api, "held", RebalancePhase::RolledBack).await;
    let status = rolled.status.unwrap();
    let record = status.rollback.unwrap();
    assert_eq!(record.trigger, RollbackTrigger::DrainTimeout, "{record:?}");
    assert!(record.reason.contains("timeout"), "{record:?}");
    let step_of = |n: &str| status.steps.iter().find(|st| st.old_node == n).unwrap().clone();
    assert!(step_of(ours).cordoned_by_us);
    assert!(!step_of(persons).cordoned_by_us);
    assert!(record.actions.iter().any(|a| a.contains(&format!("uncordoned node {ours}"))), "{record:?}");
    assert!(!record.actions.iter().any(|a| a.contains(&format!("uncordoned node {persons}"))), "{record:?}");
    settles_to(s, &setup, &before).await;
    let after = picture(s, &setup).await;
    assert!(after.nodes[persons].0, "the person's cordon stays");
    assert!(!after.nodes[ours].0);
    let log = s.controller_logs();
    assert!(log.lines().any(|l| l.to_ascii_lowercase().contains("timeout") && l.contains("held")), "no timeout log");
}

#[tokio::test]
async fn with_rollback_on_failure_false_the_operation_stops_in_failed_and_the_runbooks_manual_steps_clean_up() {
    let _serial = SERIAL.lock().await;
    let s = stack();
    let setup = group_on_dearer_plan(s, "rb-norollback", 1).await;
    let old_node = setup.nodes.keys().next().unwrap().clone();
    let _fault = s
        .fault(json!({"endpoint": "add_worker", "times": 1, "fault": {"kind": "fail_create", "immediate": false}}))
        .await;
    let spec = json!({"rollbackOnFailure": false});
    let api = create(&setup, &rebalance("kept", &setup, &[&old_node], spec)).await;
    let failed = reaches(&api, "kept", RebalancePhase::Failed).await;
    let status = failed.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("ProvisioningFailed"));
    assert!(status.rollback.is_none());
    assert!(status.message.as_deref().unwrap().contains("rollbackOnFailure is false"), "{status:?}");
    let replacement = status.steps[0].new_vpsie_node.clone().unwrap();
    assert!(status.message.as_deref().unwrap().contains(&replacement));
    // Left as it is: the labels stay, the failed replacement's record stays.
    let held = labelled(&setup.client, &setup.ns.name).await;
    assert!(held.contains(&old_node) && held.contains(&replacement), "{held:?}");
    // The runbook's manual steps, in the working form (`--all` where kubectl requires it).
    let env = env();
    let ns = setup.ns.name.as_str();
    assert!(env.kubectl(&["delete", "vpsienode", &replacement, "-n", ns, "--wait=false"]).0);
    assert!(env.kubectl(&["label", "vpsienodes", "-n", ns, "--all", "rebalance-operation-"]).0);
    assert!(env.kubectl(&["label", "nodes", "-l", "rebalance-operation", "rebalance-operation-"]).0);
    eventually("nothing is labelled any more", WAIT, || async {
        labelled(&setup.client, ns).await.iter().all(|n| n != &old_node && n != &replacement).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_rebalance_naming_a_node_that_does_not_exist_or_a_negative_price_is_refused_before_anything_is_touched() {
    let _serial = SERIAL.lock().await;
    let s = stack();
    let setup = group_on_dearer_plan(s, "rb-bad", 1).await;
    let before = picture(s, &setup).await;
    let old_node = setup.nodes.keys().next().unwrap().clone();
    let mut bad = rebalance("ghost", &setup, &[&old_node], json!({}));
    bad.spec.replacements[0].old_node = "no-such-node".into();
    let api = create(&setup, &bad).await;
    let failed = reaches(&api, "ghost", RebalancePhase::Failed).await;
    let status = failed.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("InvalidSpec"));
    assert!(status.message.as_deref().unwrap().contains("node no-such-node does not exist"), "{status:?}");
    assert!(status.steps.is_empty());
    let env = env();
    let (_, events, _) = env.kubectl(&["get", "events", "-n", &setup.ns.name]);
    assert!(events.contains("InvalidSpec") && events.contains("no-such-node"), "{events}");
    let mut negative = rebalance("negative", &setup, &[&old_node], json!({}));
    negative.spec.replacements[0].new_hourly_price = -1.0;
    let err = Api::<vpsie_autoscaler::crd::Rebalance>::namespaced(setup.client.clone(), &setup.ns.name)
        .create(&PostParams::default(), &negative)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("newHourlyPrice"), "{err}");
    assert_eq!(picture(s, &setup).await, before);
    assert!(labelled(&setup.client, &setup.ns.name).await.is_empty());
}

/// `HH:MM` of `now` shifted by `hours`, on the clock of `zone`.
fn clock(zone: &str, hours: i64) -> String {
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(hours);
    at.in_tz(zone).unwrap().strftime("%H:%M").to_string()
}

#[tokio::test]
async fn the_rebalancer_starts_an_operation_by_itself_only_inside_a_window_read_in_its_own_time_zone() {
    let _serial = SERIAL.lock().await;
    let s = stack();
    let setup = group_on_dearer_plan(s, "rb-window", 1).await;
    let groups: Api<vpsie_autoscaler::crd::NodeGroup> = Api::namespaced(setup.client.clone(), &setup.ns.name);
    let rebalances: Api<vpsie_autoscaler::crd::Rebalance> = Api::namespaced(setup.client.clone(), &setup.ns.name);
    // Open now if read as UTC, but written for Tokyo (UTC+9): closed.
    let utc_hours = json!({"start": clock("UTC", -1), "end": clock("UTC", 1), "timezone": "Asia/Tokyo"});
    let policy = json!({"enabled": true, "minSavingsPercent": 10, "maintenanceWindows": [utc_hours]});
    groups.patch("pool", &PatchParams::default(), &Patch::Merge(json!({"spec": {"rebalance": policy}}))).await.unwrap();
    let env = env();
    eventually("the group says why it waits", WAIT, || async {
        let (_, events, _) = env.kubectl(&["get", "events", "-n", &setup.ns.name]);
        events
            .lines()
            .any(|l| l.contains("RebalanceDeferred") && l.contains("no maintenance window of the group is open"))
            .then_some(())
    })
    .await;
    assert!(rebalances.list(&ListParams::default()).await.unwrap().items.is_empty(), "nothing started");
    let tokyo_hours =
        json!({"start": clock("Asia/Tokyo", -1), "end": clock("Asia/Tokyo", 1), "timezone": "Asia/Tokyo"});
    let policy = json!({"enabled": true, "minSavingsPercent": 10, "maintenanceWindows": [tokyo_hours]});
    groups.patch("pool", &PatchParams::default(), &Patch::Merge(json!({"spec": {"rebalance": policy}}))).await.unwrap();
    let started = eventually("the rebalancer starts an operation", WAIT, || async {
        rebalances.list(&ListParams::default()).await.ok()?.items.into_iter().next()
    })
    .await;
    assert_eq!(started.spec.node_group, "pool");
    assert_eq!(started.spec.replacements[0].new_offering, CHEAPER);
    let done = reaches(&rebalances, &started.name_any(), RebalancePhase::Succeeded).await;
    let replacement = done.status.unwrap().steps[0].new_vpsie_node.clone().unwrap();
    let vn = Api::<VPSieNode>::namespaced(setup.client.clone(), &setup.ns.name).get(&replacement).await.unwrap();
    assert_eq!(vn.annotations().get(vpsie_autoscaler::crd::CREATED_BY_REBALANCE_ANNOTATION), Some(&started.name_any()));
}

#[tokio::test]
async fn pods_the_scheduler_cannot_place_during_the_operation_degrade_the_cluster_and_roll_it_back() {
    let _serial = SERIAL.lock().await;
    let s = stack();
    let setup = group_on_dearer_plan(s, "rb-degraded", 1).await;
    let before = picture(s, &setup).await;
    let old_node = setup.nodes.keys().next().unwrap().clone();
    let api = create(&setup, &rebalance("degraded", &setup, &[&old_node], json!({}))).await;
    reaches(&api, "degraded", RebalancePhase::Running).await;
    // A pod no node can ever take: one more unschedulable pod than at pre-flight.
    let stray: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "stray"},
        "spec": {"nodeSelector": {"no-such-label": "x"},
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    }))
    .unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(setup.client.clone(), &setup.ns.name);
    pods.create(&PostParams::default(), &stray).await.unwrap();
    reaches(&api, "degraded", RebalancePhase::RollingBack).await;
    // The rollback verifies that the scheduler's backlog is back to what it was.
    pods.delete("stray", &Default::default()).await.unwrap();
    let rolled = reaches(&api, "degraded", RebalancePhase::RolledBack).await;
    let record = rolled.status.unwrap().rollback.unwrap();
    assert_eq!(record.trigger, RollbackTrigger::ClusterDegraded, "{record:?}");
    assert!(record.reason.contains("cannot be scheduled"), "{record:?}");
    settles_to(s, &setup, &before).await;
    assert!(labelled(&setup.client, &setup.ns.name).await.is_empty());
}
