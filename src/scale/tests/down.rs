use std::time::Duration;

use super::*;
use crate::{
    scale::{
        Blocked, Misfit, ObjectRef,
        down::{Closest, PodMove, ScaleDownPlan, UnneededSince, plan_scale_down},
    },
    snapshot::{PodPhase, Skipped},
};

/// Group `g` (min 0) with an under-used node `a` holding `on_a`, and a busy node `b` (2500m of 4000m
/// requested) that still has 1500m and plenty of memory free.
fn pair(on_a: Vec<PodInfo>) -> Snapshot {
    let mut pods: Vec<PodInfo> = on_a.into_iter().map(|p| on(p, "a")).collect();
    pods.push(on(pod("steady", 2500, 512), "b"));
    snapshot(
        vec![node("a", Some("g"), 4, 8), node("b", Some("g"), 4, 8)],
        pods,
        vec![group("g", 0, 5, vec![]).with(|g| g.current_nodes = 2)],
    )
}

fn decide(snapshot: &Snapshot) -> ScaleDownPlan {
    plan_scale_down(snapshot, now(), &UnneededSince::new())
}

fn removed(plan: &ScaleDownPlan) -> Vec<&str> {
    plan.remove.iter().map(|r| r.node.as_str()).collect()
}

fn reason_for<'a>(plan: &'a ScaleDownPlan, node: &str) -> &'a Blocked {
    &plan.blocked.iter().find(|b| b.node == node).unwrap_or_else(|| panic!("{node} is not blocked: {plan:?}")).reason
}

fn web() -> PodInfo {
    pod("web", 500, 256)
}

#[test]
fn an_under_used_node_is_removed_and_its_pods_are_placed_on_another() {
    let plan = decide(&pair(vec![web()]));
    assert_eq!(removed(&plan), ["a"]);
    assert_eq!(plan.remove[0].moves, vec![PodMove { pod: ObjectRef::new("default", "web"), to: "b".to_string() }]);
    assert!(plan.blocked.is_empty());
    assert_eq!(plan.unneeded_since.get("a"), Some(&now()));
}

#[test]
fn a_node_at_the_threshold_in_cpu_or_in_memory_is_needed() {
    for heavy in [pod("cpu", 2000, 256), pod("memory", 100, 4096)] {
        let plan = decide(&pair(vec![heavy]));
        assert!(plan.remove.is_empty() && plan.blocked.is_empty(), "{plan:?}");
        assert!(plan.unneeded_since.is_empty());
    }
}

#[test]
fn daemonset_pods_count_towards_utilization_but_never_need_to_move() {
    let plan = decide(&pair(vec![daemon("agent", "a", 2100, 64)]));
    assert!(plan.remove.is_empty(), "the agent puts the node over 50% cpu");
    let plan = decide(&pair(vec![daemon("agent", "a", 100, 64)]));
    assert_eq!(removed(&plan), ["a"]);
    assert!(plan.remove[0].moves.is_empty());
}

#[test]
fn mirror_terminating_and_finished_pods_do_not_need_to_move() {
    let mirror = pod("static", 100, 64).with(|p| {
        p.is_mirror = true;
        p.controller_kind = Some("Node".to_string());
    });
    let leaving = pod("leaving", 100, 64).with(|p| {
        p.terminating = true;
        p.controller_kind = None;
    });
    let done = pod("done", 100, 64).with(|p| {
        p.phase = PodPhase::Succeeded;
        p.controller_kind = None;
    });
    let plan = decide(&pair(vec![mirror, leaving, done]));
    assert_eq!(removed(&plan), ["a"]);
    assert!(plan.remove[0].moves.is_empty());
}

#[test]
fn the_unneeded_time_runs_from_the_first_time_the_node_was_seen_unneeded() {
    let mut snap = pair(vec![web()]);
    snap.groups[0].scale_down.unneeded_time = Duration::from_secs(600);
    let first = decide(&snap);
    assert!(first.remove.is_empty());
    assert_eq!(reason_for(&first, "a").to_string(), format!("unneeded since {}; removed once unneeded for 10m", now()));
    assert_eq!(first.unneeded_since.get("a"), Some(&now()));

    let remembered = UnneededSince::from([("a".to_string(), at(-601)), ("b".to_string(), at(-900))]);
    let later = plan_scale_down(&snap, now(), &remembered);
    assert_eq!(removed(&later), ["a"]);
    assert_eq!(later.unneeded_since.get("a"), Some(&at(-601)), "the first sighting is kept");
    assert!(!later.unneeded_since.contains_key("b"), "a busy node is forgotten");
}

#[test]
fn a_group_at_min_nodes_keeps_its_nodes() {
    let mut snap = pair(vec![web()]);
    snap.groups[0].min_nodes = 2;
    let plan = decide(&snap);
    assert!(plan.remove.is_empty());
    assert_eq!(reason_for(&plan, "a").to_string(), "the node group is at minNodes (2)");

    let mut snap = pair(vec![web()]);
    snap.groups[0].min_nodes = 2;
    snap.groups[0].current_nodes = 3;
    assert!(decide(&snap).remove.is_empty(), "only two nodes are really there");
}

#[test]
fn a_group_at_min_nodes_in_its_cooldown_names_min_nodes_as_the_blocker() {
    let mut snap = pair(vec![web()]);
    snap.groups[0].min_nodes = 2;
    snap.groups[0].last_scale_up = Some(at(-60));
    let plan = decide(&snap);
    assert!(plan.remove.is_empty());
    assert_eq!(reason_for(&plan, "a"), &Blocked::AtMinNodes { min: 2 });
}

#[test]
fn scale_down_disabled_removes_nothing_and_says_so() {
    let mut snap = pair(vec![web()]);
    snap.groups[0].scale_down.enabled = false;
    let plan = decide(&snap);
    assert!(plan.remove.is_empty());
    assert_eq!(reason_for(&plan, "a"), &Blocked::ScaleDownDisabled);
}

#[test]
fn nothing_is_removed_during_the_cooldown_after_a_scale_up() {
    let mut snap = pair(vec![web()]);
    snap.groups[0].last_scale_up = Some(at(-60));
    let plan = decide(&snap);
    assert_eq!(reason_for(&plan, "a"), &Blocked::Cooldown { until: at(540) });

    snap.groups[0].last_scale_up = Some(at(-601));
    assert_eq!(removed(&decide(&snap)), ["a"]);
}

#[test]
fn a_do_not_disrupt_pod_keeps_its_node() {
    let plan = decide(&pair(vec![web().with(|p| p.do_not_disrupt = true)]));
    assert!(plan.remove.is_empty());
    assert_eq!(
        reason_for(&plan, "a").to_string(),
        "pod default/web is annotated autoscaler.vpsie.com/do-not-disrupt=true"
    );
}

#[test]
fn a_pod_with_local_storage_keeps_its_node_unless_the_group_allows_it() {
    let mut snap = pair(vec![web().with(|p| p.has_local_storage = true)]);
    assert_eq!(reason_for(&decide(&snap), "a"), &Blocked::LocalStorage { pod: ObjectRef::new("default", "web") });
    snap.groups[0].scale_down.allow_local_storage = true;
    assert_eq!(removed(&decide(&snap)), ["a"]);
}

#[test]
fn a_bare_pod_keeps_its_node() {
    let plan = decide(&pair(vec![web().with(|p| p.controller_kind = None)]));
    assert_eq!(reason_for(&plan, "a").to_string(), "pod default/web has no controller and would not be recreated");
}

#[test]
fn a_pod_whose_pdb_allows_no_disruption_keeps_its_node() {
    let mut snap = pair(vec![web()]);
    snap.pdbs = vec![pdb("web-pdb", "web", 0)];
    let plan = decide(&snap);
    assert!(plan.remove.is_empty());
    assert_eq!(
        reason_for(&plan, "a").to_string(),
        "PodDisruptionBudget default/web-pdb allows no disruption of pod default/web"
    );

    snap.pdbs = vec![pdb("web-pdb", "web", 1), pdb("other", "db", 0)];
    assert_eq!(removed(&decide(&snap)), ["a"]);
}

#[test]
fn a_pdb_budget_spent_by_one_removal_is_not_spent_again_in_the_same_plan() {
    let nodes = vec![node("x", Some("g1"), 4, 8), node("y", Some("g2"), 4, 8), node("spare", None, 8, 16)];
    let pods = vec![on(pod("web-1", 500, 256), "x"), on(pod("web-2", 500, 256), "y")]
        .into_iter()
        .map(|p| p.with(|p| p.labels = labels(&[("app", "web")]).into()))
        .collect();
    let groups = ["g1", "g2"].map(|g| group(g, 0, 5, vec![]).with(|g| g.current_nodes = 1)).to_vec();
    let snap = Snapshot { pdbs: vec![pdb("web-pdb", "web", 1)], ..snapshot(nodes, pods, groups) };
    let plan = decide(&snap);
    assert_eq!(removed(&plan), ["x"]);
    assert!(matches!(reason_for(&plan, "y"), Blocked::PdbAllowsNoDisruption { .. }));
}

#[test]
fn an_unreadable_pdb_in_the_namespace_keeps_the_node() {
    let mut snap = pair(vec![web()]);
    snap.skipped.push(Skipped {
        kind: "PodDisruptionBudget",
        name: "default/broken".to_string(),
        node_name: None,
        reason: "spec.selector: unknown operator `Near`".to_string(),
    });
    assert_eq!(reason_for(&decide(&snap), "a"), &Blocked::UnreadablePdb { namespace: "default".to_string() });
}

#[test]
fn an_unreadable_pod_on_the_node_keeps_it() {
    let mut snap = pair(vec![]);
    snap.skipped.push(Skipped {
        kind: "Pod",
        name: "default/odd".to_string(),
        node_name: Some("a".to_string()),
        reason: "spec.containers[c].requests.cpu: invalid quantity `lots`: ...".to_string(),
    });
    assert!(matches!(reason_for(&decide(&snap), "a"), Blocked::UnreadablePod { .. }));
}

#[test]
fn the_node_being_removed_is_never_room_for_its_own_pods() {
    let snap = snapshot(
        vec![node("a", Some("g"), 4, 8)],
        vec![on(web(), "a")],
        vec![group("g", 0, 5, vec![]).with(|g| g.current_nodes = 2)],
    );
    let plan = decide(&snap);
    assert_eq!(reason_for(&plan, "a").to_string(), "pod default/web fits on no other node (none can take pods)");
}

#[test]
fn a_node_removed_in_the_same_plan_is_not_room_for_another_nodes_pods() {
    // x (group g1, empty) goes first; y's pod would only fit on x.
    let nodes = vec![node("x", Some("g1"), 4, 8), node("y", Some("g2"), 4, 8), node("full", None, 4, 8)];
    let pods = vec![on(pod("work", 1500, 256), "y"), on(pod("hog", 3000, 256), "full")];
    let groups = ["g1", "g2"].map(|g| group(g, 0, 5, vec![]).with(|g| g.current_nodes = 2)).to_vec();
    let plan = decide(&snapshot(nodes, pods, groups));
    assert_eq!(removed(&plan), ["x"]);
    assert_eq!(
        reason_for(&plan, "y"),
        &Blocked::NoRoomFor {
            pod: ObjectRef::new("default", "work"),
            closest: Some(Box::new(Closest {
                node: "full".to_string(),
                misfit: Misfit::InsufficientCpu { requested: 1500, free: 1000 }
            })),
        }
    );
}

#[test]
fn room_given_to_one_pod_is_not_given_to_the_next() {
    // b has 1500m free: enough for each pod alone, not for both.
    let plan = decide(&pair(vec![pod("w1", 800, 256), pod("w2", 800, 256)]));
    assert!(plan.remove.is_empty());
    assert_eq!(
        reason_for(&plan, "a").to_string(),
        "pod default/w2 fits on no other node (closest: b, insufficient cpu (requests 800m, 700m free))"
    );
}

#[test]
fn pods_move_only_where_their_selectors_and_tolerations_allow() {
    let mut snap = pair(vec![web()]);
    snap.nodes[1].taints = vec![taint("dedicated", "db", TaintEffect::NoSchedule)];
    assert_eq!(
        reason_for(&decide(&snap), "a").to_string(),
        "pod default/web fits on no other node (closest: b, untolerated taint dedicated=db:NoSchedule)"
    );
    let picky = pair(vec![web().with(|p| p.node_selector = labels(&[("kubernetes.io/hostname", "a")]))]);
    assert!(matches!(reason_for(&decide(&picky), "a"), Blocked::NoRoomFor { .. }));
}

#[test]
fn a_cordoned_node_is_left_to_whoever_cordoned_it() {
    let mut snap = pair(vec![web()]);
    snap.nodes[0].unschedulable = true;
    assert_eq!(reason_for(&decide(&snap), "a"), &Blocked::Cordoned);
}

#[test]
fn a_node_a_rebalance_holds_is_not_scaled_down_even_when_empty() {
    let mut snap = pair(vec![]);
    snap.nodes[0].labels.insert(crate::crd::REBALANCE_LABEL.into(), "in-progress".into());
    assert_eq!(reason_for(&decide(&snap), "a"), &Blocked::Rebalancing);
    assert!(decide(&snap).remove.iter().all(|r| r.node != "a"));
}

#[test]
fn a_node_younger_than_the_minimum_age_stays() {
    let mut snap = pair(vec![web()]);
    snap.groups[0].scale_down.min_node_age = Duration::from_secs(7200);
    assert_eq!(reason_for(&decide(&snap), "a").to_string(), "the node is younger than the minimum node age 2h");
}

#[test]
fn one_node_per_group_goes_per_pass_and_the_least_used_goes_first() {
    let mut snap = pair(vec![pod("w", 900, 256)]);
    snap.nodes.push(node("c", Some("g"), 4, 8));
    snap.pods.push(on(pod("tiny", 100, 64), "c").into());
    snap.groups[0].current_nodes = 3;
    let plan = decide(&snap);
    assert_eq!(removed(&plan), ["c"]);
    assert_eq!(reason_for(&plan, "a"), &Blocked::AnotherNodeRemoved { node: "c".to_string() });
}

#[test]
fn a_node_that_takes_pods_in_this_pass_is_not_removed_in_it() {
    let nodes = vec![node("a", Some("g1"), 4, 8), node("z", Some("g2"), 4, 8)];
    let pods = vec![on(web(), "a"), on(pod("z-work", 600, 256), "z")];
    let groups = ["g1", "g2"].map(|g| group(g, 0, 5, vec![]).with(|g| g.current_nodes = 2)).to_vec();
    let plan = decide(&snapshot(nodes, pods, groups));
    assert_eq!(removed(&plan), ["a"]);
    assert_eq!(reason_for(&plan, "z"), &Blocked::ReceivesPods);
}

#[test]
fn nodes_outside_any_group_and_not_ready_nodes_are_never_removed() {
    let mut snap = pair(vec![web()]);
    snap.nodes[0].nodegroup = None;
    assert!(decide(&snap).remove.is_empty());
    let mut snap = pair(vec![web()]);
    snap.nodes[0].ready = false;
    assert!(decide(&snap).remove.is_empty());
}

#[test]
fn a_node_whose_last_drain_was_blocked_stays_until_its_backoff_ends_and_says_when() {
    let mut snap = pair(vec![web()]);
    let cause = "DrainBlockedByPDB".to_string();
    snap.drain_backoff.insert("a".into(), crate::snapshot::DrainBackoff { until: at(300), cause: cause.clone() });
    let plan = decide(&snap);
    assert!(removed(&plan).is_empty(), "{plan:?}");
    assert_eq!(reason_for(&plan, "a"), &Blocked::DrainBackoff { until: at(300), cause });
    assert!(reason_for(&plan, "a").to_string().contains(&format!("retries it after {}", at(300))));

    let after = plan_scale_down(&snap, at(301), &UnneededSince::new());
    assert_eq!(removed(&after), ["a"], "the backoff is over at {}", at(300));
}

#[test]
fn pods_on_a_node_are_those_bound_to_it_and_holding_resources_in_snapshot_order() {
    let done = pod("done", 100, 64).with(|p| p.phase = PodPhase::Succeeded);
    let snap = pair(vec![web(), done, pod("other", 100, 64)]);
    let on_a: Vec<&str> = snap.pods_on("a").map(|p| p.name.as_str()).collect();
    assert_eq!(on_a, ["web", "other"], "a finished pod holds nothing");
    let on_b: Vec<&str> = snap.pods_on("b").map(|p| p.name.as_str()).collect();
    assert_eq!(on_b, ["steady"]);
    assert_eq!(snap.pods_on("nowhere").count(), 0);
    assert_eq!(snap.node("b").map(|n| n.name.as_str()), Some("b"));
    assert!(snap.node("nowhere").is_none());
    assert_eq!(snap.requested_on("a").cpu_millis, 600);
}

#[test]
fn a_node_of_a_same_named_group_in_another_namespace_is_never_removed_for_this_one() {
    let mut snap = pair(vec![]);
    snap.nodes[0].nodegroup_namespace = Some("elsewhere".into());
    let plan = decide(&snap);
    assert!(removed(&plan).iter().all(|n| *n != "a"), "{plan:?}");
    assert!(plan.blocked.iter().all(|b| b.node != "a"), "{plan:?}");
    // The same node attributed to the group's own namespace is considered (and, empty, removed).
    snap.nodes[0].nodegroup_namespace = Some("default".into());
    assert!(removed(&decide(&snap)).contains(&"a"));
}
