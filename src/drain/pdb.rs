//! Which PodDisruptionBudgets hold a drain up, so a timed-out drain can name them.

use k8s_openapi::api::{core::v1::Pod, policy::v1::PodDisruptionBudget};
use kube::core::{Selector, SelectorExt};

/// `namespace/name` of every budget that covers one of `pods` and currently allows no disruption.
///
/// Matching follows policy/v1: a budget applies only in its own namespace, a missing selector selects
/// nothing and an empty one selects every pod. A budget without status has not been processed by the
/// disruption controller yet, and the Eviction API refuses evictions it covers, so it counts as blocking.
pub fn blocking<'a>(pods: impl IntoIterator<Item = &'a Pod>, pdbs: &[PodDisruptionBudget]) -> Vec<String> {
    let pods: Vec<&Pod> = pods.into_iter().collect();
    let mut names: Vec<String> = pdbs
        .iter()
        .filter(|pdb| pdb.status.as_ref().and_then(|s| s.disruptions_allowed).unwrap_or(0) <= 0)
        .filter(|pdb| pods.iter().any(|pod| covers(pdb, pod)))
        .map(|pdb| {
            format!(
                "{}/{}",
                pdb.metadata.namespace.as_deref().unwrap_or_default(),
                pdb.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn covers(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    if pdb.metadata.namespace != pod.metadata.namespace {
        return false;
    }
    let Some(selector) = pdb.spec.as_ref().and_then(|s| s.selector.clone()) else {
        return false;
    };
    // A selector the API server accepted but we cannot parse: we cannot tell, so we do not accuse it.
    let Ok(selector) = Selector::try_from(selector) else {
        return false;
    };
    let empty = Default::default();
    selector.matches(pod.metadata.labels.as_ref().unwrap_or(&empty))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn pod(ns: &str, labels: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": ns, "labels": labels}})).expect("pod")
    }

    fn pdb(ns: &str, name: &str, selector: Option<Value>, allowed: Option<i32>) -> PodDisruptionBudget {
        let mut v = json!({"metadata": {"name": name, "namespace": ns}, "spec": {}});
        if let Some(sel) = selector {
            v["spec"]["selector"] = sel;
        }
        if let Some(allowed) = allowed {
            v["status"] = json!({"disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1,
                "expectedPods": 1});
        }
        serde_json::from_value(v).expect("pdb")
    }

    #[test]
    fn a_budget_that_selects_the_pod_and_allows_no_disruption_is_named() {
        let p = pod("ns", json!({"app": "db"}));
        let pdbs = [pdb("ns", "db", Some(json!({"matchLabels": {"app": "db"}})), Some(0))];
        assert_eq!(blocking([&p], &pdbs), ["ns/db"]);
    }

    #[test]
    fn a_budget_that_still_allows_disruptions_is_not_named() {
        let p = pod("ns", json!({"app": "db"}));
        let pdbs = [pdb("ns", "db", Some(json!({"matchLabels": {"app": "db"}})), Some(1))];
        assert!(blocking([&p], &pdbs).is_empty());
    }

    #[test]
    fn a_budget_in_another_namespace_or_for_other_labels_is_not_named() {
        let p = pod("ns", json!({"app": "db"}));
        let pdbs = [
            pdb("other", "db", Some(json!({"matchLabels": {"app": "db"}})), Some(0)),
            pdb("ns", "web", Some(json!({"matchLabels": {"app": "web"}})), Some(0)),
        ];
        assert!(blocking([&p], &pdbs).is_empty());
    }

    #[test]
    fn an_empty_selector_covers_every_pod_and_a_missing_one_covers_none() {
        let p = pod("ns", json!({"app": "db"}));
        let pdbs = [pdb("ns", "all", Some(json!({})), Some(0)), pdb("ns", "none", None, Some(0))];
        assert_eq!(blocking([&p], &pdbs), ["ns/all"]);
    }

    #[test]
    fn match_expressions_are_honoured() {
        let p = pod("ns", json!({"tier": "data"}));
        let sel = |op: &str| json!({"matchExpressions": [{"key": "tier", "operator": op, "values": ["data"]}]});
        let pdbs = [pdb("ns", "in", Some(sel("In")), Some(0)), pdb("ns", "notin", Some(sel("NotIn")), Some(0))];
        assert_eq!(blocking([&p], &pdbs), ["ns/in"]);
    }

    #[test]
    fn a_budget_the_disruption_controller_has_not_processed_yet_counts_as_blocking() {
        let p = pod("ns", json!({"app": "db"}));
        let pdbs = [pdb("ns", "fresh", Some(json!({"matchLabels": {"app": "db"}})), None)];
        assert_eq!(blocking([&p], &pdbs), ["ns/fresh"]);
    }
}
