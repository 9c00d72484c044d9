//! The reliability matrix's scale-up and scale-down rows: a VPSieNode of a plain scale-up (a pending
//! pod) or scale-down (a node left empty) is held at a phase, a fault is injected there, the VPSieNode is
//! let go, and whatever happens the group must end with exactly the capacity its pods need and nothing
//! left behind: every app pod Running, one live VPSie worker per Ready VPSieNode (a Failed one has
//! released its VM), no node cordoned but by a person, no Node without a worker.
//!
//! Scale-up can only end one way (the pod runs, on exactly one new node); scale-down ends completed (the
//! empty node and its worker are gone) or exactly as before (the node kept, uncordoned). `busy_` rows
//! scale down a node that still runs a pod, so the drain has a pod to evict (to the other node). Runs are serial
//! and share `tests/reliability_matrix.rs`'s model: the CI slice is the tests not marked `#[ignore]`, the
//! whole matrix is `scripts/reliability`.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{
    TestNamespace, env, eventually,
    fixtures::{app_deployment, nodegroup, running_app_pods},
    rebalance::{Picture, Setup, picture},
    stack::{Stack, Undo},
};
use vpsie_autoscaler::crd::{NodeGroup, VPSieNode, VPSieNodePhase};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static GENERATION: AtomicU32 = AtomicU32::new(1);
const WAIT: Duration = Duration::from_secs(240);

fn stack() -> &'static Stack {
    // As in the rebalance matrix: a 5 s breaker and group backoff make each fault's wait short, not different.
    support::stack::stack(
        "nodeLifecycle:\n  provisioningTimeout: 20s\n  joiningTimeout: 20s\n  drainTimeout: 20s\n\
         autoscaling:\n  failureBackoff: 5s\nvpsieApi:\n  circuitBreaker:\n    openFor: 5s\n",
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Vpsie5xx,
    RateLimitStorm,
    Partition,
    /// VPSie answers 200 with garbage, a truncated envelope, then an 11 MiB body, twice each.
    MalformedAnswers,
    AsyncCreateFailure,
    StuckProvisioning,
    NeverJoins,
    Quota,
    DeleteFailsThenSucceeds,
    Sigkill,
    LeaderHandover,
    ApiServerRestart,
    PersonCordonsOtherNode,
    PersonDeletesVpsieNode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    ScaleUp,
    ScaleDown,
    /// Scale-down of a node that runs an app pod: the drain evicts it to the group's other node.
    BusyScaleDown,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Completed,
    KeptExactly,
}

struct Run {
    setup: Setup,
    /// The group before the operation (scale-down: two nodes, one of which will be unneeded).
    before: Picture,
    /// App replicas the group must end up running.
    replicas: usize,
}

fn vpsienodes(run: &Run) -> Api<VPSieNode> {
    Api::namespaced(run.setup.client.clone(), &run.setup.ns.name)
}

/// Whether the held VPSieNode's phase ended the operation before it reached the step.
async fn held_or_ended(s: &Stack, op: Operation, run: &Run) -> bool {
    let held = tokio::time::timeout(WAIT, async {
        loop {
            if s.paused() {
                return true;
            }
            if op != Operation::ScaleUp && picture(s, &run.setup).await.nodes.len() < run.before.nodes.len() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    held.expect("the operation never reached its step")
}

async fn group(s: &Stack, prefix: &str, scale_down: bool) -> (TestNamespace, Client) {
    let env = env();
    let ns = env.namespace(prefix).await;
    let client = env.admin().await;
    let scale = if scale_down { json!({"unneededTime": "3s", "cooldown": "0s"}) } else { json!({"enabled": false}) };
    let spec = json!({"maxNodes": 3, "scaleDown": scale});
    Api::<NodeGroup>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &nodegroup(s, "pool", &ns.name, spec))
        .await
        .unwrap();
    (ns, client)
}

/// Scale-up: an empty group and one pod that needs a node; the pause is armed before the pod exists.
async fn start_scale_up(s: &Stack, step: &str) -> Run {
    let (ns, client) = group(s, "lu", false).await;
    let setup = Setup { ns, client, nodes: BTreeMap::new() };
    let before = picture(s, &setup).await;
    s.arm_pause_in(step, &setup.ns.name);
    Api::<Deployment>::namespaced(setup.client.clone(), &setup.ns.name)
        .create(&PostParams::default(), &app_deployment(&setup.ns.name, 1, "1500m", "256Mi"))
        .await
        .unwrap();
    Run { setup, before, replicas: 1 }
}

/// Scale-down: two nodes with one app pod each; the pause is armed, then one replica goes, leaving its
/// node empty.
async fn start_scale_down(s: &Stack, step: &str) -> Run {
    let (ns, client) = group(s, "ld", true).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments.create(&PostParams::default(), &app_deployment(&ns.name, 2, "1500m", "256Mi")).await.unwrap();
    let setup = Setup { ns, client, nodes: BTreeMap::new() };
    let pods: Api<Pod> = Api::namespaced(setup.client.clone(), &setup.ns.name);
    eventually("both app pods run", WAIT, || async { (running_app_pods(&pods).await == 2).then_some(()) }).await;
    let before = eventually("two nodes, two workers", WAIT, || async {
        let p = picture(s, &setup).await;
        (p.nodes.len() == 2 && p.workers.len() == 2).then_some(p)
    })
    .await;
    s.arm_pause_in(step, &setup.ns.name);
    deployments.patch("app", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}}))).await.unwrap();
    Run { setup, before, replicas: 1 }
}

/// Busy scale-down: a group held at two nodes by its minimum, one small app pod on each (both nodes are
/// underused); the pause is armed, then the minimum drops to one, so scale-down drains one of them and
/// its pod moves to the other.
async fn start_scale_down_busy(s: &Stack, step: &str) -> Run {
    let env = env();
    let ns = env.namespace("lb").await;
    let client = env.admin().await;
    let spec = json!({"minNodes": 2, "maxNodes": 3, "scaleDown": {"unneededTime": "3s", "cooldown": "0s"}});
    let groups: Api<NodeGroup> = Api::namespaced(client.clone(), &ns.name);
    groups.create(&PostParams::default(), &nodegroup(s, "pool", &ns.name, spec)).await.unwrap();
    let setup = Setup { ns, client, nodes: BTreeMap::new() };
    eventually("two nodes, two workers", WAIT, || async {
        let p = picture(s, &setup).await;
        (p.nodes.len() == 2 && p.workers.len() == 2).then_some(p)
    })
    .await;
    // Spread as a preference, not a rule: one pod per node now, both on one node once a node goes.
    let mut app = serde_json::to_value(app_deployment(&setup.ns.name, 2, "500m", "256Mi")).unwrap();
    app["spec"]["template"]["spec"]["topologySpreadConstraints"] = json!([{
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app": "app"}},
    }]);
    let app: Deployment = serde_json::from_value(app).unwrap();
    Api::<Deployment>::namespaced(setup.client.clone(), &setup.ns.name)
        .create(&PostParams::default(), &app)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(setup.client.clone(), &setup.ns.name);
    eventually("one running app pod on each node", WAIT, || async {
        let list = pods.list(&ListParams::default().labels("app=app")).await.ok()?.items;
        let on: BTreeSet<String> = list
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|st| st.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.spec?.node_name)
            .collect();
        (on.len() == 2).then_some(())
    })
    .await;
    // Taken once the pods run, as for the other scale-down rows: a node that has just joined may still be
    // getting its labels.
    let before = picture(s, &setup).await;
    assert_eq!((before.nodes.len(), before.workers.len()), (2, 2), "two nodes, two workers: {before:?}");
    s.arm_pause_in(step, &setup.ns.name);
    groups.patch("pool", &PatchParams::default(), &Patch::Merge(json!({"spec": {"minNodes": 1}}))).await.unwrap();
    Run { setup, before, replicas: 2 }
}

/// The node that keeps an app pod (scale-down's other node).
async fn busy_node(run: &Run) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(run.setup.client.clone(), &run.setup.ns.name);
    let list = pods.list(&ListParams::default().labels("app=app")).await.ok()?.items;
    list.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).find_map(|p| p.spec?.node_name)
}

/// The held VPSieNode: the one not Ready (scale-up), or the one draining or terminating (scale-down).
async fn held_vpsienode(run: &Run) -> Option<String> {
    let list = vpsienodes(run).list(&ListParams::default()).await.ok()?.items;
    list.into_iter()
        .find(|v| v.status.as_ref().map(|s| s.phase).unwrap_or_default() != VPSieNodePhase::Ready)
        .map(|v| v.name_any())
}

/// What the fault left in place, and the node a person cordoned (it must stay cordoned).
#[derive(Default)]
struct Injected {
    _undo: Vec<Undo>,
    person_cordoned: Option<String>,
}

async fn inject(s: &Stack, run: &Run, fault: Fault) -> Injected {
    let mut out = Injected::default();
    let rule = |r: serde_json::Value| async move { s.fault(r).await };
    let once = |kind: serde_json::Value| json!({"endpoint": "add_worker", "times": 1, "fault": kind});
    match fault {
        Fault::Vpsie5xx => out._undo.push(rule(json!({"times": 6, "fault": {"kind": "http_error", "status": 503}})).await),
        Fault::RateLimitStorm => out._undo.push(
            rule(json!({"for_ms": 8000, "fault": {"kind": "rate_limit", "retry_after": {"style": "seconds", "secs": 1}}}))
                .await,
        ),
        Fault::Partition => {
            out._undo.push(rule(json!({"fault": {"kind": "partition", "duration_ms": 6000, "mode": "drop"}})).await)
        }
        Fault::MalformedAnswers => {
            for style in ["garbage", "truncated", "huge"] {
                let answer = json!({"kind": "http_error", "status": 200, "body_style": style});
                out._undo.push(rule(json!({"times": 2, "fault": answer})).await);
            }
        }
        // One failed worker each: the VPSieNode fails and releases it, and scale-up tries again.
        Fault::AsyncCreateFailure => out._undo.push(rule(once(json!({"kind": "fail_create"}))).await),
        Fault::StuckProvisioning => out._undo.push(rule(once(json!({"kind": "stuck_provisioning"}))).await),
        Fault::NeverJoins => out._undo.push(rule(once(json!({"kind": "never_join"}))).await),
        Fault::Quota => out._undo.push(rule(once(json!({"kind": "quota"}))).await),
        Fault::DeleteFailsThenSucceeds => out._undo.push(
            rule(json!({"endpoint": "delete_worker", "times": 3, "fault": {"kind": "delete_fail", "status": 503}}))
                .await,
        ),
        Fault::Sigkill => s.crash_and_restart_controller(GENERATION.fetch_add(1, Ordering::SeqCst)),
        Fault::LeaderHandover => s.handover(GENERATION.fetch_add(1, Ordering::SeqCst)),
        Fault::ApiServerRestart => s.restart_apiserver(Duration::from_secs(2)),
        Fault::PersonCordonsOtherNode => {
            let node = busy_node(run).await.expect("the app pod's node");
            let cordon = json!({"spec": {"unschedulable": true}});
            Api::<Node>::all(run.setup.client.clone())
                .patch(&node, &PatchParams::default(), &Patch::Merge(cordon))
                .await
                .unwrap();
            out.person_cordoned = Some(node);
        }
        Fault::PersonDeletesVpsieNode => {
            if let Some(name) = held_vpsienode(run).await {
                let _ = vpsienodes(run).delete(&name, &DeleteParams::default()).await;
            }
        }
    }
    out
}

/// Every VPSieNode is Ready, or Failed with its VM released; the live workers are exactly the Ready
/// ones' workers, and there are as many as the group has nodes.
async fn accounted_for(s: &Stack, run: &Run) -> Result<(), String> {
    let list = vpsienodes(run).list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
    let mut claimed = BTreeSet::new();
    for v in &list {
        let st = v.status.clone().unwrap_or_default();
        let released = st.conditions.iter().any(|c| c.type_ == "VMReleased" && c.status == "True");
        match st.phase {
            VPSieNodePhase::Ready => {
                claimed.extend(st.worker_identifier);
            }
            VPSieNodePhase::Failed if released => {}
            other => return Err(format!("VPSieNode {} is {other:?} (released: {released})", v.name_any())),
        }
    }
    let now = picture(s, &run.setup).await;
    let live: BTreeSet<String> = now.workers.iter().cloned().collect();
    if live != claimed {
        return Err(format!("live workers {live:?}, claimed by Ready VPSieNodes {claimed:?}"));
    }
    if now.nodes.len() != live.len() {
        return Err(format!("{} nodes for {} workers", now.nodes.len(), live.len()));
    }
    Ok(())
}

/// The operation's result, once `now` shows one: scale-up, exactly one schedulable node and its worker;
/// scale-down, exactly `want`, or the drained node and its worker gone and the other node exactly as it was.
fn settled(op: Operation, want: &Picture, now: &Picture) -> Option<Outcome> {
    match op {
        Operation::ScaleUp => (now.nodes.len() == 1 && now.workers.len() == 1 && now.nodes.values().all(|n| !n.0))
            .then_some(Outcome::Completed),
        Operation::ScaleDown | Operation::BusyScaleDown if now == want => Some(Outcome::KeptExactly),
        Operation::ScaleDown | Operation::BusyScaleDown => {
            let (name, kept) = now.nodes.iter().next()?;
            (now.nodes.len() == 1 && now.workers.len() == 1 && want.nodes.get(name) == Some(kept))
                .then_some(Outcome::Completed)
        }
    }
}

async fn judge(s: &Stack, op: Operation, run: &Run, injected: &Injected) -> Outcome {
    let mut want = run.before.clone();
    if let Some(node) = &injected.person_cordoned {
        want.nodes.get_mut(node).expect("the cordoned node is the group's").0 = true;
    }
    // First the operation ends (no VPSieNode between phases, every worker claimed), then its result is
    // read: a picture taken mid-operation could look like either.
    eventually("every worker is accounted for", WAIT, || async { accounted_for(s, run).await.ok() }).await;
    let stranded = env().stranded_vpsienodes();
    assert!(stranded.is_empty(), "VPSieNodes outlived their namespace: {stranded:?}");
    let mut last = None;
    let result = tokio::time::timeout(WAIT, async {
        loop {
            let now = picture(s, &run.setup).await;
            if let Some(outcome) = settled(op, &want, &now) {
                return outcome;
            }
            last = Some(now);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    let outcome = result.unwrap_or_else(|_| panic!("the group did not settle:\nwant {want:#?}\nlast {last:#?}"));
    let pods: Api<Pod> = Api::namespaced(run.setup.client.clone(), &run.setup.ns.name);
    eventually("every app pod runs", WAIT, || async { (running_app_pods(&pods).await == run.replicas).then_some(()) })
        .await;
    eventually("every worker is still accounted for", WAIT, || async { accounted_for(s, run).await.ok() }).await;
    outcome
}

async fn case(op: Operation, step: &str, fault: Fault) {
    let _serial = SERIAL.lock().await;
    let s = stack();
    let started = Instant::now();
    let run = match op {
        Operation::ScaleUp => start_scale_up(s, step).await,
        Operation::ScaleDown => start_scale_down(s, step).await,
        Operation::BusyScaleDown => start_scale_down_busy(s, step).await,
    };
    let held = held_or_ended(s, op, &run).await;
    let injected = if held { inject(s, &run, fault).await } else { Injected::default() };
    s.release();
    let outcome = judge(s, op, &run, &injected).await;
    eprintln!(
        "MATRIX op={op:?} step={step} fault={fault:?} injected={held} outcome={outcome:?} seconds={:.1}",
        started.elapsed().as_secs_f64()
    );
}

macro_rules! matrix {
    ($( $(#[$attr:meta])* $name:ident: $op:ident, $step:literal, $fault:ident; )*) => {
        $( $(#[$attr])* #[tokio::test] async fn $name() { case(Operation::$op, $step, Fault::$fault).await } )*
    };
}

matrix! {
    // The CI slice: each operation under a crash and a cloud fault.
    up_provisioning_sigkill: ScaleUp, "node-provisioning", Sigkill;
    up_pending_quota: ScaleUp, "node-pending", Quota;
    down_draining_api_server_restart: ScaleDown, "node-draining", ApiServerRestart;
    down_terminating_delete_fails_then_succeeds: ScaleDown, "node-terminating", DeleteFailsThenSucceeds;
    up_pending_malformed_answers: ScaleUp, "node-pending", MalformedAnswers;
    busy_draining_leader_handover: BusyScaleDown, "node-draining", LeaderHandover;
    // The rest: `-- --include-ignored`.
    #[ignore = "whole matrix only"] up_pending_vpsie5xx: ScaleUp, "node-pending", Vpsie5xx;
    #[ignore = "whole matrix only"] up_provisioning_vpsie5xx: ScaleUp, "node-provisioning", Vpsie5xx;
    #[ignore = "whole matrix only"] up_joining_vpsie5xx: ScaleUp, "node-joining", Vpsie5xx;
    #[ignore = "whole matrix only"] up_pending_rate_limit_storm: ScaleUp, "node-pending", RateLimitStorm;
    #[ignore = "whole matrix only"] up_provisioning_rate_limit_storm: ScaleUp, "node-provisioning", RateLimitStorm;
    #[ignore = "whole matrix only"] up_joining_rate_limit_storm: ScaleUp, "node-joining", RateLimitStorm;
    #[ignore = "whole matrix only"] up_pending_partition: ScaleUp, "node-pending", Partition;
    #[ignore = "whole matrix only"] up_provisioning_partition: ScaleUp, "node-provisioning", Partition;
    #[ignore = "whole matrix only"] up_joining_partition: ScaleUp, "node-joining", Partition;
    #[ignore = "whole matrix only"] up_pending_async_create_failure: ScaleUp, "node-pending", AsyncCreateFailure;
    #[ignore = "whole matrix only"] up_pending_stuck_provisioning: ScaleUp, "node-pending", StuckProvisioning;
    #[ignore = "whole matrix only"] up_pending_never_joins: ScaleUp, "node-pending", NeverJoins;
    #[ignore = "whole matrix only"] up_pending_sigkill: ScaleUp, "node-pending", Sigkill;
    #[ignore = "whole matrix only"] up_joining_sigkill: ScaleUp, "node-joining", Sigkill;
    #[ignore = "whole matrix only"] up_pending_leader_handover: ScaleUp, "node-pending", LeaderHandover;
    #[ignore = "whole matrix only"] up_provisioning_leader_handover: ScaleUp, "node-provisioning", LeaderHandover;
    #[ignore = "whole matrix only"] up_joining_leader_handover: ScaleUp, "node-joining", LeaderHandover;
    #[ignore = "whole matrix only"] up_pending_api_server_restart: ScaleUp, "node-pending", ApiServerRestart;
    #[ignore = "whole matrix only"] up_provisioning_api_server_restart: ScaleUp, "node-provisioning", ApiServerRestart;
    #[ignore = "whole matrix only"] up_joining_api_server_restart: ScaleUp, "node-joining", ApiServerRestart;
    #[ignore = "whole matrix only"] up_pending_person_deletes_vpsienode: ScaleUp, "node-pending", PersonDeletesVpsieNode;
    #[ignore = "whole matrix only"] up_provisioning_person_deletes_vpsienode: ScaleUp, "node-provisioning", PersonDeletesVpsieNode;
    #[ignore = "whole matrix only"] up_joining_person_deletes_vpsienode: ScaleUp, "node-joining", PersonDeletesVpsieNode;
    #[ignore = "whole matrix only"] up_provisioning_malformed_answers: ScaleUp, "node-provisioning", MalformedAnswers;
    #[ignore = "whole matrix only"] up_joining_malformed_answers: ScaleUp, "node-joining", MalformedAnswers;
    #[ignore = "whole matrix only"] down_draining_malformed_answers: ScaleDown, "node-draining", MalformedAnswers;
    #[ignore = "whole matrix only"] down_terminating_malformed_answers: ScaleDown, "node-terminating", MalformedAnswers;
    #[ignore = "whole matrix only"] down_draining_vpsie5xx: ScaleDown, "node-draining", Vpsie5xx;
    #[ignore = "whole matrix only"] down_terminating_vpsie5xx: ScaleDown, "node-terminating", Vpsie5xx;
    #[ignore = "whole matrix only"] down_draining_partition: ScaleDown, "node-draining", Partition;
    #[ignore = "whole matrix only"] down_terminating_partition: ScaleDown, "node-terminating", Partition;
    #[ignore = "whole matrix only"] down_draining_delete_fails_then_succeeds: ScaleDown, "node-draining", DeleteFailsThenSucceeds;
    #[ignore = "whole matrix only"] down_draining_sigkill: ScaleDown, "node-draining", Sigkill;
    #[ignore = "whole matrix only"] down_terminating_sigkill: ScaleDown, "node-terminating", Sigkill;
    #[ignore = "whole matrix only"] down_draining_leader_handover: ScaleDown, "node-draining", LeaderHandover;
    #[ignore = "whole matrix only"] down_terminating_leader_handover: ScaleDown, "node-terminating", LeaderHandover;
    #[ignore = "whole matrix only"] down_terminating_api_server_restart: ScaleDown, "node-terminating", ApiServerRestart;
    #[ignore = "whole matrix only"] down_draining_person_cordons_other_node: ScaleDown, "node-draining", PersonCordonsOtherNode;
    #[ignore = "whole matrix only"] down_terminating_person_cordons_other_node: ScaleDown, "node-terminating", PersonCordonsOtherNode;
    #[ignore = "whole matrix only"] down_draining_person_deletes_vpsienode: ScaleDown, "node-draining", PersonDeletesVpsieNode;
    #[ignore = "whole matrix only"] down_terminating_person_deletes_vpsienode: ScaleDown, "node-terminating", PersonDeletesVpsieNode;
    // A node with a pod to evict. (A person cordoning "the other node" is left out: both nodes hold a pod.)
    #[ignore = "whole matrix only"] busy_draining_sigkill: BusyScaleDown, "node-draining", Sigkill;
    #[ignore = "whole matrix only"] busy_draining_api_server_restart: BusyScaleDown, "node-draining", ApiServerRestart;
    #[ignore = "whole matrix only"] busy_draining_vpsie5xx: BusyScaleDown, "node-draining", Vpsie5xx;
    #[ignore = "whole matrix only"] busy_draining_partition: BusyScaleDown, "node-draining", Partition;
    #[ignore = "whole matrix only"] busy_draining_person_deletes_vpsienode: BusyScaleDown, "node-draining", PersonDeletesVpsieNode;
    #[ignore = "whole matrix only"] busy_terminating_sigkill: BusyScaleDown, "node-terminating", Sigkill;
    #[ignore = "whole matrix only"] busy_terminating_delete_fails_then_succeeds: BusyScaleDown, "node-terminating", DeleteFailsThenSucceeds;
}
