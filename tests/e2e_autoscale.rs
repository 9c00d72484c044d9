//! Scale-up and scale-down end to end: pending pods make VPSieNodes, the simulator's workers join as
//! KWOK nodes, the pods run; when the load goes, the nodes drain and go and no worker is left behind.
//! A PDB that allows no disruption keeps its node, and the NodeGroup says why.

mod support;

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod, policy::v1::PodDisruptionBudget};
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
    support::stack::stack("nodeLifecycle:\n  provisioningTimeout: 30s\n  joiningTimeout: 30s\n  drainTimeout: 8s\n")
}

fn nodegroup(s: &Stack, pool: &str) -> NodeGroup {
    let scale_down = json!({"utilizationThresholdPercent": 50, "unneededTime": "4s", "cooldown": "4s"});
    fixtures::nodegroup(s, "pool", pool, json!({ "scaleDown": scale_down }))
}

fn deployment(pool: &str, replicas: i32) -> Deployment {
    fixtures::app_deployment(pool, replicas, "700m", "256Mi")
}

async fn running(pods: &Api<Pod>) -> usize {
    fixtures::running_app_pods(pods).await
}

async fn vpsienodes(api: &Api<VPSieNode>) -> Vec<VPSieNode> {
    api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default()
}

/// A namespace with the `pool` NodeGroup and a Deployment of `replicas` pods that only its nodes can run.
async fn group_with_load(prefix: &str, replicas: i32) -> (support::TestNamespace, kube::Client, Api<Deployment>) {
    let env = env();
    let ns = env.namespace(prefix).await;
    let client = env.admin().await;
    Api::<NodeGroup>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &nodegroup(stack(), &ns.name))
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments.create(&PostParams::default(), &deployment(&ns.name, replicas)).await.unwrap();
    (ns, client, deployments)
}

#[tokio::test]
async fn pending_pods_bring_nodes_once_and_idle_nodes_are_removed_without_leaks() {
    let _turn = SERIAL.lock().await;
    let s = stack();
    let (ns, client, deployments) = group_with_load("scale", 4).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let vns: Api<VPSieNode> = Api::namespaced(client.clone(), &ns.name);
    eventually("all 4 pods running on new nodes", WAIT, || async { (running(&pods).await == 4).then_some(()) }).await;
    let made = vpsienodes(&vns).await;
    // 2 cpu per node, 700m per pod: 2 pods per node, so exactly 2 nodes; a second scale-up would show here.
    assert_eq!(
        made.len(),
        2,
        "one burst must scale once: {:?}",
        made.iter().map(|v| v.metadata.name.clone()).collect::<Vec<_>>()
    );
    assert!(made.iter().all(|v| v.status.as_ref().map(|s| s.phase) == Some(VPSieNodePhase::Ready)));
    let ours: Vec<String> =
        made.iter().filter_map(|v| v.status.as_ref().and_then(|s| s.worker_identifier.clone())).collect();
    let live = s.live_workers().await;
    assert_eq!(ours.len(), 2);
    assert!(ours.iter().all(|id| live.iter().any(|(w, _, _)| w == id)), "{ours:?} not all live in {live:?}");
    let metrics = s.metrics().await;
    assert!(metrics.contains("vpsie_autoscaler_scale_up_latency_seconds_count"), "{metrics}");

    // The load goes: the nodes become unneeded, drain and go, and their workers are deleted.
    deployments.patch("app", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}}))).await.unwrap();
    eventually("every VPSieNode removed", WAIT, || async { vpsienodes(&vns).await.is_empty().then_some(()) }).await;
    eventually("none of our workers left in the simulator", WAIT, || async {
        let live = s.live_workers().await;
        (!live.iter().any(|(w, _, phase)| ours.contains(w) && phase != "deleting")).then_some(())
    })
    .await;
    let groups = Api::<NodeGroup>::namespaced(client, &ns.name);
    let status = eventually("the group reports no nodes", WAIT, || async {
        let status = groups.get("pool").await.ok()?.status?;
        (status.current_nodes == 0).then_some(status)
    })
    .await;
    assert!(status.last_scale_down.is_some(), "{status:?}");
    assert!(status.last_scale_up.is_some(), "{status:?}");
}

#[tokio::test]
async fn a_pdb_that_allows_no_disruption_keeps_its_node_and_the_group_says_why() {
    let _turn = SERIAL.lock().await;
    let (ns, client, _deployments) = group_with_load("scale-pdb", 1).await;
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "app"}}},
    }))
    .unwrap();
    Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    eventually("the pod runs on a new node", WAIT, || async { (running(&pods).await == 1).then_some(()) }).await;

    // One small pod on a 2-cpu node is under the threshold, so the node is a scale-down candidate, but
    // the PDB allows no disruption: the node stays and the condition names the reason.
    let groups: Api<NodeGroup> = Api::namespaced(client.clone(), &ns.name);
    let message = eventually("ScaleDownBlocked reported", WAIT, || async {
        let g = groups.get("pool").await.ok()?;
        let c = g.status?.conditions.into_iter().find(|c| c.type_ == "ScaleDownBlocked" && c.status == "True")?;
        // First the cooldown after the scale-up blocks it; once that passes, the PDB does.
        c.message.to_lowercase().contains("disruption").then_some(c.message)
    })
    .await;
    assert!(message.to_lowercase().contains("disruption"), "{message}");
    // The planner refused, so no drain was asked for: a request would have left its annotation, and an
    // answered one its record in the status.
    let vns: Api<VPSieNode> = Api::namespaced(client.clone(), &ns.name);
    let left = vpsienodes(&vns).await;
    assert_eq!(left.len(), 1);
    let annotations = left[0].metadata.annotations.clone().unwrap_or_default();
    assert!(!annotations.contains_key(DRAIN_REQUEST_ANNOTATION), "{annotations:?}");
    assert_eq!(left[0].status.as_ref().and_then(|s| s.drain_request.clone()), None);
    assert_eq!(left[0].status.as_ref().map(|s| s.phase), Some(VPSieNodePhase::Ready));
    assert_eq!(running(&pods).await, 1);

    // `kubectl describe node` shows the same reason as an Event.
    let node = left[0].status.as_ref().and_then(|s| s.node_name.clone()).expect("linked node");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, "default");
    eventually("a ScaleDownBlocked event on the node", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("ScaleDownBlocked")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node.as_str())
                    && e.note.as_deref().is_some_and(|n| n.to_lowercase().contains("disruption"))
            })
            .then_some(())
    })
    .await;
}
