//! Conversions from API objects, written as the JSON `kubectl get -o json` shows.

use std::time::Duration;

use k8s_openapi::api::{
    core::v1::{Node, Pod},
    policy::v1::PodDisruptionBudget,
};
use serde_json::{Value, json};

use super::*;
use crate::crd::{NodeGroup, VPSieNode};

const MI: i64 = 1 << 20;
const GI: i64 = 1 << 30;

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("fixture JSON matches the API type")
}

fn pod(spec: Value) -> Pod {
    from(json!({ "metadata": { "name": "p", "namespace": "ns" }, "spec": spec }))
}

fn container(name: &str, cpu: &str, memory: &str) -> Value {
    json!({ "name": name, "resources": { "requests": { "cpu": cpu, "memory": memory } } })
}

#[test]
fn a_pod_requests_the_sum_of_its_containers_and_counts_as_one_pod() {
    let info = PodInfo::from_k8s(&pod(json!({ "containers": [
        container("a", "250m", "64Mi"),
        container("b", "0.5", "128Mi"),
        { "name": "c", "resources": { "requests": { "ephemeral-storage": "1Gi", "nvidia.com/gpu": "1" } } },
        { "name": "d" },
    ] })))
    .unwrap();
    assert_eq!(info.requests, Resources::new(750, 192 * MI, 1, GI));
    assert_eq!(info.extended_requests.get("nvidia.com/gpu"), Some(&1));
}

#[test]
fn an_init_container_larger_than_the_app_containers_sets_the_request() {
    let info = PodInfo::from_k8s(&pod(json!({
        "initContainers": [container("migrate", "2", "64Mi"), container("warm", "100m", "1Gi")],
        "containers": [container("app", "500m", "256Mi")],
    })))
    .unwrap();
    assert_eq!(info.requests, Resources::new(2000, GI, 1, 0));
}

#[test]
fn sidecars_run_alongside_later_init_containers_and_the_app() {
    let sidecar = json!({ "name": "proxy", "restartPolicy": "Always",
        "resources": { "requests": { "cpu": "100m", "memory": "32Mi" } } });
    let info = PodInfo::from_k8s(&pod(json!({
        "initContainers": [sidecar, container("migrate", "1", "32Mi")],
        "containers": [container("app", "500m", "256Mi")],
    })))
    .unwrap();
    // Peak of the init sequence: proxy + migrate = 1100m; running: app + proxy = 600m, 288Mi.
    assert_eq!(info.requests, Resources::new(1100, 288 * MI, 1, 0));
}

#[test]
fn pod_overhead_is_added_and_pod_level_requests_replace_the_container_sum() {
    let info = PodInfo::from_k8s(&pod(json!({
        "containers": [container("app", "500m", "256Mi")],
        "overhead": { "cpu": "50m", "memory": "16Mi" },
        "resources": { "requests": { "cpu": "2" } },
    })))
    .unwrap();
    assert_eq!(info.requests, Resources::new(2050, 272 * MI, 1, 0));
}

#[test]
fn a_bad_quantity_is_an_error_naming_the_field_and_the_snapshot_skips_the_pod_with_a_note() {
    let bad = from::<Pod>(json!({
        "metadata": { "name": "odd", "namespace": "ns" },
        "spec": { "nodeName": "n1", "containers": [container("app", "lots", "1Gi")] },
    }));
    let err = PodInfo::from_k8s(&bad).unwrap_err();
    assert_eq!(err.to_string(), "spec.containers[app].requests.cpu: invalid quantity `lots`: there is no number");
    let snapshot = Snapshot::from_k8s([], [&bad], [], vec![]);
    assert!(snapshot.pods.is_empty());
    assert_eq!(snapshot.skipped[0].name, "ns/odd");
    assert_eq!(snapshot.skipped[0].node_name.as_deref(), Some("n1"));
}

#[test]
fn the_scheduler_verdict_unschedulable_is_read_from_the_pod_scheduled_condition() {
    let status = |reason: &str| {
        from::<Pod>(json!({
            "metadata": { "name": "p", "namespace": "ns" },
            "spec": { "containers": [] },
            "status": { "phase": "Pending", "conditions": [{ "type": "PodScheduled", "status": "False",
                "reason": reason, "lastTransitionTime": "2026-01-01T00:00:00Z" }] },
        }))
    };
    let info = PodInfo::from_k8s(&status("Unschedulable")).unwrap();
    assert!(info.unschedulable && info.is_pending_unschedulable());
    assert_eq!(info.unschedulable_since, Some("2026-01-01T00:00:00Z".parse().unwrap()));
    assert!(!PodInfo::from_k8s(&status("SchedulingGated")).unwrap().unschedulable);
}

#[test]
fn owners_annotations_and_volumes_mark_daemonset_mirror_protected_and_local_storage_pods() {
    let info = PodInfo::from_k8s(&from(json!({
        "metadata": { "name": "p", "namespace": "ns",
            "annotations": { "autoscaler.vpsie.com/do-not-disrupt": "true", "kubernetes.io/config.mirror": "x" },
            "ownerReferences": [
                { "apiVersion": "v1", "kind": "Other", "name": "o", "uid": "1" },
                { "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "2", "controller": true },
            ] },
        "spec": { "containers": [], "volumes": [{ "name": "scratch", "emptyDir": {} }] },
    })))
    .unwrap();
    assert_eq!(info.controller_kind.as_deref(), Some("DaemonSet"));
    assert!(info.is_daemonset && info.is_mirror && info.do_not_disrupt && info.has_local_storage);

    let plain = PodInfo::from_k8s(&pod(json!({ "containers": [],
        "volumes": [{ "name": "cfg", "configMap": { "name": "c" } }] })))
    .unwrap();
    assert!(plain.controller_kind.is_none() && !plain.has_local_storage && !plain.do_not_disrupt);
}

#[test]
fn selectors_affinity_and_tolerations_are_read() {
    let info = PodInfo::from_k8s(&pod(json!({
        "containers": [],
        "nodeSelector": { "pool": "web" },
        "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": { "nodeSelectorTerms": [
            { "matchExpressions": [{ "key": "zone", "operator": "In", "values": ["a"] }] },
        ] } } },
        "tolerations": [{ "operator": "Exists" }, { "key": "k", "value": "v", "effect": "NoExecute" }],
    })))
    .unwrap();
    assert_eq!(info.node_selector.get("pool").map(String::as_str), Some("web"));
    let terms = info.required_affinity.unwrap();
    assert_eq!(terms[0].match_expressions[0].operator, SelectorOperator::In);
    assert_eq!(
        info.tolerations[0],
        Toleration { key: None, operator: TolerationOperator::Exists, value: None, effect: None }
    );
    assert_eq!(info.tolerations[1].effect, Some(TaintEffect::NoExecute));

    let unknown = pod(json!({ "containers": [], "affinity": { "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": { "nodeSelectorTerms": [
            { "matchExpressions": [{ "key": "zone", "operator": "Near" }] }] } } } }));
    assert!(matches!(PodInfo::from_k8s(&unknown), Err(ConvertError::UnknownOperator { .. })));
}

#[test]
fn a_node_is_read_with_allocatable_taints_readiness_and_its_group() {
    let node: Node = from(json!({
        "metadata": { "name": "n1", "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": { "autoscaler.vpsie.com/nodegroup": "web" } },
        "spec": { "unschedulable": true, "taints": [{ "key": "k", "value": "v", "effect": "NoSchedule" }] },
        "status": {
            "capacity": { "cpu": "4", "memory": "8Gi", "pods": "110" },
            "allocatable": { "cpu": "3800m", "memory": "7Gi", "pods": "110", "ephemeral-storage": "50Gi" },
            "conditions": [{ "type": "Ready", "status": "True" }],
        },
    }));
    let info = NodeInfo::from_k8s(&node).unwrap();
    assert_eq!(info.allocatable, Resources::new(3800, 7 * GI, 110, 50 * GI));
    assert_eq!(info.taints, vec![Taint::new("k", Some("v"), TaintEffect::NoSchedule)]);
    assert!(info.ready && info.unschedulable && !info.deleting);
    assert_eq!(info.nodegroup.as_deref(), Some("web"));
    assert_eq!(info.created, Some("2026-01-01T00:00:00Z".parse().unwrap()));
}

#[test]
fn a_node_without_a_ready_condition_or_allocatable_is_not_ready_and_offers_its_capacity() {
    let node: Node = from(json!({ "metadata": { "name": "n" }, "status": { "capacity": { "cpu": "2" } } }));
    let info = NodeInfo::from_k8s(&node).unwrap();
    assert!(!info.ready);
    assert_eq!(info.allocatable.cpu_millis, 2000);
}

#[test]
fn a_pdb_without_status_allows_no_disruption_and_a_missing_selector_selects_nothing() {
    let pdb: PodDisruptionBudget = from(json!({ "metadata": { "name": "b", "namespace": "ns" }, "spec": {} }));
    let info = PdbInfo::from_k8s(&pdb).unwrap();
    assert_eq!((info.disruptions_allowed, info.selector), (0, None));

    let pdb: PodDisruptionBudget = from(json!({
        "metadata": { "name": "b", "namespace": "ns" },
        "spec": { "selector": { "matchLabels": { "app": "web" } } },
        "status": { "disruptionsAllowed": 2, "currentHealthy": 3, "desiredHealthy": 1, "expectedPods": 3 },
    }));
    let info = PdbInfo::from_k8s(&pdb).unwrap();
    assert_eq!(info.disruptions_allowed, 2);
    assert_eq!(info.selector.unwrap().match_labels.get("app").map(String::as_str), Some("web"));
}

fn nodegroup(spec: Value) -> NodeGroup {
    let mut base = json!({ "minNodes": 1, "maxNodes": 5, "clusterIdentifier": "c", "datacenter": "dc" });
    if let (Some(base), Some(extra)) = (base.as_object_mut(), spec.as_object()) {
        base.extend(extra.clone());
    }
    from(json!({
        "apiVersion": "autoscaler.vpsie.com/v1alpha1", "kind": "NodeGroup",
        "metadata": { "name": "web", "namespace": "ns" },
        "spec": base,
        "status": { "lastScaleUp": { "time": "2026-01-01T00:00:00Z", "nodes": 1 } },
    }))
}

fn vpsienode(group: &str, offering: &str, phase: &str) -> VPSieNode {
    from(json!({
        "apiVersion": "autoscaler.vpsie.com/v1alpha1", "kind": "VPSieNode",
        "metadata": { "name": format!("{group}-{offering}-{phase}"), "namespace": "ns" },
        "spec": { "nodeGroup": group, "offering": offering, "clusterIdentifier": "c", "datacenter": "dc" },
        "status": { "phase": phase },
    }))
}

#[test]
fn a_node_group_without_policies_takes_the_defaults() {
    let info = GroupInfo::from_nodegroup(&nodegroup(json!({})), vec![], &[]).unwrap();
    assert_eq!((info.namespace.as_str(), info.name.as_str(), info.min_nodes, info.max_nodes), ("ns", "web", 1, 5));
    assert!(info.scale_up_enabled && info.max_nodes_per_scale_up.is_none());
    assert_eq!(info.scale_down, ScaleDownSettings::default());
    assert_eq!(info.last_scale_up, Some("2026-01-01T00:00:00Z".parse().unwrap()));
}

#[test]
fn a_node_group_policy_labels_taints_and_allowed_offerings_are_read() {
    let group = nodegroup(json!({
        "offerings": ["small", "large"],
        "labels": { "pool": "web" },
        "taints": [{ "key": "dedicated", "value": "web", "effect": "NoSchedule" }],
        "scaleUp": { "enabled": false, "maxNodesPerScaleUp": 2 },
        "scaleDown": { "enabled": false, "utilizationThresholdPercent": 30, "unneededTime": "5m",
            "cooldown": "1h", "allowLocalStorage": true },
        "rebalance": { "minNodeAge": "2h" },
    }));
    let catalogue = vec![
        OfferingInfo::new("small", 2000, 4 * GI, 0.02),
        OfferingInfo::new("large", 8000, 16 * GI, 0.08),
        OfferingInfo::new("other", 4000, 8 * GI, 0.04),
    ];
    let info = GroupInfo::from_nodegroup(&group, catalogue, &[]).unwrap();
    assert_eq!(info.offerings.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), ["small", "large"]);
    assert_eq!(info.labels.get("pool").map(String::as_str), Some("web"));
    assert_eq!(info.taints, vec![Taint::new("dedicated", Some("web"), TaintEffect::NoSchedule)]);
    assert!(!info.scale_up_enabled);
    assert_eq!(info.max_nodes_per_scale_up, Some(2));
    assert_eq!(
        info.scale_down,
        ScaleDownSettings {
            enabled: false,
            utilization_threshold_percent: 30,
            unneeded_time: Duration::from_secs(300),
            cooldown: Duration::from_secs(3600),
            allow_local_storage: true,
            min_node_age: Duration::from_secs(7200),
        }
    );
}

#[test]
fn a_resource_range_keeps_only_offerings_inside_it() {
    let group = nodegroup(json!({ "resources": { "minCpu": 2, "maxCpu": 4, "minMemoryMiB": 4096 } }));
    let catalogue = vec![
        OfferingInfo::new("tiny", 1000, 2 * GI, 0.01),
        OfferingInfo::new("small", 2000, 4 * GI, 0.02),
        OfferingInfo::new("huge", 16000, 64 * GI, 0.2),
    ];
    let info = GroupInfo::from_nodegroup(&group, catalogue, &[]).unwrap();
    assert_eq!(info.offerings.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), ["small"]);
}

#[test]
fn vpsienodes_of_the_group_count_as_current_in_flight_or_leaving_by_phase() {
    let nodes = [
        vpsienode("web", "small", "Ready"),
        vpsienode("web", "small", "Pending"),
        vpsienode("web", "large", "Provisioning"),
        vpsienode("web", "small", "Joining"),
        vpsienode("web", "small", "Draining"),
        vpsienode("web", "small", "Terminating"),
        vpsienode("web", "small", "Failed"),
        vpsienode("db", "small", "Ready"),
    ];
    let info = GroupInfo::from_nodegroup(&nodegroup(json!({})), vec![], &nodes).unwrap();
    assert_eq!(info.current_nodes, 1);
    assert_eq!(info.in_flight, ["small", "large", "small"]);
    assert_eq!(info.leaving_nodes, 2);
}

#[test]
fn a_node_group_with_an_unreadable_duration_is_an_error_naming_the_field() {
    let group = nodegroup(json!({ "scaleDown": { "cooldown": "soon" } }));
    let err = GroupInfo::from_nodegroup(&group, vec![], &[]).unwrap_err();
    assert!(err.to_string().starts_with("node group ns/web: scaleDown.cooldown: invalid duration `soon`"), "{err}");
}
