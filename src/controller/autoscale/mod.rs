//! The autoscaling loop: sizes every NodeGroup from one cluster-wide view, so each pending pod is
//! matched to exactly one group and a burst never scales twice.
//!
//! Pipeline of a pass: observe (reflector stores → a plain-data [`Snapshot`]), decide (the pure
//! planners in `scale/`), act (create VPSieNodes; move removal candidates to `Draining`; only the Lease
//! holder acts), report (NodeGroup status and conditions, Events on pods and groups, metrics). A periodic
//! pass that would read the same cluster as the last one, with nothing due on the clock, is skipped
//! (`quiet.rs`).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{
    api::{core::v1::Node, policy::v1::PodDisruptionBudget},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, PostParams},
    runtime::{events::EventType, reflector::Store},
};
use rand::distr::{Alphanumeric, SampleString};
use tokio_util::sync::CancellationToken;

use super::{Context, Error, vpsienode};
use crate::{
    crd::{
        DRAIN_REQUEST_ANNOTATION, NODEGROUP_LABEL, NodeGroup, REBALANCE_LABEL, VPSieNode, VPSieNodePhase, VPSieNodeSpec,
    },
    metrics::{ResultLabel, TriggerLabel},
    scale::{
        down::{UnneededSince, plan_scale_down},
        up::plan_scale_up,
    },
    snapshot::{DrainBackoff, GroupInfo, OfferingInfo, Snapshot},
};

mod quiet;
mod report;

/// The watched objects the loop reads; all replicas keep them warm.
#[derive(Clone)]
pub struct Stores {
    pub nodes: Store<Node>,
    pub pods: Store<super::podcache::WatchedPod>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub groups: Store<NodeGroup>,
    pub vpsienodes: Store<VPSieNode>,
    pub rebalances: Store<crate::crd::Rebalance>,
}

pub async fn run(ctx: Arc<Context>, stores: Stores, shutdown: CancellationToken) {
    let mut unneeded = UnneededSince::new();
    let mut announced = report::Announced::default();
    let mut sweep = super::orphans::Sweep::default();
    let stranded = super::stranded::Stranded::default();
    let mut last_sweep = std::time::Instant::now();
    let settings = &ctx.config.autoscaling;
    let mut tick = tokio::time::interval(settings.pass_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quiet: Option<quiet::Quiet> = None;
    loop {
        let trigger = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => "periodic",
            _ = ctx.wake.batch(settings.batching()) => {
                // The safety net counts from the last pass, whatever started it.
                tick.reset();
                "event"
            }
        };
        if !ctx.is_leader() {
            // A new leader starts its unneeded timers afresh: removing later is the safe side.
            unneeded.clear();
            ctx.expectations.clear();
            quiet = None;
            continue;
        }
        // Read before the pass reads the caches: a change while it runs ends the quiet it leaves.
        let read = reading(&ctx, &stores);
        let started = std::time::Instant::now();
        let ended = quiet.map(|q| q.ended(read, Timestamp::now(), started, settings.full_pass_interval()));
        if trigger == "periodic" && matches!(ended, Some(None)) {
            ctx.metrics.lifecycle.quiet_passes_skipped.inc();
            // The phase ages feed the stuck-in-a-phase alerts: they move with the clock, pass or not.
            report::phases(&ctx, stores.vpsienodes.state().iter().map(|v| v.as_ref()), Timestamp::now());
        } else {
            if trigger == "periodic" {
                tracing::debug!(why = ended.flatten().unwrap_or("the last pass left work"), "periodic pass");
            }
            ctx.metrics.lifecycle.passes.get_or_create(&TriggerLabel { trigger }).inc();
            quiet = match pass(&ctx, &stores, &mut unneeded, &mut announced).await {
                Ok(until) => until.map(|until| quiet::Quiet { read, until, at: started }),
                Err(e) => {
                    super::record_error(&ctx, "autoscale", &e);
                    None
                }
            };
        }
        if last_sweep.elapsed() >= super::orphans::SWEEP_EVERY {
            last_sweep = std::time::Instant::now();
            let groups: Vec<NodeGroup> = stores.groups.state().iter().map(|g| (**g).clone()).collect();
            let vpsienodes: Vec<VPSieNode> = stores.vpsienodes.state().iter().map(|v| (**v).clone()).collect();
            if let Err(e) = sweep.run(&ctx, &groups, &vpsienodes).await {
                super::record_error(&ctx, "orphans", &e);
            }
            stranded.run(&ctx, &groups, &vpsienodes).await;
        }
    }
}

/// What a pass is about to read, in two numbers (see [`quiet::Reading`]).
fn reading(ctx: &Context, stores: &Stores) -> quiet::Reading {
    use super::changes::versions;
    let small =
        [versions(&stores.groups.state()), versions(&stores.vpsienodes.state()), versions(&stores.rebalances.state())];
    let versions = small.iter().fold(0u64, |acc, v| acc.rotate_left(21) ^ v);
    quiet::Reading { changes: ctx.wake.changes(), versions }
}

/// One planning pass; returns until when later periodic passes may be skipped if nothing it read
/// changes (`None`: the next one must run).
async fn pass(
    ctx: &Context,
    stores: &Stores,
    unneeded: &mut UnneededSince,
    announced: &mut report::Announced,
) -> Result<Option<Timestamp>, Error> {
    // observe
    let groups: Vec<NodeGroup> = stores.groups.state().iter().map(|g| (**g).clone()).collect();
    let vpsienodes: Vec<VPSieNode> = stores.vpsienodes.state().iter().map(|v| (**v).clone()).collect();
    let mut infos = Vec::new();
    let mut cloud_trouble: BTreeMap<String, String> = BTreeMap::new();
    let cached: BTreeSet<String> = vpsienodes.iter().map(vpsienode_key).collect();
    forget_deleted(ctx, &cached).await;
    let mut unobserved = ctx.expectations.unobserved(|name| cached.contains(name), std::time::Instant::now());
    let expecting = !unobserved.is_empty();
    let known_nodes: BTreeSet<String> =
        stores.nodes.state().iter().filter(|n| super::rebalance::objects::is_ready(n)).map(|n| n.name_any()).collect();
    for group in &groups {
        match allowed_offerings(ctx, group).await {
            Ok(offerings) => match GroupInfo::from_nodegroup(group, offerings, &vpsienodes) {
                Ok(mut info) => {
                    info.in_flight.extend(just_ready(&vpsienodes, group, &known_nodes));
                    info.in_flight.extend(unobserved.remove(&key(group)).unwrap_or_default());
                    infos.push(info)
                }
                Err(e) => {
                    cloud_trouble.insert(key(group), e.to_string());
                }
            },
            Err(e) => {
                cloud_trouble.insert(key(group), format!("listing offerings failed: {e}"));
            }
        }
    }
    let mut snapshot = watched_snapshot(stores, infos, &vpsienodes);
    snapshot.drain_backoff = drain_backoffs(&vpsienodes);
    let pending = snapshot.pods.iter().filter(|p| p.is_pending_unschedulable()).count();
    ctx.metrics.lifecycle.pending_unschedulable_pods.set(pending as i64);

    // decide
    let now = Timestamp::now();
    let up = plan_scale_up(&snapshot, now);
    if !up.is_empty() {
        tracing::info!(
            pending,
            absorbed = ?up.absorbed.iter().map(|a| format!("{}/{} by {:?}", a.pod.namespace, a.pod.name, a.by)).collect::<Vec<_>>(),
            groups = ?up.groups.iter().map(|g| (g.group.name.clone(), g.nodes.len())).collect::<Vec<_>>(),
            in_flight = ?snapshot.groups.iter().map(|g| (g.name.clone(), g.in_flight.clone())).collect::<Vec<_>>(),
            "scale-up plan"
        );
        for n in snapshot.nodes.iter().filter(|n| n.created.is_some_and(|c| now.duration_since(c).as_secs() < 120)) {
            tracing::debug!(node = %n.name, ready = n.ready, created = ?n.created, taints = ?n.taints, labels = ?n.labels, "recently joined node");
        }
        for p in snapshot.pods.iter().filter(|p| p.is_pending_unschedulable()) {
            tracing::debug!(pod = %p.name, since = ?p.unschedulable_since, "pending pod");
        }
    }
    let down = plan_scale_down(&snapshot, now, unneeded);
    *unneeded = down.unneeded_since.clone();

    // act
    let mut scaled_up: BTreeMap<String, i32> = BTreeMap::new();
    for plan in &up.groups {
        let Some(group) = groups.iter().find(|g| same(g, &plan.group.namespace, &plan.group.name)) else { continue };
        if let Some(failed) = recent_failure(&vpsienodes, group, ctx.config.autoscaling.failure_backoff()) {
            tracing::info!(group = %key(group), %failed, "scale-up held back after a recent failure");
            continue;
        }
        for node in &plan.nodes {
            let created = create_vpsienode(ctx, group, &node.offering_id).await?;
            ctx.expectations.created(
                &vpsienode_key(&created),
                &key(group),
                &node.offering_id,
                std::time::Instant::now(),
            );
            ctx.metrics.lifecycle.scale_ups.get_or_create(&ResultLabel { result: "requested" }).inc();
            if let Some(since) = node.pending_since {
                let waited = now.duration_since(since).as_secs_f64().max(0.0);
                ctx.metrics.lifecycle.scale_up_latency.observe(waited);
            }
        }
        *scaled_up.entry(key(group)).or_default() += plan.nodes.len() as i32;
        ctx.publish(&group.object_ref(&()), EventType::Normal, "ScaleUp", "Autoscale", &plan.to_string()).await;
    }
    for removal in &down.remove {
        let Some(vn) =
            vpsienodes.iter().find(|v| v.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&removal.node))
        else {
            continue;
        };
        if may_request_drain(vn) {
            vpsienode::request_drain(ctx, vn, &format!("node {} is unneeded", removal.node)).await?;
        }
    }

    let rebalances: Vec<crate::crd::Rebalance> = stores.rebalances.state().iter().map(|r| (**r).clone()).collect();
    if let Err(e) = super::rebalancer::start_due(ctx, &snapshot, &groups, &vpsienodes, &rebalances).await {
        super::record_error(ctx, "rebalancer", &e);
    }

    // report
    report::events(ctx, announced, &up, &down).await;
    for group in &groups {
        report::write_group_status(
            ctx,
            group,
            &vpsienodes,
            &up,
            &down,
            scaled_up.get(&key(group)).copied(),
            cloud_trouble.get(&key(group)),
        )
        .await?;
    }
    ctx.metrics.lifecycle.unschedulable_without_group.set(up.unschedulable.len() as i64);
    report::phases(ctx, &vpsienodes, now);

    let rebalancing_enabled = groups.iter().any(|g| ctx.config.rebalancer.effective(g.spec.rebalance.as_ref()).enabled);
    let outcome = quiet::Outcome {
        pending,
        up: &up,
        down: &down,
        cloud_trouble: !cloud_trouble.is_empty(),
        expecting,
        vpsienodes: &vpsienodes,
        rebalances: &rebalances,
        rebalancing_enabled,
    };
    let until = quiet::quiet_until(&outcome);
    if until.is_none() {
        tracing::debug!(why = quiet::busy(&outcome), "the next periodic pass runs");
    }
    Ok(until)
}

/// Whether scale-down may ask for this VPSieNode's drain: it is serving, not being deleted, and holds no
/// request its controller has not answered yet (asking again would only restamp the same request).
fn may_request_drain(vn: &VPSieNode) -> bool {
    let Some(status) = vn.status.as_ref() else { return false };
    let asked = vn.metadata.annotations.as_ref().and_then(|a| a.get(DRAIN_REQUEST_ANNOTATION));
    let rebalancing = vn.metadata.labels.as_ref().is_some_and(|l| l.contains_key(REBALANCE_LABEL));
    status.phase == VPSieNodePhase::Ready
        && !rebalancing
        && vn.metadata.deletion_timestamp.is_none()
        && asked.is_none_or(|a| status.drain_request.as_ref() == Some(a))
}

/// Nodes whose last scale-down drain was blocked and when each may be drained again, from the records
/// the VPSieNode controller keeps.
fn drain_backoffs(vpsienodes: &[VPSieNode]) -> BTreeMap<String, DrainBackoff> {
    vpsienodes
        .iter()
        .filter_map(|v| {
            let s = v.status.as_ref()?;
            let node = s.node_name.clone()?;
            let until = s.drain_retry_after.as_ref()?.0;
            let cause = format!(
                "{} blocked drain(s) in a row; last: {}",
                s.drain_failures,
                s.reason.as_deref().unwrap_or("unknown")
            );
            Some((node, DrainBackoff { until, cause }))
        })
        .collect()
}

/// The watched cluster as plain data, describing `groups`, each node attributed to its VPSieNode's
/// namespace.
pub(crate) fn watched_snapshot(stores: &Stores, groups: Vec<GroupInfo>, vpsienodes: &[VPSieNode]) -> Snapshot {
    let nodes = stores.nodes.state();
    let pods = stores.pods.state();
    let pdbs = stores.pdbs.state();
    let mut snapshot = Snapshot::from_records(
        nodes.iter().map(|n| n.as_ref()),
        pods.iter().map(|p| p.0.clone()),
        pdbs.iter().map(|p| p.as_ref()),
        groups,
    );
    snapshot.attribute_nodes(node_owners(vpsienodes));
    snapshot
}

/// `(node, namespace)` of every VPSieNode linked to its node.
pub(crate) fn node_owners(vpsienodes: &[VPSieNode]) -> impl Iterator<Item = (&str, &str)> {
    vpsienodes.iter().filter_map(|v| {
        let node = v.status.as_ref()?.node_name.as_deref()?;
        Some((node, v.metadata.namespace.as_deref()?))
    })
}

/// A VPSieNode we created that the cache has not shown for longer than any watch delay was most likely
/// deleted before a pass saw it: one read settles it, so its capacity is not counted as on its way for
/// the rest of the expectation's lifetime (a pending pod would wait that long for nothing). Rare, so the
/// read costs nothing at steady state.
async fn forget_deleted(ctx: &Context, cached: &BTreeSet<String>) {
    for name in ctx.expectations.overdue(Duration::from_secs(5), std::time::Instant::now()) {
        if cached.contains(&name) {
            continue;
        }
        let Some((ns, vn)) = name.split_once('/') else { continue };
        let api: Api<VPSieNode> = Api::namespaced(ctx.client.clone(), ns);
        if let Ok(None) = api.get_opt(vn).await {
            tracing::debug!(vpsienode = %name, "a VPSieNode we created is gone before the cache showed it");
            ctx.expectations.forget(&name);
        }
    }
}

fn vpsienode_key(vn: &VPSieNode) -> String {
    format!("{}/{}", vn.namespace().unwrap_or_default(), vn.name_any())
}

fn key(group: &NodeGroup) -> String {
    format!("{}/{}", group.namespace().unwrap_or_default(), group.name_any())
}

/// Whether the VPSieNode is one of the group's (same namespace, named group).
fn belongs_to(vn: &VPSieNode, group: &NodeGroup) -> bool {
    vn.spec.node_group == group.name_any() && vn.namespace() == group.namespace()
}

fn same(group: &NodeGroup, namespace: &str, name: &str) -> bool {
    group.namespace().as_deref() == Some(namespace) && group.name_any() == name
}

/// The group's allowed plans, named as the group names them, with their sizes and prices.
pub(crate) async fn allowed_offerings(
    ctx: &Context,
    group: &NodeGroup,
) -> Result<Vec<OfferingInfo>, crate::cloud::CloudError> {
    let catalogue = ctx.offerings(&group.spec.datacenter).await?;
    Ok(crate::snapshot::offerings::allowed_offerings(&catalogue, group))
}

/// How long a node that just became Ready still counts as capacity on its way: the control plane lifts
/// its startup taints and the scheduler retries pending pods within seconds, and until then the node's
/// own view may not admit them.
const JUST_READY: Duration = Duration::from_secs(8);

/// Offerings of the group's VPSieNodes that became Ready within [`JUST_READY`] and whose Node the watch
/// has not shown Ready yet (`known_nodes` are the Ready ones): not counting them could double a
/// scale-up. A Node the watch shows Ready is left out: scale-up sees its real room (startup taints
/// lifted) as a joined node, and counting it again as empty capacity on its way held the next pending
/// pod back for a whole window.
fn just_ready(vpsienodes: &[VPSieNode], group: &NodeGroup, known_nodes: &BTreeSet<String>) -> Vec<String> {
    let now = Timestamp::now();
    vpsienodes
        .iter()
        .filter(|v| belongs_to(v, group))
        .filter_map(|v| {
            let s = v.status.as_ref()?;
            if s.node_name.as_ref().is_some_and(|n| known_nodes.contains(n)) {
                return None;
            }
            let ready_at = s.ready_at.as_ref()?.0;
            let fresh = now.duration_since(ready_at).as_secs_f64() < JUST_READY.as_secs_f64();
            (s.phase == VPSieNodePhase::Ready && fresh).then(|| v.spec.offering.clone())
        })
        .collect()
}

/// A VPSieNode of the group that failed within the backoff window.
fn recent_failure(vpsienodes: &[VPSieNode], group: &NodeGroup, backoff: Duration) -> Option<String> {
    vpsienodes.iter().find_map(|v| {
        let s = v.status.as_ref()?;
        let ours = belongs_to(v, group);
        let since = s.last_phase_transition.as_ref()?.0;
        let recent = Timestamp::now().duration_since(since).as_secs_f64() < backoff.as_secs_f64();
        (ours && s.phase == VPSieNodePhase::Failed && recent).then(|| v.name_any())
    })
}

async fn create_vpsienode(ctx: &Context, group: &NodeGroup, offering: &str) -> Result<VPSieNode, Error> {
    let suffix = Alphanumeric.sample_string(&mut rand::rng(), 5).to_ascii_lowercase();
    let name = format!("{}-{suffix}", group.name_any());
    let api: Api<VPSieNode> = Api::namespaced(ctx.client.clone(), &group.namespace().unwrap_or_default());
    let created = api
        .create(&PostParams::default(), &new_vpsienode(group, offering, &name, BTreeMap::new()))
        .await
        .map_err(|source| Error::Write { kind: "VPSieNode", source })?;
    tracing::info!(group = %key(group), vpsienode = %name, offering, "scale-up: created VPSieNode");
    Ok(created)
}

/// A VPSieNode of `group` on `offering`, owned by the group, with the group label and `labels`.
pub(crate) fn new_vpsienode(
    group: &NodeGroup,
    offering: &str,
    name: &str,
    mut labels: BTreeMap<String, String>,
) -> VPSieNode {
    let ns = group.namespace().unwrap_or_default();
    labels.insert(NODEGROUP_LABEL.to_string(), group.name_any());
    VPSieNode {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "autoscaler.vpsie.com/v1alpha1".into(),
                kind: "NodeGroup".into(),
                name: group.name_any(),
                uid: group.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: VPSieNodeSpec {
            node_group: group.name_any(),
            offering: offering.to_string(),
            cluster_identifier: group.spec.cluster_identifier.clone(),
            datacenter: group.spec.datacenter.clone(),
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
    use serde_json::json;

    use super::just_ready;
    use crate::crd::{NodeGroup, VPSieNode, VPSieNodePhase, VPSieNodeStatus};

    fn group() -> NodeGroup {
        serde_json::from_value(json!({
            "apiVersion": "autoscaler.vpsie.com/v1alpha1", "kind": "NodeGroup",
            "metadata": {"name": "pool", "namespace": "team"},
            "spec": {"minNodes": 0, "maxNodes": 3, "clusterIdentifier": "c", "datacenter": "d", "offerings": ["2"]},
        }))
        .unwrap()
    }

    fn ready_just_now(name: &str, node: &str) -> VPSieNode {
        let mut vn = super::new_vpsienode(&group(), "2", name, Default::default());
        vn.status = Some(VPSieNodeStatus {
            phase: VPSieNodePhase::Ready,
            node_name: Some(node.to_string()),
            ready_at: Some(Time(Timestamp::now())),
            ..Default::default()
        });
        vn
    }

    #[test]
    fn a_just_ready_worker_counts_as_coming_capacity_only_until_the_watch_shows_its_node_ready() {
        let workers = [ready_just_now("pool-a", "node-a"), ready_just_now("pool-b", "node-b")];
        let seen: BTreeSet<String> = BTreeSet::from(["node-a".to_string()]);
        assert_eq!(just_ready(&workers, &group(), &seen), vec!["2".to_string()], "only node-b is still unseen");
        assert_eq!(just_ready(&workers, &group(), &BTreeSet::new()).len(), 2);
    }
}
