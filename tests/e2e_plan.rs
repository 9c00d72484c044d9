//! `vpsie-autoscaler plan` against a live cluster: the real binary, as the controller's ServiceAccount,
//! reads the NodeGroups, VPSieNodes, Nodes and Pods and the simulator's catalogue, and prints the
//! rebalance analysis without acting.

mod support;

use std::{process::Command, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{env, eventually, fixtures, stack::Stack};
use vpsie_autoscaler::crd::{NodeGroup, VPSieNode, VPSieNodePhase};

const WAIT: Duration = Duration::from_secs(90);

fn stack() -> &'static Stack {
    support::stack::stack("nodeLifecycle:\n  provisioningTimeout: 30s\n  joiningTimeout: 30s\n")
}

fn plan(s: &Stack, output: &str) -> (String, String) {
    let kubeconfig = env().controller_kubeconfig(&s.dir);
    let out = Command::new(env!("CARGO_BIN_EXE_vpsie-autoscaler"))
        .args(["plan", "-o", output, "--vpsie-url", &s.sim_url, "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .expect("run plan");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "plan failed: {stderr}");
    (stdout, stderr)
}

#[tokio::test]
async fn plan_shows_a_node_on_a_dearer_plan_as_a_candidate_and_changes_nothing() {
    let s = stack();
    let env = env();
    let ns = env.namespace("plan").await;
    let client = env.admin().await;
    // The group starts on the compute plan c-2vcpu-4gb (id 5, 30 USD/month) only.
    // Rebalancing is enabled, so the analysis proposes; its only window opens in two hours, so the
    // rebalancer itself starts nothing while `plan` runs.
    let hhmm =
        |hours: i64| (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(hours)).strftime("%H:%M").to_string();
    let window = json!({"start": hhmm(2), "end": hhmm(3)});
    let rebalance = json!({"enabled": true, "minSavingsPercent": 10, "maintenanceWindows": [window]});
    let spec = json!({"maxNodes": 2, "offerings": ["5"], "scaleDown": {"enabled": false}, "rebalance": rebalance});
    let group = fixtures::nodegroup(s, "pool", &ns.name, spec);
    let groups: Api<NodeGroup> = Api::namespaced(client.clone(), &ns.name);
    groups.create(&PostParams::default(), &group).await.unwrap();
    let deployment = fixtures::app_deployment(&ns.name, 1, "500m", "256Mi");
    Api::<Deployment>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &deployment).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    eventually("the pod runs on a new node", WAIT, || async {
        let list = pods.list(&ListParams::default().labels("app=app")).await.ok()?;
        list.items.iter().any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).then_some(())
    })
    .await;
    let vns: Api<VPSieNode> = Api::namespaced(client.clone(), &ns.name);
    let vn = eventually("a Ready VPSieNode", WAIT, || async {
        let vn = vns.list(&ListParams::default()).await.ok()?.items.into_iter().next()?;
        (vn.status.as_ref()?.phase == VPSieNodePhase::Ready).then_some(vn)
    })
    .await;
    let node = vn.status.as_ref().and_then(|s| s.node_name.clone()).unwrap();

    // The same-sized shared plan s-2vcpu-4gb (id 2, 24 USD/month) is now allowed: 20% cheaper.
    groups
        .patch("pool", &PatchParams::default(), &Patch::Merge(json!({"spec": {"offerings": ["5", "2"]}})))
        .await
        .unwrap();
    let workers_before = s.live_workers().await;
    let vn_version = vns.get(&vn.metadata.name.clone().unwrap()).await.unwrap().metadata.resource_version;

    let (json_out, _) = plan(s, "json");
    let analysis: Value = serde_json::from_str(&json_out).expect("plan -o json prints JSON");
    let candidate = analysis["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["node"] == node.as_str())
        .unwrap_or_else(|| panic!("{node} is not a candidate: {analysis:#}"));
    assert_eq!(candidate["group"], format!("{}/pool", ns.name));
    assert_eq!((candidate["fromOffering"].as_str(), candidate["toOffering"].as_str()), (Some("5"), Some("2")));
    let saved = candidate["hourlySaving"].as_f64().unwrap();
    assert!((saved - 6.0 / 720.0).abs() < 1e-4, "{candidate}");
    assert_eq!(candidate["pods"], 1);

    let (table, _) = plan(s, "table");
    assert!(table.contains("CANDIDATES") && table.contains(&node), "{table}");

    // Nothing acted: no worker added or removed, the VPSieNode untouched.
    assert_eq!(s.live_workers().await, workers_before);
    let after = vns.get(&vn.metadata.name.clone().unwrap()).await.unwrap();
    assert_eq!(after.metadata.resource_version, vn_version);
}
