//! The custom resources of `autoscaler.vpsie.com/v1alpha1`, the labels we put on objects, and the
//! condition bookkeeping shared by every status.
//!
//! Validation lives in the schemas (bounds, enums, patterns and CEL rules), so the API server itself
//! rejects a bad object with a message that says what to fix, whether or not the controller runs.

pub mod conditions;
pub mod duration;
pub mod nodegroup;
pub mod rebalance;
pub mod vpsienode;

pub use conditions::set_condition;
pub use duration::KubeDuration;
pub use nodegroup::{NodeGroup, NodeGroupSpec, NodeGroupStatus, RebalancePolicy, RebalanceStrategy};
pub use rebalance::{Rebalance, RebalancePhase, RebalanceSpec, RebalanceStatus};
pub use vpsienode::{VPSieNode, VPSieNodePhase, VPSieNodeSpec, VPSieNodeStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every custom resource of this project.
pub const GROUP: &str = "autoscaler.vpsie.com";

/// Label on Nodes and VPSieNodes naming the NodeGroup that owns them.
pub const NODEGROUP_LABEL: &str = "autoscaler.vpsie.com/nodegroup";

/// Label on the VPSieNodes and Nodes that a rebalance operation is touching; the runbook greps for it,
/// and it is removed when the operation ends, whichever way it ends.
pub const REBALANCE_LABEL: &str = "rebalance-operation";

/// Value of [`REBALANCE_LABEL`] while an operation holds the object.
pub const REBALANCE_IN_PROGRESS: &str = "in-progress";

/// Label naming the Rebalance that holds an object, next to [`REBALANCE_LABEL`]: a rollback finds
/// exactly what its own operation touched.
pub const REBALANCE_NAME_LABEL: &str = "autoscaler.vpsie.com/rebalance";

/// Annotation on a VPSieNode a rebalance created, naming it: such a node is not replaced again in the
/// maintenance window it was created in.
pub const CREATED_BY_REBALANCE_ANNOTATION: &str = "autoscaler.vpsie.com/created-by-rebalance";

/// Annotation on a Rebalance by which a person asks for its rollback; the value is the stated cause.
pub const ROLLBACK_ANNOTATION: &str = "autoscaler.vpsie.com/rollback";

/// Pods annotated with this (value `"true"`) are never disrupted by scale-down or rebalancing.
pub const DO_NOT_DISRUPT_ANNOTATION: &str = "autoscaler.vpsie.com/do-not-disrupt";

/// Annotation by which scale-down asks the VPSieNode controller to drain and remove a worker; its value is
/// the time and cause of the request.
pub const DRAIN_REQUEST_ANNOTATION: &str = "autoscaler.vpsie.com/drain-requested";

/// Field manager of every server-side apply the controller makes, so that ownership of fields is stable.
pub const FIELD_MANAGER: &str = "vpsie-autoscaler";

/// All CRDs of the project, in the order they are printed and installed.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![NodeGroup::crd(), VPSieNode::crd(), Rebalance::crd()]
}

/// The CRDs as one multi-document YAML stream, exactly what `vpsie-autoscaler crd` prints and what is
/// checked in under `deploy/crds/`.
pub fn all_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}
