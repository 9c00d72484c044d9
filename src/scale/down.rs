//! Scale-down planning: which under-used node of each group to remove, and why every other one stays.
//!
//! A node is *unneeded* while the requests of its pods (DaemonSets included) are under the group's
//! threshold of its allocatable in both cpu and memory. The caller keeps the first time each node was
//! seen unneeded ([`UnneededSince`]) and gets the updated map back with the plan.
//!
//! An unneeded node is removed when, after `unneededTime`, nothing blocks it and every pod that would
//! have to move fits, pod by pod, on the other nodes' free room (selectors, affinity, taints and
//! resources). Neither the node itself nor any node removed in the same plan counts as room, and room
//! promised to one node's pods is not promised again (pitfall 5). One node per group per pass; nodes that
//! receive pods in this pass are not removed in it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    time::Duration,
};

use jiff::{SignedDuration, Timestamp};

use super::{Misfit, ObjectRef, Target, fit, human};
use crate::crd::REBALANCE_LABEL;
use crate::snapshot::{DO_NOT_DISRUPT_ANNOTATION, GroupInfo, NodeInfo, PodInfo, Snapshot};

/// Node name → when it was first seen unneeded.
pub type UnneededSince = BTreeMap<String, Timestamp>;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScaleDownPlan {
    pub remove: Vec<NodeRemoval>,
    /// Unneeded nodes that stay, each with the reason an operator sees.
    pub blocked: Vec<BlockedNode>,
    /// The map to keep for the next pass: the unneeded nodes and since when.
    pub unneeded_since: UnneededSince,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRemoval {
    pub group: ObjectRef,
    pub node: String,
    /// Where the simulation put each pod that has to move (the scheduler decides for real).
    pub moves: Vec<PodMove>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMove {
    pub pod: ObjectRef,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedNode {
    pub group: ObjectRef,
    pub node: String,
    pub reason: Blocked,
}

/// The node that came nearest to taking a pod, and what it lacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closest {
    pub node: String,
    pub misfit: Misfit,
}

/// Why an unneeded node is not removed. Its `Display` goes into events and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    ScaleDownDisabled,
    Cooldown {
        until: Timestamp,
    },
    AtMinNodes {
        min: u32,
    },
    NotUnneededLongEnough {
        since: Timestamp,
        unneeded_time: Duration,
    },
    Cordoned,
    /// A rebalance operation holds the node (it is being replaced, or it is a replacement).
    Rebalancing,
    /// The last drain of the node was blocked; it is tried again after `until`.
    DrainBackoff {
        until: Timestamp,
        cause: String,
    },
    TooYoung {
        min_age: Duration,
        /// When the node reaches `min_age`.
        until: Timestamp,
    },
    DoNotDisrupt {
        pod: ObjectRef,
    },
    BarePod {
        pod: ObjectRef,
    },
    LocalStorage {
        pod: ObjectRef,
    },
    PdbAllowsNoDisruption {
        pod: ObjectRef,
        pdb: ObjectRef,
    },
    UnreadablePdb {
        namespace: String,
    },
    UnreadablePod {
        pod: String,
        reason: String,
    },
    /// `closest` is the node that came nearest, as a hint; boxed to keep the enum small.
    NoRoomFor {
        pod: ObjectRef,
        closest: Option<Box<Closest>>,
    },
    ReceivesPods,
    AnotherNodeRemoved {
        node: String,
    },
}

impl Blocked {
    /// Bounded name of the reason, for event actions and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ScaleDownDisabled { .. } => "ScaleDownDisabled",
            Self::Cooldown { .. } => "Cooldown",
            Self::AtMinNodes { .. } => "AtMinNodes",
            Self::NotUnneededLongEnough { .. } => "NotUnneededLongEnough",
            Self::Cordoned { .. } => "Cordoned",
            Self::Rebalancing => "Rebalancing",
            Self::DrainBackoff { .. } => "DrainBackoff",
            Self::TooYoung { .. } => "TooYoung",
            Self::DoNotDisrupt { .. } => "DoNotDisrupt",
            Self::BarePod { .. } => "BarePod",
            Self::LocalStorage { .. } => "LocalStorage",
            Self::PdbAllowsNoDisruption { .. } => "PdbAllowsNoDisruption",
            Self::UnreadablePdb { .. } => "UnreadablePdb",
            Self::UnreadablePod { .. } => "UnreadablePod",
            Self::NoRoomFor { .. } => "NoRoomFor",
            Self::ReceivesPods { .. } => "ReceivesPods",
            Self::AnotherNodeRemoved { .. } => "AnotherNodeRemoved",
        }
    }
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ScaleDownDisabled => write!(f, "scale-down is disabled for the node group"),
            Self::Cooldown { until } => write!(f, "in the cooldown after the last scale-up, until {until}"),
            Self::AtMinNodes { min } => write!(f, "the node group is at minNodes ({min})"),
            Self::NotUnneededLongEnough { since, unneeded_time } => {
                write!(f, "unneeded since {since}; removed once unneeded for {}", human(*unneeded_time))
            }
            Self::Cordoned => write!(f, "the node is cordoned (by someone else, or a drain is under way)"),
            Self::Rebalancing => write!(f, "a rebalance operation holds the node ({REBALANCE_LABEL} label)"),
            Self::DrainBackoff { until, cause } => {
                write!(f, "the last drain of the node was blocked ({cause}); scale-down retries it after {until}")
            }
            Self::TooYoung { min_age, .. } => {
                write!(f, "the node is younger than the minimum node age {}", human(*min_age))
            }
            Self::DoNotDisrupt { pod } => write!(f, "pod {pod} is annotated {DO_NOT_DISRUPT_ANNOTATION}=true"),
            Self::BarePod { pod } => write!(f, "pod {pod} has no controller and would not be recreated"),
            Self::LocalStorage { pod } => write!(
                f,
                "pod {pod} uses local storage (emptyDir or hostPath) and the node group does not allow removing such nodes"
            ),
            Self::PdbAllowsNoDisruption { pod, pdb } => {
                write!(f, "PodDisruptionBudget {pdb} allows no disruption of pod {pod}")
            }
            Self::UnreadablePdb { namespace } => {
                write!(f, "a PodDisruptionBudget in namespace {namespace} could not be read")
            }
            Self::UnreadablePod { pod, reason } => write!(f, "pod {pod} could not be read: {reason}"),
            Self::NoRoomFor { pod, closest: Some(closest) } => {
                write!(f, "pod {pod} fits on no other node (closest: {}, {})", closest.node, closest.misfit)
            }
            Self::NoRoomFor { pod, closest: None } => write!(f, "pod {pod} fits on no other node (none can take pods)"),
            Self::ReceivesPods => write!(f, "the node takes pods of a node removed in this pass"),
            Self::AnotherNodeRemoved { node } => {
                write!(f, "node {node} of the group is removed in this pass (one node per group at a time)")
            }
        }
    }
}

impl Blocked {
    /// When the clock alone lifts this reason; `None` for a reason only a change in the cluster lifts.
    pub fn lifts_at(&self) -> Option<Timestamp> {
        match self {
            Self::Cooldown { until } | Self::DrainBackoff { until, .. } | Self::TooYoung { until, .. } => Some(*until),
            Self::NotUnneededLongEnough { since, unneeded_time } => {
                Some(since.checked_add(signed(*unneeded_time)).unwrap_or(Timestamp::MAX))
            }
            Self::ScaleDownDisabled
            | Self::AtMinNodes { .. }
            | Self::Cordoned
            | Self::Rebalancing
            | Self::DoNotDisrupt { .. }
            | Self::BarePod { .. }
            | Self::LocalStorage { .. }
            | Self::PdbAllowsNoDisruption { .. }
            | Self::UnreadablePdb { .. }
            | Self::UnreadablePod { .. }
            | Self::NoRoomFor { .. }
            | Self::ReceivesPods
            | Self::AnotherNodeRemoved { .. } => None,
        }
    }
}

impl ScaleDownPlan {
    /// With the cluster unchanged, the earliest time a later plan could differ from this one: the
    /// first clock-bound block to lift. `None` when no block waits on the clock. A plan that removes a
    /// node is about to change the cluster; the caller plans again after acting on it.
    pub fn next_change(&self) -> Option<Timestamp> {
        self.blocked.iter().filter_map(|b| b.reason.lifts_at()).min()
    }
}

/// Room on the nodes that can take pods, as the plan uses it up.
struct Room {
    targets: BTreeMap<String, Target>,
    removed: BTreeSet<String>,
    receivers: BTreeSet<String>,
    pdb_budget: BTreeMap<ObjectRef, i32>,
}

/// Plans at most one node removal per group and says why every other unneeded node stays.
/// `unneeded` is the map the previous pass returned (empty at start); keep `plan.unneeded_since` for the next.
pub fn plan_scale_down(snapshot: &Snapshot, now: Timestamp, unneeded: &UnneededSince) -> ScaleDownPlan {
    let mut plan = ScaleDownPlan::default();
    let mut room = Room {
        targets: snapshot
            .nodes
            .iter()
            .filter(|n| n.ready && !n.unschedulable && !n.deleting)
            .map(|n| (n.name.clone(), Target::from_node(n, snapshot.pods_on(&n.name))))
            .collect(),
        removed: BTreeSet::new(),
        receivers: BTreeSet::new(),
        pdb_budget: snapshot
            .pdbs
            .iter()
            .map(|p| (ObjectRef::new(&p.namespace, &p.name), p.disruptions_allowed))
            .collect(),
    };
    let mut groups: Vec<&GroupInfo> = snapshot.groups.iter().collect();
    groups.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

    for group in groups {
        let mut nodes: Vec<(&NodeInfo, u128)> = snapshot
            .nodes
            .iter()
            .filter(|n| n.in_group(group) && n.ready && !n.deleting)
            .filter_map(|n| utilization_if_unneeded(snapshot, group, n).map(|u| (n, u)))
            .collect();
        nodes.sort_by(|(a, ua), (b, ub)| ua.cmp(ub).then_with(|| a.name.cmp(&b.name)));
        for (node, _) in &nodes {
            let since = unneeded.get(&node.name).copied().filter(|s| *s <= now).unwrap_or(now);
            plan.unneeded_since.insert(node.name.clone(), since);
        }

        let group_ref = ObjectRef::group(group);
        let block_all = |plan: &mut ScaleDownPlan, reason: Blocked| {
            for (node, _) in &nodes {
                plan.blocked.push(BlockedNode {
                    group: group_ref.clone(),
                    node: node.name.clone(),
                    reason: reason.clone(),
                });
            }
        };
        if !group.scale_down.enabled {
            block_all(&mut plan, Blocked::ScaleDownDisabled);
            continue;
        }
        // At minNodes the group stays whatever else holds; the cooldown would only be the reason while it
        // lasts, and naming it would send an operator to wait for nothing.
        let size = snapshot.nodes.iter().filter(|n| n.in_group(group) && !n.deleting);
        if group.current_nodes.min(u32::try_from(size.count()).unwrap_or(u32::MAX)) <= group.min_nodes {
            block_all(&mut plan, Blocked::AtMinNodes { min: group.min_nodes });
            continue;
        }
        if let Some(until) = cooldown_until(group, now) {
            block_all(&mut plan, Blocked::Cooldown { until });
            continue;
        }

        let mut removed_here: Option<String> = None;
        for (node, _) in &nodes {
            let since = plan.unneeded_since.get(&node.name).copied().unwrap_or(now);
            let verdict = match &removed_here {
                Some(other) => Err(Blocked::AnotherNodeRemoved { node: other.clone() }),
                None => try_remove(snapshot, group, node, since, now, &mut room),
            };
            match verdict {
                Ok(moves) => {
                    removed_here = Some(node.name.clone());
                    plan.remove.push(NodeRemoval { group: group_ref.clone(), node: node.name.clone(), moves });
                }
                Err(reason) => {
                    plan.blocked.push(BlockedNode { group: group_ref.clone(), node: node.name.clone(), reason })
                }
            }
        }
    }
    plan
}

/// The larger of cpu and memory utilization, in parts per million, if both are under the threshold.
fn utilization_if_unneeded(snapshot: &Snapshot, group: &GroupInfo, node: &NodeInfo) -> Option<u128> {
    let requested = snapshot.requested_on(&node.name);
    let threshold = u128::from(group.scale_down.utilization_threshold_percent);
    let share = |used: i64, total: i64| {
        // Without a positive allocatable utilization means nothing; such a node is never a candidate.
        let (used, total) = (u128::try_from(used.max(0)).ok()?, u128::try_from(total).ok().filter(|t| *t > 0)?);
        (used * 100 < threshold * total).then(|| used * 1_000_000 / total)
    };
    let cpu = share(requested.cpu_millis, node.allocatable.cpu_millis)?;
    let memory = share(requested.memory_bytes, node.allocatable.memory_bytes)?;
    Some(cpu.max(memory))
}

fn cooldown_until(group: &GroupInfo, now: Timestamp) -> Option<Timestamp> {
    // An instant past the end of time is still in the future.
    let until = group.last_scale_up?.checked_add(signed(group.scale_down.cooldown)).unwrap_or(Timestamp::MAX);
    (until > now).then_some(until)
}

fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

/// The moves that empty `node`, committed to `room`; or the first reason it must stay.
fn try_remove(
    snapshot: &Snapshot,
    group: &GroupInfo,
    node: &NodeInfo,
    since: Timestamp,
    now: Timestamp,
    room: &mut Room,
) -> Result<Vec<PodMove>, Blocked> {
    let policy = &group.scale_down;
    if node.labels.contains_key(REBALANCE_LABEL) {
        return Err(Blocked::Rebalancing);
    }
    if node.unschedulable {
        return Err(Blocked::Cordoned);
    }
    if let Some(backoff) = snapshot.drain_backoff.get(&node.name).filter(|b| b.until > now) {
        return Err(Blocked::DrainBackoff { until: backoff.until, cause: backoff.cause.clone() });
    }
    if room.receivers.contains(&node.name) {
        return Err(Blocked::ReceivesPods);
    }
    let created = node.created.unwrap_or(now);
    if now.duration_since(created) < signed(policy.min_node_age) {
        let until = created.checked_add(signed(policy.min_node_age)).unwrap_or(Timestamp::MAX);
        return Err(Blocked::TooYoung { min_age: policy.min_node_age, until });
    }
    if now.duration_since(since) < signed(policy.unneeded_time) {
        return Err(Blocked::NotUnneededLongEnough { since, unneeded_time: policy.unneeded_time });
    }
    if let Some(skipped) =
        snapshot.skipped.iter().find(|s| s.kind == "Pod" && s.node_name.as_deref() == Some(&node.name))
    {
        return Err(Blocked::UnreadablePod { pod: skipped.name.clone(), reason: skipped.reason.clone() });
    }
    let on_node: Vec<&PodInfo> = snapshot.pods_on(&node.name).filter(|p| !p.terminating).collect();
    if let Some(pod) = on_node.iter().find(|p| p.do_not_disrupt) {
        return Err(Blocked::DoNotDisrupt { pod: ObjectRef::pod(pod) });
    }
    let mut moving: Vec<&PodInfo> = on_node.into_iter().filter(|p| p.must_move()).collect();
    if let Some(pod) = moving.iter().find(|p| p.controller_kind.is_none()) {
        return Err(Blocked::BarePod { pod: ObjectRef::pod(pod) });
    }
    if !policy.allow_local_storage
        && let Some(pod) = moving.iter().find(|p| p.has_local_storage)
    {
        return Err(Blocked::LocalStorage { pod: ObjectRef::pod(pod) });
    }
    let mut disrupted: Vec<ObjectRef> = Vec::new();
    for pod in &moving {
        if let Some(skipped) = snapshot
            .skipped
            .iter()
            .find(|s| s.kind == "PodDisruptionBudget" && s.name.split('/').next() == Some(pod.namespace.as_str()))
        {
            let namespace = skipped.name.split('/').next().unwrap_or_default().to_string();
            return Err(Blocked::UnreadablePdb { namespace });
        }
        for pdb in covering_pdbs(snapshot, pod) {
            if room.pdb_budget.get(&pdb).copied().unwrap_or(0) <= 0 {
                return Err(Blocked::PdbAllowsNoDisruption { pod: ObjectRef::pod(pod), pdb });
            }
            disrupted.push(pdb);
        }
    }

    // Simulate on a copy; commit only if every pod finds a place.
    moving.sort_by(|a, b| {
        (b.requests.cpu_millis, b.requests.memory_bytes)
            .cmp(&(a.requests.cpu_millis, a.requests.memory_bytes))
            .then_with(|| a.name.cmp(&b.name))
    });
    // Only the targets that receive a pod are copied (into `touched`): copying all of them for every
    // candidate made scale-down quadratic in the cluster size.
    let mut touched: BTreeMap<String, Target> = BTreeMap::new();
    let mut moves = Vec::new();
    for pod in moving {
        let place = current(&room.targets, &touched, &room.removed, &node.name)
            .find(|(_, t)| fit::check(pod, t).is_ok())
            .map(|(name, _)| name.clone());
        match place {
            Some(name) => {
                touched.entry(name.clone()).or_insert_with(|| room.targets[&name].clone()).reserve(pod);
                moves.push(PodMove { pod: ObjectRef::pod(pod), to: name });
            }
            None => {
                let closest = closest(pod, current(&room.targets, &touched, &room.removed, &node.name));
                return Err(Blocked::NoRoomFor { pod: ObjectRef::pod(pod), closest });
            }
        }
    }
    room.targets.extend(touched);
    room.removed.insert(node.name.clone());
    room.receivers.extend(moves.iter().map(|m| m.to.clone()));
    for pdb in disrupted {
        if let Some(budget) = room.pdb_budget.get_mut(&pdb) {
            *budget = (*budget - 1).max(0);
        }
    }
    Ok(moves)
}

/// The targets a pod of `leaving` may go to, in name order, with this simulation's reservations
/// (`touched`) over the room committed so far.
fn current<'a>(
    targets: &'a BTreeMap<String, Target>,
    touched: &'a BTreeMap<String, Target>,
    removed: &'a BTreeSet<String>,
    leaving: &'a str,
) -> impl Iterator<Item = (&'a String, &'a Target)> + 'a {
    targets
        .iter()
        .filter(move |(name, _)| name.as_str() != leaving && !removed.contains(*name))
        .map(move |(name, t)| (name, touched.get(name).unwrap_or(t)))
}

/// PDBs in the pod's namespace whose selector selects it.
fn covering_pdbs<'a>(snapshot: &'a Snapshot, pod: &'a PodInfo) -> impl Iterator<Item = ObjectRef> + 'a {
    snapshot
        .pdbs
        .iter()
        .filter(move |p| p.namespace == pod.namespace)
        .filter(move |p| p.selector.as_ref().is_some_and(|s| fit::selector_matches(s, &pod.labels)))
        .map(|p| ObjectRef::new(&p.namespace, &p.name))
}

/// The node that came nearest to taking the pod: one short only of room if any (the one with most cpu
/// free), else the first by name. This is the hint an operator can act on.
fn closest<'a>(pod: &PodInfo, targets: impl IntoIterator<Item = (&'a String, &'a Target)>) -> Option<Box<Closest>> {
    let misfits: Vec<(&String, &Target, Misfit)> =
        targets.into_iter().filter_map(|(name, t)| fit::check(pod, t).err().map(|m| (name, t, m))).collect();
    let short = misfits
        .iter()
        .filter(|(_, _, m)| m.is_resource_shortage())
        .max_by(|(an, a, _), (bn, b, _)| a.free.cpu_millis.cmp(&b.free.cpu_millis).then_with(|| bn.cmp(an)));
    short
        .or(misfits.first())
        .map(|(name, _, misfit)| Box::new(Closest { node: (*name).clone(), misfit: misfit.clone() }))
}
