//! Whether one pod fits one node, real or hypothetical, and if not the first reason why.
//!
//! The checks follow the scheduler's filters that scale decisions can model: cordon, node selector,
//! required node affinity, taints, then resources. Static mismatches come first because they are the
//! more useful reason: "untolerated taint" tells an operator what to change, "insufficient cpu" on a node
//! the pod could never use does not. Inter-pod affinity, topology spread and volume topology are not
//! modelled; for scale-up the scheduler's own verdict (the pod is unschedulable) covers them.

use std::{collections::BTreeMap, fmt};

use crate::snapshot::{
    LabelSelector, NodeInfo, NodeSelectorTerm, PodInfo, Requirement, Resources, SelectorOperator, Taint, TaintEffect,
    Toleration, TolerationOperator,
    quantity::{Bytes, Millis},
};

/// A node as placement sees it: its constraints and what is left of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// `None` for a node that does not exist yet (it has no name to match `metadata.name` against).
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub free: Resources,
    pub free_extended: BTreeMap<String, i64>,
}

/// Taints the control plane puts on every node while it starts and lifts on its own (node lifecycle
/// controller, cloud controller). A just-joined node still carrying one is capacity about to open.
pub const STARTUP_TAINTS: [&str; 4] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/network-unavailable",
    "node.cloudprovider.kubernetes.io/uninitialized",
];

impl Target {
    /// The node as it will be once its startup taints are lifted (only for nodes that just joined: an old
    /// node that is still not ready is not capacity).
    pub fn without_startup_taints(mut self) -> Self {
        self.taints.retain(|t| !STARTUP_TAINTS.contains(&t.key.as_str()));
        self
    }

    /// A real node with the requests of the pods already on it taken away.
    pub fn from_node<'a>(node: &NodeInfo, pods_on_it: impl IntoIterator<Item = &'a PodInfo>) -> Self {
        let mut target = Target {
            name: Some(node.name.clone()),
            labels: node.labels.clone(),
            taints: node.taints.clone(),
            unschedulable: node.unschedulable,
            free: node.allocatable,
            free_extended: node.extended_allocatable.clone(),
        };
        for pod in pods_on_it {
            target.reserve(pod);
        }
        target
    }

    /// Takes a pod's requests off what is free.
    pub fn reserve(&mut self, pod: &PodInfo) {
        self.free = self.free.saturating_sub(pod.requests);
        for (name, amount) in &pod.extended_requests {
            let slot = self.free_extended.entry(name.clone()).or_insert(0);
            *slot = slot.saturating_sub(*amount);
        }
    }

    /// How many copies of `pod` fit in what is free (0 if none); assumes the static checks pass.
    pub fn copies_of(&self, pod: &PodInfo) -> i64 {
        let per = |free: i64, want: i64| if want <= 0 { i64::MAX } else { free.max(0) / want };
        let r = &pod.requests;
        let mut n = per(self.free.cpu_millis, r.cpu_millis)
            .min(per(self.free.memory_bytes, r.memory_bytes))
            .min(per(self.free.ephemeral_bytes, r.ephemeral_bytes))
            .min(per(self.free.pods, r.pods.max(1)));
        for (name, want) in &pod.extended_requests {
            n = n.min(per(self.free_extended.get(name).copied().unwrap_or(0), *want));
        }
        n
    }
}

/// The first reason a pod does not fit a node. Its `Display` is what events and status say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misfit {
    NodeUnschedulable,
    NodeSelectorMismatch { key: String },
    NodeAffinityMismatch,
    UntoleratedTaint(Taint),
    InsufficientCpu { requested: i64, free: i64 },
    InsufficientMemory { requested: i64, free: i64 },
    InsufficientEphemeralStorage { requested: i64, free: i64 },
    TooManyPods,
    InsufficientExtended { name: String },
}

impl Misfit {
    /// A shortage of room, as opposed to a constraint no amount of room would satisfy.
    pub fn is_resource_shortage(&self) -> bool {
        matches!(
            self,
            Self::InsufficientCpu { .. }
                | Self::InsufficientMemory { .. }
                | Self::InsufficientEphemeralStorage { .. }
                | Self::TooManyPods
                | Self::InsufficientExtended { .. }
        )
    }
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NodeUnschedulable => write!(f, "node is cordoned"),
            Self::NodeSelectorMismatch { key } => write!(f, "node selector mismatch ({key})"),
            Self::NodeAffinityMismatch => write!(f, "required node affinity mismatch"),
            Self::UntoleratedTaint(taint) => write!(f, "untolerated taint {taint}"),
            Self::InsufficientCpu { requested, free } => {
                write!(f, "insufficient cpu (requests {}, {} free)", Millis(*requested), Millis((*free).max(0)))
            }
            Self::InsufficientMemory { requested, free } => {
                write!(f, "insufficient memory (requests {}, {} free)", Bytes(*requested), Bytes((*free).max(0)))
            }
            Self::InsufficientEphemeralStorage { requested, free } => write!(
                f,
                "insufficient ephemeral storage (requests {}, {} free)",
                Bytes(*requested),
                Bytes((*free).max(0))
            ),
            Self::TooManyPods => write!(f, "too many pods"),
            Self::InsufficientExtended { name } => write!(f, "insufficient {name}"),
        }
    }
}

/// Whether `pod` can go on `target` now; the first reason it cannot otherwise.
pub fn check(pod: &PodInfo, target: &Target) -> Result<(), Misfit> {
    if target.unschedulable {
        return Err(Misfit::NodeUnschedulable);
    }
    for (key, value) in &pod.node_selector {
        if target.labels.get(key) != Some(value) {
            return Err(Misfit::NodeSelectorMismatch { key: key.clone() });
        }
    }
    if let Some(terms) = &pod.required_affinity
        && !terms.iter().any(|t| term_matches(t, &target.labels, target.name.as_deref()))
    {
        return Err(Misfit::NodeAffinityMismatch);
    }
    if let Some(taint) = target
        .taints
        .iter()
        .find(|t| t.effect != TaintEffect::PreferNoSchedule && !pod.tolerations.iter().any(|tol| tolerates(tol, t)))
    {
        return Err(Misfit::UntoleratedTaint(taint.clone()));
    }
    check_resources(pod, target)
}

fn check_resources(pod: &PodInfo, target: &Target) -> Result<(), Misfit> {
    let (want, free) = (&pod.requests, &target.free);
    if want.cpu_millis > free.cpu_millis {
        return Err(Misfit::InsufficientCpu { requested: want.cpu_millis, free: free.cpu_millis });
    }
    if want.memory_bytes > free.memory_bytes {
        return Err(Misfit::InsufficientMemory { requested: want.memory_bytes, free: free.memory_bytes });
    }
    if want.ephemeral_bytes > free.ephemeral_bytes {
        return Err(Misfit::InsufficientEphemeralStorage {
            requested: want.ephemeral_bytes,
            free: free.ephemeral_bytes,
        });
    }
    if want.pods > free.pods {
        return Err(Misfit::TooManyPods);
    }
    for (name, amount) in &pod.extended_requests {
        if *amount > target.free_extended.get(name).copied().unwrap_or(0) {
            return Err(Misfit::InsufficientExtended { name: name.clone() });
        }
    }
    Ok(())
}

/// Whether one toleration tolerates one taint (the scheduler's `ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if toleration.effect.is_some_and(|e| e != taint.effect) {
        return false;
    }
    match (&toleration.key, toleration.operator) {
        // An empty key with Exists tolerates everything (with the effect checked above).
        (None, TolerationOperator::Exists) => true,
        (None, TolerationOperator::Equal) => false,
        (Some(key), _) if *key != taint.key => false,
        (Some(_), TolerationOperator::Exists) => true,
        (Some(_), TolerationOperator::Equal) => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

/// A required node affinity term: all its expressions on labels and its fields on the node name hold.
/// An empty term matches nothing, as in Kubernetes.
pub fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: Option<&str>) -> bool {
    if term.match_expressions.is_empty() && term.match_fields.is_empty() {
        return false;
    }
    term.match_expressions.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && term.match_fields.iter().all(|r| {
            let value = if r.key == "metadata.name" { name } else { None };
            requirement_matches(r, value)
        })
}

/// Whether a PDB's selector selects a pod's labels. An empty selector selects every pod.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && selector.match_expressions.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
}

fn requirement_matches(requirement: &Requirement, value: Option<&str>) -> bool {
    let values = &requirement.values;
    let number = |s: &str| s.parse::<i64>().ok();
    match requirement.operator {
        SelectorOperator::In => value.is_some_and(|v| values.iter().any(|x| x == v)),
        SelectorOperator::NotIn => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        SelectorOperator::Exists => value.is_some(),
        SelectorOperator::DoesNotExist => value.is_none(),
        // Gt and Lt take exactly one integer; anything else matches nothing, as in Kubernetes.
        SelectorOperator::Gt | SelectorOperator::Lt => {
            let (Some(have), [bound]) = (value.and_then(number), values.as_slice()) else { return false };
            let Some(bound) = number(bound) else { return false };
            if requirement.operator == SelectorOperator::Gt { have > bound } else { have < bound }
        }
    }
}
