//! A rebalance whose moved workload does not come back: the old node drains, but its Deployment cannot
//! get back to its desired ready replicas (the group is at maxNodes and the replacement is full), so
//! the workload health check fails and the operation rolls back. New unschedulable pods are tolerated
//! by this suite's config, so the trigger is the workload check and not cluster degradation.

mod support;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;
use support::{
    eventually,
    fixtures::running_app_pods,
    rebalance::{WAIT, create, group_on_dearer_plan, labelled, picture, reaches, rebalance, settles_to},
    stack::Stack,
};
use vpsie_autoscaler::crd::{RebalancePhase, rebalance::RollbackTrigger};

fn stack() -> &'static Stack {
    support::stack::stack(
        "nodeLifecycle:\n  provisioningTimeout: 30s\n  joiningTimeout: 30s\n  drainTimeout: 20s\n\
         rebalancer:\n  clusterHealth:\n    maxNewUnschedulablePods: 10\n",
    )
}

#[tokio::test]
async fn a_workload_that_does_not_become_healthy_again_after_the_drain_rolls_the_operation_back() {
    let s = stack();
    let setup = group_on_dearer_plan(s, "rb-health", 1).await;
    let groups: Api<vpsie_autoscaler::crd::NodeGroup> = Api::namespaced(setup.client.clone(), &setup.ns.name);
    groups.patch("pool", &PatchParams::default(), &Patch::Merge(json!({"spec": {"maxNodes": 2}}))).await.unwrap();
    let before = picture(s, &setup).await;
    let old_node = setup.nodes.keys().next().unwrap().clone();
    let api = create(&setup, &rebalance("unhealthy", &setup, &[&old_node], json!({"drainTimeout": "8s"}))).await;
    reaches(&api, "unhealthy", RebalancePhase::Running).await;
    // A second replica: it takes the replacement, so the pod moved off the old node finds no room and the
    // group may not grow past the old node and its replacement.
    let deployments: Api<Deployment> = Api::namespaced(setup.client.clone(), &setup.ns.name);
    deployments.patch("app", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 2}}))).await.unwrap();
    let rolling_back = reaches(&api, "unhealthy", RebalancePhase::RollingBack).await;
    let record = rolling_back.status.as_ref().unwrap().rollback.clone().unwrap();
    assert_eq!(record.trigger, RollbackTrigger::WorkloadUnhealthy, "{record:?}");
    assert!(record.reason.contains("1 of 2 replicas ready"), "{record:?}");
    deployments.patch("app", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}}))).await.unwrap();
    reaches(&api, "unhealthy", RebalancePhase::RolledBack).await;
    settles_to(s, &setup, &before).await;
    assert!(labelled(&setup.client, &setup.ns.name).await.is_empty());
    let pods: Api<Pod> = Api::namespaced(setup.client.clone(), &setup.ns.name);
    eventually("the app runs on the old node again", WAIT, || async {
        (running_app_pods(&pods).await == 1).then_some(())
    })
    .await;
}
