//! One planning pass at scale, over generated clusters: the snapshot from real `Node`/`PDB` objects and the
//! pod cache's converted pods (as the controller builds it), then scale-up, scale-down and the rebalance
//! analysis, each timed separately and as a whole; and, apart, converting every `Pod` from scratch.
//! Prints min / median / max over several runs per size. Run with `scripts/bench-planning` (release build).
//!
//! The clusters: 10 NodeGroups (3 offerings each, two of them tainted), 8-core / 32 GiB nodes about 70 % full
//! with 30 pods each, ~300 Deployments (node selectors, some tolerations, a PDB each, some with required
//! node affinity), a DaemonSet pod per node, and 50 pending pods to give scale-up something to plan.

use std::{
    collections::BTreeMap,
    hint::black_box,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use k8s_openapi::api::{
    core::v1::{Node, Pod},
    policy::v1::PodDisruptionBudget,
};
use serde_json::json;
use vpsie_autoscaler::{
    rebalance::{GroupSettings, Input, Worker, analyse},
    scale::{down::plan_scale_down, up::plan_scale_up},
    snapshot::{GroupInfo, OfferingInfo, PodRecord, ScaleDownSettings, Snapshot, pod_record},
};

const GROUPS: usize = 10;
const PODS_PER_NODE: usize = 30;
const DEPLOYMENTS: usize = 300;
const GI: i64 = 1 << 30;

struct Cluster {
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    pdbs: Vec<PodDisruptionBudget>,
    groups: Vec<GroupInfo>,
    workers: BTreeMap<String, Worker>,
    settings: BTreeMap<String, GroupSettings>,
}

fn group_name(g: usize) -> String {
    format!("g{g}")
}

fn generate(nodes: usize) -> Cluster {
    let created = "2026-11-01T00:00:00Z";
    let mut out = Cluster {
        nodes: Vec::with_capacity(nodes),
        pods: Vec::with_capacity(nodes * (PODS_PER_NODE + 1)),
        pdbs: Vec::new(),
        groups: Vec::new(),
        workers: BTreeMap::new(),
        settings: BTreeMap::new(),
    };
    for g in 0..GROUPS {
        let offerings = vec![
            OfferingInfo::new("small", 4000, 16 * GI, 0.06),
            OfferingInfo::new("large", 8000, 32 * GI, 0.11),
            OfferingInfo::new("xlarge", 16000, 64 * GI, 0.20),
        ];
        let taints = if g < 2 {
            vec![vpsie_autoscaler::snapshot::Taint::new(
                "dedicated",
                Some(&group_name(g)),
                vpsie_autoscaler::snapshot::TaintEffect::NoSchedule,
            )]
        } else {
            vec![]
        };
        out.groups.push(GroupInfo {
            namespace: "default".into(),
            name: group_name(g),
            min_nodes: 0,
            max_nodes: (nodes / GROUPS + 50) as u32,
            datacenter: "dc".into(),
            labels: BTreeMap::from([("pool".to_string(), group_name(g))]),
            taints,
            offerings,
            current_nodes: (nodes / GROUPS) as u32,
            in_flight: vec![],
            leaving_nodes: 0,
            scale_up_enabled: true,
            max_nodes_per_scale_up: None,
            scale_down: ScaleDownSettings { unneeded_time: Duration::ZERO, ..Default::default() },
            last_scale_up: None,
        });
        out.settings.insert(
            format!("default/{}", group_name(g)),
            GroupSettings {
                enabled: true,
                min_savings_percent: 10,
                min_node_age: Duration::ZERO,
                backoff_until: None,
                window_opened: None,
            },
        );
    }
    for d in 0..DEPLOYMENTS {
        out.pdbs.push(
            serde_json::from_value(json!({
                "metadata": {"name": format!("d{d}"), "namespace": "default"},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": format!("d{d}")}}},
                "status": {"disruptionsAllowed": if d % 7 == 0 { 0 } else { 1 }, "currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3},
            }))
            .unwrap(),
        );
    }
    let pod = |name: String, node: Option<&str>, d: usize, g: usize, cpu: u32, kind: &str| -> Pod {
        let mut spec = json!({
            "containers": [{"name": "c", "image": "pause", "resources": {"requests": {"cpu": format!("{cpu}m"), "memory": format!("{}Mi", cpu * 3)}}}],
            "nodeSelector": {"pool": group_name(g)},
        });
        if g < 2 {
            spec["tolerations"] =
                json!([{"key": "dedicated", "operator": "Equal", "value": group_name(g), "effect": "NoSchedule"}]);
        }
        if d.is_multiple_of(5) {
            spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}});
        }
        let mut status = json!({"phase": "Running"});
        if let Some(n) = node {
            spec["nodeName"] = json!(n);
        } else {
            status = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": created}]});
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": format!("d{d}")}, "creationTimestamp": created,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": format!("d{d}-rs"), "uid": format!("u{d}"), "controller": true}]},
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    };
    for n in 0..nodes {
        let g = n % GROUPS;
        let name = format!("node-{n:05}");
        let mut taints = json!([]);
        if g < 2 {
            taints = json!([{"key": "dedicated", "value": group_name(g), "effect": "NoSchedule"}]);
        }
        out.nodes.push(
            serde_json::from_value(json!({
                "metadata": {"name": name, "creationTimestamp": created, "labels": {
                    "autoscaler.vpsie.com/nodegroup": group_name(g), "pool": group_name(g),
                    "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name}},
                "spec": {"taints": taints},
                "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                    "conditions": [{"type": "Ready", "status": "True"}]},
            }))
            .unwrap(),
        );
        out.workers.insert(
            name.clone(),
            Worker {
                vpsienode: format!("default/vn-{n}"),
                offering: "large".into(),
                hourly_price: 0.11,
                created_by_rebalance: None,
            },
        );
        out.pods.push(pod(format!("ds-{n}"), Some(&name), 0, g, 100, "DaemonSet"));
        // Nodes of every tenth index are nearly empty, so scale-down has real candidates to weigh.
        let count = if n % 10 == 9 { 3 } else { PODS_PER_NODE };
        for p in 0..count {
            let d = (g + GROUPS * ((n * PODS_PER_NODE + p) % (DEPLOYMENTS / GROUPS))) % DEPLOYMENTS;
            out.pods.push(pod(format!("p-{n}-{p}"), Some(&name), d, g, 180, "ReplicaSet"));
        }
    }
    for p in 0..50 {
        let g = p % GROUPS;
        out.pods.push(pod(format!("pending-{p}"), None, g, g, 500, "ReplicaSet"));
    }
    out
}

struct Timings {
    snapshot: Vec<Duration>,
    up: Vec<Duration>,
    down: Vec<Duration>,
    analysis: Vec<Duration>,
    total: Vec<Duration>,
    convert: Vec<Duration>,
}

impl Timings {
    fn new() -> Self {
        Self { snapshot: vec![], up: vec![], down: vec![], analysis: vec![], total: vec![], convert: vec![] }
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// One pass as the controller runs it: the pods come from the watch cache, converted when they changed
/// (`records`); nodes and PDBs are converted in the pass. The cold conversion of every pod, which a pass
/// paid before the cache and the controller now pays once at start, is timed beside it.
fn pass(c: &Cluster, records: &[PodRecord], t: &mut Timings) {
    let now: Timestamp = "2026-11-29T12:00:00Z".parse().unwrap();
    let (converted, dc) = timed(|| c.pods.iter().map(pod_record).collect::<Vec<_>>());
    black_box(&converted);
    t.convert.push(dc);
    let (snapshot, ds) = timed(|| Snapshot::from_records(&c.nodes, records.iter().cloned(), &c.pdbs, c.groups.clone()));
    let (up, du) = timed(|| plan_scale_up(&snapshot, now));
    let (down, dd) = timed(|| plan_scale_down(&snapshot, now, &Default::default()));
    let (analysis, da) =
        timed(|| analyse(&Input { snapshot: &snapshot, settings: &c.settings, workers: &c.workers, now }));
    black_box((&up, &down, &analysis));
    t.snapshot.push(ds);
    t.up.push(du);
    t.down.push(dd);
    t.analysis.push(da);
    t.total.push(ds + du + dd + da);
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!("{:>9.1} {:>9.1} {:>9.1}", ms(v[0]), ms(v[v.len() / 2]), ms(v[v.len() - 1]))
}

fn main() {
    let sizes: Vec<usize> =
        std::env::args().skip(1).filter(|a| !a.starts_with('-')).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1000, 5000, 10000] } else { sizes };
    println!(
        "{:<8} {:<9} {:<10} {:>9} {:>9} {:>9}  (ms: min median max)",
        "nodes", "pods", "step", "min", "median", "max"
    );
    for nodes in sizes {
        let cluster = generate(nodes);
        let runs = if nodes <= 1000 {
            9
        } else if nodes <= 5000 {
            5
        } else {
            3
        };
        let records: Vec<PodRecord> = cluster.pods.iter().map(pod_record).collect();
        let mut t = Timings::new();
        pass(&cluster, &records, &mut t); // warm-up
        t = Timings::new();
        for _ in 0..runs {
            pass(&cluster, &records, &mut t);
        }
        let pods = cluster.pods.len();
        for (step, v) in [
            ("snapshot", t.snapshot),
            ("scale-up", t.up),
            ("scale-down", t.down),
            ("rebalance", t.analysis),
            ("whole", t.total),
            ("all-pods-converted", t.convert),
        ] {
            println!("{nodes:<8} {pods:<9} {step:<10} {}", stats(v));
        }
    }
}
