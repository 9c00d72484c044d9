//! The reliability matrix: a rebalance of a two-node group is held at a step, a fault is injected there,
//! the operation is let go, and whatever happens it must end either completed or in the exact
//! pre-operation state, with nothing left behind: no cordon we made, no `rebalance-operation`
//! label, no VPSie worker without its VPSieNode, no VPSieNode stuck in a phase, every app pod Running,
//! a person's cordon kept, and the Rebalance's Events saying how it ended.
//!
//! `rolling` rows replace one node of the two. The strategies differ only with more than one replacement
//! (`surge` provisions every replacement before it cordons anything), so `surge_` rows replace both; each
//! replacement must then end completed or exactly as before.
//!
//! Every (strategy, step, fault) is one test. The CI slice (the tests not marked `#[ignore]`) covers every
//! fault once; the whole matrix is `cargo test --test reliability_matrix -- --include-ignored`
//! (`scripts/reliability`). Runs are serial: each owns the controller while it runs (some kill it).

mod support;

use std::{
    collections::BTreeSet,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Event, Node, Pod},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{
    env, eventually,
    fixtures::running_app_pods,
    rebalance::{DEARER, Picture, Setup, WAIT, create, group_on_dearer_plan, labelled, picture, rebalance},
    stack::{Stack, Undo},
};
use vpsie_autoscaler::crd::{NodeGroup, ROLLBACK_ANNOTATION, Rebalance, RebalancePhase, VPSieNode, VPSieNodePhase};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static GENERATION: AtomicU32 = AtomicU32::new(1);
const REPLICAS: i32 = 2;
const NOT_READY_LABEL: &str = "node-not-ready.stage.kwok.x-k8s.io";

fn stack() -> &'static Stack {
    // A breaker open for 5 s instead of 30 s and a 5 s group backoff instead of a minute: the same
    // behaviour, waited out in a fraction of the time, so that a whole pass fits in well under an hour.
    support::stack::stack(
        "nodeLifecycle:\n  provisioningTimeout: 20s\n  joiningTimeout: 20s\n  drainTimeout: 20s\n\
         autoscaling:\n  failureBackoff: 5s\nvpsieApi:\n  circuitBreaker:\n    openFor: 5s\n\
         rebalancer:\n  clusterHealth:\n    maxUnreadyNodes: 0\n    maxUnreadyPercent: 0\n    maxNewUnschedulablePods: 10\n",
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strategy {
    /// One replacement (the first of the two nodes).
    Rolling,
    /// Both nodes replaced, with `strategy: surge`.
    Surge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Vpsie5xx,
    RateLimitStorm,
    Partition,
    AsyncCreateFailure,
    StuckProvisioning,
    NeverJoins,
    Quota,
    DeleteFailsThenSucceeds,
    BlockingPdbThatLifts,
    DrainTimeout,
    WorkloadNeverReady,
    GroupNodeNotReady,
    Sigkill,
    LeaderHandover,
    ApiServerRestart,
    PersonCordonsOtherNode,
    PersonDeletesReplacement,
    PersonDeletesRebalance,
    OfferingRemoved,
    MaxNodesLowered,
}

/// What a fault left to undo once the operation has ended, and what it changes in the expected end.
#[derive(Default)]
struct Injected {
    undo: Vec<Undo>,
    pdb: bool,
    replicas_raised: bool,
    not_ready: Option<String>,
    /// A node a person cordoned: it must still be cordoned at the end.
    person_cordoned: Option<String>,
    rebalance_deleted: bool,
    metrics_elsewhere: bool,
}

struct Run {
    setup: Setup,
    before: Picture,
    /// The nodes the operation replaces.
    replaced: Vec<String>,
    other_node: String,
    api: Api<Rebalance>,
}

/// The step names of the controller's test pause points (`test_hooks::current_step`).
const STEPS: [&str; 8] =
    ["preflight", "provisioning", "joined", "cordoned", "draining", "verifying", "removing", "rollback"];

async fn start(s: &Stack, strategy: Strategy, step: &str, fault: Fault) -> Run {
    assert!(STEPS.contains(&step), "unknown step {step}");
    let setup = group_on_dearer_plan(s, "rm", REPLICAS).await;
    let before = picture(s, &setup).await;
    let mut names = setup.nodes.keys().cloned();
    let (old_node, other_node) = (names.next().unwrap(), names.next().unwrap());
    // The workload health check also waits `drainTimeout` before it rolls back: 20 s instead of 60 s keeps
    // those rows from being the matrix's slowest by far, and still outlasts a drain under load.
    let drain_timeout = match fault {
        Fault::DrainTimeout => "8s",
        Fault::WorkloadNeverReady => "20s",
        _ => "60s",
    };
    s.arm_pause_in(step, &setup.ns.name);
    let (replaced, extra) = match strategy {
        Strategy::Rolling => (vec![old_node.clone()], json!({"drainTimeout": drain_timeout})),
        Strategy::Surge => {
            (vec![old_node.clone(), other_node.clone()], json!({"drainTimeout": drain_timeout, "strategy": "surge"}))
        }
    };
    let targets: Vec<&str> = replaced.iter().map(String::as_str).collect();
    let api = create(&setup, &rebalance("op", &setup, &targets, extra)).await;
    if step == "rollback" {
        // A rollback to hold: a person asks for one once the replacement is on its way.
        eventually("the replacement is recorded", WAIT, || async {
            api.get("op").await.ok()?.status?.steps.first()?.new_vpsie_node.clone()
        })
        .await;
        let ask = json!({"metadata": {"annotations": {ROLLBACK_ANNOTATION: "reliability matrix"}}});
        api.patch("op", &PatchParams::default(), &Patch::Merge(ask)).await.unwrap();
    }
    let held = tokio::time::timeout(WAIT, async {
        while !s.paused() {
            let rb = api.get("op").await.unwrap();
            let phase = rb.status.as_ref().map(|st| st.phase).unwrap_or_default();
            // An operation that ends before reaching the step never shows it: the run is still valid.
            if phase.is_terminal() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(held.is_ok(), "the operation never reached {step}");
    Run { setup, before, replaced, other_node, api }
}

async fn inject(s: &Stack, run: &Run, fault: Fault) -> Injected {
    let client = &run.setup.client;
    let ns = &run.setup.ns.name;
    let mut out = Injected::default();
    let rule = |r: serde_json::Value| async move { s.fault(r).await };
    match fault {
        Fault::Vpsie5xx => out.undo.push(rule(json!({"times": 6, "fault": {"kind": "http_error", "status": 503}})).await),
        Fault::RateLimitStorm => out.undo.push(
            rule(json!({"for_ms": 8000, "fault": {"kind": "rate_limit", "retry_after": {"style": "seconds", "secs": 1}}}))
                .await,
        ),
        Fault::Partition => {
            out.undo.push(rule(json!({"fault": {"kind": "partition", "duration_ms": 6000, "mode": "drop"}})).await)
        }
        Fault::AsyncCreateFailure => {
            out.undo.push(rule(json!({"endpoint": "add_worker", "times": 1, "fault": {"kind": "fail_create"}})).await)
        }
        Fault::StuckProvisioning => {
            out.undo.push(rule(json!({"endpoint": "add_worker", "fault": {"kind": "stuck_provisioning"}})).await)
        }
        Fault::NeverJoins => out.undo.push(rule(json!({"endpoint": "add_worker", "fault": {"kind": "never_join"}})).await),
        Fault::Quota => out.undo.push(rule(json!({"endpoint": "add_worker", "fault": {"kind": "quota"}})).await),
        Fault::DeleteFailsThenSucceeds => out.undo.push(
            rule(json!({"endpoint": "delete_worker", "times": 3, "fault": {"kind": "delete_fail", "status": 503}}))
                .await,
        ),
        Fault::BlockingPdbThatLifts | Fault::DrainTimeout => {
            let pdb: PodDisruptionBudget = serde_json::from_value(json!({
                "metadata": {"name": "hold"},
                "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "app"}}},
            }))
            .unwrap();
            Api::<PodDisruptionBudget>::namespaced(client.clone(), ns).create(&PostParams::default(), &pdb).await.unwrap();
            out.pdb = true;
        }
        Fault::WorkloadNeverReady => {
            // One more replica than the group may ever hold room for: it can never run.
            let groups: Api<NodeGroup> = Api::namespaced(client.clone(), ns);
            let max = json!({"spec": {"maxNodes": REPLICAS + 1}});
            groups.patch("pool", &PatchParams::default(), &Patch::Merge(max)).await.unwrap();
            let more = json!({"spec": {"replicas": REPLICAS + 2}});
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
            deployments.patch("app", &PatchParams::default(), &Patch::Merge(more)).await.unwrap();
            out.replicas_raised = true;
        }
        Fault::GroupNodeNotReady => {
            let label = json!({"metadata": {"labels": {NOT_READY_LABEL: "true"}}});
            let nodes: Api<Node> = Api::all(client.clone());
            nodes.patch(&run.other_node, &PatchParams::default(), &Patch::Merge(label)).await.unwrap();
            out.not_ready = Some(run.other_node.clone());
        }
        Fault::Sigkill => s.crash_and_restart_controller(GENERATION.fetch_add(1, Ordering::SeqCst)),
        Fault::LeaderHandover => {
            s.handover(GENERATION.fetch_add(1, Ordering::SeqCst));
            out.metrics_elsewhere = true;
        }
        // Down for longer than a watch's reconnect backoff, shorter than the Lease: the leader stays leader
        // and must carry on from what the restarted API server serves.
        Fault::ApiServerRestart => s.restart_apiserver(Duration::from_secs(2)),
        Fault::PersonCordonsOtherNode => {
            let cordon = json!({"spec": {"unschedulable": true}});
            Api::<Node>::all(client.clone()).patch(&run.other_node, &PatchParams::default(), &Patch::Merge(cordon)).await.unwrap();
            out.person_cordoned = Some(run.other_node.clone());
        }
        Fault::PersonDeletesReplacement => {
            let rb = run.api.get("op").await.unwrap();
            let replacement = rb.status.and_then(|st| st.steps.first().and_then(|step| step.new_vpsie_node.clone()));
            if let Some(name) = replacement {
                let _ = Api::<VPSieNode>::namespaced(client.clone(), ns).delete(&name, &DeleteParams::default()).await;
            }
        }
        Fault::PersonDeletesRebalance => {
            run.api.delete("op", &DeleteParams::default()).await.unwrap();
            out.rebalance_deleted = true;
        }
        Fault::OfferingRemoved => {
            let only_old = json!({"spec": {"offerings": [DEARER]}});
            Api::<NodeGroup>::namespaced(client.clone(), ns).patch("pool", &PatchParams::default(), &Patch::Merge(only_old)).await.unwrap();
        }
        Fault::MaxNodesLowered => {
            let fewer = json!({"spec": {"maxNodes": REPLICAS}});
            Api::<NodeGroup>::namespaced(client.clone(), ns).patch("pool", &PatchParams::default(), &Patch::Merge(fewer)).await.unwrap();
        }
    }
    out
}

/// Undoes what the fault left in place that is not part of the cluster's picture being judged: the
/// simulator's rules, the PDB (lifted while the drain waits, for the fault that lifts), extra replicas,
/// the NotReady stage.
async fn lift(run: &Run, injected: &mut Injected) {
    let client = &run.setup.client;
    let ns = &run.setup.ns.name;
    injected.undo.clear();
    if injected.pdb {
        let _ =
            Api::<PodDisruptionBudget>::namespaced(client.clone(), ns).delete("hold", &DeleteParams::default()).await;
    }
    if injected.replicas_raised {
        let back = json!({"spec": {"replicas": REPLICAS}});
        Api::<Deployment>::namespaced(client.clone(), ns)
            .patch("app", &PatchParams::default(), &Patch::Merge(back))
            .await
            .unwrap();
    }
    if let Some(node) = &injected.not_ready {
        let unlabel = json!({"metadata": {"labels": {NOT_READY_LABEL: null}}});
        let _ = Api::<Node>::all(client.clone()).patch(node, &PatchParams::default(), &Patch::Merge(unlabel)).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Completed,
    RolledBackExactly,
    /// More than one replacement: some completed, and a rollback put every other node back exactly (a
    /// rollback keeps the replacements that had completed).
    PartlyCompletedRestExactly,
}

/// How `now` relates to `want` when it is not `want` itself: every node the operation did not replace is
/// exactly as it was; each replaced node is either gone or exactly as it was; one new, schedulable node
/// stands for each one gone. `None` while that does not hold (the operation has not settled yet).
fn settled(want: &Picture, now: &Picture, replaced: &[String]) -> Option<Outcome> {
    let untouched_or_back = want
        .nodes
        .iter()
        .filter(|(n, _)| !replaced.contains(n) || now.nodes.contains_key(*n))
        .all(|(n, v)| now.nodes.get(n) == Some(v));
    let gone = replaced.iter().filter(|n| !now.nodes.contains_key(*n)).count();
    let new: Vec<bool> = now.nodes.iter().filter(|(n, _)| !want.nodes.contains_key(*n)).map(|(_, (c, _))| *c).collect();
    let ok = untouched_or_back && gone > 0 && new.len() == gone && new.iter().all(|cordoned| !cordoned);
    ok.then_some(if gone == replaced.len() { Outcome::Completed } else { Outcome::PartlyCompletedRestExactly })
}

/// Waits for the end of the operation (or of its object, if a person deleted it).
async fn ended(run: &Run) -> Option<RebalancePhase> {
    eventually("the operation ends", Duration::from_secs(240), || async {
        match run.api.get_opt("op").await.ok()? {
            None => Some(None),
            Some(rb) => {
                let phase = rb.status.as_ref().map(|st| st.phase)?;
                phase.is_terminal().then_some(Some(phase))
            }
        }
    })
    .await
}

/// The group's live workers and the workers its VPSieNodes claim: they must be the same set.
async fn workers_match_vpsienodes(s: &Stack, run: &Run) -> Result<(), String> {
    let vns = Api::<VPSieNode>::namespaced(run.setup.client.clone(), &run.setup.ns.name)
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items;
    let stuck: Vec<String> = vns
        .iter()
        .filter(|v| v.status.as_ref().map(|st| st.phase) != Some(VPSieNodePhase::Ready))
        .map(|v| format!("{} {:?}", v.name_any(), v.status.as_ref().map(|st| st.phase)))
        .collect();
    if !stuck.is_empty() {
        return Err(format!("VPSieNodes not Ready: {stuck:?}"));
    }
    let claimed: BTreeSet<String> = vns.iter().filter_map(|v| v.status.as_ref()?.worker_identifier.clone()).collect();
    let live: BTreeSet<String> = picture(s, &run.setup).await.workers.into_iter().collect();
    if claimed != live {
        return Err(format!("workers {live:?} but VPSieNodes claim {claimed:?}"));
    }
    Ok(())
}

async fn judge(s: &Stack, run: &Run, injected: &Injected, end: Option<RebalancePhase>) -> Outcome {
    let client = &run.setup.client;
    let ns = &run.setup.ns.name;
    assert_ne!(end, Some(RebalancePhase::Failed), "rollbackOnFailure is on: an operation never ends Failed");
    let mut want = run.before.clone();
    if let Some(node) = &injected.person_cordoned {
        want.nodes.get_mut(node).expect("the cordoned node is the group's").0 = true;
    }
    // Completed: each old node is gone and a new node took its place; rolled back: exactly `want`. A
    // rollback keeps replacements that had completed (the phase then says RolledBack and its record lists
    // them): the state is the completed one either way.
    let outcome = eventually("the cluster settles completed or exactly as before", WAIT, || async {
        let now = picture(s, &run.setup).await;
        if now == want {
            return Some(Outcome::RolledBackExactly);
        }
        settled(&want, &now, &run.replaced)
    })
    .await;
    assert!(labelled(client, ns).await.is_empty(), "no rebalance label is left");
    let stranded = env().stranded_vpsienodes();
    assert!(stranded.is_empty(), "VPSieNodes outlived their namespace: {stranded:?}");
    eventually("every worker is claimed and every VPSieNode Ready", WAIT, || async {
        workers_match_vpsienodes(s, run).await.ok()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually("every app pod runs", WAIT, || async {
        (running_app_pods(&pods).await == REPLICAS as usize).then_some(())
    })
    .await;
    // The Events say how it ended (a deleted Rebalance takes its Events' subject with it, not the Events).
    let events: Vec<String> = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields("involvedObject.kind=Rebalance"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    let expected = match outcome {
        Outcome::Completed if end == Some(RebalancePhase::RolledBack) => Some("RollbackTriggered"),
        Outcome::Completed => Some("RebalanceSucceeded"),
        Outcome::PartlyCompletedRestExactly => Some("RollbackTriggered"),
        // Deleted before it touched anything: nothing was rolled back, so there is nothing to report.
        Outcome::RolledBackExactly if end.is_none() && !events.iter().any(|e| e == "RollbackTriggered") => None,
        Outcome::RolledBackExactly => Some("RollbackTriggered"),
    };
    if let Some(expected) = expected {
        assert!(events.iter().any(|e| e == expected), "no {expected} Event: {events:?}");
    }
    outcome
}

async fn case(strategy: Strategy, step: &str, fault: Fault) {
    let _serial = SERIAL.lock().await;
    let s = stack();
    let started = Instant::now();
    let run = start(s, strategy, step, fault).await;
    // An operation that ended before it reached the step gets no fault; the report says so.
    let held = s.paused();
    let mut injected = if held { inject(s, &run, fault).await } else { Injected::default() };
    s.release();
    if fault == Fault::BlockingPdbThatLifts {
        // The drain waits on the PDB for a while; then a person lifts it and the drain completes.
        tokio::time::sleep(Duration::from_secs(5)).await;
        lift(&run, &mut injected).await;
    }
    if fault == Fault::WorkloadNeverReady && held {
        // The extra replica stands for a workload that stays unhealthy through the health check; once
        // the operation gives up on it, the workload's owner takes it back (else the rollback's own
        // check would rightly find an unschedulable pod the operation did not cause and cannot fix).
        eventually("the operation gives up on the workload", Duration::from_secs(240), || async {
            let rb = run.api.get("op").await.ok()?;
            let phase = rb.status.as_ref().map(|st| st.phase)?;
            (phase == RebalancePhase::RollingBack || phase.is_terminal()).then_some(())
        })
        .await;
        lift(&run, &mut injected).await;
    }
    let end = ended(&run).await;
    lift(&run, &mut injected).await;
    let outcome = judge(s, &run, &injected, end).await;
    // Rolling rows carry no `op` (the report calls them Rebalance), as they always have.
    let op = if strategy == Strategy::Surge { "op=Surge " } else { "" };
    eprintln!(
        "MATRIX {op}step={step} fault={fault:?} injected={held} outcome={outcome:?} phase={end:?} seconds={:.1}",
        started.elapsed().as_secs_f64()
    );
}

fn picture_of(nodes: &[(&str, bool)]) -> Picture {
    let nodes = nodes.iter().map(|(n, c)| (n.to_string(), (*c, Default::default()))).collect();
    Picture { nodes, workers: vec![] }
}

#[test]
fn both_old_nodes_gone_with_two_schedulable_new_ones_is_completed() {
    let (want, replaced) = (picture_of(&[("a", false), ("b", false)]), ["a".to_string(), "b".to_string()]);
    assert_eq!(settled(&want, &picture_of(&[("x", false), ("y", false)]), &replaced), Some(Outcome::Completed));
    assert_eq!(settled(&want, &picture_of(&[("x", false), ("y", true)]), &replaced), None, "a new node is cordoned");
    assert_eq!(settled(&want, &picture_of(&[("x", false)]), &replaced), None, "a node short");
}

#[test]
fn one_replaced_and_the_other_exactly_as_before_is_partly_completed() {
    let (want, replaced) = (picture_of(&[("a", false), ("b", false)]), ["a".to_string(), "b".to_string()]);
    let now = picture_of(&[("b", false), ("x", false)]);
    assert_eq!(settled(&want, &now, &replaced), Some(Outcome::PartlyCompletedRestExactly));
    assert_eq!(settled(&want, &picture_of(&[("b", true), ("x", false)]), &replaced), None, "b is left cordoned");
}

#[test]
fn a_node_the_operation_did_not_replace_must_be_exactly_as_before() {
    let (want, replaced) = (picture_of(&[("a", false), ("b", true)]), ["a".to_string()]);
    assert_eq!(settled(&want, &picture_of(&[("b", true), ("x", false)]), &replaced), Some(Outcome::Completed));
    assert_eq!(settled(&want, &picture_of(&[("b", false), ("x", false)]), &replaced), None, "a person's cordon undone");
    assert_eq!(settled(&want, &picture_of(&[("a", false), ("b", true)]), &replaced), None, "nothing replaced");
}

macro_rules! matrix {
    ($( $(#[$attr:meta])* $name:ident: $step:literal, $fault:ident; )*) => {
        $( $(#[$attr])* #[tokio::test] async fn $name() { case(Strategy::Rolling, $step, Fault::$fault).await } )*
    };
}

macro_rules! surge {
    ($( $(#[$attr:meta])* $name:ident: $step:literal, $fault:ident; )*) => {
        $( $(#[$attr])* #[tokio::test] async fn $name() { case(Strategy::Surge, $step, Fault::$fault).await } )*
    };
}

// Where the strategies differ: both replacements on their way at once, nothing cordoned yet; then the
// drains one at a time once both are Ready. (A workload that never becomes Ready again is left out: with
// four nodes up at once the extra replicas it needs do run, so it tests nothing surge-specific.)
surge! {
    surge_provisioning_sigkill: "provisioning", Sigkill;
    #[ignore = "whole matrix only"] surge_provisioning_vpsie5xx: "provisioning", Vpsie5xx;
    #[ignore = "whole matrix only"] surge_provisioning_async_create_failure: "provisioning", AsyncCreateFailure;
    #[ignore = "whole matrix only"] surge_provisioning_stuck_provisioning: "provisioning", StuckProvisioning;
    #[ignore = "whole matrix only"] surge_provisioning_never_joins: "provisioning", NeverJoins;
    #[ignore = "whole matrix only"] surge_provisioning_quota: "provisioning", Quota;
    #[ignore = "whole matrix only"] surge_provisioning_leader_handover: "provisioning", LeaderHandover;
    #[ignore = "whole matrix only"] surge_provisioning_api_server_restart: "provisioning", ApiServerRestart;
    #[ignore = "whole matrix only"] surge_provisioning_person_deletes_replacement: "provisioning", PersonDeletesReplacement;
    #[ignore = "whole matrix only"] surge_provisioning_person_deletes_rebalance: "provisioning", PersonDeletesRebalance;
    #[ignore = "whole matrix only"] surge_provisioning_offering_removed: "provisioning", OfferingRemoved;
    #[ignore = "whole matrix only"] surge_joined_sigkill: "joined", Sigkill;
    #[ignore = "whole matrix only"] surge_joined_rate_limit_storm: "joined", RateLimitStorm;
    #[ignore = "whole matrix only"] surge_joined_partition: "joined", Partition;
    #[ignore = "whole matrix only"] surge_joined_person_cordons_other_node: "joined", PersonCordonsOtherNode;
    #[ignore = "whole matrix only"] surge_joined_group_node_not_ready: "joined", GroupNodeNotReady;
    #[ignore = "whole matrix only"] surge_cordoned_drain_timeout: "cordoned", DrainTimeout;
    #[ignore = "whole matrix only"] surge_cordoned_blocking_pdb_that_lifts: "cordoned", BlockingPdbThatLifts;
    #[ignore = "whole matrix only"] surge_draining_sigkill: "draining", Sigkill;
    #[ignore = "whole matrix only"] surge_draining_delete_fails_then_succeeds: "draining", DeleteFailsThenSucceeds;
    #[ignore = "whole matrix only"] surge_removing_sigkill: "removing", Sigkill;
    #[ignore = "whole matrix only"] surge_rollback_sigkill: "rollback", Sigkill;
    #[ignore = "whole matrix only"] surge_rollback_vpsie5xx: "rollback", Vpsie5xx;
}

matrix! {
    // The CI slice: every fault once.
    provisioning_vpsie_5xx: "provisioning", Vpsie5xx;
    draining_rate_limit_storm: "draining", RateLimitStorm;
    joined_partition: "joined", Partition;
    preflight_async_create_failure: "preflight", AsyncCreateFailure;
    preflight_stuck_provisioning: "preflight", StuckProvisioning;
    preflight_never_joins: "preflight", NeverJoins;
    preflight_quota: "preflight", Quota;
    removing_delete_fails_then_succeeds: "removing", DeleteFailsThenSucceeds;
    cordoned_blocking_pdb_that_lifts: "cordoned", BlockingPdbThatLifts;
    cordoned_drain_timeout: "cordoned", DrainTimeout;
    cordoned_workload_never_ready: "cordoned", WorkloadNeverReady;
    draining_group_node_not_ready: "draining", GroupNodeNotReady;
    draining_sigkill: "draining", Sigkill;
    provisioning_leader_handover: "provisioning", LeaderHandover;
    draining_person_cordons_other_node: "draining", PersonCordonsOtherNode;
    joined_person_deletes_replacement: "joined", PersonDeletesReplacement;
    draining_person_deletes_rebalance: "draining", PersonDeletesRebalance;
    provisioning_offering_removed: "provisioning", OfferingRemoved;
    provisioning_max_nodes_lowered: "provisioning", MaxNodesLowered;
    rollback_sigkill: "rollback", Sigkill;
    draining_api_server_restart: "draining", ApiServerRestart;
    // The rest of the matrix: `-- --include-ignored`.
    #[ignore = "whole matrix only"] preflight_vpsie5xx: "preflight", Vpsie5xx;
    #[ignore = "whole matrix only"] joined_vpsie5xx: "joined", Vpsie5xx;
    #[ignore = "whole matrix only"] cordoned_vpsie5xx: "cordoned", Vpsie5xx;
    #[ignore = "whole matrix only"] draining_vpsie5xx: "draining", Vpsie5xx;
    #[ignore = "whole matrix only"] removing_vpsie5xx: "removing", Vpsie5xx;
    #[ignore = "whole matrix only"] rollback_vpsie5xx: "rollback", Vpsie5xx;
    #[ignore = "whole matrix only"] preflight_rate_limit_storm: "preflight", RateLimitStorm;
    #[ignore = "whole matrix only"] provisioning_rate_limit_storm: "provisioning", RateLimitStorm;
    #[ignore = "whole matrix only"] removing_rate_limit_storm: "removing", RateLimitStorm;
    #[ignore = "whole matrix only"] rollback_rate_limit_storm: "rollback", RateLimitStorm;
    #[ignore = "whole matrix only"] provisioning_partition: "provisioning", Partition;
    #[ignore = "whole matrix only"] draining_partition: "draining", Partition;
    #[ignore = "whole matrix only"] removing_partition: "removing", Partition;
    #[ignore = "whole matrix only"] rollback_partition: "rollback", Partition;
    #[ignore = "whole matrix only"] provisioning_async_create_failure: "provisioning", AsyncCreateFailure;
    #[ignore = "whole matrix only"] rollback_async_create_failure: "rollback", AsyncCreateFailure;
    #[ignore = "whole matrix only"] provisioning_stuck_provisioning: "provisioning", StuckProvisioning;
    #[ignore = "whole matrix only"] provisioning_never_joins: "provisioning", NeverJoins;
    #[ignore = "whole matrix only"] provisioning_quota: "provisioning", Quota;
    #[ignore = "whole matrix only"] draining_delete_fails_then_succeeds: "draining", DeleteFailsThenSucceeds;
    #[ignore = "whole matrix only"] verifying_delete_fails_then_succeeds: "verifying", DeleteFailsThenSucceeds;
    #[ignore = "whole matrix only"] rollback_delete_fails_then_succeeds: "rollback", DeleteFailsThenSucceeds;
    #[ignore = "whole matrix only"] joined_blocking_pdb_that_lifts: "joined", BlockingPdbThatLifts;
    #[ignore = "whole matrix only"] draining_blocking_pdb_that_lifts: "draining", BlockingPdbThatLifts;
    #[ignore = "whole matrix only"] joined_drain_timeout: "joined", DrainTimeout;
    #[ignore = "whole matrix only"] draining_drain_timeout: "draining", DrainTimeout;
    #[ignore = "whole matrix only"] draining_workload_never_ready: "draining", WorkloadNeverReady;
    #[ignore = "whole matrix only"] verifying_workload_never_ready: "verifying", WorkloadNeverReady;
    #[ignore = "whole matrix only"] provisioning_group_node_not_ready: "provisioning", GroupNodeNotReady;
    #[ignore = "whole matrix only"] joined_group_node_not_ready: "joined", GroupNodeNotReady;
    #[ignore = "whole matrix only"] cordoned_group_node_not_ready: "cordoned", GroupNodeNotReady;
    #[ignore = "whole matrix only"] verifying_group_node_not_ready: "verifying", GroupNodeNotReady;
    #[ignore = "whole matrix only"] preflight_sigkill: "preflight", Sigkill;
    #[ignore = "whole matrix only"] provisioning_sigkill: "provisioning", Sigkill;
    #[ignore = "whole matrix only"] joined_sigkill: "joined", Sigkill;
    #[ignore = "whole matrix only"] cordoned_sigkill: "cordoned", Sigkill;
    #[ignore = "whole matrix only"] verifying_sigkill: "verifying", Sigkill;
    #[ignore = "whole matrix only"] removing_sigkill: "removing", Sigkill;
    #[ignore = "whole matrix only"] joined_leader_handover: "joined", LeaderHandover;
    #[ignore = "whole matrix only"] cordoned_leader_handover: "cordoned", LeaderHandover;
    #[ignore = "whole matrix only"] draining_leader_handover: "draining", LeaderHandover;
    #[ignore = "whole matrix only"] verifying_leader_handover: "verifying", LeaderHandover;
    #[ignore = "whole matrix only"] removing_leader_handover: "removing", LeaderHandover;
    #[ignore = "whole matrix only"] rollback_leader_handover: "rollback", LeaderHandover;
    #[ignore = "whole matrix only"] preflight_api_server_restart: "preflight", ApiServerRestart;
    #[ignore = "whole matrix only"] provisioning_api_server_restart: "provisioning", ApiServerRestart;
    #[ignore = "whole matrix only"] joined_api_server_restart: "joined", ApiServerRestart;
    #[ignore = "whole matrix only"] cordoned_api_server_restart: "cordoned", ApiServerRestart;
    #[ignore = "whole matrix only"] verifying_api_server_restart: "verifying", ApiServerRestart;
    #[ignore = "whole matrix only"] removing_api_server_restart: "removing", ApiServerRestart;
    #[ignore = "whole matrix only"] rollback_api_server_restart: "rollback", ApiServerRestart;
    #[ignore = "whole matrix only"] provisioning_person_cordons_other_node: "provisioning", PersonCordonsOtherNode;
    #[ignore = "whole matrix only"] joined_person_cordons_other_node: "joined", PersonCordonsOtherNode;
    #[ignore = "whole matrix only"] cordoned_person_cordons_other_node: "cordoned", PersonCordonsOtherNode;
    #[ignore = "whole matrix only"] rollback_person_cordons_other_node: "rollback", PersonCordonsOtherNode;
    #[ignore = "whole matrix only"] provisioning_person_deletes_replacement: "provisioning", PersonDeletesReplacement;
    #[ignore = "whole matrix only"] cordoned_person_deletes_replacement: "cordoned", PersonDeletesReplacement;
    #[ignore = "whole matrix only"] draining_person_deletes_replacement: "draining", PersonDeletesReplacement;
    #[ignore = "whole matrix only"] rollback_person_deletes_replacement: "rollback", PersonDeletesReplacement;
    #[ignore = "whole matrix only"] preflight_person_deletes_rebalance: "preflight", PersonDeletesRebalance;
    #[ignore = "whole matrix only"] provisioning_person_deletes_rebalance: "provisioning", PersonDeletesRebalance;
    #[ignore = "whole matrix only"] joined_person_deletes_rebalance: "joined", PersonDeletesRebalance;
    #[ignore = "whole matrix only"] cordoned_person_deletes_rebalance: "cordoned", PersonDeletesRebalance;
    #[ignore = "whole matrix only"] removing_person_deletes_rebalance: "removing", PersonDeletesRebalance;
    #[ignore = "whole matrix only"] rollback_person_deletes_rebalance: "rollback", PersonDeletesRebalance;
    #[ignore = "whole matrix only"] joined_offering_removed: "joined", OfferingRemoved;
    #[ignore = "whole matrix only"] draining_offering_removed: "draining", OfferingRemoved;
    #[ignore = "whole matrix only"] joined_max_nodes_lowered: "joined", MaxNodesLowered;
    #[ignore = "whole matrix only"] draining_max_nodes_lowered: "draining", MaxNodesLowered;
}
