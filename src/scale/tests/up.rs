use super::*;
use crate::{
    scale::{
        Misfit, ObjectRef, Rejection, daemonset_overhead,
        up::{Capacity, NewNodeReason, plan_scale_up},
    },
    snapshot::{
        NodeSelectorTerm, Requirement, SelectorOperator,
        wellknown::{INSTANCE_TYPE_LABEL, REGION_LABEL, ZONE_LABEL},
    },
};

fn small() -> OfferingInfo {
    offering("small", 2, 4, 1.0)
}

fn large(price: f64) -> OfferingInfo {
    offering("large", 4, 8, price)
}

/// Offerings per group in the plan, as `(group, [(offering, count)])`.
fn shape(plan: &crate::scale::ScaleUpPlan) -> Vec<(String, Vec<(String, u32)>)> {
    plan.groups.iter().map(|g| (g.group.name.clone(), g.offerings.clone())).collect()
}

fn counts(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
    pairs.iter().map(|(o, n)| (o.to_string(), *n)).collect()
}

#[test]
fn nothing_pending_and_every_group_at_min_plans_nothing() {
    let plan =
        plan_scale_up(&snapshot(vec![], vec![pod("running", 100, 100)], vec![group("g", 0, 5, vec![small()])]), now());
    assert!(plan.is_empty());
    assert!(plan.unschedulable.is_empty() && plan.absorbed.is_empty());
}

#[test]
fn a_pending_pod_gets_one_node_of_the_cheapest_offering_it_fits() {
    let g = group("g", 0, 5, vec![large(3.0), small(), offering("tiny", 1, 1, 0.5)]);
    let plan = plan_scale_up(&snapshot(vec![], vec![pending("p", 1500, 512)], vec![g]), now());
    assert_eq!(shape(&plan), vec![("g".to_string(), counts(&[("small", 1)]))]);
    let node = &plan.groups[0].nodes[0];
    assert_eq!(node.pods, vec![ObjectRef::new("default", "p")]);
    assert_eq!(node.reason, NewNodeReason::PendingPods);
    assert_eq!(node.pending_since, Some(at(-60)));
    assert_eq!(plan.groups[0].hourly_cost, 1.0);
}

#[test]
fn two_pods_go_on_one_large_node_when_it_is_cheaper_than_two_small_ones() {
    let pods = vec![pending("a", 1500, 512), pending("b", 1500, 512)];
    let plan = plan_scale_up(&snapshot(vec![], pods, vec![group("g", 0, 5, vec![small(), large(1.5)])]), now());
    assert_eq!(shape(&plan), vec![("g".to_string(), counts(&[("large", 1)]))]);
    assert_eq!(plan.groups[0].nodes[0].pods.len(), 2);
    assert_eq!(plan.groups[0].hourly_cost, 1.5);
}

#[test]
fn two_pods_go_on_two_small_nodes_when_the_large_one_costs_more_than_both() {
    let pods = vec![pending("a", 1500, 512), pending("b", 1500, 512)];
    let plan = plan_scale_up(&snapshot(vec![], pods, vec![group("g", 0, 5, vec![small(), large(2.5)])]), now());
    assert_eq!(shape(&plan), vec![("g".to_string(), counts(&[("small", 2)]))]);
    assert_eq!(plan.groups[0].hourly_cost, 2.0);
}

#[test]
fn the_last_straggler_gets_a_small_node_rather_than_a_half_empty_large_one() {
    let pods = vec![pending("a", 1500, 512), pending("b", 1500, 512), pending("c", 1500, 512)];
    let plan = plan_scale_up(&snapshot(vec![], pods, vec![group("g", 0, 5, vec![small(), large(1.5)])]), now());
    assert_eq!(shape(&plan), vec![("g".to_string(), counts(&[("large", 1), ("small", 1)]))]);
    assert_eq!(plan.groups[0].hourly_cost, 2.5);
}

#[test]
fn small_pods_share_nodes_instead_of_getting_one_each() {
    let pods = (0..6).map(|i| pending(&format!("p{i}"), 500, 256)).collect();
    let plan = plan_scale_up(&snapshot(vec![], pods, vec![group("g", 0, 10, vec![small()])]), now());
    assert_eq!(shape(&plan), vec![("g".to_string(), counts(&[("small", 2)]))]);
}

#[test]
fn every_pod_scales_one_group_only_the_cheapest_per_pod() {
    let groups = vec![group("dear", 0, 5, vec![offering("s", 2, 4, 2.0)]), group("cheap", 0, 5, vec![small()])];
    let plan = plan_scale_up(&snapshot(vec![], vec![pending("a", 1000, 256), pending("b", 1000, 256)], groups), now());
    assert_eq!(shape(&plan), vec![("cheap".to_string(), counts(&[("small", 1)]))]);
}

#[test]
fn groups_that_cost_the_same_are_chosen_by_name() {
    let groups = vec![group("b", 0, 5, vec![small()]), group("a", 0, 5, vec![small()])];
    let plan = plan_scale_up(&snapshot(vec![], vec![pending("p", 1000, 256)], groups), now());
    assert_eq!(shape(&plan), vec![("a".to_string(), counts(&[("small", 1)]))]);
}

#[test]
fn a_pod_selecting_a_group_goes_there_even_when_another_is_cheaper() {
    let groups = vec![group("cheap", 0, 5, vec![small()]), group("special", 0, 5, vec![offering("s", 2, 4, 9.0)])];
    let p = pending("p", 1000, 256).with(|p| p.node_selector = labels(&[("pool", "special")]));
    let plan = plan_scale_up(&snapshot(vec![], vec![p], groups), now());
    assert_eq!(shape(&plan), vec![("special".to_string(), counts(&[("s", 1)]))]);
}

/// A pending pod whose required node affinity names one zone.
fn in_zone(name: &str, zone: &str) -> PodInfo {
    let term = NodeSelectorTerm {
        match_expressions: vec![Requirement {
            key: ZONE_LABEL.to_string(),
            operator: SelectorOperator::In,
            values: vec![zone.to_string()],
        }],
        match_fields: vec![],
    };
    pending(name, 1000, 256).with(|p| p.required_affinity = Some(vec![term]))
}

#[test]
fn a_pod_requiring_the_zone_of_the_groups_datacenter_gets_a_node_planned() {
    let plan = plan_scale_up(&snapshot(vec![], vec![in_zone("p", DC)], vec![group("g", 0, 5, vec![small()])]), now());
    assert_eq!(shape(&plan), vec![("g".to_string(), counts(&[("small", 1)]))]);
    assert_eq!(plan.groups[0].nodes[0].pods, vec![ObjectRef::new("default", "p")]);
}

#[test]
fn a_pod_requiring_another_zone_gets_no_node_and_the_reason_is_its_affinity() {
    let plan =
        plan_scale_up(&snapshot(vec![], vec![in_zone("p", "dc-tor1")], vec![group("g", 0, 5, vec![small()])]), now());
    assert!(plan.is_empty());
    let misfit = Rejection::Misfit { offering: "small".to_string(), misfit: Misfit::NodeAffinityMismatch };
    assert_eq!(plan.unschedulable[0].reasons, vec![(ObjectRef::new("default", "g"), misfit)]);
}

#[test]
fn a_zone_pinned_pod_goes_to_the_group_in_its_zone_even_when_another_is_cheaper() {
    let here = group("here", 0, 5, vec![small()]);
    let there = group("there", 0, 5, vec![offering("s", 2, 4, 9.0)]).with(|g| g.datacenter = "dc-tor1".to_string());
    let plan = plan_scale_up(&snapshot(vec![], vec![in_zone("p", "dc-tor1")], vec![here, there]), now());
    assert_eq!(shape(&plan), vec![("there".to_string(), counts(&[("s", 1)]))]);
}

#[test]
fn a_pod_selecting_an_instance_type_and_region_gets_that_offering_not_the_cheapest() {
    let p = pending("p", 1000, 256)
        .with(|p| p.node_selector = labels(&[(INSTANCE_TYPE_LABEL, "large"), (REGION_LABEL, DC)]));
    let plan = plan_scale_up(&snapshot(vec![], vec![p], vec![group("g", 0, 5, vec![small(), large(3.0)])]), now());
    assert_eq!(shape(&plan), vec![("g".to_string(), counts(&[("large", 1)]))]);
}

#[test]
fn pods_that_fit_on_in_flight_nodes_do_not_trigger_a_second_scale_up() {
    let g = group("g", 0, 5, vec![small(), large(1.5)]).with(|g| g.in_flight = vec!["large".to_string()]);
    let pods = vec![pending("a", 1500, 512), pending("b", 1500, 512)];
    let plan = plan_scale_up(&snapshot(vec![], pods.clone(), vec![g.clone()]), now());
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(plan.absorbed.len(), 2);
    assert_eq!(
        plan.absorbed[0].by,
        Capacity::InFlight { group: ObjectRef::new("default", "g"), offering_id: "large".to_string() }
    );

    let mut more = pods;
    more.push(pending("c", 1500, 512));
    let plan = plan_scale_up(&snapshot(vec![], more, vec![g]), now());
    assert_eq!(shape(&plan), vec![("g".to_string(), counts(&[("small", 1)]))], "only the third pod needs a node");
}

#[test]
fn in_flight_nodes_only_absorb_pods_that_tolerate_their_group() {
    let tainted = group("gpu", 0, 5, vec![large(1.0)]).with(|g| {
        g.taints = vec![taint("dedicated", "gpu", TaintEffect::NoSchedule)];
        g.in_flight = vec!["large".to_string()];
    });
    let plain = group("plain", 0, 5, vec![small()]);
    let plan = plan_scale_up(&snapshot(vec![], vec![pending("p", 1000, 256)], vec![tainted, plain]), now());
    assert!(plan.absorbed.is_empty());
    assert_eq!(shape(&plan), vec![("plain".to_string(), counts(&[("small", 1)]))]);
}

#[test]
fn a_node_that_joined_after_the_pod_was_found_unschedulable_absorbs_it() {
    let fresh = node("fresh", Some("g"), 2, 4).with(|n| n.created = Some(at(-30)));
    let g = group("g", 0, 5, vec![small()]);
    let plan = plan_scale_up(&snapshot(vec![fresh.clone()], vec![pending("p", 1000, 256)], vec![g.clone()]), now());
    assert!(plan.is_empty());
    assert_eq!(plan.absorbed[0].by, Capacity::JoinedNode { node: "fresh".to_string() });

    let refused_after_join = pending("p", 1000, 256).with(|p| p.unschedulable_since = Some(at(-10)));
    let plan = plan_scale_up(&snapshot(vec![fresh.clone()], vec![refused_after_join], vec![g.clone()]), now());
    assert_eq!(plan.groups.len(), 1, "the scheduler saw the node and still refused: trust it");

    let old = fresh.with(|n| n.created = Some(at(-600)));
    let plan = plan_scale_up(&snapshot(vec![old], vec![pending("p", 1000, 256)], vec![g]), now());
    assert_eq!(plan.groups.len(), 1, "the scheduler has had time to retry on an older node");
}

#[test]
fn a_just_joined_node_still_carrying_the_not_ready_taint_absorbs_the_pod_but_a_group_taint_does_not() {
    let g = group("g", 0, 5, vec![small()]);
    let starting = node("fresh", Some("g"), 2, 4).with(|n| {
        n.created = Some(at(-5));
        n.taints = vec![taint("node.kubernetes.io/not-ready", "", TaintEffect::NoSchedule)];
    });
    let plan = plan_scale_up(&snapshot(vec![starting.clone()], vec![pending("p", 1000, 256)], vec![g.clone()]), now());
    assert!(plan.is_empty(), "the startup taint is lifted by the control plane within seconds");

    let dedicated = starting.with(|n| n.taints = vec![taint("dedicated", "gpu", TaintEffect::NoSchedule)]);
    let plan = plan_scale_up(&snapshot(vec![dedicated], vec![pending("p", 1000, 256)], vec![g]), now());
    assert_eq!(plan.groups.len(), 1, "a taint that stays keeps the pod off");
}

#[test]
fn max_nodes_caps_the_plan_counting_current_in_flight_and_leaving_nodes() {
    let g = group("g", 0, 4, vec![small()]).with(|g| {
        g.current_nodes = 1;
        g.leaving_nodes = 1;
        // A plan no longer offered has no known size, but its worker still takes a slot.
        g.in_flight = vec!["retired-plan".to_string()];
    });
    let pods = (0..3).map(|i| pending(&format!("p{i}"), 1500, 256)).collect();
    let plan = plan_scale_up(&snapshot(vec![], pods, vec![g]), now());
    assert_eq!(shape(&plan), vec![("g".to_string(), counts(&[("small", 1)]))]);
    assert_eq!(plan.unschedulable.len(), 2);
    assert_eq!(plan.unschedulable[0].to_string(), "group default/g: at maxNodes (4)");
}

#[test]
fn pods_a_full_group_cannot_take_go_to_the_next_best_group() {
    let groups = vec![group("cheap", 0, 1, vec![small()]), group("dear", 0, 5, vec![offering("s", 2, 4, 2.0)])];
    let pods = (0..3).map(|i| pending(&format!("p{i}"), 1500, 256)).collect();
    let plan = plan_scale_up(&snapshot(vec![], pods, groups), now());
    assert_eq!(
        shape(&plan),
        vec![("cheap".to_string(), counts(&[("small", 1)])), ("dear".to_string(), counts(&[("s", 2)]))]
    );
    assert!(plan.unschedulable.is_empty());
}

#[test]
fn max_nodes_per_scale_up_limits_one_pass() {
    let g = group("g", 0, 10, vec![small()]).with(|g| g.max_nodes_per_scale_up = Some(2));
    let pods = (0..4).map(|i| pending(&format!("p{i}"), 1500, 256)).collect();
    let plan = plan_scale_up(&snapshot(vec![], pods, vec![g]), now());
    assert_eq!(shape(&plan), vec![("g".to_string(), counts(&[("small", 2)]))]);
    assert_eq!(plan.unschedulable[0].to_string(), "group default/g: maxNodesPerScaleUp (2) reached in this pass");
}

#[test]
fn a_group_with_scale_up_disabled_takes_no_pods_and_says_so() {
    let g = group("g", 0, 10, vec![small()]).with(|g| g.scale_up_enabled = false);
    let plan = plan_scale_up(&snapshot(vec![], vec![pending("p", 100, 100)], vec![g]), now());
    assert!(plan.is_empty());
    assert_eq!(plan.unschedulable[0].reasons[0].1, Rejection::ScaleUpDisabled);
}

#[test]
fn a_pod_that_fits_no_group_is_listed_with_every_groups_reason() {
    let gpu =
        group("a", 0, 5, vec![small()]).with(|g| g.taints = vec![taint("dedicated", "gpu", TaintEffect::NoSchedule)]);
    let full = group("b", 0, 1, vec![small()]).with(|g| g.current_nodes = 1);
    let tiny = group("c", 0, 5, vec![small()]);
    let plan = plan_scale_up(&snapshot(vec![], vec![pending("p", 3000, 256)], vec![gpu, full, tiny]), now());
    assert!(plan.is_empty());
    assert_eq!(
        plan.unschedulable[0].to_string(),
        "group default/a: untolerated taint dedicated=gpu:NoSchedule; \
         group default/b: insufficient cpu (requests 3000m, 2000m free) even on its largest offering small; \
         group default/c: insufficient cpu (requests 3000m, 2000m free) even on its largest offering small"
    );

    let plan = plan_scale_up(&snapshot(vec![], vec![pending("p", 100, 100)], vec![]), now());
    assert_eq!(plan.unschedulable[0].to_string(), "no node groups");
}

#[test]
fn a_group_below_min_nodes_gets_its_cheapest_offering_without_pending_pods() {
    let g = group("g", 3, 5, vec![large(2.0), small()]).with(|g| g.current_nodes = 1);
    let plan = plan_scale_up(&snapshot(vec![], vec![], vec![g.clone()]), now());
    assert_eq!(shape(&plan), vec![("g".to_string(), counts(&[("small", 2)]))]);
    assert!(plan.groups[0].nodes.iter().all(|n| n.reason == NewNodeReason::MinNodes && n.pods.is_empty()));

    let coming = g.with(|g| g.in_flight = vec!["small".to_string()]);
    let plan = plan_scale_up(&snapshot(vec![], vec![], vec![coming]), now());
    assert_eq!(shape(&plan), vec![("g".to_string(), counts(&[("small", 1)]))], "in-flight nodes count towards min");
}

#[test]
fn min_nodes_is_kept_even_with_scale_up_disabled_and_pending_pods_use_those_nodes() {
    let g = group("g", 2, 5, vec![small()]).with(|g| g.scale_up_enabled = false);
    let plan = plan_scale_up(&snapshot(vec![], vec![pending("p", 1000, 256)], vec![g]), now());
    assert_eq!(shape(&plan), vec![("g".to_string(), counts(&[("small", 2)]))]);
    assert_eq!(plan.groups[0].nodes[0].pods, vec![ObjectRef::new("default", "p")]);
    assert!(plan.unschedulable.is_empty());
}

#[test]
fn daemonset_pods_of_the_group_are_taken_off_a_new_nodes_room() {
    let busy = node("n1", Some("g"), 2, 4);
    let pods = vec![daemon("agent", "n1", 1000, 256), on(pod("work", 1000, 256), "n1"), pending("p", 1500, 256)];
    let g = group("g", 0, 5, vec![small(), large(3.0)]).with(|g| g.current_nodes = 1);
    let plan = plan_scale_up(&snapshot(vec![busy], pods, vec![g]), now());
    assert_eq!(shape(&plan), vec![("g".to_string(), counts(&[("large", 1)]))], "1500m + 1000m agent > 2 cores");
}

#[test]
fn offerings_without_a_usable_price_are_never_planned() {
    let g = group("g", 1, 5, vec![offering("nan", 2, 4, f64::NAN), offering("neg", 2, 4, -1.0)]);
    let plan = plan_scale_up(&snapshot(vec![], vec![pending("p", 100, 100)], vec![g]), now());
    assert!(plan.is_empty());
    assert_eq!(plan.unschedulable[0].reasons[0].1, Rejection::NoOfferings);
}

#[test]
fn bound_terminating_and_gated_pods_are_not_pending() {
    let pods = vec![
        on(pending("bound", 100, 100), "n"),
        pending("leaving", 100, 100).with(|p| p.terminating = true),
        pending("gated", 100, 100).with(|p| p.unschedulable = false),
    ];
    let plan = plan_scale_up(&snapshot(vec![], pods, vec![group("g", 0, 5, vec![small()])]), now());
    assert!(plan.is_empty() && plan.unschedulable.is_empty());
}

#[test]
fn the_scale_up_note_says_min_nodes_when_that_is_why() {
    let g = group("g", 2, 5, vec![small()]);
    let plan = plan_scale_up(&snapshot(vec![], vec![], vec![g.clone()]), now());
    assert_eq!(plan.groups[0].to_string(), "adding 2 node(s) (2.0000 USD/h) to reach minNodes (2)");

    let plan = plan_scale_up(&snapshot(vec![], vec![pending("p", 1000, 256)], vec![g.clone()]), now());
    assert_eq!(
        plan.groups[0].to_string(),
        "adding 2 node(s) (2.0000 USD/h) to reach minNodes (2); 1 pending pod(s) will use them"
    );

    let pods = (0..3).map(|i| pending(&format!("p{i}"), 1500, 256)).collect();
    let plan = plan_scale_up(&snapshot(vec![], pods, vec![g.clone()]), now());
    assert_eq!(
        plan.groups[0].to_string(),
        "adding 3 node(s) (3.0000 USD/h): 2 to reach minNodes (2), 1 for pending pods; 3 pending pod(s) in all"
    );
}

#[test]
fn the_scale_up_note_of_a_group_at_min_nodes_names_only_the_pending_pods() {
    let g = group("g", 0, 5, vec![small()]);
    let pods = vec![pending("a", 700, 256), pending("b", 700, 256)];
    let plan = plan_scale_up(&snapshot(vec![], pods, vec![g]), now());
    assert_eq!(plan.groups[0].to_string(), "adding 1 node(s) (1.0000 USD/h) for 2 pending pod(s)");
}

#[test]
fn a_groups_daemonset_overhead_is_the_largest_on_its_own_nodes_or_on_any_node_while_it_has_none() {
    let nodes = vec![node("g1", Some("g"), 4, 8), node("g2", Some("g"), 4, 8), node("o1", Some("other"), 4, 8)];
    let pods = vec![
        daemon("agent-g1", "g1", 100, 64),
        daemon("logs-g1", "g1", 50, 32),
        daemon("agent-g2", "g2", 200, 16),
        daemon("agent-o1", "o1", 900, 512),
        on(pod("work", 3000, 4096), "g2"),
        daemon("done", "g2", 5000, 5000).with(|p| p.phase = PodPhase::Succeeded),
    ];
    let g = group("g", 0, 5, vec![small()]);
    let empty = group("empty", 0, 5, vec![small()]);
    let s = snapshot(nodes, pods, vec![g.clone(), empty.clone()]);
    // g1 holds 150m / 96Mi, g2 200m / 16Mi: the most of each dimension, whatever node it is on. Neither
    // the workload pod nor the finished DaemonSet pod counts.
    assert_eq!(daemonset_overhead(&s, &g), Resources::new(200, 96 * MI, 2, 0));
    assert_eq!(daemonset_overhead(&s, &empty), Resources::new(900, 512 * MI, 2, 0));
}
