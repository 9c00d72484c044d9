//! The shipped manifests agree with the code: the ConfigMap holds a config the controller accepts, and
//! the ClusterRole grants what the controllers use.

use serde_yaml::Value;
use vpsie_autoscaler::config::Config;

fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

#[test]
fn the_shipped_configmap_holds_a_config_the_controller_accepts() {
    let docs = documents("deploy/manifests/config.yaml");
    let text = docs[0]["data"]["config.yaml"].as_str().expect("config.yaml key");
    let config = Config::parse(text, "deploy/manifests/config.yaml").unwrap();
    assert_eq!(config.rebalancer.max_concurrent, 1);
    assert!(config.rebalancer.rollback_on_failure);
}

#[test]
fn the_cluster_role_allows_evictions_status_writes_and_node_patches() {
    let docs = documents("deploy/manifests/rbac.yaml");
    let role = docs.iter().find(|d| d["kind"] == "ClusterRole").expect("a ClusterRole");
    let grants = |resource: &str, verb: &str| {
        role["rules"].as_sequence().unwrap().iter().any(|r| {
            let has = |key: &str, want: &str| {
                r[key].as_sequence().is_some_and(|s| s.iter().any(|v| v.as_str() == Some(want)))
            };
            has("resources", resource) && has("verbs", verb)
        })
    };
    for (resource, verb) in [
        ("pods/eviction", "create"),
        ("nodes", "patch"),
        ("vpsienodes/status", "patch"),
        ("rebalances/status", "patch"),
        ("nodegroups", "watch"),
        ("poddisruptionbudgets", "list"),
        ("events", "create"),
    ] {
        assert!(grants(resource, verb), "ClusterRole lacks {verb} on {resource}");
    }
}

#[test]
fn the_deployment_probes_health_and_readiness_on_the_metrics_port() {
    let docs = documents("deploy/manifests/deployment.yaml");
    let container = &docs[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(docs[0]["metadata"]["namespace"], "kube-system");
}
