//! The shipped manifests (rendered from the chart by scripts/render-manifests) agree with the code: the
//! ConfigMap holds a config the controller accepts, and the roles grant what the controllers use and
//! nothing they never use.

use serde_json::Value;
use vpsie_autoscaler::config::Config;

fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
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
        role["rules"].as_array().unwrap().iter().any(|r| {
            let has =
                |key: &str, want: &str| r[key].as_array().is_some_and(|s| s.iter().any(|v| v.as_str() == Some(want)));
            has("resources", resource) && has("verbs", verb)
        })
    };
    for (resource, verb) in [
        ("pods/eviction", "create"),
        ("vpsienodes", "create"),
        ("nodes", "delete"),
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

/// Every (resource, verb) a role of `docs` grants, with the resource names it is limited to.
fn grants(docs: &[Value], kind: &str) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for role in docs.iter().filter(|d| d["kind"] == kind) {
        for rule in role["rules"].as_array().unwrap() {
            let list = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default()
            };
            for resource in list("resources") {
                for verb in list("verbs") {
                    out.push((resource.clone(), verb, list("resourceNames")));
                }
            }
        }
    }
    out
}

#[test]
fn the_roles_grant_nothing_the_code_never_uses() {
    let docs = documents("deploy/manifests/rbac.yaml");
    let cluster = grants(&docs, "ClusterRole");
    let has = |resource: &str, verb: &str| cluster.iter().any(|(r, v, _)| r == resource && v == verb);
    assert!(cluster.iter().all(|(r, v, _)| r != "*" && v != "*"), "no wildcards: {cluster:?}");
    assert!(!has("nodes", "update"), "nodes are patched (cordon, labels, taints), never replaced");
    for verb in ["create", "update", "patch"] {
        assert!(!has("pods", verb), "no pod writes but evictions and forced-drain deletes ({verb})");
    }
    assert!(!has("nodegroups", "create") && !has("nodegroups", "delete"), "NodeGroups are the operators'");
    assert!(cluster.iter().all(|(r, _, _)| r != "secrets"), "no cluster-wide access to Secrets");

    let namespaced = grants(&docs, "Role");
    let secrets: Vec<_> = namespaced.iter().filter(|(r, _, _)| r == "secrets").collect();
    assert!(!secrets.is_empty(), "the credentials Secret is readable");
    for (_, verb, names) in secrets {
        assert_eq!(verb, "get", "the credentials Secret is read, not listed or watched");
        assert_eq!(names, &vec!["vpsie-secret".to_string()], "one Secret, by name");
    }
}
