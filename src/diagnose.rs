//! `vpsie-autoscaler diagnose`: the rollback runbook's escalation bundle in one command.
//!
//! Observe (each part read on its own, so that one refusal or timeout costs that part only), write (one
//! file per part into the output directory), report (`summary.txt`: what looks wrong first, then
//! counts, then what could not be collected and why). Nothing in the cluster or at VPSie is changed.
//!
//! Credentials never enter the bundle: the Secret is read only by the VPSie client setup, which keeps
//! them inside redacting types, and the reachability part records an outcome kind, never a message
//! that could echo a request.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use jiff::Timestamp;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Event, Node, Pod},
};
use kube::{Api, Client, Resource, ResourceExt, api::ListParams};
use prometheus_client::registry::Registry;
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    cli::DiagnoseArgs,
    controller::rebalance::objects::is_ready,
    crd::{NODEGROUP_LABEL, NodeGroup, REBALANCE_LABEL, Rebalance, RebalancePhase, VPSieNode, VPSieNodePhase},
};

/// What the bundle found, for the summary.
#[derive(Default)]
struct Findings {
    /// Things an operator should look at first.
    attention: Vec<String>,
    /// Counts and facts.
    facts: Vec<String>,
    /// Parts that could not be collected, with why.
    missing: Vec<String>,
}

pub async fn diagnose(args: DiagnoseArgs) -> anyhow::Result<()> {
    let out = args.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let client = crate::run::kube_client(args.run.kubeconfig.as_deref()).await?;
    let mut f = Findings::default();

    let groups = objects::<NodeGroup>(&client, &out, "nodegroups.yaml", &mut f).await;
    let vpsienodes = objects::<VPSieNode>(&client, &out, "vpsienodes.yaml", &mut f).await;
    let rebalances = objects::<Rebalance>(&client, &out, "rebalances.yaml", &mut f).await;
    summarise_objects(&groups, &vpsienodes, &rebalances, &mut f);
    let holder = lease(&client, &args, &out, &mut f).await;
    nodes(&client, &out, &mut f).await;
    pending_pods(&client, &out, &mut f).await;
    events(&client, &out, args.since, &mut f).await;
    metrics(&client, &args, holder.as_deref(), &out, &mut f).await;
    vpsie(&client, &args, &groups, &out, &mut f).await;

    let summary = render_summary(&f);
    write(&out, "summary.txt", &summary, &mut f);
    print!("{summary}");
    println!("bundle written to {}", out.display());
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str, f: &mut Findings) {
    if let Err(e) = std::fs::write(dir.join(name), text) {
        f.missing.push(format!("{name}: cannot write: {e}"));
    }
}

/// Every object of kind `K` in the cluster, written as YAML without managed fields.
async fn objects<K>(client: &Client, dir: &Path, file: &str, f: &mut Findings) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    match api.list(&ListParams::default()).await {
        Ok(list) => {
            let mut items = list.items;
            for item in &mut items {
                item.meta_mut().managed_fields = None;
            }
            match serde_saphyr::to_string(&items) {
                Ok(text) => write(dir, file, &text, f),
                Err(e) => f.missing.push(format!("{file}: cannot render: {e}")),
            }
            items
        }
        Err(e) => {
            f.missing.push(format!("{file}: listing {} failed: {e}", K::plural(&())));
            Vec::new()
        }
    }
}

fn summarise_objects(groups: &[NodeGroup], vpsienodes: &[VPSieNode], rebalances: &[Rebalance], f: &mut Findings) {
    f.facts.push(format!("NodeGroups: {}", groups.len()));
    let mut by_phase: BTreeMap<&str, usize> = BTreeMap::new();
    for vn in vpsienodes {
        let phase = vn.status.as_ref().map(|s| s.phase).unwrap_or_default();
        *by_phase.entry(phase.as_str()).or_default() += 1;
        if phase == VPSieNodePhase::Failed {
            let reason = vn.status.as_ref().and_then(|s| s.reason.clone()).unwrap_or_default();
            f.attention.push(format!(
                "VPSieNode {}/{} is Failed ({reason})",
                vn.namespace().unwrap_or_default(),
                vn.name_any()
            ));
        }
    }
    f.facts.push(format!("VPSieNodes by phase: {by_phase:?}"));
    let running: Vec<&Rebalance> = rebalances
        .iter()
        .filter(|r| {
            let phase = r.status.as_ref().map(|s| s.phase).unwrap_or_default();
            matches!(
                phase,
                RebalancePhase::Pending
                    | RebalancePhase::PreFlight
                    | RebalancePhase::Running
                    | RebalancePhase::RollingBack
            )
        })
        .collect();
    for rb in rebalances {
        let status = rb.status.as_ref();
        let phase = status.map(|s| s.phase).unwrap_or_default();
        if matches!(phase, RebalancePhase::RollingBack | RebalancePhase::RolledBack | RebalancePhase::Failed) {
            let reason = status.and_then(|s| s.reason.clone()).unwrap_or_default();
            f.attention.push(format!(
                "Rebalance {}/{} is {} ({reason})",
                rb.namespace().unwrap_or_default(),
                rb.name_any(),
                phase.as_str()
            ));
        }
    }
    f.facts.push(format!("Rebalances: {} ({} not ended)", rebalances.len(), running.len()));
    let labelled: Vec<String> = vpsienodes
        .iter()
        .filter(|vn| vn.labels().contains_key(REBALANCE_LABEL))
        .map(|vn| format!("{}/{}", vn.namespace().unwrap_or_default(), vn.name_any()))
        .collect();
    if !labelled.is_empty() && running.is_empty() {
        f.attention.push(format!("{REBALANCE_LABEL} label on VPSieNodes with no Rebalance running: {labelled:?}"));
    }
}

/// The leader-election Lease; returns its holder.
async fn lease(client: &Client, args: &DiagnoseArgs, dir: &Path, f: &mut Findings) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &args.run.lease_namespace);
    match api.get(&args.run.lease_name).await {
        Ok(lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.filter(|h| !h.is_empty());
            let renewed = spec.renew_time.map(|t| t.0.to_string()).unwrap_or_else(|| "never".into());
            let text = format!(
                "lease: {}/{}\nholder: {}\nrenewed: {renewed}\ntransitions: {}\n",
                args.run.lease_namespace,
                args.run.lease_name,
                holder.as_deref().unwrap_or("(none)"),
                spec.lease_transitions.unwrap_or_default()
            );
            write(dir, "lease.txt", &text, f);
            match &holder {
                Some(h) => f.facts.push(format!("leader: {h} (renewed {renewed})")),
                None => f.attention.push("no replica holds the leader Lease: nothing is acting".into()),
            }
            holder
        }
        Err(e) => {
            f.missing.push(format!(
                "lease.txt: reading Lease {}/{} failed: {e}",
                args.run.lease_namespace, args.run.lease_name
            ));
            None
        }
    }
}

/// Every node in one line each; cordoned ones also in the summary, saying whether we cordoned them.
async fn nodes(client: &Client, dir: &Path, f: &mut Findings) {
    let api: Api<Node> = Api::all(client.clone());
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => return f.missing.push(format!("nodes.txt: listing nodes failed: {e}")),
    };
    let mut text = String::from("NAME\tREADY\tSCHEDULABLE\tNODEGROUP\tREBALANCE\tTAINTS\n");
    let mut cordoned = Vec::new();
    for node in &list {
        let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
        let labels = node.labels();
        let taints: Vec<String> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect();
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{}\t{}",
            node.name_any(),
            is_ready(node),
            !unschedulable,
            labels.get(NODEGROUP_LABEL).map(String::as_str).unwrap_or("-"),
            labels.get(REBALANCE_LABEL).map(String::as_str).unwrap_or("-"),
            taints.join(",")
        );
        if unschedulable {
            cordoned.push(node.name_any());
        }
    }
    write(dir, "nodes.txt", &text, f);
    f.facts.push(format!("nodes: {} ({} cordoned)", list.len(), cordoned.len()));
    if !cordoned.is_empty() {
        f.attention.push(format!("cordoned nodes: {cordoned:?}"));
    }
}

async fn pending_pods(client: &Client, dir: &Path, f: &mut Findings) {
    let api: Api<Pod> = Api::all(client.clone());
    let list = match api.list(&ListParams::default().fields("status.phase=Pending")).await {
        Ok(l) => l.items,
        Err(e) => return f.missing.push(format!("pods-pending.txt: listing pending pods failed: {e}")),
    };
    let mut text = String::from("NAMESPACE/NAME\tNODE\tSCHEDULING\n");
    for pod in &list {
        let scheduled = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
            .map(|c| format!("{} {}", c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
            .unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_else(|| "-".into());
        let _ =
            writeln!(text, "{}/{}\t{node}\t{}", pod.namespace().unwrap_or_default(), pod.name_any(), scheduled.trim());
    }
    write(dir, "pods-pending.txt", &text, f);
    f.facts.push(format!("pending pods: {}", list.len()));
}

/// Events our controller reported, or about our kinds, newer than `since`, oldest first.
async fn events(client: &Client, dir: &Path, since: Duration, f: &mut Findings) {
    let api: Api<Event> = Api::all(client.clone());
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => return f.missing.push(format!("events.txt: listing events failed: {e}")),
    };
    let cutoff = Timestamp::now() - jiff::SignedDuration::try_from(since).unwrap_or_default();
    let ours = |e: &Event| {
        e.reporting_component.as_deref() == Some("vpsie-autoscaler")
            || matches!(e.involved_object.kind.as_deref(), Some("NodeGroup" | "VPSieNode" | "Rebalance"))
    };
    let when = |e: &Event| {
        e.last_timestamp.as_ref().map(|t| t.0).or(e.event_time.as_ref().map(|t| t.0)).or(e
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0))
    };
    let mut picked: Vec<(Timestamp, &Event)> =
        list.iter().filter(|e| ours(e)).filter_map(|e| when(e).map(|t| (t, e))).filter(|(t, _)| *t >= cutoff).collect();
    picked.sort_by_key(|(t, _)| *t);
    let mut text = String::from("TIME\tTYPE\tREASON\tOBJECT\tMESSAGE\n");
    let mut warnings = 0;
    for (t, e) in &picked {
        let kind = e.involved_object.kind.clone().unwrap_or_default();
        let object = match &e.involved_object.namespace {
            Some(ns) => format!("{kind}/{ns}/{}", e.involved_object.name.clone().unwrap_or_default()),
            None => format!("{kind}/{}", e.involved_object.name.clone().unwrap_or_default()),
        };
        let type_ = e.type_.clone().unwrap_or_default();
        warnings += usize::from(type_ == "Warning");
        let message = e.message.clone().unwrap_or_default().replace('\n', " ");
        let _ = writeln!(text, "{t}\t{type_}\t{}\t{object}\t{message}", e.reason.clone().unwrap_or_default());
    }
    write(dir, "events.txt", &text, f);
    f.facts.push(format!("events of ours in the last {}s: {} ({warnings} warnings)", since.as_secs(), picked.len()));
}

/// The leader's `/metrics`: from `--metrics-url`, else through the API server's proxy to the holder pod.
async fn metrics(client: &Client, args: &DiagnoseArgs, holder: Option<&str>, dir: &Path, f: &mut Findings) {
    let fetched = match (&args.metrics_url, holder) {
        (Some(url), _) => fetch_url(url).await,
        (None, Some(pod)) => {
            let path = format!(
                "/api/v1/namespaces/{}/pods/{pod}:{}/proxy/metrics",
                args.run.lease_namespace,
                args.run.metrics_addr.port()
            );
            match http::Request::get(path).body(Vec::new()) {
                Ok(req) => client.request_text(req).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
        (None, None) => Err("no leader to ask (pass --metrics-url)".into()),
    };
    match fetched {
        Ok(text) => {
            let rollbacks = series_sum(&text, "rebalancer_operations_total", "operation=\"rollback\"");
            let failures = series_sum(&text, "rebalancer_operations_total", "result=\"failure\"");
            f.facts
                .push(format!("leader metrics: {rollbacks} rollbacks, {failures} failed operations since its start"));
            write(dir, "metrics.txt", &text, f);
        }
        Err(e) => f.missing.push(format!("metrics.txt: {e}")),
    }
}

async fn fetch_url(url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
    let resp = client.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    resp.text().await.map_err(|e| format!("GET {url}: {e}"))
}

/// The sum of a metric's samples whose labels contain `matcher`.
fn series_sum(text: &str, name: &str, matcher: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(matcher))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Whether the VPSie API answers with the controller's credentials: one read of the catalogue of the
/// first group's datacenter.
async fn vpsie(client: &Client, args: &DiagnoseArgs, groups: &[NodeGroup], dir: &Path, f: &mut Findings) {
    let secret = format!("{}/{}", args.run.vpsie_secret_namespace, args.run.vpsie_secret);
    let mut registry = Registry::default();
    let cloud = match crate::cloud_setup::provider(client, &args.run, &Default::default(), &mut registry).await {
        Ok(c) => c,
        Err(e) => {
            // The setup's errors name the Secret and what is wrong with it, never its values.
            let line = format!("VPSie API: not checked: {e:#}");
            f.attention.push(line.clone());
            return write(dir, "vpsie.txt", &format!("credentials secret: {secret}\n{line}\n"), f);
        }
    };
    let Some(datacenter) = groups.first().map(|g| g.spec.datacenter.clone()) else {
        f.facts.push("VPSie API: not checked (no NodeGroup names a datacenter)".into());
        return write(dir, "vpsie.txt", &format!("credentials secret: {secret}\nnot checked: no NodeGroup\n"), f);
    };
    let start = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(60), cloud.offerings(&datacenter)).await;
    let took = start.elapsed().as_millis();
    let line = match outcome {
        Ok(Ok(offerings)) => format!("VPSie API: reachable ({} offerings in {datacenter}, {took} ms)", offerings.len()),
        Ok(Err(e)) => format!("VPSie API: listing offerings of {datacenter} failed: {} after {took} ms", e.kind()),
        Err(_) => format!("VPSie API: no answer within 60 s (offerings of {datacenter})"),
    };
    if line.contains("reachable") {
        f.facts.push(line.clone());
    } else {
        f.attention.push(line.clone());
    }
    write(dir, "vpsie.txt", &format!("credentials secret: {secret}\n{line}\n"), f);
}

fn render_summary(f: &Findings) -> String {
    let mut s = format!("vpsie-autoscaler diagnose, {}\n\n", Timestamp::now());
    let mut section = |title: &str, lines: &[String], empty: &str| {
        let _ = writeln!(s, "{title}:");
        if lines.is_empty() {
            let _ = writeln!(s, "  {empty}");
        }
        for l in lines {
            let _ = writeln!(s, "  - {l}");
        }
        s.push('\n');
    };
    section("Needs attention", &f.attention, "nothing");
    section("State", &f.facts, "-");
    section("Not collected", &f.missing, "everything was collected");
    s
}

/// The default output directory: `vpsie-diagnose-<UTC time>` in the working directory.
pub fn default_out() -> PathBuf {
    PathBuf::from(format!("vpsie-diagnose-{}", Timestamp::now().strftime("%Y%m%dT%H%M%SZ")))
}
