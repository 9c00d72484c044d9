//! The Node patch: its rules as plain tests of [`node_patch`], and the conflict handling of [`patch_node`]
//! against a mocked API server that checks every request the controller sends.

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Node, NodeSpec, Taint};
use kube::{Api, Client, client::Body};
use serde_json::{Value, json};

use super::{NodeWants, node_patch, patch_node};
use crate::{
    crd::{NODEGROUP_LABEL, NodeGroupSpec, VPSieNode, VPSieNodeSpec},
    snapshot::wellknown::{INSTANCE_TYPE_LABEL, REGION_LABEL, ZONE_LABEL},
};

const DC: &str = "3c0e2d1a-5b7f-11ee-8c99-0242ac120001";

fn vpsienode() -> VPSieNode {
    VPSieNode::new(
        "web-abcde",
        VPSieNodeSpec {
            node_group: "web".into(),
            offering: "2".into(),
            cluster_identifier: "c-1".into(),
            datacenter: DC.into(),
        },
    )
}

fn group(labels: Value, taints: Value) -> NodeGroupSpec {
    serde_json::from_value(json!({
        "minNodes": 0, "maxNodes": 3, "clusterIdentifier": "c-1", "datacenter": DC, "offerings": ["2"],
        "labels": labels, "taints": taints,
    }))
    .expect("a valid NodeGroup spec")
}

/// The group `web` with label `pool=web` and taint `dedicated=web:NoSchedule`.
fn web() -> NodeWants {
    NodeWants::new(&vpsienode(), Some(&group(json!({"pool": "web"}), json!([taint_json("dedicated", "web")]))))
}

fn taint_json(key: &str, value: &str) -> Value {
    json!({"key": key, "value": value, "effect": "NoSchedule"})
}

fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint { key: key.into(), value: Some(value.into()), effect: effect.into(), time_added: None }
}

fn not_ready() -> Taint {
    Taint { key: "node.kubernetes.io/not-ready".into(), value: None, effect: "NoExecute".into(), time_added: None }
}

fn node(resource_version: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some("hel-k8s-1-slave-01".into());
    n.metadata.resource_version = Some(resource_version.into());
    n.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    n.spec = Some(NodeSpec { taints: Some(taints), ..NodeSpec::default() });
    n
}

/// A node with every label [`web`] wants, and exactly `taints`.
fn labelled(resource_version: &str, taints: Vec<Taint>) -> Node {
    let labels = [
        (NODEGROUP_LABEL, "web"),
        ("pool", "web"),
        (REGION_LABEL, DC),
        (ZONE_LABEL, DC),
        (INSTANCE_TYPE_LABEL, "2"),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
    ];
    node(resource_version, &labels, taints)
}

/// A node that already has everything [`web`] wants, and `taints` besides.
fn complete(resource_version: &str, mut taints: Vec<Taint>) -> Node {
    taints.push(taint("dedicated", "web", "NoSchedule"));
    labelled(resource_version, taints)
}

#[test]
fn a_node_with_everything_in_place_needs_no_patch() {
    assert_eq!(node_patch(&complete("7", vec![not_ready()]), &web()), None);
}

#[test]
fn missing_labels_alone_are_patched_without_a_precondition_or_a_taint_list() {
    let mut n = complete("7", vec![]);
    n.metadata.labels.as_mut().map(|l| l.remove("pool"));
    assert_eq!(node_patch(&n, &web()), Some(json!({"metadata": {"labels": {"pool": "web"}}})));
}

#[test]
fn an_added_taint_keeps_the_others_and_carries_the_resource_version_read() {
    let n = node("7", &[], vec![not_ready()]);
    let patch = node_patch(&n, &web()).expect("a patch");
    assert_eq!(patch["metadata"]["resourceVersion"], json!("7"));
    assert_eq!(
        patch["spec"]["taints"],
        json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}, taint_json("dedicated", "web")])
    );
}

#[test]
fn a_group_taint_with_another_value_is_corrected_in_that_entry_only() {
    let other_effect = taint("dedicated", "batch", "NoExecute");
    let n = labelled("7", vec![taint("dedicated", "batch", "NoSchedule"), other_effect.clone()]);
    let patch = node_patch(&n, &web()).expect("a patch");
    assert_eq!(patch["spec"]["taints"], json!([taint_json("dedicated", "web"), other_effect]));
    assert_eq!(patch["metadata"]["resourceVersion"], json!("7"));
}

#[test]
fn well_known_labels_fill_only_gaps_and_group_labels_overwrite() {
    let n = node("7", &[("kubernetes.io/arch", "arm64"), (ZONE_LABEL, "set-by-vpsie"), ("pool", "old")], vec![]);
    let wants = NodeWants::new(&vpsienode(), Some(&group(json!({"pool": "web"}), json!([]))));
    let labels = node_patch(&n, &wants).expect("a patch")["metadata"]["labels"].clone();
    assert_eq!(
        labels,
        json!({
            NODEGROUP_LABEL: "web", "pool": "web", REGION_LABEL: DC, INSTANCE_TYPE_LABEL: "2",
            "kubernetes.io/os": "linux",
        })
    );
}

#[test]
fn without_its_group_a_node_still_gets_the_group_label_and_no_taints() {
    let wants = NodeWants::new(&vpsienode(), None);
    let patch = node_patch(&node("7", &[], vec![]), &wants).expect("a patch");
    assert_eq!(patch["metadata"]["labels"][NODEGROUP_LABEL], json!("web"));
    assert_eq!(patch.get("spec"), None);
}

/// The API server side of a mocked client: each call takes the next request, checks it, and answers.
struct ApiServer(tower_test::mock::Handle<Request<Body>, Response<Body>>);

impl ApiServer {
    fn start() -> (Api<Node>, Self) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Api::all(Client::new(service, "default")), Self(handle))
    }

    /// Takes the next request; it must be `method` on the test node. Returns its JSON body (`null` if none).
    async fn expect(&mut self, method: Method) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
        let (request, send) = self.0.next_request().await.expect("the controller sends another request");
        assert_eq!(request.method(), method);
        assert_eq!(request.uri().path(), "/api/v1/nodes/hel-k8s-1-slave-01");
        if method == Method::PATCH {
            let content_type = request.headers().get(http::header::CONTENT_TYPE).expect("a content type");
            assert_eq!(content_type, "application/merge-patch+json");
        }
        let bytes = request.into_body().collect_bytes().await.expect("a readable body");
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON") };
        (body, send)
    }
}

fn ok(node: &Node) -> Response<Body> {
    Response::new(Body::from(serde_json::to_vec(node).expect("serializable")))
}

fn conflict() -> Response<Body> {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
        "message": "Operation cannot be fulfilled on nodes \"hel-k8s-1-slave-01\": the object has been modified",
    });
    let mut response = Response::new(Body::from(serde_json::to_vec(&status).expect("serializable")));
    *response.status_mut() = StatusCode::CONFLICT;
    response
}

#[tokio::test]
async fn the_taint_patch_carries_the_resource_version_it_was_computed_from() {
    let (nodes, mut server) = ApiServer::start();
    let read = labelled("41", vec![not_ready()]);
    let client = tokio::spawn(async move { patch_node(&nodes, &read, &web()).await });

    let (body, send) = server.expect(Method::PATCH).await;
    assert_eq!(body["metadata"]["resourceVersion"], json!("41"));
    assert_eq!(
        body["spec"]["taints"],
        json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}, taint_json("dedicated", "web")])
    );
    send.send_response(ok(&complete("42", vec![not_ready()])));
    assert!(client.await.expect("no panic").expect("the patch succeeds"), "reports that it changed the node");
}

#[tokio::test]
async fn on_a_conflict_the_node_is_read_again_and_a_taint_removed_meanwhile_stays_removed() {
    let (nodes, mut server) = ApiServer::start();
    let stale = labelled("41", vec![not_ready()]);
    let client = tokio::spawn(async move { patch_node(&nodes, &stale, &web()).await });

    let (first, send) = server.expect(Method::PATCH).await;
    assert_eq!(first["metadata"]["resourceVersion"], json!("41"));
    send.send_response(conflict());

    // Meanwhile the node became Ready: the lifecycle controller took `not-ready` off and someone added a taint.
    let (_, send) = server.expect(Method::GET).await;
    let theirs = taint("example.com/maintenance", "soon", "PreferNoSchedule");
    send.send_response(ok(&labelled("43", vec![theirs.clone()])));

    let (second, send) = server.expect(Method::PATCH).await;
    assert_eq!(second["metadata"]["resourceVersion"], json!("43"));
    assert_eq!(second["spec"]["taints"], json!([theirs, taint_json("dedicated", "web")]));
    send.send_response(ok(&complete("44", vec![theirs])));
    assert!(client.await.expect("no panic").expect("the retried patch succeeds"));
}

#[tokio::test]
async fn conflicts_that_never_end_are_returned_as_an_error_after_a_bounded_number_of_reads() {
    let (nodes, mut server) = ApiServer::start();
    let read = node("1", &[], vec![]);
    let client = tokio::spawn(async move { patch_node(&nodes, &read, &web()).await });

    let mut patches = 0;
    loop {
        let (_, send) = server.expect(Method::PATCH).await;
        patches += 1;
        send.send_response(conflict());
        if patches == super::PATCH_ATTEMPTS {
            break;
        }
        let (_, send) = server.expect(Method::GET).await;
        send.send_response(ok(&node(&(patches + 1).to_string(), &[], vec![])));
    }
    // A further request now fails as a read error instead of waiting for an answer that never comes.
    drop(server);
    let err = client.await.expect("no panic").expect_err("the conflict is returned");
    assert_eq!(err.kind(), "KubeWrite");
}
