//! The alerts, their promtool unit tests and the dashboard speak about what the controller really
//! exports: every metric they name is on `/metrics`, and every label they match or group by is one
//! that metric carries (or one Prometheus adds when scraping).
//!
//! The exposition is produced by the real registry: every metric family of the process, each with at
//! least one series, the VPSie ones through the metered client talking to the loopback simulator.

mod cloud_common;

use std::collections::{BTreeMap, BTreeSet};

use prometheus_client::{encoding::text::encode, registry::Registry};
use serde_json::Value;
use vpsie_autoscaler::{
    cloud::{
        CloudProvider,
        metered::Metered,
        sim::LoopbackSim,
        vpsie::{Credentials, VpsieClient},
    },
    kube_requests::KubeRequests,
    metrics::{
        ControllerLabel, ErrorLabels, GroupLabel, KindLabel, Metrics, OperationLabels, OperationResult, PhaseLabel,
        RebalanceOperation, ReconcileLabels, ResultLabel, TriggerLabel,
    },
};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Labels Prometheus attaches to every scraped series, and the bucket bound of histograms.
const SCRAPE_LABELS: [&str; 5] = ["job", "instance", "pod", "namespace", "le"];

/// Series names (`foo_total`, `foo_bucket`, ...) with the labels each carries.
type Exported = BTreeMap<String, BTreeSet<String>>;

async fn exposition() -> String {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let kube = KubeRequests::register(&mut registry);
    kube.count(&http::Method::GET, &"/api/v1/nodes?watch=true".parse().unwrap());

    let sim = LoopbackSim::start(cloud_common::sim_config(), None).await.expect("loopback simulator");
    let client = VpsieClient::new(
        cloud_common::client_config(sim.base_url()),
        Credentials::client_credentials(cloud_common::CLIENT_ID, cloud_common::CLIENT_SECRET),
    )
    .unwrap();
    client.register_metrics(&mut registry);
    let cloud = Metered::new(client, &mut registry);
    let datacenter = sim.sim.lock().world.clusters[0].datacenter.clone();
    cloud.offerings(&datacenter).await.expect("the simulator lists offerings");
    let _ = cloud.offerings("no-such-datacenter").await;

    // One series in every family, so each family's labels show.
    let c = &metrics.controller;
    c.reconciles.get_or_create(&ReconcileLabels { controller: "vpsienode", result: "success" }).inc();
    c.errors.get_or_create(&ErrorLabels { controller: "vpsienode", kind: "kube" }).inc();
    c.duration.get_or_create(&ControllerLabel { controller: "vpsienode" }).observe(0.1);
    let l = &metrics.lifecycle;
    l.cloud_errors.get_or_create(&KindLabel { kind: "quota_exceeded" }).inc();
    l.scale_ups.get_or_create(&ResultLabel { result: "requested" }).inc();
    l.scale_downs.get_or_create(&ResultLabel { result: "success" }).inc();
    l.vpsienodes.get_or_create(&PhaseLabel { phase: "Ready" }).set(1);
    l.phase_age_max.get_or_create(&PhaseLabel { phase: "Ready" }).set(1.0);
    l.group_size.get_or_create(&GroupLabel { namespace: "team".into(), nodegroup: "pool".into() }).set(1);
    l.passes.get_or_create(&TriggerLabel { trigger: "event" }).inc();
    let r = &metrics.rebalancer;
    r.operations
        .get_or_create(&OperationLabels { operation: RebalanceOperation::rollback, result: OperationResult::failure })
        .inc();

    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    text
}

fn exported(text: &str) -> Exported {
    let mut out = Exported::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, labels) = match line.split_once('{') {
            Some((name, rest)) => (name, rest.split_once('}').map(|(l, _)| l).unwrap_or_default()),
            None => (line.split_whitespace().next().unwrap_or_default(), ""),
        };
        let keys = labels.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, _)| k.trim().to_string());
        out.entry(name.to_string()).or_default().extend(keys);
    }
    out
}

/// Identifiers in a PromQL expression, with quoted strings blanked out.
fn tokens(expr: &str) -> Vec<(usize, String)> {
    let mut blanked = String::with_capacity(expr.len());
    let mut quote = None;
    for c in expr.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {
                blanked.push(' ');
                continue;
            }
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None => {}
        }
        blanked.push(c);
    }
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in blanked.char_indices().chain([(blanked.len(), ' ')]) {
        let word = c.is_ascii_alphanumeric() || c == '_' || c == ':';
        match (start, word) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                out.push((s, blanked[s..i].to_string()));
                start = None;
            }
            _ => {}
        }
    }
    out.into_iter().filter(|(_, t)| !t.chars().next().unwrap().is_ascii_digit()).collect()
}

/// Problems with one expression: unknown metrics of ours, and labels no metric of the expression has.
fn check(expr: &str, exported: &Exported) -> Vec<String> {
    let mut problems = Vec::new();
    let ours = |t: &str| t.starts_with("vpsie_") || t.starts_with("rebalancer_");
    let metrics: Vec<String> = tokens(expr).into_iter().map(|(_, t)| t).filter(|t| ours(t)).collect();
    let mut known_labels: BTreeSet<String> = SCRAPE_LABELS.iter().map(|s| s.to_string()).collect();
    for m in &metrics {
        match exported.get(m) {
            Some(labels) => known_labels.extend(labels.iter().cloned()),
            None => problems.push(format!("`{m}` is not exported")),
        }
    }
    known_labels.extend(created_labels(expr));
    // Label names: before a matcher operator inside braces, and inside by/without/on/ignoring lists.
    for (pos, tok) in &tokens(expr) {
        let after = expr[pos + tok.len()..].trim_start();
        let in_braces = expr[..*pos].rfind('{').is_some_and(|o| expr[..*pos].rfind('}').is_none_or(|c| c < o));
        let is_matcher = in_braces && (after.starts_with('=') || after.starts_with("!="));
        let in_grouping = expr[..*pos].rfind('(').is_some_and(|open| {
            let before = expr[..open].trim_end();
            ["by", "without", "on", "ignoring", "group_left", "group_right"].iter().any(|k| before.ends_with(k))
                && expr[open..*pos].find(')').is_none()
        });
        if (is_matcher || in_grouping) && !ours(tok) && tok != "__name__" && !known_labels.contains(tok) {
            problems.push(format!("label `{tok}` is on none of [{}]", metrics.join(", ")));
        }
    }
    problems
}

/// Labels an expression makes itself: the destination (second argument) of `label_replace` and
/// `label_join`.
fn created_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for f in ["label_replace(", "label_join("] {
        for (at, _) in expr.match_indices(f) {
            let mut depth = 0;
            let rest = &expr[at + f.len()..];
            let Some(comma) = rest.char_indices().find_map(|(i, c)| {
                match c {
                    '(' | '{' | '[' => depth += 1,
                    ')' | '}' | ']' => depth -= 1,
                    ',' if depth == 0 => return Some(i),
                    _ => {}
                }
                None
            }) else {
                continue;
            };
            let after = rest[comma + 1..].trim_start();
            if let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'')
                && let Some(end) = after[1..].find(q)
            {
                out.push(after[1..1 + end].to_string());
            }
        }
    }
    out
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(format!("{REPO}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn rules() -> Vec<Value> {
    yaml("deploy/prometheus/rules.yaml")["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn every_alert_names_only_metrics_and_labels_the_controller_exports() {
    let exported = exported(&exposition().await);
    assert!(exported.contains_key("rebalancer_operations_total"), "{exported:?}");
    assert!(exported["vpsie_api_requests_total"].contains("code"), "{exported:?}");
    let mut problems = Vec::new();
    for rule in rules() {
        let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap_or("?").to_string();
        for p in check(rule["expr"].as_str().expect("expr"), &exported) {
            problems.push(format!("{name}: {p}"));
        }
        if rule["alert"].is_string() {
            let url = rule["annotations"]["runbook_url"].as_str().unwrap_or_default();
            let file = url.rsplit_once("/blob/main/").map(|(_, f)| f).unwrap_or_default();
            if file.is_empty() || !std::path::Path::new(REPO).join(file).is_file() {
                problems.push(format!("{name}: runbook_url {url:?} does not point at a runbook in docs/runbooks"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn the_rule_tests_feed_series_the_controller_really_exports() {
    let exported = exported(&exposition().await);
    let dir = format!("{REPO}/deploy/prometheus/tests");
    let mut problems = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        files += 1;
        let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for test in doc["tests"].as_array().into_iter().flatten() {
            for input in test["input_series"].as_array().into_iter().flatten() {
                let series = input["series"].as_str().unwrap_or_default();
                let name = series.split('{').next().unwrap().trim();
                if name == "up" {
                    continue;
                }
                let Some(labels) = exported.get(name) else {
                    problems.push(format!("{}: `{name}` is not exported", path.display()));
                    continue;
                };
                let body = series.split_once('{').and_then(|(_, r)| r.rsplit_once('}')).map(|(l, _)| l).unwrap_or("");
                for key in body.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, _)| k.trim()) {
                    if !labels.contains(key) && !SCRAPE_LABELS.contains(&key) {
                        problems.push(format!("{}: `{name}` has no label `{key}`", path.display()));
                    }
                }
            }
        }
    }
    assert!(files > 0, "no promtool test files in {dir}");
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn every_dashboard_panel_queries_only_exported_metrics() {
    let exported = exported(&exposition().await);
    let text = std::fs::read_to_string(format!("{REPO}/deploy/grafana/vpsie-autoscaler.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(e)) = map.get("expr") {
                    out.push(e.clone());
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dashboard["panels"], &mut exprs);
    assert!(exprs.len() >= 8, "the dashboard has panels with queries: {}", exprs.len());
    let problems: Vec<String> =
        exprs.iter().flat_map(|e| check(e, &exported).into_iter().map(move |p| format!("{e}: {p}"))).collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_checker_catches_an_unknown_metric_and_a_foreign_label() {
    let mut exported = Exported::new();
    exported.insert("vpsie_api_requests_total".into(), ["endpoint", "method", "code"].map(String::from).into());
    assert!(check(r#"sum by (code) (rate(vpsie_api_requests_total{code!="ok"}[5m]))"#, &exported).is_empty());
    let wrong = check(r#"sum by (phase) (rate(vpsie_api_request_total{code!="ok"}[5m]))"#, &exported);
    assert!(wrong.iter().any(|p| p.contains("vpsie_api_request_total")), "{wrong:?}");
    let wrong = check(r#"sum by (phase) (rate(vpsie_api_requests_total{nodegroup="a"}[5m]))"#, &exported);
    assert!(
        wrong.iter().any(|p| p.contains("`phase`")) && wrong.iter().any(|p| p.contains("`nodegroup`")),
        "{wrong:?}"
    );
    let renamed = r#"max by (dc) (label_replace(vpsie_api_requests_total, "dc", "$1", "endpoint", "(.*)"))"#;
    assert!(check(renamed, &exported).is_empty(), "a label made by label_replace is known");
}
