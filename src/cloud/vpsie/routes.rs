//! Route templates of the calls each provider operation makes, as bounded metric labels.
//! They name the default paths; a deployment with other prefixes still reports these.

/// `(template, method)` of the main call behind each `CloudProvider` operation.
pub const OFFERINGS: (&str, &str) = ("/apps/v2/k8s/offers", "POST");
pub const GROUPS: (&str, &str) = ("/apps/v2/k8s/node/groups/byClusterId/{cluster}", "GET");
pub const CREATE_GROUP: (&str, &str) = ("/apps/v2/k8s/cluster/add/group", "POST");
pub const CLUSTER: (&str, &str) = ("/apps/v2/k8s/cluster/byId/{cluster}", "GET");
pub const ADD_WORKER: (&str, &str) = ("/apps/v2/k8s/cluster/byId/{cluster}/add/slave/group/{group}", "POST");
pub const DELETE_WORKER: (&str, &str) = ("/apps/v2/k8s/cluster/byId/{cluster}/delete/slave", "DELETE");
