//! Nodes, pods and PDBs as k8s-openapi gives them, reduced to the plain data of the snapshot.
//!
//! The API server validates these objects, so the errors here are for what should not happen (a
//! quantity it would refuse, an operator it does not know); they name the field so that whoever reads
//! the skip note can find it.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::{
        core::v1::{Container, Node, NodeSelectorRequirement, Pod},
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::LabelSelectorRequirement},
};

use super::{
    GroupInfo, LabelSelector, NODEGROUP_LABEL, NodeInfo, NodeSelectorTerm, PdbInfo, PodInfo, PodPhase, QuantityError,
    Requirement, Resources, SelectorOperator, Skipped, Snapshot, Taint, TaintEffect, Toleration, TolerationOperator,
    intern::Interner, parse_millis, parse_units,
};
use crate::crd::DO_NOT_DISRUPT_ANNOTATION;

/// Annotation the kubelet puts on the API mirror of a static pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("it has no name")]
    MissingName,
    #[error("{field}: {source}")]
    Quantity { field: String, source: QuantityError },
    #[error("{field}: unknown operator `{operator}`")]
    UnknownOperator { field: String, operator: String },
    #[error("{field}: unknown taint effect `{effect}`")]
    UnknownEffect { field: String, effect: String },
}

/// Resource amounts by name: cpu in millicores, everything else in whole units.
type Amounts = BTreeMap<String, i64>;

fn amounts(map: Option<&BTreeMap<String, Quantity>>, field: &str) -> Result<Amounts, ConvertError> {
    let mut out = Amounts::new();
    for (name, quantity) in map.into_iter().flatten() {
        let parsed = if name == "cpu" { parse_millis(&quantity.0) } else { parse_units(&quantity.0) };
        let value = parsed.map_err(|source| ConvertError::Quantity { field: format!("{field}.{name}"), source })?;
        out.insert(name.clone(), value);
    }
    Ok(out)
}

fn merge(into: &mut Amounts, other: &Amounts, f: impl Fn(i64, i64) -> i64) {
    for (name, value) in other {
        let slot = into.entry(name.clone()).or_insert(0);
        *slot = f(*slot, *value);
    }
}

/// Splits amounts into the four scheduled dimensions and the rest (extended resources, hugepages).
fn split(mut all: Amounts, pods: Option<i64>) -> (Resources, BTreeMap<String, i64>) {
    let mut take = |name: &str| all.remove(name).unwrap_or(0);
    let resources = Resources {
        cpu_millis: take("cpu"),
        memory_bytes: take("memory"),
        pods: take("pods"),
        ephemeral_bytes: take("ephemeral-storage"),
    };
    let resources = match pods {
        Some(pods) => Resources { pods, ..resources },
        None => resources,
    };
    all.retain(|_, v| *v != 0);
    (resources, all)
}

fn operator(raw: &str, field: &str) -> Result<SelectorOperator, ConvertError> {
    Ok(match raw {
        "In" => SelectorOperator::In,
        "NotIn" => SelectorOperator::NotIn,
        "Exists" => SelectorOperator::Exists,
        "DoesNotExist" => SelectorOperator::DoesNotExist,
        "Gt" => SelectorOperator::Gt,
        "Lt" => SelectorOperator::Lt,
        _ => return Err(ConvertError::UnknownOperator { field: field.to_string(), operator: raw.to_string() }),
    })
}

fn node_requirements(
    list: Option<&Vec<NodeSelectorRequirement>>,
    field: &str,
) -> Result<Vec<Requirement>, ConvertError> {
    list.into_iter()
        .flatten()
        .map(|r| {
            Ok(Requirement {
                key: r.key.clone(),
                operator: operator(&r.operator, field)?,
                values: r.values.clone().unwrap_or_default(),
            })
        })
        .collect()
}

fn label_requirements(
    list: Option<&Vec<LabelSelectorRequirement>>,
    field: &str,
) -> Result<Vec<Requirement>, ConvertError> {
    list.into_iter()
        .flatten()
        .map(|r| {
            let op = operator(&r.operator, field)?;
            if matches!(op, SelectorOperator::Gt | SelectorOperator::Lt) {
                // Label selectors (unlike node selectors) have no numeric comparisons.
                return Err(ConvertError::UnknownOperator { field: field.to_string(), operator: r.operator.clone() });
            }
            Ok(Requirement { key: r.key.clone(), operator: op, values: r.values.clone().unwrap_or_default() })
        })
        .collect()
}

fn taint_effect(raw: &str, field: &str) -> Result<TaintEffect, ConvertError> {
    match raw {
        "NoSchedule" => Ok(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Ok(TaintEffect::PreferNoSchedule),
        "NoExecute" => Ok(TaintEffect::NoExecute),
        _ => Err(ConvertError::UnknownEffect { field: field.to_string(), effect: raw.to_string() }),
    }
}

impl NodeInfo {
    pub fn from_k8s(node: &Node) -> Result<Self, ConvertError> {
        let name = node.metadata.name.clone().ok_or(ConvertError::MissingName)?;
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();
        let taints = spec
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .map(|t| {
                Ok(Taint {
                    key: t.key.clone(),
                    value: t.value.clone(),
                    effect: taint_effect(&t.effect, "spec.taints")?,
                })
            })
            .collect::<Result<_, ConvertError>>()?;
        // Allocatable is what pods may take; capacity is only a fallback for a node that never reported it.
        let (field, source) = match status.and_then(|s| s.allocatable.as_ref()) {
            Some(map) => ("status.allocatable", Some(map)),
            None => ("status.capacity", status.and_then(|s| s.capacity.as_ref())),
        };
        let (allocatable, extended_allocatable) = split(amounts(source, field)?, None);
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        Ok(NodeInfo {
            nodegroup: labels.get(NODEGROUP_LABEL).cloned(),
            nodegroup_namespace: None,
            name,
            labels,
            taints,
            allocatable,
            extended_allocatable,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            ready,
            created: node.metadata.creation_timestamp.as_ref().map(|t| t.0),
            deleting: node.metadata.deletion_timestamp.is_some(),
        })
    }
}

fn container_requests(c: &Container, field: &str) -> Result<Amounts, ConvertError> {
    amounts(c.resources.as_ref().and_then(|r| r.requests.as_ref()), &format!("{field}[{}].requests", c.name))
}

/// What the scheduler reserves: the larger of the app containers (plus sidecars) and the peak of the init
/// sequence, where restartable init containers (sidecars) keep running under the ones after them; then
/// pod-level requests where set, then the runtime class overhead.
fn pod_requests(pod: &Pod) -> Result<Amounts, ConvertError> {
    let Some(spec) = pod.spec.as_ref() else { return Ok(Amounts::new()) };
    let mut apps = Amounts::new();
    for c in &spec.containers {
        merge(&mut apps, &container_requests(c, "spec.containers")?, i64::saturating_add);
    }
    let mut sidecars = Amounts::new();
    let mut init_peak = Amounts::new();
    for c in spec.init_containers.iter().flatten() {
        let own = container_requests(c, "spec.initContainers")?;
        let mut during = sidecars.clone();
        merge(&mut during, &own, i64::saturating_add);
        merge(&mut init_peak, &during, i64::max);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars = during;
        }
    }
    merge(&mut apps, &sidecars, i64::saturating_add);
    merge(&mut apps, &init_peak, i64::max);
    let pod_level = amounts(spec.resources.as_ref().and_then(|r| r.requests.as_ref()), "spec.resources.requests")?;
    apps.extend(pod_level);
    merge(&mut apps, &amounts(spec.overhead.as_ref(), "spec.overhead")?, i64::saturating_add);
    Ok(apps)
}

impl PodInfo {
    pub fn from_k8s(pod: &Pod) -> Result<Self, ConvertError> {
        Self::from_k8s_shared(pod, &mut Interner::default())
    }

    /// As [`PodInfo::from_k8s`], sharing labels and tolerations equal to those of pods `interner` saw.
    pub fn from_k8s_shared(pod: &Pod, interner: &mut Interner) -> Result<Self, ConvertError> {
        let meta = &pod.metadata;
        let name = meta.name.clone().ok_or(ConvertError::MissingName)?;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let annotations = meta.annotations.as_ref();
        let node_name = spec.and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
        let (requests, extended_requests) = split(pod_requests(pod)?, Some(1));
        let required_affinity = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
            .map(|selector| {
                selector
                    .node_selector_terms
                    .iter()
                    .map(|t| {
                        let field = "spec.affinity.nodeAffinity.required";
                        Ok(NodeSelectorTerm {
                            match_expressions: node_requirements(t.match_expressions.as_ref(), field)?,
                            match_fields: node_requirements(t.match_fields.as_ref(), field)?,
                        })
                    })
                    .collect::<Result<Vec<_>, ConvertError>>()
            })
            .transpose()?;
        let tolerations = spec
            .and_then(|s| s.tolerations.as_ref())
            .into_iter()
            .flatten()
            .map(|t| {
                Ok(Toleration {
                    key: t.key.clone().filter(|k| !k.is_empty()),
                    operator: match t.operator.as_deref() {
                        Some("Exists") => TolerationOperator::Exists,
                        None | Some("") | Some("Equal") => TolerationOperator::Equal,
                        Some(other) => {
                            return Err(ConvertError::UnknownOperator {
                                field: "spec.tolerations".to_string(),
                                operator: other.to_string(),
                            });
                        }
                    },
                    value: t.value.clone(),
                    effect: match t.effect.as_deref() {
                        None | Some("") => None,
                        Some(e) => Some(taint_effect(e, "spec.tolerations")?),
                    },
                })
            })
            .collect::<Result<Vec<_>, ConvertError>>()?;
        let controller_kind =
            meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| o.kind.clone());
        let scheduled =
            status.and_then(|s| s.conditions.as_ref()).into_iter().flatten().find(|c| c.type_ == "PodScheduled");
        let unschedulable = node_name.is_none()
            && scheduled.is_some_and(|c| c.status == "False" && c.reason.as_deref() == Some("Unschedulable"));
        let phase = match status.and_then(|s| s.phase.as_deref()) {
            None | Some("Pending") => PodPhase::Pending,
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            Some(_) => PodPhase::Unknown,
        };
        Ok(PodInfo {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name,
            labels: interner.labels(meta.labels.clone().unwrap_or_default()),
            node_name,
            requests,
            extended_requests,
            node_selector: spec.and_then(|s| s.node_selector.clone()).unwrap_or_default(),
            required_affinity,
            tolerations: interner.tolerations(tolerations),
            is_daemonset: controller_kind.as_deref() == Some("DaemonSet"),
            controller_kind,
            is_mirror: annotations.is_some_and(|a| a.contains_key(MIRROR_ANNOTATION)),
            do_not_disrupt: annotations
                .and_then(|a| a.get(DO_NOT_DISRUPT_ANNOTATION))
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            has_local_storage: spec
                .and_then(|s| s.volumes.as_ref())
                .into_iter()
                .flatten()
                .any(|v| v.empty_dir.is_some() || v.host_path.is_some()),
            unschedulable,
            unschedulable_since: unschedulable
                .then(|| scheduled.and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0))
                .flatten(),
            phase,
            terminating: meta.deletion_timestamp.is_some(),
        })
    }
}

impl PdbInfo {
    pub fn from_k8s(pdb: &PodDisruptionBudget) -> Result<Self, ConvertError> {
        let name = pdb.metadata.name.clone().ok_or(ConvertError::MissingName)?;
        let selector = pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .map(|s| {
                Ok::<_, ConvertError>(LabelSelector {
                    match_labels: s.match_labels.clone().unwrap_or_default(),
                    match_expressions: label_requirements(s.match_expressions.as_ref(), "spec.selector")?,
                })
            })
            .transpose()?;
        Ok(PdbInfo {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            name,
            selector,
            disruptions_allowed: pdb.status.as_ref().and_then(|s| s.disruptions_allowed).unwrap_or(0).max(0),
        })
    }
}

/// A pod as the snapshot keeps it: its plain data, or the note of why it could not be read.
pub type PodRecord = Result<Arc<PodInfo>, Skipped>;

/// Converts one pod for the snapshot.
pub fn pod_record(pod: &Pod) -> PodRecord {
    pod_record_shared(pod, &mut Interner::default())
}

/// As [`pod_record`], sharing what equals what `interner` saw (the pod cache keeps one for every pod).
pub fn pod_record_shared(pod: &Pod, interner: &mut Interner) -> PodRecord {
    PodInfo::from_k8s_shared(pod, interner).map(Arc::new).map_err(|err| Skipped {
        kind: "Pod",
        name: format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        ),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        reason: err.to_string(),
    })
}

impl Snapshot {
    /// Builds a snapshot from API objects, skipping (and recording) the ones that cannot be read.
    pub fn from_k8s<'a>(
        nodes: impl IntoIterator<Item = &'a Node>,
        pods: impl IntoIterator<Item = &'a Pod>,
        pdbs: impl IntoIterator<Item = &'a PodDisruptionBudget>,
        groups: Vec<GroupInfo>,
    ) -> Self {
        Self::from_records(nodes, pods.into_iter().map(pod_record), pdbs, groups)
    }

    /// Builds a snapshot from pods converted beforehand (the watch cache converts each once per change).
    pub fn from_records<'a>(
        nodes: impl IntoIterator<Item = &'a Node>,
        pods: impl IntoIterator<Item = PodRecord>,
        pdbs: impl IntoIterator<Item = &'a PodDisruptionBudget>,
        groups: Vec<GroupInfo>,
    ) -> Self {
        let mut snapshot = Snapshot { groups, ..Default::default() };
        for node in nodes {
            match NodeInfo::from_k8s(node) {
                Ok(info) => snapshot.nodes.push(info),
                Err(err) => snapshot.skipped.push(Skipped {
                    kind: "Node",
                    name: node.metadata.name.clone().unwrap_or_default(),
                    node_name: node.metadata.name.clone(),
                    reason: err.to_string(),
                }),
            }
        }
        for pod in pods {
            match pod {
                Ok(info) => snapshot.pods.push(info),
                Err(skipped) => snapshot.skipped.push(skipped),
            }
        }
        for pdb in pdbs {
            match PdbInfo::from_k8s(pdb) {
                Ok(info) => snapshot.pdbs.push(info),
                Err(err) => snapshot.skipped.push(Skipped {
                    kind: "PodDisruptionBudget",
                    name: format!(
                        "{}/{}",
                        pdb.metadata.namespace.as_deref().unwrap_or_default(),
                        pdb.metadata.name.as_deref().unwrap_or_default()
                    ),
                    node_name: None,
                    reason: err.to_string(),
                }),
            }
        }
        snapshot
    }
}
