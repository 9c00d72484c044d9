//! `Pending` → `Running` or `Failed`: validate the request, run the pre-flight checks, record the
//! baseline and every step, then hold the record with a finalizer. Nothing in the cluster is touched
//! here, so a refusal leaves nothing to undo.

use std::collections::BTreeMap;

use kube::{Resource, ResourceExt, runtime::controller::Action, runtime::events::EventType};

use super::{Error, PROMPTLY, Shared, hold, now, publish, write_status};
use crate::{
    crd::{
        NodeGroup, Rebalance, RebalancePhase, RebalanceStatus, VPSieNode,
        rebalance::{NodeStep, PreOperationState},
    },
    rebalance::preflight::{self, Conditions, NodeOwner},
    snapshot::{GroupInfo, Snapshot},
};

pub async fn start(shared: &Shared, rb: &Rebalance) -> Result<Action, Error> {
    let ns = rb.namespace().unwrap_or_default();
    let snapshot = group_snapshot(shared, &ns, &rb.spec.node_group).await;
    let vpsienodes: Vec<VPSieNode> = shared.stores.vpsienodes.state().iter().map(|v| (**v).clone()).collect();
    if let Some(trouble) = &snapshot.cloud_trouble {
        let problem = format!("the VPSie API is not reachable: {trouble}");
        return refuse(shared, rb, "PreFlightFailed", "pre-flight checks failed", vec![problem]).await;
    }
    if let Err(problems) = preflight::validate(&snapshot.snapshot, &ns, &rb.spec, &owners(&vpsienodes)) {
        return refuse(shared, rb, "InvalidSpec", "the Rebalance cannot be carried out as written", problems).await;
    }
    let conditions = Conditions {
        other_operation: other_operation(shared, rb),
        cloud_trouble: None,
        // A person's Rebalance is carried out whatever the window; the rebalancer starts its own only
        // inside one.
        window_closed: None,
        foreign_nodes: vpsienodes
            .iter()
            .filter(|v| v.spec.node_group == rb.spec.node_group && v.namespace() != rb.namespace())
            .filter_map(|v| v.status.as_ref()?.node_name.clone())
            .collect(),
    };
    let baseline = match preflight::preflight(&snapshot.snapshot, &ns, &rb.spec, &conditions) {
        Ok(b) => b,
        Err(problems) => return refuse(shared, rb, "PreFlightFailed", "pre-flight checks failed", problems).await,
    };
    let rb = hold(&shared.ctx, rb).await?;
    let status = RebalanceStatus {
        phase: RebalancePhase::Running,
        reason: Some("PreFlightPassed".into()),
        message: Some(format!(
            "replacing {} node(s) of group {}, {:?}, at most {} at a time",
            rb.spec.replacements.len(),
            rb.spec.node_group,
            rb.spec.strategy,
            rb.spec.max_concurrent
        )),
        steps: rb
            .spec
            .replacements
            .iter()
            .map(|r| NodeStep { old_node: r.old_node.clone(), ..Default::default() })
            .collect(),
        pre_operation: Some(PreOperationState {
            already_cordoned: baseline.already_cordoned,
            nodes: baseline.nodes,
            ready_nodes: baseline.ready_nodes as i32,
            unschedulable_pods: baseline.unschedulable_pods as i32,
        }),
        started_at: Some(now()),
        ..Default::default()
    };
    write_status(&shared.ctx, &rb, &status).await?;
    let note = status.message.clone().unwrap_or_default();
    tracing::info!(rebalance = %key(&rb), %note, "rebalance started: pre-flight passed");
    publish(&shared.ctx, &rb, EventType::Normal, "RebalanceStarted", &note).await;
    Ok(Action::requeue(PROMPTLY))
}

async fn refuse(
    shared: &Shared,
    rb: &Rebalance,
    reason: &str,
    what: &str,
    problems: Vec<String>,
) -> Result<Action, Error> {
    let message = format!("{what}: {}", problems.join("; "));
    let status = RebalanceStatus {
        phase: RebalancePhase::Failed,
        reason: Some(reason.to_string()),
        message: Some(message.clone()),
        completed_at: Some(now()),
        ..Default::default()
    };
    write_status(&shared.ctx, rb, &status).await?;
    tracing::warn!(rebalance = %key(rb), reason, %message, "rebalance refused before touching anything");
    publish(&shared.ctx, rb, EventType::Warning, reason, &message).await;
    Ok(Action::await_change())
}

pub fn key(rb: &Rebalance) -> String {
    format!("{}/{}", rb.namespace().unwrap_or_default(), rb.name_any())
}

/// The oldest other operation of the same group that has not ended: only one runs per group, and of
/// two created at once the older goes first.
fn other_operation(shared: &Shared, rb: &Rebalance) -> Option<String> {
    let state = shared_rebalances(shared);
    let mine = (rb.meta().creation_timestamp.clone().map(|t| t.0), rb.name_any());
    state
        .iter()
        .filter(|o| o.namespace() == rb.namespace() && o.spec.node_group == rb.spec.node_group)
        .filter(|o| o.uid() != rb.uid())
        .filter(|o| !o.status.as_ref().map(|s| s.phase).unwrap_or_default().is_terminal())
        .filter(|o| {
            let running = o.status.as_ref().is_some_and(|s| s.phase != RebalancePhase::Pending);
            running || (o.meta().creation_timestamp.clone().map(|t| t.0), o.name_any()) < mine
        })
        .map(|o| o.name_any())
        .next()
}

fn shared_rebalances(shared: &Shared) -> Vec<Rebalance> {
    shared.rebalances.state().iter().map(|r| (**r).clone()).collect()
}

/// Which VPSieNode each node is the node of.
fn owners(vpsienodes: &[VPSieNode]) -> BTreeMap<String, NodeOwner> {
    vpsienodes
        .iter()
        .filter_map(|v| {
            let node = v.status.as_ref()?.node_name.clone()?;
            Some((node, NodeOwner { namespace: v.namespace().unwrap_or_default(), vpsienode: v.name_any() }))
        })
        .collect()
}

pub struct GroupSnapshot {
    pub snapshot: Snapshot,
    pub cloud_trouble: Option<String>,
}

/// The cluster as the scale planners see it, with only this operation's group described.
pub async fn group_snapshot(shared: &Shared, ns: &str, name: &str) -> GroupSnapshot {
    let stores = &shared.stores;
    let vpsienodes: Vec<VPSieNode> = stores.vpsienodes.state().iter().map(|v| (**v).clone()).collect();
    let group: Option<NodeGroup> = stores
        .groups
        .state()
        .iter()
        .find(|g| g.namespace().as_deref() == Some(ns) && g.name_any() == name)
        .map(|g| (**g).clone());
    let mut groups: Vec<GroupInfo> = Vec::new();
    let mut cloud_trouble = None;
    if let Some(group) = &group {
        match crate::controller::autoscale::allowed_offerings(&shared.ctx, group).await {
            Ok(offerings) => match GroupInfo::from_nodegroup(group, offerings, &vpsienodes) {
                Ok(info) => groups.push(info),
                Err(e) => cloud_trouble = Some(e.to_string()),
            },
            Err(e) => cloud_trouble = Some(format!("listing offerings failed: {e}")),
        }
    }
    let snapshot = crate::controller::autoscale::watched_snapshot(stores, groups, &vpsienodes);
    GroupSnapshot { snapshot, cloud_trouble }
}
