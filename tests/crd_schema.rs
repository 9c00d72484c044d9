//! The CRD YAML as the binary prints it: checked in without drift, and carrying the validation that lets
//! the API server reject bad objects with a message that says what to fix.

use serde_json::Value;
use vpsie_autoscaler::crd;

fn crd_json(kind: &str) -> Value {
    let crd = crd::all().into_iter().find(|c| c.spec.names.kind == kind).expect("crd exists");
    serde_json::to_value(crd).unwrap()
}

fn version(kind: &str) -> Value {
    crd_json(kind)["spec"]["versions"][0].clone()
}

fn spec_schema(kind: &str) -> Value {
    version(kind)["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

fn rules(schema: &Value) -> Vec<(String, String)> {
    schema["x-kubernetes-validations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| (r["rule"].as_str().unwrap().to_string(), r["message"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_checked_in_crds_match_what_the_binary_prints() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crds/crds.yaml");
    let checked_in = std::fs::read_to_string(path).expect("deploy/crds/crds.yaml exists");
    let printed = crd::all_yaml().unwrap();
    assert!(
        checked_in == printed,
        "deploy/crds/crds.yaml is stale: regenerate it with `cargo run -- crd > deploy/crds/crds.yaml`"
    );
}

#[test]
fn all_three_kinds_live_in_the_project_group_with_a_status_subresource() {
    for kind in ["NodeGroup", "VPSieNode", "Rebalance"] {
        let crd = crd_json(kind);
        assert_eq!(crd["spec"]["group"], "autoscaler.vpsie.com");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let v = version(kind);
        assert_eq!(v["name"], "v1alpha1");
        assert!(v["subresources"]["status"].is_object(), "{kind} lacks the status subresource");
    }
}

#[test]
fn node_group_sizes_are_bounded_and_min_cannot_exceed_max() {
    let spec = spec_schema("NodeGroup");
    assert_eq!(spec["properties"]["minNodes"]["minimum"].as_f64(), Some(0.0));
    assert_eq!(spec["properties"]["maxNodes"]["minimum"].as_f64(), Some(1.0));
    let rules = rules(&spec);
    assert!(rules.iter().any(|(r, m)| r == "self.minNodes <= self.maxNodes" && m.contains("minNodes")), "{rules:?}");
    assert!(rules.iter().any(|(r, _)| r.contains("offerings") && r.contains("resources")), "{rules:?}");
}

#[test]
fn the_rebalance_policy_has_exactly_the_runbook_keys_with_checked_values() {
    let policy = &spec_schema("NodeGroup")["properties"]["rebalance"]["properties"];
    for key in ["strategy", "maxConcurrent", "drainTimeout", "healthCheckInterval", "rollbackOnFailure"] {
        assert!(policy[key].is_object(), "missing {key}");
    }
    let strategies: Vec<_> = policy["strategy"]["enum"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(strategies, ["rolling", "surge"]);
    assert_eq!(policy["maxConcurrent"]["minimum"].as_f64(), Some(1.0));
    for key in ["drainTimeout", "healthCheckInterval", "minNodeAge"] {
        assert_eq!(policy[key]["pattern"], crd::duration::DURATION_PATTERN, "{key}");
    }
    for key in ["maintenanceWindows", "minSavingsPercent", "minNodeAge"] {
        assert!(policy[key].is_object(), "missing {key}");
    }
}

#[test]
fn specs_of_vpsienodes_and_rebalances_are_immutable() {
    for kind in ["VPSieNode", "Rebalance"] {
        let rules = rules(&spec_schema(kind));
        assert!(rules.iter().any(|(r, m)| r == "self == oldSelf" && m.contains("immutable")), "{kind}: {rules:?}");
    }
}

#[test]
fn vpsienode_phases_are_the_documented_seven() {
    let phase = &version("VPSieNode")["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["phase"];
    let phases: Vec<_> = phase["enum"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(phases, ["Pending", "Provisioning", "Joining", "Ready", "Draining", "Terminating", "Failed"]);
}

#[test]
fn rebalance_phases_cover_preflight_and_rollback() {
    let phase = &version("Rebalance")["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["phase"];
    let phases: Vec<_> = phase["enum"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(phases, ["Pending", "PreFlight", "Running", "RollingBack", "Succeeded", "RolledBack", "Failed"]);
}

#[test]
fn wide_vpsienode_listing_shows_what_the_runbook_asks_for() {
    let columns = version("VPSieNode")["additionalPrinterColumns"].clone();
    let names: Vec<_> = columns.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect();
    for wanted in ["Phase", "Reason", "NodeGroup", "Offering", "Node", "IP"] {
        assert!(names.iter().any(|n| n == wanted), "missing column {wanted}: {names:?}");
    }
    let short = crd_json("VPSieNode")["spec"]["names"]["shortNames"].clone();
    assert_eq!(short, serde_json::json!(["vn"]));
}

#[test]
fn every_schema_is_structural_without_refs_or_unions() {
    let yaml = crd::all_yaml().unwrap();
    for forbidden in ["$ref", "anyOf", "oneOf", "allOf"] {
        assert!(!yaml.contains(forbidden), "non-structural construct {forbidden} in the CRDs");
    }
}
