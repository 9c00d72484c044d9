//! Health during an operation. Workload health: every owner of a moved pod is back to its desired ready
//! replicas, and no budget in their namespaces is below its desired healthy count (read fresh, since it
//! decides whether a VM is deleted). Cluster health: the group's nodes and the scheduler's backlog
//! against the pre-flight baseline, from the watch caches (a trend, read every few seconds).

use std::{collections::BTreeSet, sync::Arc};

use k8s_openapi::api::{
    apps::v1::{ReplicaSet, StatefulSet},
    core::v1::{Node, Pod},
    policy::v1::PodDisruptionBudget,
};
use kube::{Api, ResourceExt};

use super::{Error, Shared};
use crate::{config::ClusterHealthThresholds, crd::rebalance::PreOperationState, scale::fit, snapshot::PdbInfo};

/// `Kind/namespace/name` of the controller owning `pod`, if any.
pub fn owner_of(pod: &Pod) -> Option<String> {
    let owner = pod.owner_references().iter().find(|o| o.controller == Some(true))?;
    Some(format!("{}/{}/{}", owner.kind, pod.namespace().unwrap_or_default(), owner.name))
}

/// What keeps the moved workloads from being healthy; empty when they are.
pub async fn workloads(shared: &Shared, owners: &[String]) -> Result<Vec<String>, Error> {
    let client = &shared.ctx.client;
    let mut problems = Vec::new();
    // Pod labels of each moved workload, by namespace: the budgets that cover them are the ones to check.
    let mut templates: Vec<(String, std::collections::BTreeMap<String, String>)> = Vec::new();
    for owner in owners {
        let mut parts = owner.splitn(3, '/');
        let (Some(kind), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let labels_of = |t: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>| {
            t.and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default()
        };
        let (desired, ready) = match kind {
            "ReplicaSet" => {
                let api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
                match api.get_opt(name).await.map_err(|source| Error::Read { kind: "ReplicaSet", source })? {
                    Some(rs) => {
                        templates.push((ns.to_string(), labels_of(rs.spec.as_ref().and_then(|s| s.template.as_ref()))));
                        (
                            rs.spec.and_then(|s| s.replicas).unwrap_or(1),
                            rs.status.and_then(|s| s.ready_replicas).unwrap_or(0),
                        )
                    }
                    None => continue,
                }
            }
            "StatefulSet" => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
                match api.get_opt(name).await.map_err(|source| Error::Read { kind: "StatefulSet", source })? {
                    Some(ss) => {
                        templates.push((ns.to_string(), labels_of(ss.spec.as_ref().map(|s| &s.template))));
                        (
                            ss.spec.and_then(|s| s.replicas).unwrap_or(1),
                            ss.status.and_then(|s| s.ready_replicas).unwrap_or(0),
                        )
                    }
                    None => continue,
                }
            }
            // Jobs finish and DaemonSets never move; neither has a replica count to come back to.
            _ => continue,
        };
        if ready < desired {
            problems.push(format!("{owner} has {ready} of {desired} replicas ready"));
        }
    }
    let namespaces: BTreeSet<&String> = templates.iter().map(|(ns, _)| ns).collect();
    for ns in namespaces {
        let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
        let pdbs = api
            .list(&Default::default())
            .await
            .map_err(|source| Error::Read { kind: "PodDisruptionBudget", source })?;
        for pdb in pdbs {
            let covers = PdbInfo::from_k8s(&pdb).ok().and_then(|info| info.selector).is_some_and(|selector| {
                templates.iter().any(|(n, labels)| n == ns && fit::selector_matches(&selector, labels))
            });
            let Some(s) = pdb.status.as_ref().filter(|_| covers) else { continue };
            let (current, desired) = (s.current_healthy.unwrap_or(0), s.desired_healthy.unwrap_or(0));
            if current < desired {
                problems.push(format!(
                    "PodDisruptionBudget {ns}/{} has {} healthy pods, wants {}",
                    pdb.name_any(),
                    current,
                    desired
                ));
            }
        }
    }
    Ok(problems)
}

/// How the cluster is below the baseline, if it is. `gone` are baseline nodes this operation removed on
/// purpose (their absence is not a fault); `unschedulable` is the count of pods the scheduler gave up on now.
pub fn degraded(
    baseline: &PreOperationState,
    thresholds: &ClusterHealthThresholds,
    nodes: &[Arc<Node>],
    unschedulable: usize,
    gone: &BTreeSet<String>,
) -> Option<String> {
    let watched: Vec<&String> = baseline.nodes.iter().filter(|n| !gone.contains(*n)).collect();
    let unready: Vec<&str> = watched
        .iter()
        .filter(|name| !nodes.iter().any(|n| n.name_any() == ***name && super::objects::is_ready(n)))
        .map(|n| n.as_str())
        .collect();
    let by_percent = (watched.len() as u64 * u64::from(thresholds.max_unready_percent)).div_ceil(100);
    let allowed = u64::from(thresholds.max_unready_nodes).max(by_percent);
    if unready.len() as u64 > allowed {
        return Some(format!(
            "{} of the group's {} nodes are not Ready ({}), more than the {allowed} allowed",
            unready.len(),
            watched.len(),
            unready.join(", ")
        ));
    }
    let new = unschedulable as i64 - i64::from(baseline.unschedulable_pods);
    if new > i64::from(thresholds.max_new_unschedulable_pods) {
        return Some(format!(
            "{new} more pod(s) cannot be scheduled than before the operation (allowed: {})",
            thresholds.max_new_unschedulable_pods
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, sync::Arc};

    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    use super::degraded;
    use crate::{config::ClusterHealthThresholds, crd::rebalance::PreOperationState};

    fn node(name: &str, ready: bool) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
            }))
            .unwrap(),
        )
    }

    fn baseline(nodes: usize) -> PreOperationState {
        PreOperationState { nodes: (0..nodes).map(|i| format!("n{i}")).collect(), ..Default::default() }
    }

    #[test]
    fn unready_nodes_degrade_the_cluster_only_above_max_of_the_count_and_the_percentage() {
        let t = ClusterHealthThresholds::default();
        let ten = baseline(10);
        let with_unready = |k: usize| (0..10).map(|i| node(&format!("n{i}"), i >= k)).collect::<Vec<_>>();
        // max(3, 45 % of 10 = 5) = 5 may be unready.
        assert_eq!(degraded(&ten, &t, &with_unready(5), 0, &BTreeSet::new()), None);
        let six = degraded(&ten, &t, &with_unready(6), 0, &BTreeSet::new()).unwrap();
        assert!(six.starts_with("6 of the group's 10 nodes are not Ready"), "{six}");
        // A node the operation removed on purpose is not missing.
        let gone: BTreeSet<String> = ["n0".to_string()].into();
        assert_eq!(degraded(&ten, &t, &with_unready(6)[1..], 0, &gone), None);
        // Small groups: 3 may be unready even when that is most of them.
        let four = baseline(4);
        let nodes: Vec<Arc<Node>> = (0..4).map(|i| node(&format!("n{i}"), i >= 3)).collect();
        assert_eq!(degraded(&four, &t, &nodes, 0, &BTreeSet::new()), None);
    }

    #[test]
    fn pods_the_scheduler_cannot_place_degrade_the_cluster_when_more_than_at_pre_flight() {
        let mut b = baseline(1);
        b.unschedulable_pods = 1;
        let nodes = [node("n0", true)];
        let t = ClusterHealthThresholds::default();
        assert_eq!(degraded(&b, &t, &nodes, 1, &BTreeSet::new()), None);
        let why = degraded(&b, &t, &nodes, 2, &BTreeSet::new()).unwrap();
        assert!(why.contains("1 more pod(s) cannot be scheduled"), "{why}");
        let tolerant = ClusterHealthThresholds { max_new_unschedulable_pods: 1, ..t };
        assert_eq!(degraded(&b, &tolerant, &nodes, 2, &BTreeSet::new()), None);
    }
}
