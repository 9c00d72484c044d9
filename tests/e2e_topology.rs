//! Topology end to end: a pending pod that requires its group's zone in its node affinity gets a node,
//! runs on it, and that Node carries the region, zone and instance-type labels the planner promised;
//! a pod that requires another zone gets no node, and an Event on it says why.

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    core::v1::{Node, Pod},
    events::v1::Event,
};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;
use support::{env, eventually, stack::Stack};
use vpsie_autoscaler::crd::{NODEGROUP_LABEL, NodeGroup, VPSieNode};

const WAIT: Duration = Duration::from_secs(90);
const ZONE: &str = "topology.kubernetes.io/zone";
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn stack() -> &'static Stack {
    support::stack::stack("nodeLifecycle:\n  provisioningTimeout: 30s\n  joiningTimeout: 30s\n  drainTimeout: 8s\n")
}

/// The group `zoned`, labelled `pool=<pool>`, in the simulator's datacenter, on offering `2`.
fn nodegroup(s: &Stack, pool: &str) -> NodeGroup {
    support::fixtures::nodegroup(s, "zoned", pool, json!({"maxNodes": 2}))
}

/// A pod that only the group's nodes can run (`pool`) and only in `zone` (required node affinity).
fn pinned_pod(pool: &str, zone: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "pinned"},
        "spec": {
            "nodeSelector": {"pool": pool},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": ZONE, "operator": "In", "values": [zone]}]},
            ]}}},
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}}}],
        },
    }))
    .unwrap()
}

/// A namespace with the `zoned` group and the pinned pod, created once the autoscaler has seen the group:
/// a pass that saw the pod first would report "no node groups", and an Event series keeps its first note.
async fn group_and_pod(prefix: &str, zone: impl FnOnce(&Stack) -> String) -> (support::TestNamespace, kube::Client) {
    let s = stack();
    let ns = env().namespace(prefix).await;
    let client = env().admin().await;
    let groups: Api<NodeGroup> = Api::namespaced(client.clone(), &ns.name);
    groups.create(&PostParams::default(), &nodegroup(s, &ns.name)).await.unwrap();
    eventually("the autoscaler reports on the group", WAIT, || async {
        groups.get("zoned").await.ok()?.status?.observed_generation.map(|_| ())
    })
    .await;
    Api::<Pod>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &pinned_pod(&ns.name, &zone(s)))
        .await
        .unwrap();
    (ns, client)
}

#[tokio::test]
async fn a_pod_requiring_the_groups_zone_scales_up_and_runs_on_a_node_with_the_topology_labels() {
    let _turn = SERIAL.lock().await;
    let s = stack();
    let (ns, client) = group_and_pod("zone", |s| s.datacenter.clone()).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let node_name = eventually("the pinned pod runs", WAIT, || async {
        let pod = pods.get("pinned").await.ok()?;
        let running = pod.status.as_ref().and_then(|st| st.phase.as_deref()) == Some("Running");
        running.then_some(pod.spec?.node_name?)
    })
    .await;

    let node = Api::<Node>::all(client.clone()).get(&node_name).await.unwrap();
    let labels = node.metadata.labels.unwrap_or_default();
    let label = |k: &str| labels.get(k).map(String::as_str);
    assert_eq!(label(NODEGROUP_LABEL), Some("zoned"), "{labels:?}");
    assert_eq!(label(ZONE), Some(s.datacenter.as_str()), "{labels:?}");
    assert_eq!(label("topology.kubernetes.io/region"), Some(s.datacenter.as_str()), "{labels:?}");
    assert_eq!(label("node.kubernetes.io/instance-type"), Some("2"), "{labels:?}");
    assert_eq!(label("kubernetes.io/arch"), Some("amd64"), "{labels:?}");
    assert_eq!(label("kubernetes.io/os"), Some("linux"), "{labels:?}");

    let made = Api::<VPSieNode>::namespaced(client, &ns.name).list(&ListParams::default()).await.unwrap().items;
    assert_eq!(made.len(), 1, "one pod, one node: {:?}", made.iter().map(|v| &v.metadata.name).collect::<Vec<_>>());
    assert_eq!(
        made[0].status.as_ref().and_then(|st| st.node_name.as_deref()),
        Some(node_name.as_str()),
        "the pod runs on the node the scale-up made"
    );
}

#[tokio::test]
async fn a_pod_requiring_another_zone_gets_no_node_and_an_event_says_why() {
    let _turn = SERIAL.lock().await;
    let (ns, client) = group_and_pod("zone-other", |_| "elsewhere".to_string()).await;

    // The Event is published by the autoscale pass that left the pod out of its plan.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let note = eventually("an Event saying no group fits the pod", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        list.into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("NoNodeGroupFits")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("pinned")
            })
            .and_then(|e| e.note)
    })
    .await;
    // The note gives every group's reason; groups of other tests' namespaces may be listed too.
    let ours = format!("group {}/zoned: ", ns.name);
    let reason = note.split("; ").find_map(|part| part.strip_prefix(ours.as_str()));
    assert_eq!(reason, Some("required node affinity mismatch"), "{note}");

    let made = Api::<VPSieNode>::namespaced(client, &ns.name).list(&ListParams::default()).await.unwrap().items;
    assert!(made.is_empty(), "{:?}", made.iter().map(|v| &v.metadata.name).collect::<Vec<_>>());
}
