//! The Helm chart, rendered and linted by the real helm (built from its Go module by testenv/build.sh):
//! it lints clean, its schema turns bad values away naming the key, the names it wires together agree
//! (Lease, Secret, ServiceAccount), and it renders the alert rules and the dashboard it ships.

mod support;

use std::process::Command;

use serde_json::Value;
use vpsie_autoscaler::config::Config;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/chart/vpsie-autoscaler");

/// The helm binary: `$HELM`, else the one testenv/build.sh built.
fn helm() -> String {
    std::env::var("HELM").unwrap_or_else(|_| support::built_tool("TESTENV_HELM"))
}

/// Runs helm; returns (success, stdout + stderr).
fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(helm()).args(args).output().expect("run helm");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The chart rendered as release `release` in `namespace` with `--set` values, as JSON documents.
fn render(release: &str, namespace: &str, sets: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", release, CHART, "--namespace", namespace, "--kube-version", "v1.30.0"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, text) = run(&args);
    assert!(ok, "helm template failed: {text}");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("helm renders YAML");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} rendered"))
}

#[test]
fn the_chart_lints_clean_in_strict_mode() {
    let (ok, text) = run(&["lint", CHART, "--strict"]);
    assert!(ok, "helm lint --strict failed: {text}");
    assert!(text.contains("0 chart(s) failed"), "{text}");
}

#[test]
fn the_schema_rejects_bad_values_naming_the_key_to_fix() {
    for (set, key) in [
        ("config.rebalancer.strategy=blue-green", "/config/rebalancer/strategy"),
        ("config.rebalancer.maxConcurrent=0", "/config/rebalancer/maxConcurrent"),
        ("config.rebalancer.drainTimeout=5 minutes", "/config/rebalancer/drainTimeout"),
        ("config.rebalancr.maxConcurrent=2", "rebalancr"),
        ("replicaCount=0", "/replicaCount"),
        ("vpsie.token=secret-value", "token"),
        ("securityContext.readOnlyRootFilesystem=false", "/securityContext/readOnlyRootFilesystem"),
        ("image.digest=latest", "/image/digest"),
    ] {
        let (ok, text) = run(&["lint", CHART, "--strict", "--set", set]);
        assert!(!ok, "--set {set} was accepted");
        assert!(text.contains(key), "the error for --set {set} does not name {key}: {text}");
    }
}

#[test]
fn the_rendered_config_is_one_the_controller_accepts_with_the_runbook_safe_defaults() {
    let docs = render("vpsie-autoscaler", "kube-system", &[]);
    let text = find(&docs, "ConfigMap")["data"]["config.yaml"].as_str().expect("config.yaml").to_string();
    let config = Config::parse(&text, "chart ConfigMap").unwrap();
    let r = &config.rebalancer;
    assert_eq!(r.max_concurrent, 1);
    assert!(r.rollback_on_failure);
    assert_eq!(r.drain_timeout.to_duration().unwrap().as_secs(), 300);
    assert_eq!(r.health_check_interval.to_duration().unwrap().as_secs(), 10);
}

#[test]
fn a_release_wires_its_lease_secret_and_account_names_into_both_the_role_and_the_arguments() {
    let docs = render("ops", "platform", &["vpsie.credentialsSecret=vpsie-prod"]);
    let deployment = find(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let args: Vec<&str> = pod["containers"][0]["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let arg = |flag: &str| {
        args.iter().find_map(|a| a.strip_prefix(&format!("--{flag}="))).unwrap_or_else(|| panic!("no --{flag}"))
    };
    assert_eq!(arg("lease-name"), "ops-vpsie-autoscaler");
    assert_eq!(arg("lease-namespace"), "platform");
    assert_eq!(arg("vpsie-secret"), "vpsie-prod");
    assert_eq!(arg("vpsie-secret-namespace"), "platform");

    let role = find(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "platform");
    let names_for = |resource: &str| -> Vec<String> {
        role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["resources"].as_array().unwrap().iter().any(|x| x == resource))
            .flat_map(|r| r["resourceNames"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    };
    assert_eq!(names_for("leases"), vec!["ops-vpsie-autoscaler"], "the Role names the Lease the controller uses");
    assert_eq!(names_for("secrets"), vec!["vpsie-prod"], "the Role lets it read exactly its credentials Secret");

    let account = find(&docs, "ServiceAccount")["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(pod["serviceAccountName"], account.as_str());
    let binding = find(&docs, "ClusterRoleBinding");
    assert_eq!(binding["subjects"][0]["name"], account.as_str());
    assert_eq!(binding["subjects"][0]["namespace"], "platform");
}

#[test]
fn the_deployment_runs_two_hardened_replicas_behind_a_disruption_budget() {
    let docs = render("vpsie-autoscaler", "kube-system", &[]);
    let deployment = find(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["requests"]["memory"].is_string(), "memory is requested");
    assert_eq!(container["env"][0]["name"], "POD_NAME", "the Lease names the pod that leads");
    let pdb = find(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"]);
    let service = find(&docs, "Service");
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    assert!(docs.iter().all(|d| d["kind"] != "Secret"), "the chart never creates the credentials Secret");
}

#[test]
fn the_monitoring_objects_carry_the_shipped_rules_and_dashboard_when_enabled() {
    let docs = render("vpsie-autoscaler", "kube-system", &[]);
    assert!(docs.iter().all(|d| d["kind"] != "PrometheusRule" && d["kind"] != "ServiceMonitor"), "off by default");

    let docs = render(
        "vpsie-autoscaler",
        "kube-system",
        &[
            "metrics.prometheusRule.enabled=true",
            "metrics.serviceMonitor.enabled=true",
            "metrics.grafanaDashboard.enabled=true",
        ],
    );
    let rules: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(format!("{REPO}/deploy/prometheus/rules.yaml")).unwrap())
            .unwrap();
    assert_eq!(find(&docs, "PrometheusRule")["spec"]["groups"], rules["groups"], "the PrometheusRule is rules.yaml");
    let alerts: Vec<&str> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter().filter_map(|r| r["alert"].as_str()))
        .collect();
    for runbook_alert in ["RebalancerRollbackTriggered", "RebalancerOperationFailed"] {
        assert!(alerts.contains(&runbook_alert), "{runbook_alert} missing from {alerts:?}");
    }
    assert_eq!(find(&docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"], "metrics");
    let dashboard_cm = docs.iter().find(|d| d["kind"] == "ConfigMap" && d["data"]["vpsie-autoscaler.json"].is_string());
    let shipped: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{REPO}/deploy/grafana/vpsie-autoscaler.json")).unwrap())
            .unwrap();
    let rendered: Value = serde_json::from_str(
        dashboard_cm.expect("the dashboard ConfigMap")["data"]["vpsie-autoscaler.json"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(rendered, shipped);
}
