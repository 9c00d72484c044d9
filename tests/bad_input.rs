//! Bad input gets a clear error and changes nothing. Each case prints one `BADINPUT` line for the
//! reliability report (`scripts/reliability` collects them): where it was refused (the API server, by
//! the CRD's schema and CEL rules, or the controller, with a status message and an Event) and the words
//! the person sees. VPSie answers that are garbage, HTML, truncated or huge are the cloud contract's
//! (`tests/cloud_contract.rs`) and the lifecycle matrix's (`tests/reliability_lifecycle.rs`) cases.

mod support;

use k8s_openapi::api::core::v1::Event;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, ListParams, PostParams},
};
use serde_json::{Value, json};
use support::{
    env,
    rebalance::{CHEAPER, DEARER, Setup, group_on_dearer_plan, labelled, picture, reaches, rebalance},
    stack::Stack,
};
use vpsie_autoscaler::crd::{NodeGroup, Rebalance, RebalancePhase};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn stack() -> &'static Stack {
    support::stack::stack("")
}

fn report(case: &str, refused_by: &str, message: &str) {
    let line: String = message.chars().filter(|c| *c != '\n').take(160).collect();
    eprintln!("BADINPUT case={case} refused_by={refused_by} message={line}");
}

/// A change made to a valid Rebalance's spec (as JSON) to make it invalid.
type Edit = Box<dyn FnOnce(&mut Value)>;

/// A Rebalance of `setup`'s first node with `edit` applied to its JSON.
fn edited(setup: &Setup, name: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let node = setup.nodes.keys().next().unwrap();
    let mut rb = serde_json::to_value(rebalance(name, setup, &[node], json!({}))).unwrap();
    edit(&mut rb["spec"]);
    rb
}

/// Creates `body` (as raw JSON: our own types cannot even hold some of these mistakes) and expects the
/// API server to refuse it with a message containing `expect`.
async fn refused_by_api_server<K: kube::Resource<DynamicType = ()>>(
    client: &kube::Client,
    ns: &str,
    case: &str,
    body: Value,
    expect: &str,
) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<K>(&()));
    let obj: DynamicObject = serde_json::from_value(body).unwrap();
    let err = api.create(&PostParams::default(), &obj).await.expect_err(case);
    let message = err.to_string();
    assert!(message.contains(expect), "{case}: the refusal must say `{expect}`: {message}");
    report(case, "api-server", &message);
}

#[tokio::test]
async fn rebalances_the_schema_can_judge_are_refused_by_the_api_server_and_change_nothing() {
    let _serial = SERIAL.lock().await;
    let s = stack();
    let setup = group_on_dearer_plan(s, "bad-schema", 1).await;
    let before = picture(s, &setup).await;
    let api: Api<Rebalance> = Api::namespaced(setup.client.clone(), &setup.ns.name);
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("zero-replacements", Box::new(|s| s["replacements"] = json!([])), "spec.replacements"),
        (
            "same-node-twice",
            Box::new(|s| {
                let one = s["replacements"][0].clone();
                s["replacements"] = json!([one.clone(), one]);
            }),
            "each old node may appear only once",
        ),
        (
            "drain-timeout-zero",
            Box::new(|s| s["drainTimeout"] = json!("0s")),
            "drainTimeout must be between 1s and 24h",
        ),
        (
            "drain-timeout-of-weeks",
            Box::new(|s| s["drainTimeout"] = json!("1000h")),
            "drainTimeout must be between 1s and 24h",
        ),
        ("drain-timeout-not-a-duration", Box::new(|s| s["drainTimeout"] = json!("5 minutes")), "spec.drainTimeout"),
        (
            "health-check-interval-zero",
            Box::new(|s| s["healthCheckInterval"] = json!("0ms")),
            "healthCheckInterval must be between 1s and 1h",
        ),
        ("negative-price", Box::new(|s| s["replacements"][0]["newHourlyPrice"] = json!(-1.0)), "newHourlyPrice"),
        ("max-concurrent-zero", Box::new(|s| s["maxConcurrent"] = json!(0)), "spec.maxConcurrent"),
        ("unknown-strategy", Box::new(|s| s["strategy"] = json!("blue-green")), "\"surge\""),
    ];
    for (i, (case, edit, expect)) in cases.into_iter().enumerate() {
        let body = edited(&setup, &format!("bad-{i}"), edit);
        refused_by_api_server::<Rebalance>(&setup.client, &setup.ns.name, case, body, expect).await;
    }
    assert!(api.list(&ListParams::default()).await.unwrap().items.is_empty(), "nothing was created");
    assert_eq!(picture(s, &setup).await, before, "nothing in the cluster changed");
}

#[tokio::test]
async fn node_groups_with_contradictory_bounds_or_absurd_durations_are_refused_by_the_api_server() {
    let s = stack();
    let env = env();
    let ns = env.namespace("bad-group").await;
    let client = env.admin().await;
    let api: Api<NodeGroup> = Api::namespaced(client.clone(), &ns.name);
    let group =
        |name: &str, spec: Value| serde_json::to_value(support::fixtures::nodegroup(s, name, &ns.name, spec)).unwrap();
    let cases = [
        ("min-above-max", json!({"minNodes": 5, "maxNodes": 2}), "minNodes must be less than or equal to maxNodes"),
        ("negative-max", json!({"maxNodes": -1}), "spec.maxNodes"),
        ("no-offering-nor-resources", json!({"offerings": []}), "set offerings"),
        (
            "cpu-range-inverted",
            json!({"resources": {"minCpu": 8, "maxCpu": 2}}),
            "resources.minCpu must be less than or equal to resources.maxCpu",
        ),
        (
            "policy-drain-timeout-zero",
            json!({"rebalance": {"drainTimeout": "0s"}}),
            "drainTimeout must be between 1s and 24h",
        ),
        (
            "policy-health-check-of-a-day",
            json!({"rebalance": {"healthCheckInterval": "24h"}}),
            "healthCheckInterval must be between 1s and 1h",
        ),
    ];
    for (case, spec, expect) in cases {
        refused_by_api_server::<NodeGroup>(&client, &ns.name, case, group(case, spec), expect).await;
    }
    assert!(api.list(&ListParams::default()).await.unwrap().items.is_empty(), "nothing was created");
}

/// Creates the Rebalance and expects the controller to fail it as `InvalidSpec` with `expect` in its
/// status message and in an Event, before anything in the cluster was touched.
async fn refused_by_controller(s: &Stack, setup: &Setup, case: &str, body: Value, expect: &str) {
    let before = picture(s, setup).await;
    let api: Api<Rebalance> = Api::namespaced(setup.client.clone(), &setup.ns.name);
    let rb: Rebalance = serde_json::from_value(body).unwrap();
    let name = rb.metadata.name.clone().unwrap();
    api.create(&PostParams::default(), &rb).await.unwrap();
    let failed = reaches(&api, &name, RebalancePhase::Failed).await;
    let status = failed.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("InvalidSpec"), "{case}: {status:?}");
    let message = status.message.unwrap_or_default();
    assert!(message.contains(expect), "{case}: the status must say `{expect}`: {message}");
    assert!(status.steps.is_empty(), "{case}: no step was recorded");
    let events = Api::<Event>::namespaced(setup.client.clone(), &setup.ns.name)
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap();
    let said = events.items.iter().any(|e| {
        e.reason.as_deref() == Some("InvalidSpec") && e.message.as_deref().is_some_and(|m| m.contains(expect))
    });
    assert!(said, "{case}: an InvalidSpec Event says `{expect}`");
    assert_eq!(picture(s, setup).await, before, "{case}: nothing in the cluster changed");
    assert!(labelled(&setup.client, &setup.ns.name).await.is_empty(), "{case}: nothing was labelled");
    report(case, "controller", &message);
}

#[tokio::test]
async fn rebalances_only_the_cluster_can_judge_are_failed_by_the_controller_with_a_message_and_an_event() {
    let _serial = SERIAL.lock().await;
    let s = stack();
    let setup = group_on_dearer_plan(s, "bad-ctl", 1).await;
    // A node of another group (of the same name, in another namespace): not this group's to replace.
    let other = group_on_dearer_plan(s, "bad-other", 1).await;
    let foreign = other.nodes.keys().next().unwrap().clone();

    let ghost = edited(&setup, "ghost", |s| s["replacements"][0]["oldNode"] = json!("no-such-node"));
    refused_by_controller(s, &setup, "node-does-not-exist", ghost, "node no-such-node does not exist").await;
    let stranger = edited(&setup, "stranger", |s| s["replacements"][0]["oldNode"] = json!(foreign));
    refused_by_controller(s, &setup, "node-of-another-group", stranger, &format!("node {foreign} is the node of"))
        .await;
    let unlisted = edited(&setup, "unlisted", |s| s["replacements"][0]["newOffering"] = json!("999"));
    let allowed = format!("offering 999 is not allowed for group pool; allowed: {DEARER}, {CHEAPER}");
    refused_by_controller(s, &setup, "offering-not-allowed", unlisted, &allowed).await;
    let nogroup = edited(&setup, "nogroup", |s| s["nodeGroup"] = json!("no-such-group"));
    refused_by_controller(s, &setup, "group-does-not-exist", nogroup, "NodeGroup").await;
}
