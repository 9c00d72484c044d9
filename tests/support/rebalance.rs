//! What the rebalance suites share: a group with nodes on the dearer compute plan and a Deployment on
//! them, a Rebalance built from the live VPSieNodes, and a picture of the cluster to compare before and
//! after an operation.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Node};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use vpsie_autoscaler::crd::{NodeGroup, REBALANCE_LABEL, Rebalance, RebalancePhase, VPSieNode, VPSieNodePhase};

use super::{TestNamespace, env, eventually, fixtures, stack::Stack};

pub const WAIT: Duration = Duration::from_secs(120);

/// The compute plan c-2vcpu-4gb (30 USD/month) the group starts on, and the shared s-2vcpu-4gb
/// (24 USD/month) it may move to.
pub const DEARER: &str = "5";
pub const CHEAPER: &str = "2";

pub struct Setup {
    pub ns: TestNamespace,
    pub client: Client,
    /// The group's Ready VPSieNodes and their nodes, by node name.
    pub nodes: BTreeMap<String, VPSieNode>,
}

/// A group on [`DEARER`] only, with `replicas` app pods of 1500m (one per node), all Running; then
/// [`CHEAPER`] is allowed too. Scale-down is off so only the rebalancer touches the nodes.
pub async fn group_on_dearer_plan(s: &Stack, prefix: &str, replicas: i32) -> Setup {
    let env = env();
    let ns = env.namespace(prefix).await;
    let client = env.admin().await;
    let spec = json!({"maxNodes": 6, "offerings": [DEARER], "scaleDown": {"enabled": false}});
    let groups: Api<NodeGroup> = Api::namespaced(client.clone(), &ns.name);
    groups.create(&PostParams::default(), &fixtures::nodegroup(s, "pool", &ns.name, spec)).await.unwrap();
    let deployment = fixtures::app_deployment(&ns.name, replicas, "1500m", "256Mi");
    Api::<Deployment>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &deployment).await.unwrap();
    let pods = Api::namespaced(client.clone(), &ns.name);
    eventually("every app pod runs", WAIT, || async {
        (fixtures::running_app_pods(&pods).await == replicas as usize).then_some(())
    })
    .await;
    let vns: Api<VPSieNode> = Api::namespaced(client.clone(), &ns.name);
    let nodes = eventually("one Ready VPSieNode per pod", WAIT, || async {
        let list = vns.list(&ListParams::default()).await.ok()?.items;
        let ready: BTreeMap<String, VPSieNode> = list
            .into_iter()
            .filter(|v| v.status.as_ref().is_some_and(|s| s.phase == VPSieNodePhase::Ready))
            .filter_map(|v| Some((v.status.as_ref()?.node_name.clone()?, v)))
            .collect();
        (ready.len() == replicas as usize).then_some(ready)
    })
    .await;
    let allow = json!({"spec": {"offerings": [DEARER, CHEAPER]}});
    groups.patch("pool", &PatchParams::default(), &Patch::Merge(allow)).await.unwrap();
    Setup { ns, client, nodes }
}

/// A Rebalance of `nodes` to [`CHEAPER`], with `extra` merged over its spec.
pub fn rebalance(name: &str, setup: &Setup, nodes: &[&str], extra: Value) -> Rebalance {
    let replacements: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "oldNode": n, "oldVpsieNode": setup.nodes[*n].name_any(),
                "oldOffering": DEARER, "newOffering": CHEAPER,
                "oldHourlyPrice": 30.0 / 730.0, "newHourlyPrice": 24.0 / 730.0,
            })
        })
        .collect();
    let mut spec = json!({
        "nodeGroup": "pool", "strategy": "rolling", "maxConcurrent": 1,
        "drainTimeout": "60s", "healthCheckInterval": "1s", "rollbackOnFailure": true,
        "replacements": replacements,
    });
    if let (Some(base), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        base.extend(extra);
    }
    serde_json::from_value(json!({
        "apiVersion": "autoscaler.vpsie.com/v1alpha1", "kind": "Rebalance",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

pub async fn create(setup: &Setup, rb: &Rebalance) -> Api<Rebalance> {
    let api: Api<Rebalance> = Api::namespaced(setup.client.clone(), &setup.ns.name);
    api.create(&PostParams::default(), rb).await.unwrap();
    api
}

/// Waits until the operation is in `phase`, and returns it.
pub async fn reaches(api: &Api<Rebalance>, name: &str, phase: RebalancePhase) -> Rebalance {
    eventually(&format!("Rebalance {name} reaches {phase:?}"), WAIT, || async {
        let rb = api.get(name).await.ok()?;
        (rb.status.as_ref()?.phase == phase).then_some(rb)
    })
    .await
}

/// Everything a rollback must restore, and that must hold after any operation: every node of the
/// test's group with its schedulability and labels, and the simulator's live workers in the test's VPSie
/// groups (their names carry the namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    pub nodes: BTreeMap<String, (bool, BTreeMap<String, String>)>,
    pub workers: Vec<String>,
}

pub async fn picture(s: &Stack, setup: &Setup) -> Picture {
    let ns = &setup.ns.name;
    let selector = ListParams::default().labels(&format!("pool={ns}"));
    let nodes = Api::<Node>::all(setup.client.clone()).list(&selector).await.unwrap().items;
    let nodes = nodes
        .into_iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .map(|n| {
            let unschedulable = n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
            (n.name_any(), (unschedulable, n.labels().clone()))
        })
        .collect();
    let state = s.sim_state().await;
    let groups: Vec<u64> = state["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["groups"].as_array().cloned().unwrap_or_default())
        .filter(|g| g["name"].as_str().is_some_and(|n| n.contains(&format!("-{ns}-"))))
        .filter_map(|g| g["id"].as_u64())
        .collect();
    let mut workers: Vec<String> = state["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["group"].as_u64().is_some_and(|g| groups.contains(&g)))
        .filter(|w| !matches!(w["phase"].as_str().map(str::to_ascii_lowercase).as_deref(), Some("gone" | "deleting")))
        .filter_map(|w| w["identifier"].as_str().map(String::from))
        .collect();
    workers.sort();
    Picture { nodes, workers }
}

/// Waits until the group's picture is `want` (a released VM or a deleted Node takes a moment to show).
pub async fn settles_to(s: &Stack, setup: &Setup, want: &Picture) {
    let mut last = None;
    let got = tokio::time::timeout(WAIT, async {
        loop {
            let now = picture(s, setup).await;
            if &now == want {
                return;
            }
            last = Some(now);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    assert!(got.is_ok(), "the cluster did not return to the pre-operation state:\nwant {want:#?}\ngot {last:#?}");
}

/// Objects of any kind still carrying the rebalance label.
pub async fn labelled(client: &Client, ns: &str) -> Vec<String> {
    // Nodes are cluster-wide: only this test's group's (its nodes carry `pool=<namespace>`).
    let of_group = ListParams::default().labels(&format!("{REBALANCE_LABEL},pool={ns}"));
    let selector = ListParams::default().labels(REBALANCE_LABEL);
    let nodes = Api::<Node>::all(client.clone()).list_metadata(&of_group).await.unwrap().items;
    let vns = Api::<VPSieNode>::namespaced(client.clone(), ns).list_metadata(&selector).await.unwrap().items;
    nodes.iter().map(|o| o.name_any()).chain(vns.iter().map(|o| o.name_any())).collect()
}
