//! Objects the end-to-end suites share: a NodeGroup in the stack's simulated cluster and a Deployment
//! of pause pods that only that group's nodes can run.

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{Api, api::ListParams};
use serde_json::{Value, json};
use vpsie_autoscaler::crd::NodeGroup;

use super::stack::Stack;

/// NodeGroup `name` in the stack's cluster and datacenter, labelling its nodes `pool=<pool>`: 0 to 4
/// nodes of offering `2` unless `spec` (merged key by key over these) says otherwise.
pub fn nodegroup(s: &Stack, name: &str, pool: &str, spec: Value) -> NodeGroup {
    let mut merged = json!({
        "minNodes": 0, "maxNodes": 4,
        "clusterIdentifier": s.cluster, "datacenter": s.datacenter,
        "offerings": ["2"],
        "labels": {"pool": pool},
    });
    if let (Some(base), Value::Object(extra)) = (merged.as_object_mut(), spec) {
        base.extend(extra);
    }
    serde_json::from_value(json!({
        "apiVersion": "autoscaler.vpsie.com/v1alpha1", "kind": "NodeGroup",
        "metadata": {"name": name},
        "spec": merged,
    }))
    .unwrap()
}

/// Deployment `app` of `replicas` pause pods (label `app=app`) requesting `cpu` and `memory`, that only
/// nodes labelled `pool=<pool>` can run.
pub fn app_deployment(pool: &str, replicas: i32, cpu: &str, memory: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {
                    "nodeSelector": {"pool": pool},
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
                },
            },
        },
    }))
    .unwrap()
}

/// The `app=app` pods that run and are not being deleted.
pub async fn running_app_pods(pods: &Api<Pod>) -> usize {
    let list = pods.list(&ListParams::default().labels("app=app")).await.map(|l| l.items).unwrap_or_default();
    list.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count()
}
