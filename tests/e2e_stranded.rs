//! A VPSieNode stranded in a deleted namespace still gives back its VM and its Node.
//!
//! Kubernetes finishes a namespace's deletion without the custom objects it cannot see: when the
//! namespace controller runs while the VPSieNode CRD is not served (in the field, just after an API-server
//! restart), the namespace goes and the VPSieNodes stay in etcd, where every write to them is refused.
//! This test makes that happen on purpose, by un-serving the CRD's version during the deletion, and then
//! checks that the controller drains and deletes the node, deletes the VM, says so in its metrics and log,
//! and that creating the namespace again lets the object itself go.
//!
//! It changes a CRD that every test binary shares, so this binary holds one test only.

mod support;

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{Namespace, Node},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{env, eventually, fixtures, stack::Stack};
use vpsie_autoscaler::crd::{NodeGroup, VPSieNode, VPSieNodePhase};

const CONFIG: &str = "
nodeLifecycle:
  drainTimeout: 10s
";

const WAIT: Duration = Duration::from_secs(90);
const CRD: &str = "vpsienodes.autoscaler.vpsie.com";

fn stack() -> &'static Stack {
    support::stack::stack(CONFIG)
}

/// Serves or stops serving the VPSieNode CRD's only version, and waits until the API server agrees.
async fn serve_vpsienodes(served: bool) {
    let client = env().admin().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get(CRD).await.expect("the VPSieNode CRD is installed");
    let mut versions = serde_json::to_value(&crd.spec.versions).unwrap();
    for v in versions.as_array_mut().unwrap() {
        v["served"] = json!(served);
    }
    let patch = json!({ "spec": { "versions": versions } });
    crds.patch(CRD, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch the CRD");
    let all: Api<VPSieNode> = Api::all(client);
    eventually(&format!("VPSieNodes served: {served}"), WAIT, || async {
        (all.list(&Default::default()).await.is_ok() == served).then_some(())
    })
    .await;
}

/// Serves the CRD again however the test ends: the test binaries after this one need it.
struct ServeOnDrop;

impl Drop for ServeOnDrop {
    fn drop(&mut self) {
        let patch = r#"[{"op": "replace", "path": "/spec/versions/0/served", "value": true}]"#;
        env().kubectl(&["patch", "crd", CRD, "--type=json", "-p", patch]);
    }
}

#[tokio::test]
async fn a_vpsienode_left_in_a_deleted_namespace_releases_its_vm_and_node() {
    let (env, s) = (env(), stack());
    let _serve = ServeOnDrop;
    let client = env.admin().await;
    let name = format!("strand-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.expect("create namespace");

    // A group of one: scale-up's minimum brings a Ready node.
    let group = fixtures::nodegroup(s, "pool", &name, json!({"minNodes": 1, "maxNodes": 1}));
    Api::<NodeGroup>::namespaced(client.clone(), &name).create(&PostParams::default(), &group).await.unwrap();
    let vns: Api<VPSieNode> = Api::namespaced(client.clone(), &name);
    let ready = eventually("the group's VPSieNode is Ready", WAIT, || async {
        let list = vns.list(&Default::default()).await.ok()?;
        list.items.into_iter().find(|v| v.status.as_ref().is_some_and(|st| st.phase == VPSieNodePhase::Ready))
    })
    .await;
    let status = ready.status.clone().unwrap();
    let worker = status.worker_identifier.clone().expect("a claimed worker");
    let node = status.node_name.clone().expect("a linked node");
    let vn_name = kube::ResourceExt::name_any(&ready);

    // The race, on purpose: the namespace is deleted while the CRD is not served. An earlier test's
    // namespace still being deleted would be stranded with it, so those finish first.
    env.settle_namespace_deletions();
    serve_vpsienodes(false).await;
    namespaces.delete(&name, &DeleteParams::default()).await.expect("delete namespace");
    eventually("the namespace is gone", WAIT, || async {
        namespaces.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    serve_vpsienodes(true).await;
    let stranded = env.stranded_vpsienodes();
    assert_eq!(stranded, vec![format!("{name}/{vn_name}")], "the VPSieNode outlived its namespace");

    // The controller gives back what the object held.
    eventually("the worker is deleted", WAIT, || async { s.worker_released(&worker).await.then_some(()) }).await;
    let nodes: Api<Node> = Api::all(client.clone());
    eventually("the Node is deleted", WAIT, || async { nodes.get_opt(&node).await.ok()?.is_none().then_some(()) })
        .await;
    let metrics = eventually("the metrics count it", WAIT, || async {
        let m = s.metrics().await;
        m.lines().any(|l| l == "vpsie_autoscaler_stranded_vpsienodes 1").then_some(m)
    })
    .await;
    assert!(
        metrics.lines().any(|l| l == "vpsie_autoscaler_stranded_vpsienodes_released_total 1"),
        "one release counted"
    );
    let log = s.controller_log();
    assert!(log.contains(&format!("create namespace {name} again")), "the log says how to remove what is left");

    // What the log says works: with the namespace back, the finalizer runs and the object goes.
    namespaces.create(&PostParams::default(), &ns).await.expect("create the namespace again");
    namespaces.delete(&name, &DeleteParams::default()).await.expect("delete it again");
    eventually("the VPSieNode is gone", WAIT, || async { vns.get_opt(&vn_name).await.ok()?.is_none().then_some(()) })
        .await;
    eventually("the namespace is gone again", WAIT, || async {
        namespaces.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    eventually("the gauge is back to zero", WAIT, || async {
        s.metrics().await.lines().any(|l| l == "vpsie_autoscaler_stranded_vpsienodes 0").then_some(())
    })
    .await;
}
