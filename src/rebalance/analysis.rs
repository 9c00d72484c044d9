//! Rebalance analysis: which nodes would run their pods on a cheaper offering their group allows, and
//! why every other node is not a candidate.
//!
//! Pure: a [`Snapshot`] (the same one the scale planners read), the rebalancer settings of each group,
//! what the VPSieNodes say of each node (offering, price, who created it), and the time. Per node the
//! work is its own pods times the group's cheaper offerings, so a pass grows linearly with the cluster.
//!
//! Only one-for-one replacements are proposed: a node's pods move, together, to one new node of a cheaper
//! offering (the rebalancer creates the replacement before it drains the old node). Consolidating several
//! nodes into fewer is scale-down's work.

use std::{collections::BTreeMap, fmt, time::Duration};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::{
    scale::{Misfit, ObjectRef, daemonset_overhead, fit, human, priced, template},
    snapshot::{DO_NOT_DISRUPT_ANNOTATION, GroupInfo, NodeInfo, Snapshot},
};

/// The rebalancer settings of one group that the analysis needs.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSettings {
    pub enabled: bool,
    pub min_savings_percent: u32,
    pub min_node_age: Duration,
    /// A rollback in this group holds further operations back until then.
    pub backoff_until: Option<Timestamp>,
    /// Opening of the current maintenance window, if one is open: nodes a rebalance created since then
    /// are not replaced again in it.
    pub window_opened: Option<Timestamp>,
}

/// What a node's VPSieNode records about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    pub vpsienode: String,
    pub offering: String,
    pub hourly_price: f64,
    /// When a rebalance created it, if one did.
    pub created_by_rebalance: Option<Timestamp>,
}

/// Everything the analysis reads.
pub struct Input<'a> {
    pub snapshot: &'a Snapshot,
    /// By group key (`namespace/name`).
    pub settings: &'a BTreeMap<String, GroupSettings>,
    /// By node name.
    pub workers: &'a BTreeMap<String, Worker>,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Analysis {
    pub candidates: Vec<Candidate>,
    pub skipped: Vec<SkippedNode>,
}

impl Analysis {
    /// Hourly saving of replacing every candidate.
    pub fn hourly_savings(&self) -> f64 {
        self.candidates.iter().map(|c| c.hourly_saving).sum()
    }
}

/// A node to replace, with the offering that takes its pods for less.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub group: String,
    pub node: String,
    pub vpsienode: String,
    pub from_offering: String,
    pub from_hourly_price: f64,
    pub to_offering: String,
    pub to_hourly_price: f64,
    pub hourly_saving: f64,
    pub saving_percent: f64,
    /// Pods that would move to the replacement.
    pub pods: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedNode {
    pub group: String,
    pub node: String,
    pub reason: Skip,
}

/// Why a node of a group is not a rebalance candidate. `Display` is what `plan` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Skip {
    RebalanceDisabled,
    GroupBackoff { until: Timestamp },
    NotManaged,
    NotReady,
    Cordoned,
    TooYoung { min_age_secs: u64 },
    CreatedByRebalance { at: Timestamp },
    DoNotDisrupt { pod: String },
    BarePod { pod: String },
    AlreadyCheapest { offering: String },
    SavingsBelowMinimum { to_offering: String, saving_percent: f64, min_percent: u32 },
    NoCheaperOfferingFits { pod: String, offering: String, misfit: String },
}

impl Skip {
    /// Bounded name, for metric labels and event reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RebalanceDisabled => "RebalanceDisabled",
            Self::GroupBackoff { .. } => "GroupBackoff",
            Self::NotManaged => "NotManaged",
            Self::NotReady => "NotReady",
            Self::Cordoned => "Cordoned",
            Self::TooYoung { .. } => "TooYoung",
            Self::CreatedByRebalance { .. } => "CreatedByRebalance",
            Self::DoNotDisrupt { .. } => "DoNotDisrupt",
            Self::BarePod { .. } => "BarePod",
            Self::AlreadyCheapest { .. } => "AlreadyCheapest",
            Self::SavingsBelowMinimum { .. } => "SavingsBelowMinimum",
            Self::NoCheaperOfferingFits { .. } => "NoCheaperOfferingFits",
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RebalanceDisabled => write!(f, "rebalancing is disabled for the node group"),
            Self::GroupBackoff { until } => {
                write!(f, "a rebalance of the group rolled back recently; the next may start after {until}")
            }
            Self::NotManaged => write!(f, "no VPSieNode manages this node"),
            Self::NotReady => write!(f, "the node is not Ready"),
            Self::Cordoned => write!(f, "the node is cordoned"),
            Self::TooYoung { min_age_secs } => {
                write!(f, "the node is younger than the minimum node age {}", human(Duration::from_secs(*min_age_secs)))
            }
            Self::CreatedByRebalance { at } => {
                write!(f, "a rebalance created the node in the current maintenance window (at {at})")
            }
            Self::DoNotDisrupt { pod } => write!(f, "pod {pod} is annotated {DO_NOT_DISRUPT_ANNOTATION}=true"),
            Self::BarePod { pod } => write!(f, "pod {pod} has no controller and would not be recreated"),
            Self::AlreadyCheapest { offering } => {
                write!(f, "no allowed offering is cheaper than the node's {offering}")
            }
            Self::SavingsBelowMinimum { to_offering, saving_percent, min_percent } => write!(
                f,
                "the cheapest offering that fits, {to_offering}, saves {saving_percent:.1}%, under the minimum {min_percent}%"
            ),
            Self::NoCheaperOfferingFits { pod, offering, misfit } => {
                write!(f, "pod {pod} fits on no cheaper offering (largest cheaper: {offering}, {misfit})")
            }
        }
    }
}

/// Analyses every node of every group: candidates first by saving (largest first), then the skipped.
pub fn analyse(input: &Input<'_>) -> Analysis {
    let mut analysis = Analysis::default();
    let mut nodes_by_group: BTreeMap<&str, Vec<&NodeInfo>> = BTreeMap::new();
    for node in &input.snapshot.nodes {
        if let Some(group) = node.nodegroup.as_deref() {
            nodes_by_group.entry(group).or_default().push(node);
        }
    }
    for group in &input.snapshot.groups {
        let key = group.key();
        // The node label names the group but not its namespace: a node whose VPSieNode lives in another
        // namespace belongs to a same-named group there.
        let ns_prefix = format!("{}/", group.namespace);
        let nodes: Vec<&NodeInfo> = nodes_by_group
            .get(group.name.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|n| n.in_group(group))
            .filter(|n| input.workers.get(&n.name).is_none_or(|w| w.vpsienode.starts_with(&ns_prefix)))
            .collect();
        let settings = input.settings.get(&key);
        let group_wide = match settings {
            None => Some(Skip::RebalanceDisabled),
            Some(s) if !s.enabled => Some(Skip::RebalanceDisabled),
            Some(s) => s.backoff_until.filter(|until| *until > input.now).map(|until| Skip::GroupBackoff { until }),
        };
        if let Some(reason) = group_wide {
            for node in &nodes {
                analysis.skipped.push(SkippedNode {
                    group: key.clone(),
                    node: node.name.clone(),
                    reason: reason.clone(),
                });
            }
            continue;
        }
        let Some(settings) = settings else { continue };
        let overhead = daemonset_overhead(input.snapshot, group);
        for node in nodes {
            match node_verdict(input, group, settings, node, overhead) {
                Ok(candidate) => analysis.candidates.push(candidate),
                Err(reason) => {
                    analysis.skipped.push(SkippedNode { group: key.clone(), node: node.name.clone(), reason })
                }
            }
        }
    }
    analysis.candidates.sort_by(|a, b| b.hourly_saving.total_cmp(&a.hourly_saving).then_with(|| a.node.cmp(&b.node)));
    analysis
}

fn node_verdict(
    input: &Input<'_>,
    group: &GroupInfo,
    settings: &GroupSettings,
    node: &NodeInfo,
    overhead: crate::snapshot::Resources,
) -> Result<Candidate, Skip> {
    let worker = input.workers.get(&node.name).ok_or(Skip::NotManaged)?;
    if !node.ready || node.deleting {
        return Err(Skip::NotReady);
    }
    if node.unschedulable {
        return Err(Skip::Cordoned);
    }
    let created = node.created.unwrap_or(input.now);
    let min_age = SignedDuration::try_from(settings.min_node_age).unwrap_or(SignedDuration::MAX);
    if input.now.duration_since(created) < min_age {
        return Err(Skip::TooYoung { min_age_secs: settings.min_node_age.as_secs() });
    }
    if let (Some(at), Some(opened)) = (worker.created_by_rebalance, settings.window_opened)
        && at >= opened
    {
        return Err(Skip::CreatedByRebalance { at });
    }
    let on_node: Vec<_> = input.snapshot.pods_on(&node.name).filter(|p| !p.terminating).collect();
    if let Some(pod) = on_node.iter().find(|p| p.do_not_disrupt) {
        return Err(Skip::DoNotDisrupt { pod: ObjectRef::pod(pod).to_string() });
    }
    let mut moving: Vec<_> = on_node.into_iter().filter(|p| p.must_move()).collect();
    if let Some(pod) = moving.iter().find(|p| p.controller_kind.is_none()) {
        return Err(Skip::BarePod { pod: ObjectRef::pod(pod).to_string() });
    }
    // Largest first, as a scheduler filling one node would fare best.
    moving.sort_by(|a, b| {
        (b.requests.cpu_millis, b.requests.memory_bytes)
            .cmp(&(a.requests.cpu_millis, a.requests.memory_bytes))
            .then_with(|| a.name.cmp(&b.name))
    });

    let mut cheaper: Vec<_> =
        group.offerings.iter().filter(|o| priced(o) && o.hourly_price < worker.hourly_price).collect();
    cheaper.sort_by(|a, b| a.hourly_price.total_cmp(&b.hourly_price).then_with(|| a.id.cmp(&b.id)));
    if cheaper.is_empty() {
        return Err(Skip::AlreadyCheapest { offering: worker.offering.clone() });
    }
    let mut first_misfit: Option<(String, String, Misfit)> = None;
    for offering in &cheaper {
        let mut target = template(group, offering, overhead);
        let misfit = moving.iter().find_map(|pod| match fit::check(pod, &target) {
            Ok(()) => {
                target.reserve(pod);
                None
            }
            Err(m) => Some((ObjectRef::pod(pod).to_string(), m)),
        });
        match misfit {
            None => {
                let saving = worker.hourly_price - offering.hourly_price;
                let percent = if worker.hourly_price > 0.0 { saving * 100.0 / worker.hourly_price } else { 0.0 };
                if percent < f64::from(settings.min_savings_percent) {
                    return Err(Skip::SavingsBelowMinimum {
                        to_offering: offering.id.clone(),
                        saving_percent: percent,
                        min_percent: settings.min_savings_percent,
                    });
                }
                return Ok(Candidate {
                    group: group.key(),
                    node: node.name.clone(),
                    vpsienode: worker.vpsienode.clone(),
                    from_offering: worker.offering.clone(),
                    from_hourly_price: worker.hourly_price,
                    to_offering: offering.id.clone(),
                    to_hourly_price: offering.hourly_price,
                    hourly_saving: saving,
                    saving_percent: percent,
                    pods: moving.len(),
                });
            }
            // The largest cheaper offering (the last tried) names the misfit an operator can act on.
            Some((pod, m)) => first_misfit = Some((pod, offering.id.clone(), m)),
        }
    }
    let (pod, offering, misfit) = first_misfit.expect("at least one cheaper offering was tried");
    Err(Skip::NoCheaperOfferingFits { pod, offering, misfit: misfit.to_string() })
}
