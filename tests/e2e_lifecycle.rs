//! A VPSieNode's life against the real control plane and the VPSie simulator: the worker is added once,
//! found, joins as a KWOK Node with the group's labels and taints, and is deleted by identifier when the
//! VPSieNode goes. Cloud faults end in `Failed` with the right reason and leave no worker behind.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use support::{env, eventually, stack::Stack};
use vpsie_autoscaler::crd::{NODEGROUP_LABEL, NodeGroup, VPSieNode, VPSieNodePhase, VPSieNodeSpec};

const CONFIG: &str = "
nodeLifecycle:
  provisioningTimeout: 12s
  joiningTimeout: 12s
  drainTimeout: 10s
";

const WAIT: Duration = Duration::from_secs(60);

/// The simulator's fault rules are global, so the tests of this binary take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn stack() -> &'static Stack {
    support::stack::stack(CONFIG)
}

async fn setup(prefix: &str) -> (support::TestNamespace, Api<VPSieNode>, String) {
    let env = env();
    let stack = stack();
    let ns = env.namespace(prefix).await;
    let client = env.admin().await;
    let offering = stack.offerings().await.into_iter().next().expect("an offering");
    let group: NodeGroup = serde_json::from_value(json!({
        "apiVersion": "autoscaler.vpsie.com/v1alpha1", "kind": "NodeGroup",
        "metadata": {"name": "workers"},
        "spec": {
            "minNodes": 0, "maxNodes": 3,
            "clusterIdentifier": stack.cluster, "datacenter": stack.datacenter,
            "offerings": [offering.id.to_string()],
            "labels": {"workload": prefix},
            "taints": [{"key": "dedicated", "value": prefix, "effect": "NoSchedule"}],
        },
    }))
    .unwrap();
    Api::<NodeGroup>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &group).await.unwrap();
    let vns = Api::<VPSieNode>::namespaced(client, &ns.name);
    (ns, vns, offering.id.to_string())
}

fn vpsienode(name: &str, offering: &str) -> VPSieNode {
    let s = stack();
    VPSieNode::new(
        name,
        VPSieNodeSpec {
            node_group: "workers".into(),
            offering: offering.into(),
            cluster_identifier: s.cluster.clone(),
            datacenter: s.datacenter.clone(),
        },
    )
}

async fn phase_of(vns: &Api<VPSieNode>, name: &str) -> Option<(VPSieNodePhase, String)> {
    let vn = vns.get_opt(name).await.ok()??;
    let status = vn.status?;
    Some((status.phase, status.reason.unwrap_or_default()))
}

async fn wait_phase(vns: &Api<VPSieNode>, name: &str, want: VPSieNodePhase) -> VPSieNode {
    eventually(&format!("{name} in phase {want:?}"), WAIT, || async {
        let vn = vns.get_opt(name).await.ok()??;
        (vn.status.as_ref()?.phase == want).then_some(vn)
    })
    .await
}

#[tokio::test]
async fn a_vpsienode_becomes_a_labelled_ready_node_and_deleting_it_deletes_the_worker() {
    let _turn = SERIAL.lock().await;
    let (ns, vns, offering) = setup("life-ok").await;
    let s = stack();
    vns.create(&PostParams::default(), &vpsienode("w1", &offering)).await.unwrap();
    let vn = wait_phase(&vns, "w1", VPSieNodePhase::Ready).await;
    let status = vn.status.clone().unwrap();
    let node_name = status.node_name.clone().expect("linked node");
    let worker = status.worker_identifier.clone().expect("worker identifier");
    assert_eq!(status.reason.as_deref(), Some("NodeReady"));
    assert!(status.hourly_price.unwrap_or_default() > 0.0);
    assert!(vn.finalizers().iter().any(|f| f == "autoscaler.vpsie.com/vm-cleanup"));

    let nodes: Api<Node> = Api::all(env().admin().await);
    let node = nodes.get(&node_name).await.unwrap();
    assert_eq!(node.labels().get(NODEGROUP_LABEL).map(String::as_str), Some("workers"));
    assert_eq!(node.labels().get("workload").map(String::as_str), Some("life-ok"));
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(taints.iter().any(|t| t.key == "dedicated" && t.effect == "NoSchedule"), "{taints:?}");
    // Other tests' workers come and go meanwhile; this VPSie group is this test's alone.
    let group_id = status.vpsie_group_id.expect("group recorded");
    let in_group: Vec<String> = s.sim_state().await["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["group"].as_i64() == Some(group_id) && w["phase"] != "gone")
        .map(|w| w["identifier"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(in_group, vec![worker.clone()], "exactly one worker was added, and it is the one claimed");

    vns.delete("w1", &DeleteParams::default()).await.unwrap();
    eventually("the VPSieNode is gone", WAIT, || async { vns.get_opt("w1").await.ok()?.is_none().then_some(()) }).await;
    eventually("the worker is deleted", WAIT, || async { s.worker_released(&worker).await.then_some(()) }).await;
    eventually("the Node object is removed", WAIT, || async {
        nodes.get_opt(&node_name).await.ok()?.is_none().then_some(())
    })
    .await;
    drop(ns);
}

/// Creates a VPSieNode under a fault and expects `Failed` with `reason`, `workers_added` workers created
/// for it (one add at most), and none of them left behind.
async fn fails_cleanly(prefix: &str, fault: serde_json::Value, reason: &str, workers_added: usize) {
    let _turn = SERIAL.lock().await;
    let (_ns, vns, offering) = setup(prefix).await;
    let s = stack();
    let before = s.worker_ids().await;
    let _fault = s.fault(fault).await;
    vns.create(&PostParams::default(), &vpsienode("w", &offering)).await.unwrap();
    let vn = wait_phase(&vns, "w", VPSieNodePhase::Failed).await;
    let status = vn.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some(reason), "message: {:?}", status.message);
    let added: Vec<String> = s.worker_ids().await.difference(&before).cloned().collect();
    assert_eq!(added.len(), workers_added, "workers the simulator created meanwhile: {added:?}");
    if let Some(claimed) = &status.worker_identifier {
        assert_eq!(added, std::slice::from_ref(claimed), "the VPSieNode claims a worker it did not add");
    }
    for worker in &added {
        eventually("the failed worker is deleted", WAIT, || async { s.worker_released(worker).await.then_some(()) })
            .await;
    }
    assert!(phase_of(&vns, "w").await.is_some(), "a Failed VPSieNode is kept");
}

#[tokio::test]
async fn a_quota_refusal_fails_the_vpsienode_with_quota_exceeded() {
    let fault = json!({"endpoint": "add_worker", "times": 1,
        "fault": {"kind": "quota", "max_workers": 0, "message": "Worker nodes count exceeds the allowed limit"}});
    fails_cleanly("life-quota", fault, "QuotaExceeded", 0).await;
}

#[tokio::test]
async fn an_asynchronous_create_failure_fails_the_vpsienode_without_a_leak() {
    // At the test's time scale a failed worker would vanish within a second; keep it listed long enough
    // (as on the real API, where it lingers for a minute) for discovery to see the failure.
    let _lingering = stack().settings(json!({"timings": {"failed_linger": {"min": 1500.0, "max": 1500.0}}})).await;
    let fault = json!({"endpoint": "add_worker", "times": 1, "fault": {"kind": "fail_create", "immediate": false}});
    fails_cleanly("life-asyncfail", fault, "ProvisioningFailed", 1).await;
}

#[tokio::test]
async fn a_worker_stuck_in_provisioning_times_out_and_is_deleted() {
    let fault = json!({"endpoint": "add_worker", "times": 1, "fault": {"kind": "stuck_provisioning"}});
    fails_cleanly("life-stuck", fault, "ProvisioningTimeout", 1).await;
}

#[tokio::test]
async fn a_worker_that_never_joins_times_out_and_is_deleted() {
    let fault = json!({"endpoint": "add_worker", "times": 1, "fault": {"kind": "never_join"}});
    fails_cleanly("life-nojoin", fault, "JoinTimeout", 1).await;
}

/// Add calls the simulator answered for one VPSie group path (`.../add/slave/group/<id>`).
async fn add_calls(s: &Stack, group_id: i64) -> usize {
    let log: serde_json::Value =
        reqwest::get(format!("{}/_sim/requests", s.sim_url)).await.unwrap().json().await.unwrap();
    let suffix = format!("/add/slave/group/{group_id}");
    log.as_array().into_iter().flatten().filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with(&suffix))).count()
}

/// Add calls for one VPSie group that the simulator carried out (answered 200 with no fault injected).
async fn accepted_add_calls(s: &Stack, group_id: i64) -> usize {
    let log: serde_json::Value =
        reqwest::get(format!("{}/_sim/requests", s.sim_url)).await.unwrap().json().await.unwrap();
    let suffix = format!("/add/slave/group/{group_id}");
    log.as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with(&suffix)))
        .filter(|r| r["status"] == 200 && r["faults"] == json!([]))
        .count()
}

#[tokio::test]
async fn a_rate_limited_add_goes_back_to_pending_and_is_asked_again_instead_of_timing_out() {
    let _turn = SERIAL.lock().await;
    let (ns, vns, offering) = setup("life-add429").await;
    let s = stack();
    let before = s.worker_ids().await;
    // Retry-After 15 s outlasts the 12 s provisioning timeout: a VPSieNode that waited for a worker the
    // refused add never made would fail with ProvisioningTimeout.
    let _refused = s
        .fault(json!({"endpoint": "add_worker", "times": 1,
            "fault": {"kind": "rate_limit", "retry_after": {"style": "seconds", "secs": 15}}}))
        .await;
    vns.create(&PostParams::default(), &vpsienode("w", &offering)).await.unwrap();
    let deferred = eventually("the refused add is withdrawn", WAIT, || async {
        let vn = vns.get_opt("w").await.ok()??;
        let st = vn.status?;
        (st.reason.as_deref() == Some("AddDeferred")).then_some(st)
    })
    .await;
    assert_eq!(deferred.phase, VPSieNodePhase::Pending);
    assert_eq!(deferred.add_requested_at, None, "the withdrawn intent leaves no add on record");
    let vn = wait_phase(&vns, "w", VPSieNodePhase::Ready).await;
    let group_id = vn.status.as_ref().and_then(|st| st.vpsie_group_id).unwrap();
    assert_eq!(add_calls(s, group_id).await, 2, "one refused add, one asked again");
    assert_eq!(accepted_add_calls(s, group_id).await, 1);
    let added: Vec<String> = s.worker_ids().await.difference(&before).cloned().collect();
    assert_eq!(added.len(), 1, "exactly one worker: {added:?}");
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(env().admin().await, &ns.name)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(events.items.iter().any(|e| e.reason.as_deref() == Some("AddDeferred")), "an Event says why it waited");
    vns.delete("w", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_controller_crash_during_provisioning_never_adds_a_second_worker() {
    let _turn = SERIAL.lock().await;
    let (_ns, vns, offering) = setup("life-crash").await;
    let s = stack();
    // Slow provisioning down so the crash lands between the add call and the worker's discovery; by 4,
    // so that even the longest join of the simulator's range stays inside the 12 s joining timeout.
    let _slow = s.fault(json!({"endpoint": "add_worker", "times": 1, "fault": {"kind": "slow", "factor": 4.0}})).await;
    vns.create(&PostParams::default(), &vpsienode("w", &offering)).await.unwrap();
    let vn = eventually("the add was requested", WAIT, || async {
        let vn = vns.get_opt("w").await.ok()??;
        vn.status.as_ref()?.add_requested_at.as_ref()?;
        Some(vn)
    })
    .await;
    let group_id = vn.status.as_ref().and_then(|s| s.vpsie_group_id).expect("group recorded before the add");
    s.crash_and_restart_controller(1);
    let vn = wait_phase(&vns, "w", VPSieNodePhase::Ready).await;
    assert_eq!(add_calls(s, group_id).await, 1, "the restarted controller must find the worker, not add another");
    let worker = vn.status.and_then(|s| s.worker_identifier).unwrap();
    let in_group: Vec<_> = s.sim_state().await["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["group"].as_i64() == Some(group_id) && w["phase"] != "gone")
        .map(|w| w["identifier"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(in_group, vec![worker]);
    vns.delete("w", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_429_storm_delays_but_never_duplicates_the_worker() {
    // Five 429s in a row open the client's circuit breaker for 30 s; the half-open probe then succeeds.
    let _turn = SERIAL.lock().await;
    let (_ns, vns, offering) = setup("life-429").await;
    let s = stack();
    let before = s.worker_ids().await;
    let _storm = s
        .fault(json!({"endpoint": "*", "times": 5,
            "fault": {"kind": "rate_limit", "retry_after": {"style": "seconds", "secs": 1}}}))
        .await;
    vns.create(&PostParams::default(), &vpsienode("w", &offering)).await.unwrap();
    let vn = wait_phase(&vns, "w", VPSieNodePhase::Ready).await;
    let group_id = vn.status.as_ref().and_then(|s| s.vpsie_group_id).unwrap();
    // An add the storm refused is asked again (a 429 is a refusal before acting); one was carried out.
    assert_eq!(accepted_add_calls(s, group_id).await, 1, "exactly one add was carried out");
    assert_eq!(s.worker_ids().await.iter().filter(|id| !before.contains(*id)).count(), 1, "one worker");
    let limited =
        reqwest::get(format!("{}/_sim/requests", s.sim_url)).await.unwrap().json::<serde_json::Value>().await.unwrap();
    assert!(limited.as_array().unwrap().iter().any(|r| r["status"] == 429), "the storm happened");
    vns.delete("w", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_worker_no_vpsienode_claims_is_deleted_by_the_leak_sweep() {
    let _turn = SERIAL.lock().await;
    let (_ns, vns, offering) = setup("life-orphan").await;
    let s = stack();
    vns.create(&PostParams::default(), &vpsienode("w", &offering)).await.unwrap();
    let vn = wait_phase(&vns, "w", VPSieNodePhase::Ready).await;
    let status = vn.status.unwrap();
    let (ours, group_id) = (status.worker_identifier.unwrap(), status.vpsie_group_id.unwrap());

    // A worker added behind the autoscaler's back (as a lost add answer would leave one) in our group.
    let before: Vec<String> = s.live_workers().await.into_iter().map(|(id, _, _)| id).collect();
    let url = format!("{}/apps/v2/k8s/cluster/byId/{}/add/slave/group/{group_id}", s.sim_url, s.cluster);
    let resp = reqwest::Client::new().post(url).header("Vpsie-Auth", "sim-token").send().await.unwrap();
    assert!(resp.status().is_success());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], json!(false), "{body}");
    let orphan = eventually("the extra worker is listed", WAIT, || async {
        s.live_workers().await.into_iter().map(|(id, _, _)| id).find(|id| !before.contains(id))
    })
    .await;
    // Grace is provisioning + joining timeout (24 s here), swept every 15 s.
    eventually("the orphan is deleted", Duration::from_secs(90), || async {
        s.worker_released(&orphan).await.then_some(())
    })
    .await;
    assert!(s.live_workers().await.iter().any(|(id, _, phase)| id == &ours && phase == "joined"), "ours must stay");
    let metrics = s.metrics().await;
    let swept = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vpsie_autoscaler_orphan_workers_deleted_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_default();
    assert!(swept >= 1.0, "{metrics}");
    vns.delete("w", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_controller_crash_during_a_blocked_drain_resumes_and_finishes_once_the_pdb_allows() {
    let _turn = SERIAL.lock().await;
    let (ns, vns, offering) = setup("life-draincrash").await;
    let s = stack();
    let client = env().admin().await;
    vns.create(&PostParams::default(), &vpsienode("w", &offering)).await.unwrap();
    let vn = wait_phase(&vns, "w", VPSieNodePhase::Ready).await;
    let status = vn.status.unwrap();
    let (node, worker) = (status.node_name.unwrap(), status.worker_identifier.unwrap());

    // One pod pinned to the node, guarded by a PDB that allows no disruption.
    let deploy: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                "containers": [{"name": "db", "image": "registry.k8s.io/pause:3.10"}]}}}
    }))
    .unwrap();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> = Api::namespaced(client.clone(), &ns.name);
    let pdb = serde_json::from_value(json!({"metadata": {"name": "db"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "db"}}}}))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns.name);
    eventually("the guarded pod runs", WAIT, || async {
        let list = pods.list(&Default::default()).await.ok()?;
        list.items.iter().any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).then_some(())
    })
    .await;

    // Deleting the VPSieNode drains first; the PDB blocks it, and the reason says so.
    vns.delete("w", &DeleteParams::default()).await.unwrap();
    eventually("the drain reports the PDB", WAIT, || async {
        let (phase, reason) = phase_of(&vns, "w").await?;
        (phase == VPSieNodePhase::Draining && reason == "DrainBlocked").then_some(())
    })
    .await;
    assert!(s.live_workers().await.iter().any(|(id, _, _)| id == &worker), "a blocked drain keeps the VM");

    s.crash_and_restart_controller(2);
    pdbs.patch("db", &Default::default(), &kube::api::Patch::Merge(json!({"spec": {"maxUnavailable": 1}})))
        .await
        .unwrap();
    eventually("the VPSieNode is gone after the resumed drain", WAIT, || async {
        vns.get_opt("w").await.ok()?.is_none().then_some(())
    })
    .await;
    eventually("the worker is deleted", WAIT, || async { s.worker_released(&worker).await.then_some(()) }).await;
    let nodes: Api<Node> = Api::all(client);
    eventually("the Node is removed", WAIT, || async { nodes.get_opt(&node).await.ok()?.is_none().then_some(()) })
        .await;
}
