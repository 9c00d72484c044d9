//! Health during an operation. Workload health: every owner of a moved pod is back to its desired ready
//! replicas, and no budget in their namespaces is below its desired healthy count (read fresh, since it
//! decides whether a VM is deleted). Cluster health: the group's nodes and the scheduler's backlog
//! against the pre-flight baseline, from the watch caches (a trend, read every few seconds).

use std::collections::BTreeSet;

use k8s_openapi::api::{
    apps::v1::{ReplicaSet, StatefulSet},
    core::v1::Pod,
    policy::v1::PodDisruptionBudget,
};
use kube::{Api, ResourceExt};

use super::{Error, Shared};
use crate::{config::ClusterHealthThresholds, crd::rebalance::PreOperationState, snapshot::PodInfo};

/// `Kind/namespace/name` of the controller owning `pod`, if any.
pub fn owner_of(pod: &Pod) -> Option<String> {
    let owner = pod.owner_references().iter().find(|o| o.controller == Some(true))?;
    Some(format!("{}/{}/{}", owner.kind, pod.namespace().unwrap_or_default(), owner.name))
}

/// What keeps the moved workloads from being healthy; empty when they are.
pub async fn workloads(shared: &Shared, owners: &[String]) -> Result<Vec<String>, Error> {
    let client = &shared.ctx.client;
    let mut problems = Vec::new();
    let mut namespaces = BTreeSet::new();
    for owner in owners {
        let mut parts = owner.splitn(3, '/');
        let (Some(kind), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else { continue };
        namespaces.insert(ns.to_string());
        let (desired, ready) = match kind {
            "ReplicaSet" => {
                let api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
                match api.get_opt(name).await.map_err(|source| Error::Read { kind: "ReplicaSet", source })? {
                    Some(rs) => (
                        rs.spec.and_then(|s| s.replicas).unwrap_or(1),
                        rs.status.and_then(|s| s.ready_replicas).unwrap_or(0),
                    ),
                    None => continue,
                }
            }
            "StatefulSet" => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
                match api.get_opt(name).await.map_err(|source| Error::Read { kind: "StatefulSet", source })? {
                    Some(ss) => (
                        ss.spec.and_then(|s| s.replicas).unwrap_or(1),
                        ss.status.and_then(|s| s.ready_replicas).unwrap_or(0),
                    ),
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
    for ns in namespaces {
        let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
        let pdbs = api
            .list(&Default::default())
            .await
            .map_err(|source| Error::Read { kind: "PodDisruptionBudget", source })?;
        for pdb in pdbs {
            let Some(s) = &pdb.status else { continue };
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
/// purpose (their absence is not a fault).
pub fn degraded(
    baseline: &PreOperationState,
    thresholds: &ClusterHealthThresholds,
    nodes: &[k8s_openapi::api::core::v1::Node],
    pods: &[PodInfo],
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
    let unschedulable = pods.iter().filter(|p| p.is_pending_unschedulable()).count() as i64;
    let new = unschedulable - i64::from(baseline.unschedulable_pods);
    if new > i64::from(thresholds.max_new_unschedulable_pods) {
        return Some(format!(
            "{new} more pod(s) cannot be scheduled than before the operation (allowed: {})",
            thresholds.max_new_unschedulable_pods
        ));
    }
    None
}
