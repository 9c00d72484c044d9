//! Quiet periodic passes end to end: with a periodic pass every second and a whole pass due only every
//! hour, an idle cluster skips its periodic passes; a change no event signals (a new PDB) brings one
//! back; and a node that turns unneeded is still removed once its unneeded timer lifts, by a periodic
//! pass that only the timer can have started.

mod support;

use std::{sync::Mutex, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod, policy::v1::PodDisruptionBudget};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{env, eventually, fixtures, stack::Stack};
use vpsie_autoscaler::crd::{NodeGroup, VPSieNode, VPSieNodePhase};

const WAIT: Duration = Duration::from_secs(90);
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn stack() -> &'static Stack {
    support::stack::stack(
        "autoscaling:\n  passInterval: 1s\n  fullPassInterval: 1h\n\
         nodeLifecycle:\n  provisioningTimeout: 30s\n  joiningTimeout: 30s\n  drainTimeout: 8s\n",
    )
}

const SKIPPED: &str = "vpsie_autoscaler_planning_passes_skipped_total";
const PERIODIC: &str = "vpsie_autoscaler_planning_passes_total{trigger=\"periodic\"}";

/// Waits until `n` periodic ticks in a row were skipped with no periodic pass among them; returns the
/// periodic pass count then.
async fn quiet_for(s: &Stack, n: u64) -> u64 {
    // (periodic passes, skipped ticks) when the current streak started.
    let streak: Mutex<Option<(u64, u64)>> = Mutex::new(None);
    eventually(&format!("{n} periodic ticks skipped in a row"), WAIT, || async {
        let (periodic, skipped) = (s.counter(PERIODIC).await, s.counter(SKIPPED).await);
        let mut streak = streak.lock().unwrap();
        match *streak {
            Some((p, k)) if p == periodic => (skipped >= k + n).then_some(periodic),
            _ => {
                *streak = Some((periodic, skipped));
                None
            }
        }
    })
    .await
}

#[tokio::test]
async fn an_idle_cluster_skips_its_periodic_passes_until_a_change_no_event_signals() {
    let _turn = SERIAL.lock().await;
    let s = stack();
    let env = env();
    let ns = env.namespace("quiet").await;
    let client = env.admin().await;
    let groups: Api<NodeGroup> = Api::namespaced(client.clone(), &ns.name);
    groups.create(&PostParams::default(), &fixtures::nodegroup(s, "pool", &ns.name, json!({}))).await.unwrap();
    eventually("the new group is planned for", WAIT, || async {
        let g = groups.get("pool").await.ok()?;
        (g.status?.observed_generation == g.metadata.generation).then_some(())
    })
    .await;

    let periodic = quiet_for(s, 5).await;

    // A PDB wakes nothing (it is no pending pod, no phase change), but scale-down reads it.
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "app"}}},
    }))
    .unwrap();
    Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
    eventually("a periodic pass after the PDB appeared", WAIT, || async {
        (s.counter(PERIODIC).await > periodic).then_some(())
    })
    .await;
    quiet_for(s, 3).await;
}

#[tokio::test]
async fn a_node_that_turns_unneeded_during_quiet_is_removed_once_its_timer_lifts() {
    let _turn = SERIAL.lock().await;
    let s = stack();
    let env = env();
    let ns = env.namespace("quiet-down").await;
    let client = env.admin().await;
    let scale_down = json!({"utilizationThresholdPercent": 50, "unneededTime": "15s", "cooldown": "1s"});
    Api::<NodeGroup>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &fixtures::nodegroup(s, "pool", &ns.name, json!({ "scaleDown": scale_down })))
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments.create(&PostParams::default(), &fixtures::app_deployment(&ns.name, 1, "700m", "256Mi")).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let vns: Api<VPSieNode> = Api::namespaced(client.clone(), &ns.name);
    eventually("the pod runs on a new node", WAIT, || async {
        (fixtures::running_app_pods(&pods).await == 1).then_some(())
    })
    .await;
    let ready = |list: &[VPSieNode]| {
        list.iter().filter(|v| v.status.as_ref().map(|s| s.phase) == Some(VPSieNodePhase::Ready)).count()
    };
    eventually("its VPSieNode is Ready", WAIT, || async {
        let list = vns.list(&ListParams::default()).await.ok()?.items;
        (list.len() == 1 && ready(&list) == 1).then_some(())
    })
    .await;

    // The load goes: the node turns unneeded, and nothing but its 15 s timer is left to start a pass.
    deployments.patch("app", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}}))).await.unwrap();
    eventually("the pod is gone", WAIT, || async {
        let left = pods.list(&ListParams::default().labels("app=app")).await.ok()?.items;
        left.is_empty().then_some(())
    })
    .await;
    let skipped_before = s.counter(SKIPPED).await;
    eventually("the unneeded node's VPSieNode removed", WAIT, || async {
        vns.list(&ListParams::default()).await.ok()?.items.is_empty().then_some(())
    })
    .await;
    let skipped = s.counter(SKIPPED).await - skipped_before;
    assert!(
        skipped >= 3,
        "periodic ticks were skipped while the timer ran, and the timer still ended the quiet: {skipped}"
    );
}
