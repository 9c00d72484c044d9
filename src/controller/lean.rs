//! Lean decoding for the large watches. Every node and pod update arrives whole, and most of what it
//! carries no decision reads: the managed fields alone are half of a KWOK node's JSON, and a pod's
//! container statuses and a node's images, addresses and system info follow. Parsed into the full
//! Kubernetes types they cost allocations on every event and on every object of an initial list, only to
//! be stripped before caching. [`Lean`] parses an object's JSON into the same type while skipping those
//! parts at the parser, so they are never built.
//!
//! What is kept: of the metadata, identity, version, labels, annotations, owner references, finalizers
//! and timestamps; every spec whole; of a node's status its capacity, allocatable and conditions; of a
//! pod's its phase and conditions; a PDB's status whole.

use std::{borrow::Cow, collections::BTreeMap};

use k8s_openapi::{
    api::{
        core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodCondition, PodSpec, PodStatus},
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec, PodDisruptionBudgetStatus},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{ObjectMeta, OwnerReference, Time},
    },
};
use kube::{Resource, runtime::watcher};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

/// A `K` parsed from the API server's JSON without what no decision reads (see the module docs).
/// Watched as `K` itself: same kind, same URL.
#[derive(Debug, Clone)]
pub struct Lean<K>(pub K);

/// A kind the large watches parse lean: which spec and status to parse, and how to put them together.
pub trait Slim: Resource<DynamicType = ()> + Sized {
    type Spec: DeserializeOwned;
    type Status: DeserializeOwned;
    fn assemble(metadata: ObjectMeta, spec: Option<Self::Spec>, status: Option<Self::Status>) -> Self;
}

/// The metadata fields kept; `managedFields` and anything else is skipped unparsed.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<OwnerReference>>,
    finalizers: Option<Vec<String>>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
}

impl From<Meta> for ObjectMeta {
    fn from(m: Meta) -> Self {
        ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            generation: m.generation,
            labels: m.labels,
            annotations: m.annotations,
            owner_references: m.owner_references,
            finalizers: m.finalizers,
            creation_timestamp: m.creation_timestamp,
            deletion_timestamp: m.deletion_timestamp,
            ..ObjectMeta::default()
        }
    }
}

#[derive(Deserialize)]
#[serde(bound = "S: DeserializeOwned, T: DeserializeOwned")]
struct Wire<S, T> {
    #[serde(default)]
    metadata: Meta,
    spec: Option<S>,
    status: Option<T>,
}

impl<'de, K: Slim> Deserialize<'de> for Lean<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::<K::Spec, K::Status>::deserialize(deserializer)?;
        Ok(Lean(K::assemble(wire.metadata.into(), wire.spec, wire.status)))
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Lean<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &()) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

/// The watch event of the object inside.
pub fn unwrap_event<K>(event: watcher::Event<Lean<K>>) -> watcher::Event<K> {
    match event {
        watcher::Event::Apply(Lean(k)) => watcher::Event::Apply(k),
        watcher::Event::Delete(Lean(k)) => watcher::Event::Delete(k),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(Lean(k)) => watcher::Event::InitApply(k),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatusLean {
    allocatable: Option<BTreeMap<String, Quantity>>,
    capacity: Option<BTreeMap<String, Quantity>>,
    conditions: Option<Vec<NodeCondition>>,
}

impl Slim for Node {
    type Spec = NodeSpec;
    type Status = NodeStatusLean;
    fn assemble(metadata: ObjectMeta, spec: Option<NodeSpec>, status: Option<NodeStatusLean>) -> Self {
        let status = status.map(|s| NodeStatus {
            allocatable: s.allocatable,
            capacity: s.capacity,
            conditions: s.conditions,
            ..NodeStatus::default()
        });
        Node { metadata, spec, status }
    }
}

#[derive(Deserialize)]
pub struct PodStatusLean {
    phase: Option<String>,
    conditions: Option<Vec<PodCondition>>,
}

impl Slim for Pod {
    type Spec = PodSpec;
    type Status = PodStatusLean;
    fn assemble(metadata: ObjectMeta, spec: Option<PodSpec>, status: Option<PodStatusLean>) -> Self {
        let status = status.map(|s| PodStatus { phase: s.phase, conditions: s.conditions, ..PodStatus::default() });
        Pod { metadata, spec, status }
    }
}

impl Slim for PodDisruptionBudget {
    type Spec = PodDisruptionBudgetSpec;
    type Status = PodDisruptionBudgetStatus;
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<PodDisruptionBudgetSpec>,
        status: Option<PodDisruptionBudgetStatus>,
    ) -> Self {
        PodDisruptionBudget { metadata, spec, status }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::json;

    use super::Lean;

    fn kwok_node() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": "n1", "uid": "u-1", "resourceVersion": "42", "creationTimestamp": "2026-11-30T10:00:00Z",
                "labels": {"type": "kwok"}, "annotations": {"kwok.x-k8s.io/node": "fake"},
                "managedFields": [{"manager": "kwok", "operation": "Update", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:status": {"f:conditions": {}}}}],
            },
            "spec": {"unschedulable": true, "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {
                "allocatable": {"cpu": "32"}, "capacity": {"cpu": "32", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-11-30T10:01:00Z"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "nodeInfo": {"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "",
                             "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "", "operatingSystem": "linux",
                             "osImage": "", "systemUUID": ""},
                "images": [{"names": ["registry.example.com/app:1"], "sizeBytes": 1000}],
            },
        })
    }

    #[test]
    fn a_lean_node_keeps_what_decisions_read_and_drops_the_rest() {
        let full: Node = serde_json::from_value(kwok_node()).unwrap();
        let Lean(lean) = serde_json::from_value::<Lean<Node>>(kwok_node()).unwrap();
        assert_eq!(lean.metadata.name, full.metadata.name);
        assert_eq!(lean.metadata.uid, full.metadata.uid);
        assert_eq!(lean.metadata.resource_version, full.metadata.resource_version);
        assert_eq!(lean.metadata.labels, full.metadata.labels);
        assert_eq!(lean.metadata.annotations, full.metadata.annotations);
        assert_eq!(lean.metadata.creation_timestamp, full.metadata.creation_timestamp);
        assert_eq!(lean.spec, full.spec, "the spec is whole");
        let (l, f) = (lean.status.unwrap(), full.status.unwrap());
        assert_eq!((&l.allocatable, &l.capacity, &l.conditions), (&f.allocatable, &f.capacity, &f.conditions));
        assert!(lean.metadata.managed_fields.is_none() && full.metadata.managed_fields.is_some());
        assert!(l.images.is_none() && l.addresses.is_none() && l.node_info.is_none());
    }

    #[test]
    fn a_lean_pod_keeps_its_spec_phase_and_conditions_but_not_its_container_statuses() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "ns", "deletionTimestamp": "2026-11-30T10:00:00Z",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}],
                         "annotations": {"a": "b"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]},
            "status": {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}],
                       "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 3}]},
        });
        let full: Pod = serde_json::from_value(pod.clone()).unwrap();
        let Lean(lean) = serde_json::from_value::<Lean<Pod>>(pod).unwrap();
        assert_eq!(lean.spec, full.spec);
        assert_eq!(lean.metadata.owner_references, full.metadata.owner_references);
        assert_eq!(lean.metadata.deletion_timestamp, full.metadata.deletion_timestamp);
        assert_eq!(lean.metadata.annotations, full.metadata.annotations);
        let (l, f) = (lean.status.unwrap(), full.status.unwrap());
        assert_eq!((&l.phase, &l.conditions), (&f.phase, &f.conditions));
        assert!(l.container_statuses.is_none() && f.container_statuses.is_some());
    }

    #[test]
    fn a_bad_field_is_still_an_error() {
        let mut node = kwok_node();
        node["spec"]["unschedulable"] = json!("yes");
        assert!(serde_json::from_value::<Lean<Node>>(node).is_err());
    }
}
