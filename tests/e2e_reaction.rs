//! Event-driven planning end to end: with the periodic pass ten minutes away, a pod the scheduler gives
//! up on is still planned for within seconds, by the pass its watch event starts.

mod support;

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;
use support::{env, eventually, fixtures, stack::Stack};
use vpsie_autoscaler::crd::{NodeGroup, VPSieNode};

fn stack() -> &'static Stack {
    support::stack::stack("autoscaling:\n  passInterval: 10m\n  batchIdleDuration: 500ms\n")
}

/// The value of `vpsie_autoscaler_planning_passes_total{trigger}` on the controller's `/metrics`.
async fn passes(s: &Stack, trigger: &str) -> u64 {
    s.counter(&format!("vpsie_autoscaler_planning_passes_total{{trigger=\"{trigger}\"}}")).await
}

#[tokio::test]
async fn a_pending_pod_is_planned_for_by_its_watch_event_with_no_periodic_pass_in_between() {
    let s = stack();
    let env = env();
    let ns = env.namespace("react").await;
    let client = env.admin().await;
    let groups: Api<NodeGroup> = Api::namespaced(client.clone(), &ns.name);
    groups.create(&PostParams::default(), &fixtures::nodegroup(s, "pool", &ns.name, json!({}))).await.unwrap();

    // The new group wakes the loop; its pass writes the status that answers the group's generation.
    eventually("the new group is planned for", Duration::from_secs(30), || async {
        let g = groups.get("pool").await.ok()?;
        (g.status?.observed_generation == g.metadata.generation).then_some(())
    })
    .await;
    let periodic = passes(s, "periodic").await;
    assert_eq!(periodic, 1, "only the start-up pass may be periodic with a 10 min interval");
    let before = passes(s, "event").await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments.create(&PostParams::default(), &fixtures::app_deployment(&ns.name, 1, "700m", "256Mi")).await.unwrap();
    let vns: Api<VPSieNode> = Api::namespaced(client.clone(), &ns.name);
    eventually("a VPSieNode for the pending pod", Duration::from_secs(30), || async {
        let list = vns.list(&ListParams::default()).await.ok()?;
        (!list.items.is_empty()).then_some(())
    })
    .await;
    assert_eq!(passes(s, "periodic").await, periodic, "no periodic pass ran: the pod's event started the plan");
    assert!(passes(s, "event").await > before, "an event pass planned the VPSieNode");

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    eventually("the pod runs on its new node", Duration::from_secs(90), || async {
        (fixtures::running_app_pods(&pods).await == 1).then_some(())
    })
    .await;
}
