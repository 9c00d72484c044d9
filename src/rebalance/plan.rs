//! `vpsie-autoscaler plan`: the rebalance analysis of a live cluster, printed without acting.
//!
//! Observe (NodeGroups, VPSieNodes, Nodes, Pods, PDBs and the VPSie catalogue, each read once), decide
//! ([`analyse`], the same pure analysis the rebalancer runs), report (a table or JSON on stdout). Nothing
//! is written anywhere.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::Context as _;
use jiff::Timestamp;
use k8s_openapi::api::{
    core::v1::{Node, Pod},
    policy::v1::PodDisruptionBudget,
};
use kube::{Api, Client, ResourceExt, api::ListParams};
use prometheus_client::registry::Registry;

use super::{Analysis, GroupSettings, Input, Worker, analyse};
use crate::{
    cli::{PlanArgs, PlanOutput},
    config::Config,
    crd::{CREATED_BY_REBALANCE_ANNOTATION, NodeGroup, VPSieNode},
    snapshot::{GroupInfo, Snapshot, offerings::allowed_offerings},
};

pub async fn plan(args: PlanArgs) -> anyhow::Result<()> {
    let config = match &args.run.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let client = crate::run::kube_client(args.run.kubeconfig.as_deref()).await?;
    let mut registry = Registry::default();
    let cloud = crate::cloud_setup::provider(&client, &args.run, &Default::default(), &mut registry).await?;

    let groups: Vec<NodeGroup> = list(&client, "NodeGroups").await?;
    let vpsienodes: Vec<VPSieNode> = list(&client, "VPSieNodes").await?;
    let nodes: Vec<Node> = list(&client, "Nodes").await?;
    let pods: Vec<Pod> = list(&client, "Pods").await?;
    let pdbs: Vec<PodDisruptionBudget> = list(&client, "PodDisruptionBudgets").await?;

    let mut catalogues = BTreeMap::new();
    let mut infos = Vec::new();
    for group in &groups {
        let dc = group.spec.datacenter.clone();
        if !catalogues.contains_key(&dc) {
            let catalogue = cloud.offerings(&dc).await.with_context(|| format!("listing the offerings of {dc}"))?;
            catalogues.insert(dc.clone(), catalogue);
        }
        let info = GroupInfo::from_nodegroup(group, allowed_offerings(&catalogues[&dc], group), &vpsienodes)?;
        infos.push(info);
    }
    let mut snapshot = Snapshot::from_k8s(&nodes, &pods, &pdbs, infos);
    snapshot.attribute_nodes(crate::controller::autoscale::node_owners(&vpsienodes));
    let settings = settings(&config, &groups);
    let workers = workers(&vpsienodes, &snapshot);
    let analysis =
        analyse(&Input { snapshot: &snapshot, settings: &settings, workers: &workers, now: Timestamp::now() });
    match args.output {
        PlanOutput::Json => println!("{}", serde_json::to_string_pretty(&analysis)?),
        PlanOutput::Table => print!("{}", table(&analysis)),
    }
    Ok(())
}

async fn list<K>(client: &Client, what: &str) -> anyhow::Result<Vec<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::all(client.clone());
    Ok(api.list(&ListParams::default()).await.with_context(|| format!("listing {what}"))?.items)
}

/// Each group's settings: its overrides over the config file's defaults. No rollback backoff or open
/// window is known outside the rebalancer, so none is applied here.
pub(crate) fn settings(config: &Config, groups: &[NodeGroup]) -> BTreeMap<String, GroupSettings> {
    groups
        .iter()
        .map(|g| {
            let effective = config.rebalancer.effective(g.spec.rebalance.as_ref());
            let key = format!("{}/{}", g.namespace().unwrap_or_default(), g.name_any());
            let settings = GroupSettings {
                enabled: effective.enabled,
                min_savings_percent: effective.min_savings_percent,
                min_node_age: effective.min_node_age,
                backoff_until: None,
                window_opened: None,
            };
            (key, settings)
        })
        .collect()
}

/// What each linked VPSieNode says of its node: offering and price (the catalogue's when the status has
/// none yet).
pub(crate) fn workers(vpsienodes: &[VPSieNode], snapshot: &Snapshot) -> BTreeMap<String, Worker> {
    vpsienodes
        .iter()
        .filter_map(|v| {
            let status = v.status.as_ref()?;
            let node = status.node_name.clone()?;
            let ns = v.namespace().unwrap_or_default();
            let catalogue_price = || {
                let group = snapshot.groups.iter().find(|g| g.namespace == ns && g.name == v.spec.node_group)?;
                Some(group.offering(&v.spec.offering)?.hourly_price)
            };
            let hourly_price = status.hourly_price.or_else(catalogue_price)?;
            let worker = Worker {
                vpsienode: format!("{ns}/{}", v.name_any()),
                offering: v.spec.offering.clone(),
                hourly_price,
                created_by_rebalance: v
                    .annotations()
                    .contains_key(CREATED_BY_REBALANCE_ANNOTATION)
                    .then(|| v.metadata.creation_timestamp.as_ref().map(|t| t.0))
                    .flatten(),
            };
            Some((node, worker))
        })
        .collect()
}

/// Candidates with their replacement and saving, then every other node with its reason.
pub fn table(analysis: &Analysis) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "CANDIDATES ({}; {:.4} USD/h saved in all)",
        analysis.candidates.len(),
        analysis.hourly_savings()
    );
    if !analysis.candidates.is_empty() {
        let _ = writeln!(
            out,
            "{:<24} {:<24} {:<12} {:>10} {:<12} {:>10} {:>10} {:>6}",
            "GROUP", "NODE", "FROM", "USD/H", "TO", "USD/H", "SAVED/H", "PODS"
        );
        for c in &analysis.candidates {
            let _ = writeln!(
                out,
                "{:<24} {:<24} {:<12} {:>10.4} {:<12} {:>10.4} {:>10.4} {:>6}",
                c.group,
                c.node,
                c.from_offering,
                c.from_hourly_price,
                c.to_offering,
                c.to_hourly_price,
                c.hourly_saving,
                c.pods
            );
        }
    }
    let _ = writeln!(out, "\nNOT CANDIDATES ({})", analysis.skipped.len());
    if !analysis.skipped.is_empty() {
        let _ = writeln!(out, "{:<24} {:<24} {:<22} WHY", "GROUP", "NODE", "REASON");
        for s in &analysis.skipped {
            let _ = writeln!(out, "{:<24} {:<24} {:<22} {}", s.group, s.node, s.reason.kind(), s.reason);
        }
    }
    out
}
