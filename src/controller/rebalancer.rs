//! The rebalancer's own starts, run by the autoscaling loop on the leader: observe (the pass's snapshot,
//! the NodeGroups, VPSieNodes and Rebalances), decide (`rebalance::propose` and the analysis), act (create
//! one `Rebalance` per due group; the Rebalance controller carries it out), report (a `RebalanceDeferred`
//! Event on the group when it has candidates but may not start now, saying why).

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, PostParams},
    runtime::events::EventType,
};

use super::{Context, Error};
use crate::{
    crd::{NodeGroup, Rebalance, VPSieNode},
    rebalance::{
        Input, analyse,
        plan::{settings, workers},
        propose::{NotNow, PastOperation, may_start, proposal},
    },
    snapshot::Snapshot,
};

pub async fn start_due(
    ctx: &Context,
    snapshot: &Snapshot,
    groups: &[NodeGroup],
    vpsienodes: &[VPSieNode],
    rebalances: &[Rebalance],
) -> Result<(), Error> {
    let now = Timestamp::now();
    let mut all_settings = settings(&ctx.config, groups);
    let mut due = BTreeMap::new();
    for group in groups {
        let key = format!("{}/{}", group.namespace().unwrap_or_default(), group.name_any());
        let policy = group.spec.rebalance.clone().unwrap_or_default();
        let effective = ctx.config.rebalancer.effective(Some(&policy));
        let past: Vec<PastOperation> = rebalances
            .iter()
            .filter(|r| r.namespace() == group.namespace() && r.spec.node_group == group.name_any())
            .map(|r| {
                let status = r.status.clone().unwrap_or_default();
                let rolled_back_at =
                    status.rollback.as_ref().map(|rb| rb.completed_at.as_ref().unwrap_or(&rb.started_at).0);
                PastOperation { name: r.name_any(), phase: status.phase, rolled_back_at }
            })
            .collect();
        let verdict = may_start(effective.enabled, &policy.maintenance_windows, &past, now);
        if let Some(s) = all_settings.get_mut(&key) {
            s.window_opened = verdict.as_ref().ok().copied();
            if let Err(NotNow::Backoff { until }) = &verdict {
                s.backoff_until = Some(*until);
            }
        }
        due.insert(key, (group, effective, verdict));
    }
    if due.values().all(|(_, e, _)| !e.enabled) {
        return Ok(());
    }
    let workers = workers(vpsienodes, snapshot);
    let analysis = analyse(&Input { snapshot, settings: &all_settings, workers: &workers, now });
    for (key, (group, effective, verdict)) in due {
        let Some(spec) = proposal(&analysis, &key, &group.name_any(), &effective) else { continue };
        let saving: f64 = spec.replacements.iter().map(|r| r.old_hourly_price - r.new_hourly_price).sum();
        match verdict {
            Ok(_) => create(ctx, group, spec, saving).await?,
            Err(NotNow::Disabled | NotNow::Running(_)) => {}
            Err(why) => {
                let note = format!(
                    "{} node(s) could move to cheaper offerings, saving {saving:.4} USD/h, but not now: {why}",
                    spec.replacements.len()
                );
                ctx.publish(&group.object_ref(&()), EventType::Normal, "RebalanceDeferred", "Rebalance", &note).await;
            }
        }
    }
    Ok(())
}

async fn create(ctx: &Context, group: &NodeGroup, spec: crate::crd::RebalanceSpec, saving: f64) -> Result<(), Error> {
    let ns = group.namespace().unwrap_or_default();
    let name = format!("{}-{}", group.name_any(), Timestamp::now().as_second());
    let rb = Rebalance {
        metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(ns.clone()), ..Default::default() },
        spec,
        status: None,
    };
    let replacements = rb.spec.replacements.len();
    let api: Api<Rebalance> = Api::namespaced(ctx.client.clone(), &ns);
    // The watch may not show an operation created a moment ago: ask the API server before starting one.
    let existing = api.list(&Default::default()).await.map_err(|source| Error::Read { kind: "Rebalance", source })?;
    if existing.items.iter().any(|r| {
        r.spec.node_group == group.name_any() && !r.status.as_ref().map(|s| s.phase).unwrap_or_default().is_terminal()
    }) {
        return Ok(());
    }
    match api.create(&PostParams::default(), &rb).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
        Err(source) => return Err(Error::write("Rebalance", source)),
    }
    let note = format!("started rebalance {name}: {replacements} node(s), saving {saving:.4} USD/h");
    tracing::info!(group = %format!("{ns}/{}", group.name_any()), rebalance = %name, replacements, saving, "rebalancer started an operation in the maintenance window");
    ctx.publish(&group.object_ref(&()), EventType::Normal, "RebalanceStarted", "Rebalance", &note).await;
    Ok(())
}
