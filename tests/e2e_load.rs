//! Load: twenty NodeGroups scale up at once and back down while VPSie answers a third of all calls
//! with 429 for a minute. Every pod ends up running, every group gets exactly the workers it asked for
//! (the simulator's request log shows no add call that created a second worker), every worker goes
//! away again, and the client's rate-limit and breaker figures are reported.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::{Value, json};
use support::{TestNamespace, env, eventually, fixtures, stack::Stack};
use vpsie_autoscaler::crd::{NodeGroup, VPSieNode};

const GROUPS: usize = 20;
const WAIT: Duration = Duration::from_secs(420);

fn stack() -> &'static Stack {
    support::stack::stack("nodeLifecycle:\n  provisioningTimeout: 120s\n  joiningTimeout: 120s\n")
}

/// The sum of a metric's samples whose line contains `matcher`.
fn sum(metrics: &str, name: &str, matcher: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(matcher))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]

async fn twenty_groups_scale_up_and_down_through_a_rate_limit_storm_without_a_duplicate_add() {
    let s = stack();
    let env = env();
    let client = env.admin().await;
    let before = s.metrics().await;
    let storm = s
        .fault(json!({"probability": 0.33, "for_ms": 60000,
            "fault": {"kind": "rate_limit", "retry_after": {"style": "seconds", "secs": 1}}}))
        .await;

    let mut namespaces: Vec<TestNamespace> = Vec::new();
    for _ in 0..GROUPS {
        let ns = env.namespace("load").await;
        let spec = json!({"scaleDown": {"unneededTime": "5s", "cooldown": "0s"}});
        let groups: Api<NodeGroup> = Api::namespaced(client.clone(), &ns.name);
        groups.create(&PostParams::default(), &fixtures::nodegroup(s, "pool", &ns.name, spec)).await.unwrap();
        let deployment = fixtures::app_deployment(&ns.name, 1, "1500m", "256Mi");
        Api::<Deployment>::namespaced(client.clone(), &ns.name)
            .create(&PostParams::default(), &deployment)
            .await
            .unwrap();
        namespaces.push(ns);
    }
    for ns in &namespaces {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
        eventually(&format!("the pod of {} runs", ns.name), WAIT, || async {
            (fixtures::running_app_pods(&pods).await == 1).then_some(())
        })
        .await;
    }
    let up = s.metrics().await;
    drop(storm);

    // One worker per group, and one successful add call for it: no duplicate.
    let log: Value = reqwest::get(format!("{}/_sim/requests", s.sim_url)).await.unwrap().json().await.unwrap();
    let mut added: BTreeMap<String, usize> = BTreeMap::new();
    for r in log.as_array().into_iter().flatten() {
        let path = r["path"].as_str().unwrap_or_default();
        if path.contains("/add/slave/group/") && r["status"].as_u64() == Some(200) && r["faults"] == json!([]) {
            *added.entry(path.rsplit('/').next().unwrap_or_default().to_string()).or_default() += 1;
        }
    }
    let mut groups_seen = 0;
    for ns in &namespaces {
        let vns = Api::<VPSieNode>::namespaced(client.clone(), &ns.name).list(&ListParams::default()).await.unwrap();
        assert_eq!(vns.items.len(), 1, "{}: one VPSieNode for one pod", ns.name);
        let group = vns.items[0].status.as_ref().and_then(|st| st.vpsie_group_id).expect("VPSie group recorded");
        assert_eq!(added.get(&group.to_string()), Some(&1), "{}: exactly one add call created a worker", ns.name);
        groups_seen += 1;
    }
    assert_eq!(groups_seen, GROUPS);

    // Down again: the pods go, the nodes turn unneeded and every worker is released.
    for ns in &namespaces {
        Api::<Deployment>::namespaced(client.clone(), &ns.name).delete("app", &DeleteParams::default()).await.unwrap();
    }
    eventually("every group is back to zero workers", WAIT, || async {
        for ns in &namespaces {
            let vns = Api::<VPSieNode>::namespaced(client.clone(), &ns.name).list(&ListParams::default()).await.ok()?;
            if !vns.items.is_empty() {
                return None;
            }
        }
        Some(())
    })
    .await;
    let in_groups: Vec<String> = namespaces.iter().map(|ns| format!("-{}-", ns.name)).collect();
    eventually("the simulator holds no worker of these groups", WAIT, || async {
        let state = s.sim_state().await;
        let ids: Vec<u64> = state["clusters"][0]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["name"].as_str().is_some_and(|n| in_groups.iter().any(|m| n.contains(m))))
            .filter_map(|g| g["id"].as_u64())
            .collect();
        let live = state["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w["group"].as_u64().is_some_and(|g| ids.contains(&g)))
            .filter(|w| {
                !matches!(w["phase"].as_str().map(str::to_ascii_lowercase).as_deref(), Some("gone" | "deleting"))
            })
            .count();
        (live == 0).then_some(())
    })
    .await;

    let end = s.metrics().await;
    let limited = sum(&up, "vpsie_api_requests_total", "code=\"rate_limited\"")
        - sum(&before, "vpsie_api_requests_total", "code=\"rate_limited\"");
    let calls = sum(&end, "vpsie_api_requests_total", "") - sum(&before, "vpsie_api_requests_total", "");
    let storm_hits = log.as_array().into_iter().flatten().filter(|r| r["status"].as_u64() == Some(429)).count();
    eprintln!(
        "LOAD groups={GROUPS} api_operations={calls} operations_ending_rate_limited={limited} \
         http_429_answered={storm_hits} breaker_state_at_end={}",
        sum(&end, "vpsie_api_circuit_breaker_state", "")
    );
    assert!(storm_hits > 0, "the storm did answer 429s");
}
