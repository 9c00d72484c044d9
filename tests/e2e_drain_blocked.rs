//! A scale-down drain that starts and then cannot finish, against the real control plane, the simulator
//! and the controller: the node must come back schedulable (when the cordon was ours), its VPSieNode back
//! to `Ready` with a reason naming the blocker and a persisted backoff, the VM kept, and Events saying so.
//! And a `Ready` VPSieNode whose record says we cordoned its node uncordons it, but a person's cordon stays.

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod},
    events::v1::Event,
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{env, eventually, fixtures, stack::Stack};
use vpsie_autoscaler::crd::{DRAIN_REQUEST_ANNOTATION, NodeGroup, VPSieNode, VPSieNodePhase};

const WAIT: Duration = Duration::from_secs(90);
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn stack() -> &'static Stack {
    support::stack::stack("nodeLifecycle:\n  provisioningTimeout: 30s\n  joiningTimeout: 30s\n  drainTimeout: 6s\n")
}

/// A namespace with a NodeGroup, one pod that only its nodes run, and a PDB that allows no disruption of
/// it (so the planner never asks for a drain by itself: the tests ask, as scale-down does).
async fn one_node_held_by_a_pdb(prefix: &str) -> (support::TestNamespace, kube::Client, VPSieNode, String) {
    let s = stack();
    let env = env();
    let ns = env.namespace(prefix).await;
    let client = env.admin().await;
    let scale_down = json!({"utilizationThresholdPercent": 50, "unneededTime": "2s", "cooldown": "2s"});
    let group = fixtures::nodegroup(s, "pool", &ns.name, json!({"maxNodes": 2, "scaleDown": scale_down}));
    Api::<NodeGroup>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &group).await.unwrap();
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "app"}}},
    }))
    .unwrap();
    Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
    let deployment = fixtures::app_deployment(&ns.name, 1, "500m", "128Mi");
    Api::<Deployment>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &deployment).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    eventually("the pod runs on a new node", WAIT, || async {
        let list = pods.list(&ListParams::default().labels("app=app")).await.ok()?;
        list.items.iter().any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).then_some(())
    })
    .await;
    let vns: Api<VPSieNode> = Api::namespaced(client.clone(), &ns.name);
    let vn = eventually("one Ready VPSieNode with its node", WAIT, || async {
        let list = vns.list(&ListParams::default()).await.ok()?.items;
        let vn = list.into_iter().next()?;
        let s = vn.status.as_ref()?;
        (s.phase == VPSieNodePhase::Ready && s.node_name.is_some()).then_some(vn.clone())
    })
    .await;
    let node = vn.status.as_ref().and_then(|s| s.node_name.clone()).unwrap();
    (ns, client, vn, node)
}

async fn unschedulable(client: &kube::Client, node: &str) -> bool {
    let node = Api::<Node>::all(client.clone()).get(node).await.unwrap();
    node.spec.and_then(|s| s.unschedulable).unwrap_or(false)
}

async fn cordon(client: &kube::Client, node: &str, on: bool) {
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": on}})))
        .await
        .unwrap();
}

/// Asks for the drain exactly as scale-down does: by stamping the request annotation.
async fn request_drain(vns: &Api<VPSieNode>, name: &str, request: &str) {
    let patch = json!({"metadata": {"annotations": {DRAIN_REQUEST_ANNOTATION: request}}});
    vns.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
}

async fn node_event(client: &kube::Client, node: &str, reason: &str) -> Option<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let list = events.list(&ListParams::default()).await.ok()?;
    list.items.into_iter().find(|e| {
        e.reason.as_deref() == Some(reason) && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node)
    })
}

#[tokio::test]
async fn a_drain_blocked_after_it_started_gives_the_node_back_schedulable_keeps_the_vm_and_backs_off() {
    let _turn = SERIAL.lock().await;
    let s = stack();
    let (ns, client, vn, node) = one_node_held_by_a_pdb("drain-blocked").await;
    let vns: Api<VPSieNode> = Api::namespaced(client.clone(), &ns.name);
    let name = vn.metadata.name.clone().unwrap();
    let worker = vn.status.as_ref().and_then(|s| s.worker_identifier.clone()).expect("worker identifier");
    assert!(!unschedulable(&client, &node).await);

    request_drain(&vns, &name, "2026-01-01T00:00:00Z; node is unneeded").await;
    // The drain really starts: the record says the cordon is ours, and the node is cordoned.
    eventually("the drain starts and cordons the node", WAIT, || async {
        let vn = vns.get(&name).await.ok()?;
        let st = vn.status?;
        (st.phase == VPSieNodePhase::Draining && st.cordoned_by_us && unschedulable(&client, &node).await).then_some(())
    })
    .await;

    // The PDB holds the pod past the drain timeout: the node comes back.
    let back = eventually("the VPSieNode is Ready again", WAIT, || async {
        let vn = vns.get(&name).await.ok()?;
        (vn.status.as_ref()?.phase == VPSieNodePhase::Ready).then_some(vn)
    })
    .await;
    let st = back.status.clone().unwrap();
    assert_eq!(st.reason.as_deref(), Some("DrainBlockedByPDB"), "{st:?}");
    let message = st.message.clone().unwrap_or_default();
    assert!(message.contains("timeout") || message.contains("timed out"), "{message}");
    assert!(message.contains(&format!("{}/app", ns.name)), "the message names the PDB: {message}");
    assert!(!st.cordoned_by_us, "{st:?}");
    assert_eq!(st.drain_failures, 1);
    assert!(st.drain_retry_after.is_some(), "{st:?}");
    assert_eq!(st.drain_request.as_deref(), Some("2026-01-01T00:00:00Z; node is unneeded"));
    assert!(!unschedulable(&client, &node).await, "the node must be schedulable again");
    assert!(s.live_workers().await.iter().any(|(w, _, _)| *w == worker), "the VM is kept");
    eventually("a Warning event on the node says what blocked", WAIT, || async {
        let e = node_event(&client, &node, "DrainBlockedByPDB").await?;
        (e.type_.as_deref() == Some("Warning")).then_some(())
    })
    .await;

    // Scale-down says when it will try again, and does not drain the node meanwhile.
    let groups: Api<NodeGroup> = Api::namespaced(client.clone(), &ns.name);
    let blocked = eventually("ScaleDownBlocked names the backoff", WAIT, || async {
        let g = groups.get("pool").await.ok()?;
        let c = g.status?.conditions.into_iter().find(|c| c.type_ == "ScaleDownBlocked" && c.status == "True")?;
        c.message.contains("retries it after").then_some(c.message)
    })
    .await;
    assert!(blocked.contains(&node), "{blocked}");
    // A second request during the backoff is not acted on: the answered request stays the first one.
    // The controller re-applies the group label it finds missing, which shows it reconciled the request.
    drop_pool_label(&client, &node).await;
    request_drain(&vns, &name, "2026-01-01T00:00:10Z; node is unneeded").await;
    pool_label_back(&client, &node, &ns.name).await;
    let st = vns.get(&name).await.unwrap().status.unwrap();
    assert_eq!(st.phase, VPSieNodePhase::Ready);
    assert_eq!(st.drain_request.as_deref(), Some("2026-01-01T00:00:00Z; node is unneeded"));
    assert!(!unschedulable(&client, &node).await);
}

/// Removes the group's `pool` label from the node; a reconcile of its Ready VPSieNode puts it back.
async fn drop_pool_label(client: &kube::Client, node: &str) {
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"pool": null}}})))
        .await
        .unwrap();
}

async fn pool_label_back(client: &kube::Client, node: &str, pool: &str) {
    eventually("the controller reconciled the VPSieNode (the pool label is back)", WAIT, || async {
        let n = Api::<Node>::all(client.clone()).get(node).await.ok()?;
        (n.metadata.labels?.get("pool").map(String::as_str) == Some(pool)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_drain_of_a_node_a_person_cordoned_leaves_it_cordoned_when_blocked() {
    let _turn = SERIAL.lock().await;
    let (ns, client, vn, node) = one_node_held_by_a_pdb("drain-cordoned").await;
    let vns: Api<VPSieNode> = Api::namespaced(client.clone(), &ns.name);
    let name = vn.metadata.name.clone().unwrap();
    cordon(&client, &node, true).await;

    request_drain(&vns, &name, "2026-01-01T00:00:00Z; node is unneeded").await;
    let back = eventually("the drain starts, is blocked, and the VPSieNode is Ready again", WAIT, || async {
        let st = vns.get(&name).await.ok()?.status?;
        (st.phase == VPSieNodePhase::Ready && st.drain_failures == 1).then_some(st)
    })
    .await;
    assert_eq!(back.reason.as_deref(), Some("DrainBlockedByPDB"), "{back:?}");
    assert!(unschedulable(&client, &node).await, "a person's cordon is never undone");
    cordon(&client, &node, false).await;
}

#[tokio::test]
async fn a_ready_vpsienode_recorded_as_having_cordoned_its_node_uncordons_it_but_a_persons_cordon_stays() {
    let _turn = SERIAL.lock().await;
    let (ns, client, vn, node) = one_node_held_by_a_pdb("cordon-repair").await;
    let vns: Api<VPSieNode> = Api::namespaced(client.clone(), &ns.name);
    let name = vn.metadata.name.clone().unwrap();

    // What an older leader could leave: Ready, node cordoned, and the record saying the cordon is ours.
    cordon(&client, &node, true).await;
    let patch = json!({"status": {"cordonedByUs": true}});
    vns.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    eventually("the node is uncordoned and the record cleared", WAIT, || async {
        let st = vns.get(&name).await.ok()?.status?;
        (!st.cordoned_by_us && !unschedulable(&client, &node).await).then_some(())
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    eventually("a CordonRepaired event on the VPSieNode", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.iter().any(|e| e.reason.as_deref() == Some("CordonRepaired")).then_some(())
    })
    .await;

    // A person cordons the node: no record says it is ours, so a reconcile leaves it alone. The
    // controller re-applies the group label it finds missing, which shows the reconcile happened.
    cordon(&client, &node, true).await;
    drop_pool_label(&client, &node).await;
    vns.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"touched": "1"}}})))
        .await
        .unwrap();
    pool_label_back(&client, &node, &ns.name).await;
    assert!(unschedulable(&client, &node).await, "a person's cordon is never undone");
    cordon(&client, &node, false).await;
}

/// The review's defect, driven the way the code before the fix started a drain (the phase set to
/// `Draining`): on that code the blocked drain left the node cordoned, because the uncordon was decided
/// from the copy the reconcile began with, which predated the cordon record.
#[tokio::test]
async fn a_drain_that_starts_and_then_times_out_leaves_the_node_schedulable() {
    let _turn = SERIAL.lock().await;
    let (ns, client, vn, node) = one_node_held_by_a_pdb("drain-phase").await;
    let vns: Api<VPSieNode> = Api::namespaced(client.clone(), &ns.name);
    let name = vn.metadata.name.clone().unwrap();
    vns.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Draining"}})))
        .await
        .unwrap();
    eventually("the node is cordoned by the drain", WAIT, || async {
        unschedulable(&client, &node).await.then_some(())
    })
    .await;
    let st = eventually("the VPSieNode is Ready again", WAIT, || async {
        let st = vns.get(&name).await.ok()?.status?;
        (st.phase == VPSieNodePhase::Ready).then_some(st)
    })
    .await;
    assert!(!unschedulable(&client, &node).await, "the node must be schedulable again: {st:?}");
}
