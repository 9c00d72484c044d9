//! A controller killed at the worst instant of a rebalance, after a step is recorded and before it is
//! carried out, at each step of a batch in turn: the next replica resumes from the Rebalance's status
//! alone and finishes with one replacement, the old VM released and no label left. And killed in the
//! middle of a rollback a person asked for: the rollback completes and the pre-operation state returns.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};

use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;
use support::{
    eventually,
    rebalance::{CHEAPER, WAIT, create, group_on_dearer_plan, labelled, picture, reaches, rebalance, settles_to},
    stack::Stack,
};
use vpsie_autoscaler::crd::{ROLLBACK_ANNOTATION, RebalancePhase, VPSieNode, rebalance::RollbackTrigger};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static GENERATION: AtomicU32 = AtomicU32::new(1);

fn stack() -> &'static Stack {
    support::stack::stack("nodeLifecycle:\n  provisioningTimeout: 30s\n  joiningTimeout: 30s\n  drainTimeout: 20s\n")
}

/// Arms `step`, waits for the controller to die there, and starts the next replica.
async fn crash_at(s: &Stack, step: &str) {
    s.arm_crash(step);
    eventually(&format!("the controller stops at {step}"), WAIT, || async { s.crash_fired().then_some(()) }).await;
    s.crash_and_restart_controller(GENERATION.fetch_add(1, Ordering::SeqCst));
}

#[tokio::test]
async fn a_controller_killed_after_each_recorded_step_resumes_and_finishes_with_nothing_left_behind() {
    let _serial = SERIAL.lock().await;
    let s = stack();
    let setup = group_on_dearer_plan(s, "rb-crash", 1).await;
    let old_node = setup.nodes.keys().next().unwrap().clone();
    let old_worker = setup.nodes[&old_node].status.as_ref().unwrap().worker_identifier.clone().unwrap();
    let workers_before = s.worker_ids().await;
    s.arm_crash("provision");
    let api = create(&setup, &rebalance("resumed", &setup, &[&old_node], json!({}))).await;
    eventually("the controller stops at provision", WAIT, || async { s.crash_fired().then_some(()) }).await;
    s.crash_and_restart_controller(GENERATION.fetch_add(1, Ordering::SeqCst));
    for step in ["cordon", "drain", "remove"] {
        crash_at(s, step).await;
    }
    let done = reaches(&api, "resumed", RebalancePhase::Succeeded).await;
    assert_eq!(done.status.as_ref().unwrap().completed_replacements, 1);
    let added: Vec<String> = s.worker_ids().await.difference(&workers_before).cloned().collect();
    assert_eq!(added.len(), 1, "exactly one replacement VM despite four crashes: {added:?}");
    eventually("the old VM is released", WAIT, || async { s.worker_released(&old_worker).await.then_some(()) }).await;
    let vns: Api<VPSieNode> = Api::namespaced(setup.client.clone(), &setup.ns.name);
    let left = vns.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].spec.offering, CHEAPER);
    assert!(labelled(&setup.client, &setup.ns.name).await.is_empty());
    let p = picture(s, &setup).await;
    assert!(p.nodes.values().all(|(unschedulable, _)| !unschedulable), "no node left cordoned: {p:?}");
}

#[tokio::test]
async fn a_rollback_a_person_requests_survives_a_crash_in_its_middle_and_restores_the_pre_operation_state() {
    let _serial = SERIAL.lock().await;
    let s = stack();
    let setup = group_on_dearer_plan(s, "rb-manual", 1).await;
    let before = picture(s, &setup).await;
    let old_node = setup.nodes.keys().next().unwrap().clone();
    let api = create(&setup, &rebalance("asked", &setup, &[&old_node], json!({}))).await;
    eventually("the replacement is on its way", WAIT, || async {
        let rb = api.get("asked").await.ok()?;
        rb.status.as_ref()?.steps.first()?.new_vpsie_node.clone()
    })
    .await;
    s.arm_crash("rollback-terminate");
    let ask = json!({"metadata": {"annotations": {ROLLBACK_ANNOTATION: "traffic peak"}}});
    api.patch("asked", &PatchParams::default(), &Patch::Merge(ask)).await.unwrap();
    eventually("the controller stops mid-rollback", WAIT, || async { s.crash_fired().then_some(()) }).await;
    s.crash_and_restart_controller(GENERATION.fetch_add(1, Ordering::SeqCst));
    let rolled = reaches(&api, "asked", RebalancePhase::RolledBack).await;
    let record = rolled.status.as_ref().unwrap().rollback.clone().unwrap();
    assert_eq!(record.trigger, RollbackTrigger::Manual);
    assert!(record.reason.contains("traffic peak"), "{record:?}");
    settles_to(s, &setup, &before).await;
    assert!(labelled(&setup.client, &setup.ns.name).await.is_empty());
}
