//! `vpsie-autoscaler diagnose` against the running system: one command collects the runbook's
//! escalation bundle (our objects with status, the Lease holder, our Events, nodes with the cordoned
//! ones flagged, pending pods, the leader's metrics, VPSie reachability) and no credential.

mod support;

use std::{path::Path, process::Command, time::Duration};

use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{create_nodes, env, eventually, fixtures, stack::Stack};
use vpsie_autoscaler::crd::NodeGroup;

fn stack() -> &'static Stack {
    support::stack::stack("")
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file} missing from the bundle: {e}"))
}

#[tokio::test]
async fn diagnose_collects_the_escalation_bundle_and_no_credentials() {
    let s = stack();
    let env = env();
    let client = env.admin().await;
    let ns = env.namespace("diagnose").await;
    let groups: Api<NodeGroup> = Api::namespaced(client.clone(), &ns.name);
    groups.create(&PostParams::default(), &fixtures::nodegroup(s, "pool", &ns.name, json!({}))).await.unwrap();
    eventually("the group is planned for", Duration::from_secs(30), || async {
        groups.get("pool").await.ok()?.status.map(|_| ())
    })
    .await;
    // A node a person cordoned: the bundle must flag it.
    let cordoned = format!("{}-cordoned", ns.name);
    let _nodes = create_nodes(env, &ns.name, &[&cordoned]).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    nodes
        .patch(&cordoned, &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": true}})))
        .await
        .unwrap();

    let out = s.dir.join("bundle");
    let run = Command::new(env!("CARGO_BIN_EXE_vpsie-autoscaler"))
        .args(["diagnose", "--out"])
        .arg(&out)
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args(["--metrics-url", &s.metrics_url])
        .output()
        .expect("run diagnose");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "diagnose failed: {stdout}{}", String::from_utf8_lossy(&run.stderr));

    let summary = read(&out, "summary.txt");
    assert!(summary.contains("Needs attention") && summary.contains(&cordoned), "{summary}");
    assert!(summary.contains("leader: e2e-"), "the Lease holder is named: {summary}");
    assert!(summary.contains("VPSie API: reachable"), "{summary}");
    assert!(summary.contains("everything was collected"), "{summary}");
    assert!(read(&out, "nodegroups.yaml").contains(&ns.name));
    assert!(!read(&out, "nodegroups.yaml").contains("managedFields"), "managed fields are noise");
    for file in ["vpsienodes.yaml", "rebalances.yaml", "events.txt", "pods-pending.txt"] {
        read(&out, file);
    }
    assert!(read(&out, "nodes.txt").lines().any(|l| l.starts_with(&cordoned) && l.contains("\tfalse\t")));
    assert!(read(&out, "lease.txt").contains("holder: e2e-"));
    assert!(read(&out, "metrics.txt").contains("rebalancer_operations_total{"), "the leader's metrics");

    // No credential anywhere: not the VPSie token of the Secret, not the kubeconfig's bearer token.
    let admin_token = env.var("TESTENV_ADMIN_TOKEN").to_string();
    let mut files = 0;
    for entry in std::fs::read_dir(&out).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for secret in ["sim-token", "c2ltLXRva2Vu", admin_token.as_str()] {
            assert!(!text.contains(secret), "{} leaks a credential", entry.path().display());
        }
        files += 1;
    }
    assert!(files >= 10, "one file per part and the summary: {files}");
    assert!(!stdout.contains("sim-token"));
}
