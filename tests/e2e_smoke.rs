//! Proof that the local control plane is the real thing: scheduling, ReplicaSets, cordons, the Eviction
//! API with PDBs, and CRD validation all come from real Kubernetes components, with KWOK as the kubelet.

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api,
    api::{EvictParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{create_nodes, env, eventually};

const WAIT: Duration = Duration::from_secs(60);

fn deployment(name: &str, owner: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"e2e-owner": owner},
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
                },
            },
        },
    }))
    .unwrap()
}

async fn running_pods(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    let list = pods.list(&ListParams::default().labels(&format!("app={app}"))).await.unwrap();
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect()
}

fn node_of(pod: &Pod) -> String {
    pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()
}

#[tokio::test]
async fn kwok_nodes_become_ready_and_run_a_scheduled_deployment() {
    let env = env();
    let ns = env.namespace("smoke-deploy").await;
    let client = env.admin().await;
    let a = format!("{}-a", ns.name);
    let b = format!("{}-b", ns.name);
    let _nodes = create_nodes(env, &ns.name, &[&a, &b]).await;

    let nodes: Api<Node> = Api::all(client.clone());
    for name in [&a, &b] {
        eventually(&format!("node {name} Ready"), WAIT, || async {
            let node = nodes.get(name).await.ok()?;
            let ready = node.status?.conditions?.into_iter().any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(())
        })
        .await;
    }

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments.create(&PostParams::default(), &deployment("web", &ns.name, 3)).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, &ns.name);
    let running = eventually("3 running pods", WAIT, || async {
        let running = running_pods(&pods, "web").await;
        (running.len() == 3).then_some(running)
    })
    .await;
    for pod in &running {
        assert!([&a, &b].contains(&&node_of(pod)), "pod on foreign node {}", node_of(pod));
    }
}

#[tokio::test]
async fn a_pdb_refuses_eviction_until_relaxed_and_the_replicaset_replaces_the_evicted_pod() {
    let env = env();
    let ns = env.namespace("smoke-evict").await;
    let client = env.admin().await;
    let a = format!("{}-a", ns.name);
    let b = format!("{}-b", ns.name);
    let _nodes = create_nodes(env, &ns.name, &[&a, &b]).await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments.create(&PostParams::default(), &deployment("db", &ns.name, 2)).await.unwrap();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns.name);
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "db"}}},
    }))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let running = eventually("2 running db pods", WAIT, || async {
        let r = running_pods(&pods, "db").await;
        (r.len() == 2).then_some(r)
    })
    .await;
    // The disruption controller must have observed the pods before the PDB means anything.
    eventually("PDB status observed", WAIT, || async {
        let pdb = pdbs.get("db").await.ok()?;
        (pdb.status?.expected_pods == Some(2)).then_some(())
    })
    .await;

    let originals: Vec<String> = running.iter().filter_map(|p| p.metadata.name.clone()).collect();
    let victim = running[0].metadata.name.clone().unwrap();
    let victim_node = node_of(&running[0]);
    match pods.evict(&victim, &EvictParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 429, "{status:?}"),
        other => panic!("eviction should be refused by the PDB, got {other:?}"),
    }

    // Cordon the victim's node, relax the PDB, and evict again: the replacement lands on the other node.
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(&victim_node, &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": true}})))
        .await
        .unwrap();
    pdbs.patch("db", &PatchParams::default(), &Patch::Merge(json!({"spec": {"maxUnavailable": 1}}))).await.unwrap();
    eventually("eviction allowed once the PDB is relaxed", WAIT, || async {
        pods.evict(&victim, &EvictParams::default()).await.ok().map(|_| ())
    })
    .await;
    eventually("evicted pod gone", WAIT, || async { pods.get_opt(&victim).await.ok()?.is_none().then_some(()) }).await;
    let running = eventually("a replacement pod running", WAIT, || async {
        let r = running_pods(&pods, "db").await;
        (r.len() == 2 && r.iter().all(|p| p.metadata.name.as_deref() != Some(&victim))).then_some(r)
    })
    .await;
    let replacement =
        running.iter().find(|p| !originals.contains(p.metadata.name.as_ref().unwrap())).expect("a new pod");
    assert_ne!(node_of(replacement), victim_node, "the replacement was placed on the cordoned node");
}

#[tokio::test]
async fn a_cordoned_node_receives_no_new_pods() {
    let env = env();
    let ns = env.namespace("smoke-cordon").await;
    let client = env.admin().await;
    let a = format!("{}-a", ns.name);
    let b = format!("{}-b", ns.name);
    let _nodes = create_nodes(env, &ns.name, &[&a, &b]).await;
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.patch(&a, &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": true}}))).await.unwrap();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments.create(&PostParams::default(), &deployment("spread", &ns.name, 4)).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, &ns.name);
    let running = eventually("4 running pods", WAIT, || async {
        let r = running_pods(&pods, "spread").await;
        (r.len() == 4).then_some(r)
    })
    .await;
    assert!(running.iter().all(|p| node_of(p) == b), "pods landed on the cordoned node");
}

#[tokio::test]
async fn the_api_server_rejects_invalid_node_groups_with_the_message_of_the_rule() {
    let env = env();
    let ns = env.namespace("smoke-crd").await;
    let apply = |body: serde_json::Value| {
        let path = std::env::temp_dir().join(format!("{}-{}.json", ns.name, uuid::Uuid::new_v4()));
        std::fs::write(&path, body.to_string()).unwrap();
        env.kubectl(&["-n", &ns.name, "create", "-f", path.to_str().unwrap()])
    };
    let group = |spec: serde_json::Value| {
        json!({"apiVersion": "autoscaler.vpsie.com/v1alpha1", "kind": "NodeGroup",
               "metadata": {"name": format!("g-{}", uuid::Uuid::new_v4().simple())}, "spec": spec})
    };
    let valid = json!({"minNodes": 1, "maxNodes": 3, "clusterIdentifier": "c-1", "datacenter": "dc-1", "offerings": ["plan-a"]});

    let (ok, _, err) = apply(group(valid.clone()));
    assert!(ok, "a valid NodeGroup must be accepted: {err}");

    let mut inverted = valid.clone();
    inverted["minNodes"] = json!(5);
    let (ok, _, err) = apply(group(inverted));
    assert!(!ok && err.contains("minNodes must be less than or equal to maxNodes"), "{err}");

    let mut no_offering = valid.clone();
    no_offering.as_object_mut().unwrap().remove("offerings");
    let (ok, _, err) = apply(group(no_offering));
    assert!(!ok && err.contains("set offerings"), "{err}");

    let mut bad_duration = valid.clone();
    bad_duration["rebalance"] = json!({"drainTimeout": "5 minutes"});
    let (ok, _, err) = apply(group(bad_duration));
    assert!(!ok && err.contains("drainTimeout"), "{err}");

    let mut bad_strategy = valid.clone();
    bad_strategy["rebalance"] = json!({"strategy": "blue-green"});
    let (ok, _, err) = apply(group(bad_strategy));
    assert!(!ok && err.contains("\"rolling\"") && err.contains("\"surge\""), "{err}");

    let mut zero_concurrency = valid;
    zero_concurrency["rebalance"] = json!({"maxConcurrent": 0});
    let (ok, _, err) = apply(group(zero_concurrency));
    assert!(!ok && err.contains("maxConcurrent"), "{err}");
}

#[tokio::test]
async fn a_vpsienode_spec_cannot_be_changed_once_created() {
    let env = env();
    let ns = env.namespace("smoke-immutable").await;
    let api: Api<vpsie_autoscaler::crd::VPSieNode> = Api::namespaced(env.admin().await, &ns.name);
    let node = vpsie_autoscaler::crd::VPSieNode::new(
        "worker-1",
        vpsie_autoscaler::crd::VPSieNodeSpec {
            node_group: "g".into(),
            offering: "plan-a".into(),
            cluster_identifier: "c-1".into(),
            datacenter: "dc-1".into(),
        },
    );
    api.create(&PostParams::default(), &node).await.unwrap();
    let err = api
        .patch("worker-1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"offering": "plan-b"}})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");
}
