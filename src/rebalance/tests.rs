//! Analysis tests: one group `g` whose nodes run on a 4-core plan at 0.10 $/h and may move to cheaper ones.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;

use super::*;
use crate::scale::tests::{With, at, daemon, group, node, now, offering, on, pod, snapshot};
use crate::snapshot::{GroupInfo, NodeInfo, PodInfo, Snapshot};

fn catalogue() -> Vec<crate::snapshot::OfferingInfo> {
    vec![offering("big", 4, 8, 0.10), offering("medium", 2, 4, 0.05), offering("small", 1, 2, 0.025)]
}

fn enabled() -> GroupSettings {
    GroupSettings {
        enabled: true,
        min_savings_percent: 10,
        min_node_age: Duration::ZERO,
        backoff_until: None,
        window_opened: None,
    }
}

fn worker(offering: &str, price: f64) -> Worker {
    Worker {
        vpsienode: "default/vn".into(),
        offering: offering.into(),
        hourly_price: price,
        created_by_rebalance: None,
    }
}

struct Case {
    snapshot: Snapshot,
    settings: BTreeMap<String, GroupSettings>,
    workers: BTreeMap<String, Worker>,
}

impl Case {
    /// Node `a` of group `g` on `big`, holding `pods`.
    fn new(pods: Vec<PodInfo>) -> Self {
        Self::with(vec![node("a", Some("g"), 4, 8)], pods, group("g", 0, 5, catalogue()))
    }

    fn with(nodes: Vec<NodeInfo>, pods: Vec<PodInfo>, group: GroupInfo) -> Self {
        let workers = nodes.iter().map(|n| (n.name.clone(), worker("big", 0.10))).collect();
        Self {
            snapshot: snapshot(nodes, pods, vec![group]),
            settings: BTreeMap::from([("default/g".to_string(), enabled())]),
            workers,
        }
    }

    fn run_at(&self, now: Timestamp) -> Analysis {
        analyse(&Input { snapshot: &self.snapshot, settings: &self.settings, workers: &self.workers, now })
    }

    fn run(&self) -> Analysis {
        self.run_at(now())
    }
}

fn skip_of(analysis: &Analysis, node: &str) -> Skip {
    analysis
        .skipped
        .iter()
        .find(|s| s.node == node)
        .unwrap_or_else(|| panic!("{node} not skipped: {analysis:?}"))
        .reason
        .clone()
}

#[test]
fn a_node_whose_pods_fit_a_cheaper_offering_is_a_candidate_for_the_cheapest_that_fits() {
    // 1.5 cores and 1 GiB: too much for `small` (1 core), fits `medium`.
    let case = Case::new(vec![on(pod("web", 1000, 512), "a"), on(pod("api", 500, 512), "a")]);
    let analysis = case.run();
    assert_eq!(analysis.candidates.len(), 1, "{analysis:?}");
    let c = &analysis.candidates[0];
    assert_eq!((c.node.as_str(), c.to_offering.as_str(), c.pods), ("a", "medium", 2));
    assert!((c.hourly_saving - 0.05).abs() < 1e-9 && (c.saving_percent - 50.0).abs() < 1e-9, "{c:?}");
    assert!((analysis.hourly_savings() - 0.05).abs() < 1e-9);
}

#[test]
fn daemonset_pods_count_as_overhead_on_the_replacement() {
    // 900m of app pods fit a 1-core `small`, but the 200m DaemonSet pod every node runs does not leave room.
    let case = Case::new(vec![on(pod("web", 900, 256), "a"), daemon("agent", "a", 200, 64)]);
    let c = &case.run().candidates[0];
    assert_eq!(c.to_offering, "medium", "{c:?}");
    assert_eq!(c.pods, 1, "DaemonSet pods do not move");
}

#[test]
fn a_node_already_on_the_cheapest_offering_is_skipped_with_that_reason() {
    let mut case = Case::new(vec![on(pod("web", 100, 64), "a")]);
    case.workers.insert("a".into(), worker("small", 0.025));
    assert_eq!(skip_of(&case.run(), "a"), Skip::AlreadyCheapest { offering: "small".into() });
}

#[test]
fn pods_that_fit_no_cheaper_offering_keep_the_node_and_the_reason_names_the_pod() {
    let case = Case::new(vec![on(pod("huge", 3000, 512), "a")]);
    let skip = skip_of(&case.run(), "a");
    assert!(
        matches!(&skip, Skip::NoCheaperOfferingFits { pod, offering, .. } if pod == "default/huge" && offering == "medium"),
        "{skip:?}"
    );
}

#[test]
fn a_saving_under_the_group_minimum_is_not_worth_an_operation() {
    // 1.2 cores: `medium` is the cheapest that fits, saving 50%.
    let mut case = Case::new(vec![on(pod("web", 1200, 512), "a")]);
    case.settings.get_mut("default/g").unwrap().min_savings_percent = 60;
    let skip = skip_of(&case.run(), "a");
    assert!(matches!(skip, Skip::SavingsBelowMinimum { min_percent: 60, .. }), "{skip:?}");
    assert!(skip.to_string().contains("50.0%"), "{skip}");
}

#[test]
fn young_nodes_cordoned_nodes_and_unmanaged_nodes_are_skipped_each_with_its_reason() {
    let young = node("young", Some("g"), 4, 8).with(|n| n.created = Some(at(-60)));
    let cordoned = node("cordoned", Some("g"), 4, 8).with(|n| n.unschedulable = true);
    let stranger = node("stranger", Some("g"), 4, 8);
    let mut case = Case::with(vec![young, cordoned, stranger], vec![], group("g", 0, 5, catalogue()));
    case.workers.remove("stranger");
    case.settings.get_mut("default/g").unwrap().min_node_age = Duration::from_secs(600);
    let analysis = case.run();
    assert!(analysis.candidates.is_empty(), "{analysis:?}");
    assert_eq!(skip_of(&analysis, "young"), Skip::TooYoung { min_age_secs: 600 });
    assert_eq!(skip_of(&analysis, "cordoned"), Skip::Cordoned);
    assert_eq!(skip_of(&analysis, "stranger"), Skip::NotManaged);
}

#[test]
fn do_not_disrupt_and_bare_pods_keep_their_node() {
    let protected = on(pod("keep", 100, 64), "a").with(|p| p.do_not_disrupt = true);
    assert_eq!(skip_of(&Case::new(vec![protected]).run(), "a"), Skip::DoNotDisrupt { pod: "default/keep".into() });
    let bare = on(pod("bare", 100, 64), "a").with(|p| p.controller_kind = None);
    assert_eq!(skip_of(&Case::new(vec![bare]).run(), "a"), Skip::BarePod { pod: "default/bare".into() });
}

#[test]
fn a_node_a_rebalance_created_in_the_open_window_is_not_replaced_again_in_it() {
    let mut case = Case::new(vec![on(pod("web", 100, 64), "a")]);
    case.workers.get_mut("a").unwrap().created_by_rebalance = Some(at(-300));
    case.settings.get_mut("default/g").unwrap().window_opened = Some(at(-600));
    assert_eq!(skip_of(&case.run(), "a"), Skip::CreatedByRebalance { at: at(-300) });
    // Created before this window opened: a candidate again.
    case.settings.get_mut("default/g").unwrap().window_opened = Some(at(-200));
    assert_eq!(case.run().candidates.len(), 1);
}

#[test]
fn a_group_with_rebalancing_disabled_or_backing_off_after_a_rollback_has_no_candidates() {
    let mut case = Case::new(vec![on(pod("web", 100, 64), "a")]);
    case.settings.get_mut("default/g").unwrap().backoff_until = Some(at(60));
    assert_eq!(skip_of(&case.run(), "a"), Skip::GroupBackoff { until: at(60) });
    assert_eq!(case.run_at(at(61)).candidates.len(), 1, "the backoff is over");
    case.settings.get_mut("default/g").unwrap().enabled = false;
    assert_eq!(skip_of(&case.run_at(at(61)), "a"), Skip::RebalanceDisabled);
    case.settings.clear();
    assert_eq!(skip_of(&case.run(), "a"), Skip::RebalanceDisabled);
}

#[test]
fn candidates_come_largest_saving_first_and_every_node_is_either_a_candidate_or_skipped() {
    let nodes = vec![node("a", Some("g"), 4, 8), node("b", Some("g"), 4, 8), node("c", Some("g"), 4, 8)];
    let pods = vec![on(pod("one", 1500, 512), "a"), on(pod("two", 100, 64), "b"), on(pod("three", 3500, 64), "c")];
    let case = Case::with(nodes, pods, group("g", 0, 5, catalogue()));
    let analysis = case.run();
    let order: Vec<(&str, &str)> =
        analysis.candidates.iter().map(|c| (c.node.as_str(), c.to_offering.as_str())).collect();
    assert_eq!(order, [("b", "small"), ("a", "medium")]);
    assert_eq!(analysis.skipped.len(), 1);
    assert_eq!(analysis.skipped[0].node, "c");
}

#[test]
fn the_analysis_serialises_to_json_with_reason_kinds() {
    let case = Case::new(vec![on(pod("keep", 100, 64), "a").with(|p| p.do_not_disrupt = true)]);
    let json = serde_json::to_value(case.run()).unwrap();
    assert_eq!(json["skipped"][0]["reason"]["kind"], "doNotDisrupt");
    assert_eq!(json["skipped"][0]["node"], "a");
}

#[test]
fn the_plan_table_lists_candidates_with_savings_and_every_other_node_with_its_reason() {
    let nodes = vec![node("a", Some("g"), 4, 8), node("b", Some("g"), 4, 8)];
    let pods = vec![on(pod("web", 1500, 512), "a"), on(pod("keep", 100, 64), "b").with(|p| p.do_not_disrupt = true)];
    let table = super::plan::table(&Case::with(nodes, pods, group("g", 0, 5, catalogue())).run());
    assert!(table.contains("CANDIDATES (1; 0.0500 USD/h saved in all)"), "{table}");
    let row = table.lines().find(|l| l.starts_with("default/g") && l.contains(" a ")).expect("a row for node a");
    assert!(row.contains("big") && row.contains("medium") && row.contains("0.0500"), "{row}");
    let why = table.lines().find(|l| l.contains(" b ")).expect("a row for node b");
    assert!(why.contains("DoNotDisrupt") && why.contains("default/keep"), "{why}");
}

#[test]
fn a_node_of_a_same_named_group_in_another_namespace_is_neither_a_candidate_nor_skipped_here() {
    let mut case = Case::new(vec![on(pod("web", 500, 256), "a")]);
    case.workers.get_mut("a").unwrap().vpsienode = "elsewhere/vn".into();
    let analysis = case.run();
    assert!(analysis.candidates.is_empty(), "{analysis:?}");
    assert!(analysis.skipped.iter().all(|s| s.node != "a"), "{analysis:?}");
}
