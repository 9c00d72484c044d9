//! Leak sweep: a worker in one of our VPSie groups that no VPSieNode claims is a leak (an add whose answer
//! was lost and whose worker discovery gave up, or a VPSieNode removed by hand without its finalizer).
//! Such a worker is deleted once it has been unclaimed for longer than any discovery could take.
//!
//! Pipeline: observe (our VPSie groups and their workers, every VPSieNode), decide (unclaimed for longer
//! than the grace, and no add of that group still being discovered), act (delete by identifier),
//! report (Event on the NodeGroup, a log line, a metric).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use kube::{Resource, ResourceExt, runtime::events::EventType};

use super::{Context, Error};
use crate::{
    cloud::{deleted_or_gone, group_name},
    crd::{NodeGroup, VPSieNode, VPSieNodePhase},
};

/// Workers seen unclaimed, and since when (this replica's clock; a new leader starts over, which only
/// delays a sweep).
#[derive(Default)]
pub struct Sweep {
    unclaimed_since: BTreeMap<String, Instant>,
}

impl Sweep {
    pub async fn run(&mut self, ctx: &Context, groups: &[NodeGroup], vpsienodes: &[VPSieNode]) -> Result<(), Error> {
        let grace = ctx.lifecycle.provisioning_timeout + ctx.lifecycle.joining_timeout;
        let claimed: BTreeSet<&str> =
            vpsienodes.iter().filter_map(|v| v.status.as_ref()?.worker_identifier.as_deref()).collect();
        let mut seen = BTreeSet::new();
        let clusters: BTreeSet<&str> = groups.iter().map(|g| g.spec.cluster_identifier.as_str()).collect();
        for cluster in clusters {
            let cloud_groups = ctx.cloud.groups(cluster).await.map_err(|e| Error::cloud("list node groups", e))?;
            for group in groups.iter().filter(|g| g.spec.cluster_identifier == cluster) {
                let (ns, name) = (group.namespace().unwrap_or_default(), group.name_any());
                // By parsing, not by prefix: `web`'s prefix would match `web-2`'s groups. Names of the
                // old `vas-<ns>-<ng>-<plan>` scheme do not parse and are left alone (see `group_name`).
                for cg in cloud_groups.iter().filter(|cg| group_name::belongs_to(&cg.name, &ns, &name)) {
                    // An add to this group not yet matched to its worker: the unclaimed worker may be it.
                    let discovering = vpsienodes.iter().any(|v| {
                        v.status.as_ref().is_some_and(|s| {
                            s.phase == VPSieNodePhase::Provisioning
                                && s.worker_identifier.is_none()
                                && s.vpsie_group_id == Some(cg.id as i64)
                        })
                    });
                    let workers =
                        ctx.cloud.list_workers(cluster, cg.id).await.map_err(|e| Error::cloud("list workers", e))?;
                    for w in workers.into_iter().filter(|w| !claimed.contains(w.identifier.as_str())) {
                        seen.insert(w.identifier.clone());
                        let since = *self.unclaimed_since.entry(w.identifier.clone()).or_insert_with(Instant::now);
                        if discovering || since.elapsed() < grace {
                            continue;
                        }
                        deleted_or_gone(ctx.cloud.delete_worker(cluster, &w.identifier).await)
                            .map_err(|e| Error::cloud("delete orphan worker", e))?;
                        ctx.metrics.lifecycle.orphans_deleted.inc();
                        let note = format!(
                            "deleted worker {} ({}) of VPSie group {}: no VPSieNode claimed it for {}s",
                            w.identifier,
                            w.hostname,
                            cg.name,
                            since.elapsed().as_secs()
                        );
                        tracing::warn!(group = %group.name_any(), worker = %w.identifier, "{note}");
                        ctx.publish(&group.object_ref(&()), EventType::Warning, "OrphanWorkerDeleted", "Sweep", &note)
                            .await;
                        self.unclaimed_since.remove(&w.identifier);
                    }
                }
            }
        }
        self.unclaimed_since.retain(|id, _| seen.contains(id));
        Ok(())
    }
}

/// How often the sweep runs: it lists every group's workers, so not on every pass.
pub const SWEEP_EVERY: Duration = Duration::from_secs(15);
