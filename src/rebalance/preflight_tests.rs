//! Validation and pre-flight: group `g` with nodes `a` and `b` on `big`, `c` in group `other`.

use std::collections::BTreeMap;

use super::preflight::*;
use crate::crd::{KubeDuration, RebalanceSpec, nodegroup::RebalanceStrategy, rebalance::PlannedReplacement};
use crate::scale::tests::{group, node, offering, on, pdb, pending, pod, snapshot};
use crate::snapshot::Snapshot;

fn cluster(pods: Vec<crate::snapshot::PodInfo>) -> Snapshot {
    let catalogue = vec![offering("big", 4, 8, 0.10), offering("small", 1, 2, 0.025)];
    snapshot(
        vec![node("a", Some("g"), 4, 8), node("b", Some("g"), 4, 8), node("c", Some("other"), 4, 8)],
        pods,
        vec![group("g", 0, 5, catalogue.clone()), group("other", 0, 5, catalogue)],
    )
}

fn owners() -> BTreeMap<String, NodeOwner> {
    ["a", "b", "c"]
        .into_iter()
        .map(|n| (n.to_string(), NodeOwner { namespace: "default".into(), vpsienode: format!("vn-{n}") }))
        .collect()
}

fn replace(node: &str, vpsienode: &str, to: &str) -> PlannedReplacement {
    PlannedReplacement {
        old_node: node.into(),
        old_vpsie_node: vpsienode.into(),
        old_offering: "big".into(),
        new_offering: to.into(),
        old_hourly_price: 0.10,
        new_hourly_price: 0.025,
    }
}

fn spec(replacements: Vec<PlannedReplacement>) -> RebalanceSpec {
    RebalanceSpec {
        node_group: "g".into(),
        strategy: RebalanceStrategy::Rolling,
        max_concurrent: 1,
        drain_timeout: KubeDuration::from_secs(300),
        health_check_interval: KubeDuration::from_secs(10),
        rollback_on_failure: true,
        replacements,
    }
}

#[test]
fn a_well_formed_request_is_valid() {
    assert_eq!(validate(&cluster(vec![]), "default", &spec(vec![replace("a", "vn-a", "small")]), &owners()), Ok(()));
}

#[test]
fn each_malformed_replacement_is_refused_with_what_to_fix() {
    let bad = spec(vec![
        replace("ghost", "vn-ghost", "small"),
        replace("c", "vn-c", "small"),
        replace("a", "vn-b", "small"),
        replace("b", "vn-b", "huge"),
    ]);
    let problems = validate(&cluster(vec![]), "default", &bad, &owners()).unwrap_err();
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(problems[0].contains("node ghost does not exist"), "{}", problems[0]);
    assert!(problems[1].contains("node c belongs to group other, not g"), "{}", problems[1]);
    assert!(problems[2].contains("is the node of VPSieNode default/vn-a, not of vn-b"), "{}", problems[2]);
    assert!(problems[3].contains("offering huge is not allowed for group g; allowed: big, small"), "{}", problems[3]);
}

#[test]
fn a_request_for_a_missing_group_is_refused() {
    let mut missing = spec(vec![replace("a", "vn-a", "small")]);
    missing.node_group = "nope".into();
    let problems = validate(&cluster(vec![]), "default", &missing, &owners()).unwrap_err();
    assert!(problems[0].contains("NodeGroup default/nope does not exist"), "{problems:?}");
}

#[test]
fn a_passing_preflight_records_the_baseline_with_the_nodes_already_cordoned() {
    let mut snap = cluster(vec![on(pod("web", 500, 256), "a")]);
    snap.nodes[2].unschedulable = true;
    let baseline =
        preflight(&snap, "default", &spec(vec![replace("a", "vn-a", "small")]), &Conditions::default()).unwrap();
    assert_eq!(baseline.nodes, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(baseline.already_cordoned, vec!["c".to_string()]);
    assert_eq!(baseline.ready_nodes, 2);
    assert_eq!(baseline.unschedulable_pods, 0);
}

#[test]
fn a_budget_that_allows_no_disruption_fails_preflight() {
    let mut snap = cluster(vec![on(pod("web", 500, 256), "a")]);
    snap.pdbs.push(pdb("web-pdb", "web", 0));
    let problems =
        preflight(&snap, "default", &spec(vec![replace("a", "vn-a", "small")]), &Conditions::default()).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("PodDisruptionBudget default/web-pdb allows no disruption"), "{}", problems[0]);
}

#[test]
fn pods_with_nowhere_to_go_fail_preflight_counting_neither_replaced_nor_cordoned_nodes() {
    let request = spec(vec![replace("a", "vn-a", "small")]);
    // Node c of the other group is cordoned throughout; the replacement is a 1-core `small`.
    let with = |pods| {
        let mut snap = cluster(pods);
        snap.nodes[2].unschedulable = true;
        snap
    };
    let full = with(vec![on(pod("big-web", 3500, 256), "a"), on(pod("filler", 3900, 256), "b")]);
    let problems = preflight(&full, "default", &request, &Conditions::default()).unwrap_err();
    assert!(problems.iter().any(|p| p.contains("pod default/big-web would have nowhere to go")), "{problems:?}");
    let roomy = with(vec![on(pod("big-web", 3500, 256), "a")]);
    assert!(preflight(&roomy, "default", &request, &Conditions::default()).is_ok());
    let mut b_cordoned = roomy;
    b_cordoned.nodes[1].unschedulable = true;
    assert!(preflight(&b_cordoned, "default", &request, &Conditions::default()).is_err());
}

#[test]
fn an_unsettled_cluster_another_operation_or_an_unreachable_api_fail_preflight_each_with_its_reason() {
    let mut snap = cluster(vec![pending("waiting", 100, 64)]);
    snap.nodes[1].ready = false;
    let conditions = Conditions {
        other_operation: Some("rb-1".into()),
        cloud_trouble: Some("connection refused".into()),
        window_closed: None,
        foreign_nodes: Default::default(),
    };
    let problems = preflight(&snap, "default", &spec(vec![replace("a", "vn-a", "small")]), &conditions).unwrap_err();
    let all = problems.join("\n");
    assert!(all.contains("operation rb-1 is still running on group g"), "{all}");
    assert!(all.contains("the VPSie API is not reachable: connection refused"), "{all}");
    assert!(all.contains("node b of the group is not Ready"), "{all}");
    assert!(all.contains("1 pod(s) cannot be scheduled (first: default/waiting)"), "{all}");
}

#[test]
fn a_same_named_groups_node_in_another_namespace_is_not_part_of_the_baseline_or_its_health() {
    let mut snap = cluster(vec![]);
    snap.nodes[1].ready = false;
    let conditions = Conditions { foreign_nodes: ["b".to_string()].into(), ..Default::default() };
    let baseline = preflight(&snap, "default", &spec(vec![replace("a", "vn-a", "small")]), &conditions).unwrap();
    assert_eq!(baseline.nodes, vec!["a".to_string()]);
}
