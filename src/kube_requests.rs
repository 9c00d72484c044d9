//! The controller's own requests to the Kubernetes API server, counted by verb and resource, so that
//! "quiet at steady state" (no writes, watches only) is a figure on `/metrics`, not a hope.
//!
//! Labels are bounded: the verb is one of Kubernetes' nine, the resource is the plural (with its
//! subresource) parsed from the path; object names and namespaces never become labels.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: &'static str,
    pub resource: String,
}

/// Counts every request a [`kube::Client`] sends.
#[derive(Clone, Debug, Default)]
pub struct KubeRequests {
    pub requests: Family<RequestLabels, Counter>,
}

impl KubeRequests {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "vpsie_autoscaler_kube_api_requests",
            "Requests this replica sent to the Kubernetes API server, by verb and resource",
            m.requests.clone(),
        );
        m
    }

    pub fn count(&self, method: &http::Method, uri: &http::Uri) {
        let (verb, resource) = classify(method, uri.path(), uri.query());
        self.requests.get_or_create(&RequestLabels { verb, resource }).inc();
    }
}

/// The Kubernetes verb and the resource (`pods`, `pods/eviction`, `leases`) of a request.
pub fn classify(method: &http::Method, path: &str, query: Option<&str>) -> (&'static str, String) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    // `/api/v1/...` or `/apis/<group>/<version>/...`
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return (verb(method, false, query), "other".to_string()),
    };
    let rest = match rest {
        // A namespace itself, not something in it.
        ["namespaces", _name] => &["namespaces", "_"][..],
        ["namespaces", _ns, inner @ ..] if !inner.is_empty() => inner,
        other => other,
    };
    let (resource, named) = match rest {
        [] => ("other".to_string(), false),
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    (verb(method, named, query), resource)
}

fn verb(method: &http::Method, named: bool, query: Option<&str>) -> &'static str {
    let watching = query.is_some_and(|q| q.split('&').any(|kv| matches!(kv, "watch=true" | "watch=1" | "watch=True")));
    match *method {
        http::Method::GET if watching => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if named => "delete",
        http::Method::DELETE => "deletecollection",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::classify;

    fn c(method: Method, path_and_query: &str) -> (&'static str, String) {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        classify(&method, path, query)
    }

    #[test]
    fn requests_are_labelled_by_verb_and_resource_never_by_object_name() {
        assert_eq!(c(Method::GET, "/api/v1/pods?watch=true&resourceVersion=5"), ("watch", "pods".into()));
        assert_eq!(c(Method::GET, "/api/v1/pods?limit=500"), ("list", "pods".into()));
        assert_eq!(c(Method::GET, "/api/v1/namespaces/shop/pods?fieldSelector=x"), ("list", "pods".into()));
        assert_eq!(c(Method::GET, "/api/v1/nodes/worker-7"), ("get", "nodes".into()));
        assert_eq!(c(Method::PATCH, "/api/v1/nodes/worker-7"), ("patch", "nodes".into()));
        assert_eq!(c(Method::POST, "/api/v1/namespaces/shop/pods/web-1/eviction"), ("create", "pods/eviction".into()));
        assert_eq!(
            c(Method::PATCH, "/apis/autoscaler.vpsie.com/v1alpha1/namespaces/team/vpsienodes/w-1/status"),
            ("patch", "vpsienodes/status".into())
        );
        assert_eq!(
            c(Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/vpsie-autoscaler"),
            ("update", "leases".into())
        );
        assert_eq!(c(Method::POST, "/apis/events.k8s.io/v1/namespaces/team/events"), ("create", "events".into()));
        assert_eq!(
            c(Method::DELETE, "/apis/autoscaler.vpsie.com/v1alpha1/namespaces/t/vpsienodes/w"),
            ("delete", "vpsienodes".into())
        );
        assert_eq!(c(Method::GET, "/api/v1/namespaces/kube-system"), ("get", "namespaces".into()));
        assert_eq!(c(Method::GET, "/version"), ("list", "other".into()));
    }
}
