use super::*;
use crate::{
    scale::{
        Misfit, Target,
        fit::{check, selector_matches, tolerates},
        template,
    },
    snapshot::{LabelSelector, NodeSelectorTerm, Requirement, SelectorOperator},
};

fn empty(node: &NodeInfo) -> Target {
    Target::from_node(node, [])
}

fn expr(key: &str, operator: SelectorOperator, values: &[&str]) -> Requirement {
    Requirement { key: key.to_string(), operator, values: values.iter().map(|v| v.to_string()).collect() }
}

fn requiring(terms: Vec<Vec<Requirement>>) -> PodInfo {
    pod("p", 100, 100).with(|p| {
        p.required_affinity =
            Some(terms.into_iter().map(|e| NodeSelectorTerm { match_expressions: e, match_fields: vec![] }).collect())
    })
}

fn zone(z: &str) -> Target {
    empty(&node("n", None, 4, 8).with(|n| {
        n.labels.insert("zone".to_string(), z.to_string());
        n.labels.insert("gen".to_string(), "5".to_string());
    }))
}

#[test]
fn a_pod_without_constraints_fits_an_empty_node() {
    assert_eq!(check(&pod("p", 1000, 1024), &empty(&node("n", None, 2, 4))), Ok(()));
}

#[test]
fn a_cordoned_node_refuses_new_pods() {
    let node = node("n", None, 2, 4).with(|n| n.unschedulable = true);
    assert_eq!(check(&pod("p", 100, 100), &empty(&node)), Err(Misfit::NodeUnschedulable));
}

#[test]
fn a_node_selector_must_match_every_key() {
    let target = empty(&node("n", Some("web"), 2, 4));
    let selecting = |pairs: &[(&str, &str)]| pod("p", 100, 100).with(|p| p.node_selector = labels(pairs));
    assert_eq!(check(&selecting(&[("pool", "web")]), &target), Ok(()));
    assert_eq!(
        check(&selecting(&[("pool", "web"), ("disk", "ssd")]), &target),
        Err(Misfit::NodeSelectorMismatch { key: "disk".to_string() })
    );
    assert_eq!(check(&selecting(&[("pool", "db")]), &target).unwrap_err().to_string(), "node selector mismatch (pool)");
}

#[test]
fn required_affinity_in_matches_only_the_listed_values() {
    let pod = requiring(vec![vec![expr("zone", SelectorOperator::In, &["a", "b"])]]);
    assert_eq!(check(&pod, &zone("a")), Ok(()));
    assert_eq!(check(&pod, &zone("c")), Err(Misfit::NodeAffinityMismatch));
    assert_eq!(check(&pod, &empty(&node("n", None, 4, 8))), Err(Misfit::NodeAffinityMismatch));
}

#[test]
fn required_affinity_not_in_also_matches_a_node_without_the_label() {
    let pod = requiring(vec![vec![expr("zone", SelectorOperator::NotIn, &["a"])]]);
    assert_eq!(check(&pod, &zone("a")), Err(Misfit::NodeAffinityMismatch));
    assert_eq!(check(&pod, &zone("b")), Ok(()));
    assert_eq!(check(&pod, &empty(&node("n", None, 4, 8))), Ok(()));
}

#[test]
fn required_affinity_exists_and_does_not_exist_look_only_at_the_key() {
    let exists = requiring(vec![vec![expr("zone", SelectorOperator::Exists, &[])]]);
    let absent = requiring(vec![vec![expr("zone", SelectorOperator::DoesNotExist, &[])]]);
    let bare = empty(&node("n", None, 4, 8));
    assert_eq!(check(&exists, &zone("x")), Ok(()));
    assert_eq!(check(&exists, &bare), Err(Misfit::NodeAffinityMismatch));
    assert_eq!(check(&absent, &zone("x")), Err(Misfit::NodeAffinityMismatch));
    assert_eq!(check(&absent, &bare), Ok(()));
}

#[test]
fn required_affinity_gt_and_lt_compare_integers_and_refuse_non_numbers() {
    let newer = requiring(vec![vec![expr("gen", SelectorOperator::Gt, &["4"])]]);
    let older = requiring(vec![vec![expr("gen", SelectorOperator::Lt, &["5"])]]);
    let garbage = requiring(vec![vec![expr("zone", SelectorOperator::Gt, &["1"])]]);
    assert_eq!(check(&newer, &zone("a")), Ok(()));
    assert_eq!(check(&older, &zone("a")), Err(Misfit::NodeAffinityMismatch));
    assert_eq!(check(&garbage, &zone("a")), Err(Misfit::NodeAffinityMismatch));
}

#[test]
fn affinity_terms_are_alternatives_and_the_expressions_of_a_term_all_hold() {
    let either = requiring(vec![
        vec![expr("zone", SelectorOperator::In, &["a"]), expr("gen", SelectorOperator::In, &["4"])],
        vec![expr("zone", SelectorOperator::In, &["b"])],
    ]);
    assert_eq!(check(&either, &zone("a")), Err(Misfit::NodeAffinityMismatch), "first term needs gen=4 too");
    assert_eq!(check(&either, &zone("b")), Ok(()));
}

#[test]
fn an_empty_affinity_term_matches_nothing() {
    assert_eq!(check(&requiring(vec![vec![]]), &zone("a")), Err(Misfit::NodeAffinityMismatch));
    assert_eq!(check(&requiring(vec![]), &zone("a")), Err(Misfit::NodeAffinityMismatch));
}

#[test]
fn a_field_requirement_on_the_node_name_never_matches_a_node_that_does_not_exist_yet() {
    let pinned = pod("p", 100, 100).with(|p| {
        p.required_affinity = Some(vec![NodeSelectorTerm {
            match_expressions: vec![],
            match_fields: vec![expr("metadata.name", SelectorOperator::In, &["n"])],
        }])
    });
    assert_eq!(check(&pinned, &empty(&node("n", None, 4, 8))), Ok(()));
    let future = template(&group("g", 0, 1, vec![]), &offering("o", 4, 8, 1.0), Resources::ZERO);
    assert_eq!(check(&pinned, &future), Err(Misfit::NodeAffinityMismatch));
}

#[test]
fn a_pod_that_tolerates_no_taint_is_not_placed_on_a_tainted_group() {
    for effect in [TaintEffect::NoSchedule, TaintEffect::NoExecute] {
        let tainted = group("gpu", 0, 3, vec![]).with(|g| g.taints = vec![taint("dedicated", "gpu", effect)]);
        let target = template(&tainted, &offering("o", 4, 8, 1.0), Resources::ZERO);
        let err = check(&pod("p", 100, 100), &target).unwrap_err();
        assert_eq!(err.to_string(), format!("untolerated taint dedicated=gpu:{}", effect.as_str()));
        let tolerant = pod("p", 100, 100).with(|p| p.tolerations = vec![tolerate("dedicated", "gpu")].into());
        assert_eq!(check(&tolerant, &target), Ok(()));
    }
}

#[test]
fn prefer_no_schedule_taints_do_not_keep_pods_off() {
    let node = node("n", None, 2, 4).with(|n| n.taints = vec![taint("soft", "x", TaintEffect::PreferNoSchedule)]);
    assert_eq!(check(&pod("p", 100, 100), &empty(&node)), Ok(()));
}

#[test]
fn an_exists_toleration_without_a_key_tolerates_every_taint() {
    let everything = Toleration { key: None, operator: TolerationOperator::Exists, value: None, effect: None };
    assert!(tolerates(&everything, &taint("a", "b", TaintEffect::NoSchedule)));
    assert!(tolerates(&everything, &taint("c", "d", TaintEffect::NoExecute)));
    let keyless_equal = Toleration { operator: TolerationOperator::Equal, ..everything };
    assert!(!tolerates(&keyless_equal, &taint("a", "b", TaintEffect::NoSchedule)));
}

#[test]
fn an_exists_toleration_with_a_key_tolerates_any_value_of_that_key_only() {
    let any_value =
        Toleration { key: Some("k".to_string()), operator: TolerationOperator::Exists, value: None, effect: None };
    assert!(tolerates(&any_value, &taint("k", "whatever", TaintEffect::NoSchedule)));
    assert!(tolerates(&any_value, &Taint::new("k", None, TaintEffect::NoSchedule)));
    assert!(!tolerates(&any_value, &taint("other", "whatever", TaintEffect::NoSchedule)));
}

#[test]
fn an_equal_toleration_needs_the_same_value_and_an_empty_value_matches_a_valueless_taint() {
    assert!(tolerates(&tolerate("k", "v"), &taint("k", "v", TaintEffect::NoSchedule)));
    assert!(!tolerates(&tolerate("k", "v"), &taint("k", "w", TaintEffect::NoSchedule)));
    let empty_value = tolerate("k", "").with(|t| t.value = None);
    assert!(tolerates(&empty_value, &Taint::new("k", None, TaintEffect::NoSchedule)));
}

#[test]
fn a_toleration_without_an_effect_tolerates_every_effect_and_one_with_an_effect_only_that_one() {
    let any_effect = tolerate("k", "v");
    let only_no_schedule = tolerate("k", "v").with(|t| t.effect = Some(TaintEffect::NoSchedule));
    assert!(tolerates(&any_effect, &taint("k", "v", TaintEffect::NoExecute)));
    assert!(tolerates(&only_no_schedule, &taint("k", "v", TaintEffect::NoSchedule)));
    assert!(!tolerates(&only_no_schedule, &taint("k", "v", TaintEffect::NoExecute)));
}

#[test]
fn each_resource_shortage_is_named_with_the_amounts() {
    let target = empty(&node("n", None, 1, 1).with(|n| n.allocatable.ephemeral_bytes = GI));
    assert_eq!(
        check(&pod("p", 1500, 100), &target).unwrap_err().to_string(),
        "insufficient cpu (requests 1500m, 1000m free)"
    );
    assert_eq!(
        check(&pod("p", 100, 2048), &target).unwrap_err().to_string(),
        "insufficient memory (requests 2Gi, 1Gi free)"
    );
    let disk_hungry = pod("p", 100, 100).with(|p| p.requests.ephemeral_bytes = 2 * GI);
    assert!(matches!(check(&disk_hungry, &target), Err(Misfit::InsufficientEphemeralStorage { .. })));
    let full = empty(&node("n", None, 1, 1).with(|n| n.allocatable.pods = 0));
    assert_eq!(check(&pod("p", 1, 1), &full), Err(Misfit::TooManyPods));
    let gpu = pod("p", 100, 100).with(|p| {
        p.extended_requests.insert("nvidia.com/gpu".to_string(), 1);
    });
    assert_eq!(check(&gpu, &target).unwrap_err().to_string(), "insufficient nvidia.com/gpu");
}

#[test]
fn the_first_reason_is_a_constraint_before_a_shortage() {
    let tiny_tainted = node("n", None, 1, 1).with(|n| n.taints = vec![taint("k", "v", TaintEffect::NoSchedule)]);
    let big = pod("p", 8000, 8192).with(|p| p.node_selector = labels(&[("kubernetes.io/os", "linux")]));
    assert!(matches!(check(&big, &empty(&tiny_tainted)), Err(Misfit::UntoleratedTaint(_))));
}

#[test]
fn room_taken_by_pods_on_a_node_is_not_free() {
    let node = node("n", None, 2, 4);
    let running = [on(pod("a", 1500, 100), "n")];
    assert!(matches!(
        check(&pod("p", 600, 100), &Target::from_node(&node, &running)),
        Err(Misfit::InsufficientCpu { .. })
    ));
    assert_eq!(check(&pod("p", 500, 100), &Target::from_node(&node, &running)), Ok(()));
}

#[test]
fn a_pdb_selector_selects_by_labels_and_expressions_and_an_empty_one_selects_all() {
    let web = labels(&[("app", "web"), ("tier", "front")]);
    assert!(selector_matches(&LabelSelector::default(), &web));
    let by_label = LabelSelector { match_labels: labels(&[("app", "web")]), match_expressions: vec![] };
    assert!(selector_matches(&by_label, &web));
    let by_expr = LabelSelector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![expr("tier", SelectorOperator::NotIn, &["front"])],
    };
    assert!(!selector_matches(&by_expr, &web));
}
