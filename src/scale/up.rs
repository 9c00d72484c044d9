//! Scale-up planning: which nodes to add, where, and for which pending pods.
//!
//! In order:
//! 1. Pods the scheduler marked unschedulable are first placed, largest first, on capacity already on its
//!    way: nodes that joined moments ago (the scheduler may not have retried the pod since) and VPSieNodes
//!    still in flight. One burst of pods therefore never asks for nodes twice (pitfall 8).
//! 2. Groups below `minNodes` get nodes of their cheapest offering, whether or not scale-up is enabled and
//!    beyond `maxNodesPerScaleUp` (but never past `maxNodes`); pending pods may use them.
//! 3. Every other pod goes to ONE group: the one whose cheapest fitting offering costs least per pod-hour
//!    (ties by namespace/name), within `maxNodes` (counting current, in-flight and leaving nodes) and
//!    `maxNodesPerScaleUp`. Each group's pods are bin-packed onto new nodes by [`super::pack`]. Pods a
//!    full group could not take go round again to the next best group.
//! 4. A pod no group can take is listed with every group's reason, for its event.

use std::{collections::BTreeMap, fmt, time::Duration};

use jiff::Timestamp;

use super::{
    Misfit, ObjectRef, Target, daemonset_overhead,
    pack::{Bin, cost_per_pod, pack},
    priced, template,
};
use crate::snapshot::{GroupInfo, PodInfo, Resources, Snapshot};

/// How long after a node registers the scheduler may not yet have retried the pods it could take.
pub const SCHEDULER_CATCH_UP: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScaleUpPlan {
    /// New nodes per group, groups in namespace/name order; only groups that get nodes.
    pub groups: Vec<GroupScaleUp>,
    /// Pending pods expected to land on capacity that is already coming.
    pub absorbed: Vec<Absorbed>,
    /// Pending pods no group can take, with each group's reason.
    pub unschedulable: Vec<NoGroup>,
}

impl ScaleUpPlan {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub fn group(&self, namespace: &str, name: &str) -> Option<&GroupScaleUp> {
        self.groups.iter().find(|g| g.group.namespace == namespace && g.group.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupScaleUp {
    pub group: ObjectRef,
    /// How many nodes of each offering, by offering id.
    pub offerings: Vec<(String, u32)>,
    pub nodes: Vec<NewNode>,
    pub hourly_cost: f64,
    /// The group's `minNodes`, to say so when nodes are added to reach it.
    pub min_nodes: u32,
}

/// The note of the group's `ScaleUp` Event: how many nodes, what they cost, and why. Nodes that only
/// restore `minNodes` are not said to be for pending pods, even when pending pods will use them.
impl fmt::Display for GroupScaleUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let for_min = self.nodes.iter().filter(|n| n.reason == NewNodeReason::MinNodes).count();
        let for_pods = self.nodes.len() - for_min;
        let pods: usize = self.nodes.iter().map(|n| n.pods.len()).sum();
        write!(f, "adding {} node(s) ({:.4} USD/h)", self.nodes.len(), self.hourly_cost)?;
        let min = self.min_nodes;
        match (for_min, for_pods) {
            (0, _) => write!(f, " for {pods} pending pod(s)"),
            (_, 0) if pods == 0 => write!(f, " to reach minNodes ({min})"),
            (_, 0) => write!(f, " to reach minNodes ({min}); {pods} pending pod(s) will use them"),
            (m, p) => write!(f, ": {m} to reach minNodes ({min}), {p} for pending pods; {pods} pending pod(s) in all"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewNodeReason {
    /// Pending pods need it.
    PendingPods,
    /// The group is below `minNodes` (pending pods may still be planned onto it).
    MinNodes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewNode {
    pub offering_id: String,
    pub hourly_price: f64,
    pub reason: NewNodeReason,
    /// The pods this node is for.
    pub pods: Vec<ObjectRef>,
    /// When the longest-waiting of those pods became unschedulable: the start of the time-to-add metric.
    pub pending_since: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capacity {
    /// A node that registered within [`SCHEDULER_CATCH_UP`], after the pod was found unschedulable.
    JoinedNode { node: String },
    /// A VPSieNode of the group that is not Ready yet.
    InFlight { group: ObjectRef, offering_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Absorbed {
    pub pod: ObjectRef,
    pub by: Capacity,
}

/// Why a group cannot take a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The pod fits none of the group's offerings; the reason is the one of its largest offering.
    Misfit {
        offering: String,
        misfit: Misfit,
    },
    ScaleUpDisabled,
    AtMaxNodes {
        max: u32,
    },
    ScaleUpLimitReached {
        limit: u32,
    },
    NoOfferings,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misfit { offering, misfit } if misfit.is_resource_shortage() => {
                write!(f, "{misfit} even on its largest offering {offering}")
            }
            Self::Misfit { misfit, .. } => write!(f, "{misfit}"),
            Self::ScaleUpDisabled => write!(f, "scale-up disabled"),
            Self::AtMaxNodes { max } => write!(f, "at maxNodes ({max})"),
            Self::ScaleUpLimitReached { limit } => write!(f, "maxNodesPerScaleUp ({limit}) reached in this pass"),
            Self::NoOfferings => write!(f, "no priced offerings"),
        }
    }
}

/// A pending pod no group can take, and why not, group by group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoGroup {
    pub pod: ObjectRef,
    pub reasons: Vec<(ObjectRef, Rejection)>,
}

/// `group ns/a: untolerated taint k=v:NoSchedule; group ns/b: at maxNodes (3)`.
impl fmt::Display for NoGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reasons.is_empty() {
            return write!(f, "no node groups");
        }
        for (i, (group, reason)) in self.reasons.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "group {group}: {reason}")?;
        }
        Ok(())
    }
}

/// One group while planning: the nodes opened so far and how many more it may open.
struct GroupState<'a> {
    group: &'a GroupInfo,
    overhead: Resources,
    bins: Vec<Bin<'a>>,
    min_nodes_bins: usize,
    left_by_max: u32,
    left_by_limit: u32,
}

impl<'a> GroupState<'a> {
    fn new(snapshot: &Snapshot, group: &'a GroupInfo) -> Self {
        let existing = group.current_nodes.saturating_add(group.leaving_nodes).saturating_add(len(&group.in_flight));
        GroupState {
            group,
            overhead: daemonset_overhead(snapshot, group),
            bins: Vec::new(),
            min_nodes_bins: 0,
            left_by_max: group.max_nodes.saturating_sub(existing),
            left_by_limit: group.max_nodes_per_scale_up.unwrap_or(u32::MAX),
        }
    }

    /// Opens nodes of the cheapest offering up to `minNodes`; they count against `maxNodes` only.
    fn top_up(&mut self) {
        let group = self.group;
        let have = group.current_nodes.saturating_add(len(&group.in_flight));
        let missing = group.min_nodes.saturating_sub(have).min(self.left_by_max);
        let cheapest = group
            .offerings
            .iter()
            .filter(|o| priced(o))
            .min_by(|a, b| a.hourly_price.total_cmp(&b.hourly_price).then_with(|| a.id.cmp(&b.id)));
        if let Some(offering) = cheapest {
            for _ in 0..missing {
                self.bins.push(Bin::new(group, offering, self.overhead));
            }
            self.min_nodes_bins = self.bins.len();
            self.left_by_max -= missing;
        }
    }

    /// Price per pod-hour if the group can open a node for the pod, else why not.
    fn accepts(&self, pod: &PodInfo) -> Result<f64, Rejection> {
        let cost = cost_per_pod(self.group, self.overhead, pod)?;
        if !self.group.scale_up_enabled {
            return Err(Rejection::ScaleUpDisabled);
        }
        if self.left_by_max == 0 {
            return Err(Rejection::AtMaxNodes { max: self.group.max_nodes });
        }
        if self.left_by_limit == 0 {
            return Err(Rejection::ScaleUpLimitReached { limit: self.group.max_nodes_per_scale_up.unwrap_or(0) });
        }
        Ok(cost)
    }

    fn into_plan(self) -> Option<GroupScaleUp> {
        if self.bins.is_empty() {
            return None;
        }
        let mut offerings = BTreeMap::<String, u32>::new();
        let nodes: Vec<NewNode> = self
            .bins
            .into_iter()
            .enumerate()
            .map(|(i, bin)| {
                *offerings.entry(bin.offering.id.clone()).or_default() += 1;
                NewNode {
                    offering_id: bin.offering.id.clone(),
                    hourly_price: bin.offering.hourly_price,
                    reason: if i < self.min_nodes_bins { NewNodeReason::MinNodes } else { NewNodeReason::PendingPods },
                    pending_since: bin.pods.iter().filter_map(|p| p.unschedulable_since).min(),
                    pods: bin.pods.iter().map(|p| ObjectRef::pod(p)).collect(),
                }
            })
            .collect();
        Some(GroupScaleUp {
            group: ObjectRef::group(self.group),
            offerings: offerings.into_iter().collect(),
            hourly_cost: nodes.iter().map(|n| n.hourly_price).sum(),
            nodes,
            min_nodes: self.group.min_nodes,
        })
    }
}

fn len<T>(items: &[T]) -> u32 {
    u32::try_from(items.len()).unwrap_or(u32::MAX)
}

/// Largest first (cpu, then memory), then by name, so the same snapshot always gives the same plan.
fn largest_first(pods: &mut [&PodInfo]) {
    pods.sort_by(|a, b| {
        (b.requests.cpu_millis, b.requests.memory_bytes)
            .cmp(&(a.requests.cpu_millis, a.requests.memory_bytes))
            .then_with(|| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)))
    });
}

/// Plans the nodes to add for the snapshot's pending pods and for groups below `minNodes`.
/// `now` only decides which nodes joined recently enough to still be unknown to the scheduler's verdict.
pub fn plan_scale_up(snapshot: &Snapshot, now: Timestamp) -> ScaleUpPlan {
    let mut plan = ScaleUpPlan::default();
    let mut pending: Vec<&PodInfo> =
        snapshot.pods.iter().map(|p| &**p).filter(|p| p.is_pending_unschedulable()).collect();
    largest_first(&mut pending);

    let mut groups: Vec<&GroupInfo> = snapshot.groups.iter().collect();
    groups.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

    let mut waiting = absorb_into_coming_capacity(snapshot, &groups, pending, now, &mut plan.absorbed);

    let mut states: Vec<GroupState> = groups.iter().map(|g| GroupState::new(snapshot, g)).collect();
    for state in &mut states {
        state.top_up();
    }

    // Each round either places every pod or closes a full group, so it ends within groups + 1 rounds.
    for _ in 0..=states.len() {
        waiting.retain(|pod| !states.iter_mut().any(|s| s.bins.iter_mut().any(|b| b.try_place(pod))));
        let mut chosen: BTreeMap<usize, Vec<&PodInfo>> = BTreeMap::new();
        for pod in waiting.drain(..) {
            let mut best: Option<(usize, f64)> = None;
            let mut reasons = Vec::new();
            for (i, state) in states.iter().enumerate() {
                match state.accepts(pod) {
                    Ok(cost) if best.is_none_or(|(_, b)| cost < b) => best = Some((i, cost)),
                    Ok(_) => {}
                    Err(reason) => reasons.push((ObjectRef::group(state.group), reason)),
                }
            }
            match best {
                Some((i, _)) => chosen.entry(i).or_default().push(pod),
                None => plan.unschedulable.push(NoGroup { pod: ObjectRef::pod(pod), reasons }),
            }
        }
        if chosen.is_empty() {
            break;
        }
        for (i, pods) in chosen {
            let state = &mut states[i];
            let mut room = state.left_by_max.min(state.left_by_limit);
            let before = room;
            let overflow = pack(state.group, state.overhead, pods, &mut state.bins, &mut room);
            let opened = before - room;
            state.left_by_max -= opened;
            state.left_by_limit = state.left_by_limit.saturating_sub(opened);
            waiting.extend(overflow);
        }
        largest_first(&mut waiting);
    }
    // Unreachable by the argument above; kept so that no pending pod can ever drop out of the plan.
    for pod in waiting {
        let reasons = states.iter().filter_map(|s| s.accepts(pod).err().map(|r| (ObjectRef::group(s.group), r)));
        plan.unschedulable.push(NoGroup { pod: ObjectRef::pod(pod), reasons: reasons.collect() });
    }
    plan.groups = states.into_iter().filter_map(GroupState::into_plan).collect();
    plan
}

/// Places pods on nodes that just joined and on in-flight nodes; returns the pods left over.
fn absorb_into_coming_capacity<'a>(
    snapshot: &Snapshot,
    groups: &[&GroupInfo],
    pending: Vec<&'a PodInfo>,
    now: Timestamp,
    absorbed: &mut Vec<Absorbed>,
) -> Vec<&'a PodInfo> {
    let catch_up = jiff::SignedDuration::try_from(SCHEDULER_CATCH_UP).unwrap_or(jiff::SignedDuration::ZERO);
    let mut joined: Vec<(Timestamp, Target)> = snapshot
        .nodes
        .iter()
        .filter(|n| n.ready && !n.unschedulable && !n.deleting)
        .filter_map(|n| n.created.filter(|c| *c <= now && now.duration_since(*c) < catch_up).map(|c| (c, n)))
        .map(|(created, n)| (created, Target::from_node(n, snapshot.pods_on(&n.name)).without_startup_taints()))
        .collect();
    let mut in_flight: Vec<(ObjectRef, String, Target)> = Vec::new();
    for group in groups {
        let overhead = daemonset_overhead(snapshot, group);
        for id in &group.in_flight {
            // An offering no longer in the catalogue has no known size; it is not counted.
            if let Some(offering) = group.offering(id) {
                in_flight.push((ObjectRef::group(group), id.clone(), template(group, offering, overhead)));
            }
        }
    }
    let mut left = Vec::new();
    for pod in pending {
        // The scheduler's verdict already covers nodes that existed when it was reached.
        let seen_after = |created: &Timestamp| pod.unschedulable_since.is_none_or(|since| since < *created);
        if let Some((_, target)) =
            joined.iter_mut().find(|(created, t)| seen_after(created) && super::fit::check(pod, t).is_ok())
        {
            target.reserve(pod);
            let node = target.name.clone().unwrap_or_default();
            absorbed.push(Absorbed { pod: ObjectRef::pod(pod), by: Capacity::JoinedNode { node } });
        } else if let Some((group, offering_id, target)) =
            in_flight.iter_mut().find(|(_, _, t)| super::fit::check(pod, t).is_ok())
        {
            target.reserve(pod);
            absorbed.push(Absorbed {
                pod: ObjectRef::pod(pod),
                by: Capacity::InFlight { group: group.clone(), offering_id: offering_id.clone() },
            });
        } else {
            left.push(pod);
        }
    }
    left
}
