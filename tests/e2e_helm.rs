//! The chart installed with the real helm into the real control plane: the controller, run as the
//! chart's ServiceAccount with exactly the RBAC the chart created (Lease and credentials Secret in the
//! release namespace), scales a group up and back down; `helm uninstall` then leaves nothing of the
//! release behind but the CRDs.
//!
//! KWOK runs no containers, so the chart's Deployment cannot run our image here: its pods are kept off
//! every node (a nodeSelector no node has) and the controller runs as a local process instead, with
//! the arguments the Deployment would give it.

mod support;

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease, core::v1::Pod};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;
use support::{
    REPO, env, eventually, fixtures,
    stack::{Identity, Stack},
};
use vpsie_autoscaler::crd::{NodeGroup, VPSieNode};

const RELEASE: &str = "e2e-helm";
const NAMESPACE: &str = "e2e-helm-release";
/// What the chart names its ServiceAccount, Lease, Roles and Service for release `e2e-helm`.
const FULLNAME: &str = "e2e-helm-vpsie-autoscaler";

fn helm(args: &[&str]) -> (bool, String) {
    let env = env();
    let helm = env.vars.get("TESTENV_HELM").cloned().unwrap_or_else(|| support::built_tool("TESTENV_HELM"));
    let out = std::process::Command::new(helm).args(args).env("KUBECONFIG", env.kubeconfig()).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn identity() -> Identity {
    Identity {
        namespace: NAMESPACE.into(),
        service_account: FULLNAME.into(),
        lease: FULLNAME.into(),
        secret: "vpsie-credentials".into(),
    }
}

fn installed_stack() -> &'static Stack {
    support::stack::stack_as("", &identity(), || {
        // A release left by an interrupted earlier run would make install fail; start clean.
        let _ = helm(&["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"]);
        let (ok, text) = helm(&[
            "install",
            RELEASE,
            &format!("{REPO}/deploy/chart/vpsie-autoscaler"),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--set",
            "vpsie.credentialsSecret=vpsie-credentials",
            "--set",
            "nodeSelector.e2e-helm/no-such-node=none",
        ]);
        assert!(ok, "helm install failed: {text}");
        // Its pods could never run here and would stay Pending, which the rebalancer's pre-flight of
        // later suites on this control plane counts against the cluster.
        env().kubectl_ok(&["-n", NAMESPACE, "scale", "deployment", FULLNAME, "--replicas=0"]);
    })
}

/// Uninstalls the release when dropped, so a failed assertion leaves nothing for the suites after it.
struct Uninstall;

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = helm(&["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--ignore-not-found"]);
    }
}

/// Objects of the release that remain, by kind, cluster-wide and in the release namespace.
fn leftovers() -> Vec<String> {
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let mut left = Vec::new();
    for (scope, kinds) in [
        (None, "clusterroles,clusterrolebindings"),
        (
            Some(NAMESPACE),
            "deployments,replicasets,pods,services,configmaps,serviceaccounts,roles,rolebindings,poddisruptionbudgets,secrets",
        ),
    ] {
        let mut args = vec!["get", kinds, "-l", &selector, "-o", "name"];
        if let Some(ns) = scope {
            args.extend(["-n", ns]);
        }
        left.extend(env().kubectl_ok(&args).lines().map(String::from));
    }
    left
}

#[tokio::test]
async fn the_controller_works_with_the_rbac_the_chart_installs_and_uninstall_leaves_only_the_crds() {
    let s = installed_stack();
    let _uninstall = Uninstall;
    let env = env();
    let client = env.admin().await;
    assert!(!leftovers().is_empty(), "the release's objects exist after install");

    // The controller leads through the chart's Lease, in the release namespace.
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    eventually("the controller holds the chart's Lease", Duration::from_secs(30), || async {
        let lease = leases.get(FULLNAME).await.ok()?;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    })
    .await;

    // A group scales up for a pending pod and back down when the pod is gone.
    let ns = env.namespace("helm-app").await;
    let groups: Api<NodeGroup> = Api::namespaced(client.clone(), &ns.name);
    groups.create(&PostParams::default(), &fixtures::nodegroup(s, "pool", &ns.name, json!({}))).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments.create(&PostParams::default(), &fixtures::app_deployment(&ns.name, 1, "700m", "256Mi")).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    eventually("the pod runs on a node the controller added", Duration::from_secs(120), || async {
        (fixtures::running_app_pods(&pods).await == 1).then_some(())
    })
    .await;
    // The workload goes first, so that nothing asks for the node again while it is drained.
    deployments.delete("app", &DeleteParams::foreground()).await.unwrap();
    eventually("the app's pods are gone", Duration::from_secs(60), || async {
        pods.list(&ListParams::default().labels("app=app")).await.ok()?.items.is_empty().then_some(())
    })
    .await;
    let vns: Api<VPSieNode> = Api::namespaced(client.clone(), &ns.name);
    for vn in vns.list(&ListParams::default()).await.unwrap() {
        let _ = vns.delete(&vn.metadata.name.unwrap(), &DeleteParams::default()).await;
    }
    eventually("the worker is drained and released", Duration::from_secs(120), || async {
        let left = vns.list(&ListParams::default()).await.ok()?.items.len();
        (left == 0 && s.live_workers().await.is_empty()).then_some(())
    })
    .await;
    // An RBAC refusal names the user it refused ("is forbidden: User ... cannot <verb> resource");
    // other 403s (an Event into a namespace being deleted) are not about the chart.
    let log = s.controller_logs();
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("is forbidden: User")).collect();
    assert!(refusals.is_empty(), "the chart's RBAC refused calls the controller made:\n{}", refusals.join("\n"));

    let (ok, text) = helm(&["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"]);
    assert!(ok, "helm uninstall failed: {text}");
    eventually("nothing of the release is left", Duration::from_secs(60), || async {
        let left = leftovers();
        left.is_empty().then_some(()).or_else(|| {
            eprintln!("still there: {left:?}");
            None
        })
    })
    .await;
    for crd in ["nodegroups", "vpsienodes", "rebalances"] {
        env.kubectl_ok(&["get", "crd", &format!("{crd}.autoscaler.vpsie.com")]);
    }
}

/// `kubectl auth can-i --list` of the controller's account as (resource, resource names, verbs), without
/// what every authenticated user may do (self reviews, discovery URLs).
fn can_i(namespace: &str) -> std::collections::BTreeSet<String> {
    let out = env().kubectl_ok(&[
        "auth",
        "can-i",
        "--list",
        "--as",
        "system:serviceaccount:kube-system:vpsie-autoscaler",
        "-n",
        namespace,
    ]);
    out.lines()
        .skip(1)
        .filter_map(|line| {
            // Columns: resources, non-resource URLs, resource names, verbs (each `[...]` but the first).
            let (resource, rest) = line.trim().split_once(char::is_whitespace)?;
            let rest = rest.trim();
            if resource.starts_with('[') || resource.starts_with("self") || !rest.starts_with("[]") {
                return None;
            }
            let rest = rest.trim_start_matches("[]").trim();
            let (names, verbs) = rest.split_once(']')?;
            Some(format!("{resource} {}] {}", names.trim(), verbs.trim()))
        })
        .collect()
}

#[test]
fn the_controllers_account_can_do_exactly_what_the_code_needs() {
    let cluster_wide = [
        "events [] [create patch]",
        "events.events.k8s.io [] [create patch]",
        "nodegroups.autoscaler.vpsie.com [] [get list watch patch]",
        "nodegroups.autoscaler.vpsie.com/finalizers [] [update]",
        "nodegroups.autoscaler.vpsie.com/status [] [get patch]",
        "nodes [] [get list watch patch delete]",
        "poddisruptionbudgets.policy [] [get list watch]",
        // Reads for the pod cache and drains; delete only for a drain a NodeGroup allows to force.
        "pods [] [get list watch delete]",
        "pods/eviction [] [create]",
        "rebalances.autoscaler.vpsie.com [] [get list watch create patch delete]",
        "rebalances.autoscaler.vpsie.com/finalizers [] [update]",
        "rebalances.autoscaler.vpsie.com/status [] [get patch]",
        "replicasets.apps [] [get list watch]",
        "statefulsets.apps [] [get list watch]",
        "vpsienodes.autoscaler.vpsie.com [] [get list watch create patch delete]",
        "vpsienodes.autoscaler.vpsie.com/finalizers [] [update]",
        "vpsienodes.autoscaler.vpsie.com/status [] [get patch]",
    ];
    let want: std::collections::BTreeSet<String> = cluster_wide.iter().map(|s| s.to_string()).collect();
    let elsewhere = can_i("default");
    assert_eq!(elsewhere, want, "outside its namespace the account has only the ClusterRole's rights");

    let mut home = want.clone();
    home.extend([
        "leases.coordination.k8s.io [] [create]".to_string(),
        "leases.coordination.k8s.io [vpsie-autoscaler] [get update patch]".to_string(),
        "secrets [vpsie-secret] [get]".to_string(),
    ]);
    assert_eq!(can_i("kube-system"), home, "in kube-system: its Lease and its credentials Secret, by name");
}
