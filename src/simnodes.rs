//! The simulator's node join hook against a real API server: a joined simulated worker
//! becomes a `Node` that KWOK manages, and disappears when the worker is gone — what
//! VPSie's own join and cloud controller do for real workers.
//!
//! Lives outside `cloud/` because `cloud/` must not depend on kube.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

use crate::cloud::sim::{NodeRegistrar, RegistrarError};
use crate::cloud::{Offering, Worker};

/// KWOK's default selector: nodes carrying this annotation are managed (heartbeats, Ready).
pub const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";
pub const WORKER_ID_LABEL: &str = "vpsie.com/worker-identifier";
/// Pods per simulated node.
const MAX_PODS: &str = "110";

/// Registers simulated workers as KWOK-managed `Node`s.
pub struct KubeNodeRegistrar {
    nodes: Api<Node>,
}

impl KubeNodeRegistrar {
    pub fn new(client: kube::Client) -> Self {
        Self { nodes: Api::all(client) }
    }
}

/// The `Node` VPSie's join would produce for `worker`: named after the hostname (lower
/// case, as the kubelet registers it), with the kubelet's labels, sized from the offering.
/// VPSie's cloud controller implements neither `InstancesV2` nor `Zones`, so, as for real
/// workers, no instance-type or topology label: the autoscaler puts those on.
pub fn node_for(worker: &Worker, offering: &Offering) -> Node {
    let name = worker.hostname.to_ascii_lowercase();
    let labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("type".to_string(), "kwok".to_string()),
        (WORKER_ID_LABEL.to_string(), worker.identifier.clone()),
    ]);
    let annotations = BTreeMap::from([(KWOK_ANNOTATION.to_string(), "fake".to_string())]);
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(offering.cpu.to_string())),
        ("memory".to_string(), Quantity(format!("{}Mi", offering.ram_mib))),
        ("pods".to_string(), Quantity(MAX_PODS.to_string())),
        ("ephemeral-storage".to_string(), Quantity(format!("{}Gi", offering.disk_gb))),
    ]);
    let addresses = [("InternalIP", worker.private_ip.as_ref()), ("ExternalIP", worker.ip.as_ref())]
        .into_iter()
        .filter_map(|(t, a)| a.map(|a| NodeAddress { type_: t.to_string(), address: a.clone() }))
        .chain(std::iter::once(NodeAddress { type_: "Hostname".into(), address: name.clone() }))
        .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            addresses: Some(addresses),
            ..NodeStatus::default()
        }),
    }
}

#[async_trait]
impl NodeRegistrar for KubeNodeRegistrar {
    async fn register(&self, worker: &Worker, offering: &Offering) -> Result<(), RegistrarError> {
        let node = node_for(worker, offering);
        let name = node.metadata.name.clone().unwrap_or_default();
        match self.nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => return Err(Box::new(e)),
        }
        // Node creation keeps the posted status, but KWOK or an older server may not:
        // set capacity explicitly so the scheduler sees the offering's size.
        let patch = serde_json::json!({ "status": node.status });
        self.nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        tracing::info!(node = %name, "simulated worker joined: node registered");
        Ok(())
    }

    async fn deregister(&self, hostname: &str) -> Result<(), RegistrarError> {
        let name = hostname.to_ascii_lowercase();
        match self.nodes.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(node = %name, "simulated worker gone: node removed");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(e) => Err(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::WorkerState;

    #[test]
    fn the_node_is_named_after_the_lower_case_hostname_and_sized_from_the_offering() {
        let w = Worker {
            identifier: "u-1".into(),
            hostname: "Sim-K8s-1a2b-Slave-00af".into(),
            ip: Some("185.20.0.3".into()),
            private_ip: Some("10.1.0.3".into()),
            group_id: Some(1),
            state: WorkerState::Ready,
            created: None,
        };
        let o = Offering {
            id: 2,
            identifier: None,
            name: "s-2vcpu-4gb".into(),
            cpu: 2,
            ram_mib: 4096,
            disk_gb: 80,
            monthly_price: 24.0,
            hourly_price: 24.0 / 720.0,
        };
        let n = node_for(&w, &o);
        assert_eq!(n.metadata.name.as_deref(), Some("sim-k8s-1a2b-slave-00af"));
        let labels = n.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get("kubernetes.io/arch").map(String::as_str), Some("amd64"));
        for unset_by_vpsie in ["node.kubernetes.io/instance-type", "topology.kubernetes.io/zone"] {
            assert_eq!(labels.get(unset_by_vpsie), None, "{unset_by_vpsie}");
        }
        assert_eq!(labels.get(WORKER_ID_LABEL).map(String::as_str), Some("u-1"));
        let ann = n.metadata.annotations.unwrap_or_default();
        assert_eq!(ann.get(KWOK_ANNOTATION).map(String::as_str), Some("fake"));
        let cap = n.status.and_then(|s| s.capacity).unwrap_or_default();
        assert_eq!(cap.get("cpu"), Some(&Quantity("2".into())));
        assert_eq!(cap.get("memory"), Some(&Quantity("4096Mi".into())));
        assert_eq!(cap.get("pods"), Some(&Quantity("110".into())));
    }
}
