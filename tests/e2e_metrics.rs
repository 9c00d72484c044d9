//! `/metrics` after a known scenario says exactly what happened: a burst of pending pods scales one
//! group up by exactly two nodes, and every series about it (scale-ups, add calls in the simulator's
//! request log, VPSieNodes by phase, the group's size under its namespace, reconcile timings) shows that.
//! A deletion that has to wait is counted as a requeue, never as a reconcile error.

mod support;

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;
use support::{env, eventually, stack::Stack};
use vpsie_autoscaler::crd::{NodeGroup, VPSieNode, VPSieNodePhase, VPSieNodeSpec};

const WAIT: Duration = Duration::from_secs(90);

fn stack() -> &'static Stack {
    support::stack::stack("nodeLifecycle:\n  provisioningTimeout: 60s\n  joiningTimeout: 30s\n  drainTimeout: 8s\n")
}

/// The value of one series (`name{labels}` exactly as exposed), if it is there.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A series that must be there.
fn must(metrics: &str, series: &str) -> f64 {
    value(metrics, series).unwrap_or_else(|| panic!("{series} is not exposed:\n{metrics}"))
}

/// A counter that may not have been created yet counts 0.
fn counter(metrics: &str, series: &str) -> f64 {
    value(metrics, series).unwrap_or(0.0)
}

fn vpsienodes_in(metrics: &str, phase: VPSieNodePhase) -> f64 {
    must(metrics, &format!("vpsie_autoscaler_vpsienodes{{phase=\"{}\"}}", phase.as_str()))
}

const REQUESTED: &str = "vpsie_autoscaler_scale_ups_total{result=\"requested\"}";
const VPSIENODE_ERRORS: &str = "vpsie_autoscaler_reconcile_total{controller=\"vpsienode\",result=\"error\"}";

/// Reconcile failures of the vpsienode controller recorded with their kind (a wait records none).
fn failures_by_kind(metrics: &str) -> f64 {
    let prefix = "vpsie_autoscaler_reconcile_errors_total{controller=\"vpsienode\",kind=";
    metrics.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Reconciles counted as `error` since `before` that were not real failures (waits, or no reconcile at
/// all). Failures are recorded by kind before their reconcile is counted, so a scrape in between can
/// only make this smaller, never larger.
fn errors_without_a_failure(before: &str, now: &str) -> f64 {
    let counted = counter(now, VPSIENODE_ERRORS) - counter(before, VPSIENODE_ERRORS);
    let failed = failures_by_kind(now) - failures_by_kind(before);
    counted - failed
}
const VPSIENODE_REQUEUES: &str = "vpsie_autoscaler_reconcile_total{controller=\"vpsienode\",result=\"requeue\"}";

/// Add calls the simulator answered (its own request log, not our metric).
async fn add_calls(s: &Stack) -> usize {
    let log: serde_json::Value =
        reqwest::get(format!("{}/_sim/requests", s.sim_url)).await.unwrap().json().await.unwrap();
    log.as_array().into_iter().flatten().filter(|r| r["endpoint"] == "add_worker").count()
}

/// With a shared control plane, earlier suites may leave objects that the controller is still cleaning
/// up; counts are only exact once nothing of theirs is left.
async fn no_other_objects(client: &kube::Client) {
    let groups: Api<NodeGroup> = Api::all(client.clone());
    let vns: Api<VPSieNode> = Api::all(client.clone());
    eventually("no NodeGroup or VPSieNode left from earlier suites", WAIT, || async {
        let g = groups.list(&ListParams::default()).await.ok()?.items.len();
        let v = vns.list(&ListParams::default()).await.ok()?.items.len();
        (g == 0 && v == 0).then_some(())
    })
    .await;
}

fn nodegroup(s: &Stack, pool: &str) -> NodeGroup {
    support::fixtures::nodegroup(s, "metrics", pool, json!({}))
}

/// `replicas` pods of 700m that only the group's nodes (2 cpu each) can run: two per node.
fn deployment(pool: &str, replicas: i32) -> Deployment {
    support::fixtures::app_deployment(pool, replicas, "700m", "256Mi")
}

async fn running(pods: &Api<Pod>) -> usize {
    support::fixtures::running_app_pods(pods).await
}

#[tokio::test]
async fn metrics_after_a_scale_up_by_two_nodes_and_a_waiting_deletion_count_exactly_what_happened() {
    let s = stack();
    let env = env();
    let client = env.admin().await;
    no_other_objects(&client).await;
    let before = s.metrics().await;
    let adds_before = add_calls(s).await;

    const N: usize = 2;
    let ns = env.namespace("metrics").await;
    Api::<NodeGroup>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &nodegroup(s, &ns.name))
        .await
        .unwrap();
    Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &deployment(&ns.name, 2 * N as i32))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let vns: Api<VPSieNode> = Api::namespaced(client.clone(), &ns.name);
    eventually("every pod running on new nodes", WAIT, || async { (running(&pods).await == 2 * N).then_some(()) })
        .await;
    eventually("every VPSieNode Ready", WAIT, || async {
        let list = vns.list(&ListParams::default()).await.ok()?.items;
        list.iter().all(|v| v.status.as_ref().is_some_and(|s| s.phase == VPSieNodePhase::Ready)).then_some(())
    })
    .await;
    // The phase gauges are set once per autoscale pass; wait for a pass that saw no VPSieNode on its way.
    let after = eventually("a pass after the nodes became Ready", WAIT, || async {
        let m = s.metrics().await;
        let coming = [VPSieNodePhase::Pending, VPSieNodePhase::Provisioning, VPSieNodePhase::Joining];
        coming
            .iter()
            .all(|p| value(&m, &format!("vpsie_autoscaler_vpsienodes{{phase=\"{}\"}}", p.as_str())) == Some(0.0))
            .then_some(m)
    })
    .await;

    assert_eq!(counter(&after, REQUESTED) - counter(&before, REQUESTED), N as f64, "{after}");
    assert_eq!(add_calls(s).await - adds_before, N, "the simulator saw a different number of adds");
    assert_eq!(vpsienodes_in(&after, VPSieNodePhase::Ready), N as f64, "{after}");
    let size = format!("vpsie_autoscaler_nodegroup_size{{namespace=\"{}\",nodegroup=\"metrics\"}}", ns.name);
    assert_eq!(must(&after, &size), N as f64, "{after}");
    let timed = "vpsie_autoscaler_reconcile_duration_seconds_count{controller=\"vpsienode\"}";
    assert!(must(&after, timed) > 0.0, "{after}");
    assert!(errors_without_a_failure(&before, &after) <= 0.0, "{after}");

    // A VPSieNode deleted before its worker is listed waits (up to 30 s after the add) for the listing,
    // so that a worker already made is not leaked. The simulator lists nothing new from here on.
    reqwest::Client::new()
        .put(format!("{}/_sim/settings", s.sim_url))
        .json(&json!({"list_lag_secs": 1.0e6}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    // Its worker never boots, so no Node of it outlives this test in a shared control plane.
    s.add_fault(json!({"endpoint": "add_worker", "times": 1, "fault": {"kind": "stuck_provisioning"}})).await;
    let waiting = VPSieNode::new(
        "waits",
        VPSieNodeSpec {
            node_group: "waits".into(),
            offering: "2".into(),
            cluster_identifier: s.cluster.clone(),
            datacenter: s.datacenter.clone(),
        },
    );
    vns.create(&PostParams::default(), &waiting).await.unwrap();
    eventually("the add requested", WAIT, || async {
        let status = vns.get_opt("waits").await.ok()??.status?;
        (status.phase == VPSieNodePhase::Provisioning && status.add_requested_at.is_some()).then_some(())
    })
    .await;
    let before_wait = s.metrics().await;
    vns.delete("waits", &DeleteParams::default()).await.unwrap();
    eventually("the deletion waited at least once", WAIT, || async {
        (counter(&s.metrics().await, VPSIENODE_REQUEUES) > counter(&before_wait, VPSIENODE_REQUEUES)).then_some(())
    })
    .await;
    eventually("the VPSieNode is gone", WAIT, || async { vns.get_opt("waits").await.ok()?.is_none().then_some(()) })
        .await;
    let end = s.metrics().await;
    // Every error counted is a failure recorded with its kind; the waits above are not among them.
    assert!(errors_without_a_failure(&before_wait, &end) <= 0.0, "{end}");
    assert!(
        value(&end, "vpsie_autoscaler_reconcile_errors_total{controller=\"vpsienode\",kind=\"Waiting\"}").is_none()
    );
}
