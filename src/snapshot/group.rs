//! A NodeGroup and its VPSieNodes reduced to a [`GroupInfo`].
//!
//! Only reads: nothing here writes back to the object, so controller defaults never overwrite what a
//! user set (pitfall 13). Missing policy fields take the defaults of [`ScaleDownSettings`].

use std::time::Duration;

use super::{GroupInfo, OfferingInfo, ScaleDownSettings, Taint, TaintEffect};
use crate::crd::{
    KubeDuration, NodeGroup, VPSieNode, VPSieNodePhase,
    nodegroup::{ResourceRange, TaintEffect as CrdTaintEffect},
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node group {group}: {field}: {why}")]
pub struct GroupError {
    pub group: String,
    pub field: &'static str,
    pub why: String,
}

impl GroupInfo {
    /// Builds the planner's view of a group.
    ///
    /// `offerings` is the priced catalogue (or any part of it): only the plans the group allows, by
    /// `spec.offerings` and `spec.resources`, are kept. `vpsienodes` may hold every VPSieNode of the cluster;
    /// those of this group are counted as current (Ready), in flight (Pending, Provisioning, Joining) or
    /// leaving (Draining, Terminating, or being deleted; they still count against `maxNodes`).
    pub fn from_nodegroup(
        group: &NodeGroup,
        offerings: Vec<OfferingInfo>,
        vpsienodes: &[VPSieNode],
    ) -> Result<Self, GroupError> {
        let namespace = group.metadata.namespace.clone().unwrap_or_default();
        let name = group.metadata.name.clone().unwrap_or_default();
        let key = format!("{namespace}/{name}");
        let fail = |field, why: String| GroupError { group: key.clone(), field, why };
        let spec = &group.spec;
        let count = |field, value: i32| u32::try_from(value).map_err(|_| fail(field, format!("{value} is negative")));
        let duration = |field, value: Option<&KubeDuration>, default| match value {
            Some(d) => d.to_duration().map_err(|e| fail(field, e.to_string())),
            None => Ok(default),
        };

        let defaults = ScaleDownSettings::default();
        let down = spec.scale_down.clone().unwrap_or_default();
        let threshold = match down.utilization_threshold_percent {
            None => defaults.utilization_threshold_percent,
            Some(p @ 1..=100) => p as u8,
            Some(p) => return Err(fail("scaleDown.utilizationThresholdPercent", format!("{p} is not within 1..=100"))),
        };
        let scale_down = ScaleDownSettings {
            enabled: down.enabled.unwrap_or(defaults.enabled),
            utilization_threshold_percent: threshold,
            unneeded_time: duration("scaleDown.unneededTime", down.unneeded_time.as_ref(), defaults.unneeded_time)?,
            cooldown: duration("scaleDown.cooldown", down.cooldown.as_ref(), defaults.cooldown)?,
            allow_local_storage: down.allow_local_storage.unwrap_or(defaults.allow_local_storage),
            min_node_age: duration(
                "rebalance.minNodeAge",
                spec.rebalance.as_ref().and_then(|r| r.min_node_age.as_ref()),
                Duration::ZERO,
            )?,
        };
        let max_per_scale_up = match spec.scale_up.as_ref().and_then(|u| u.max_nodes_per_scale_up) {
            Some(n) => Some(count("scaleUp.maxNodesPerScaleUp", n)?),
            None => None,
        };

        let mut current_nodes = 0;
        let mut leaving_nodes = 0;
        let mut in_flight = Vec::new();
        let ours = vpsienodes
            .iter()
            .filter(|v| v.spec.node_group == name && v.metadata.namespace.as_deref().unwrap_or_default() == namespace);
        for vpsienode in ours {
            let phase = vpsienode.status.as_ref().map(|s| s.phase).unwrap_or_default();
            match phase {
                _ if vpsienode.metadata.deletion_timestamp.is_some() => leaving_nodes += 1,
                VPSieNodePhase::Pending | VPSieNodePhase::Provisioning | VPSieNodePhase::Joining => {
                    in_flight.push(vpsienode.spec.offering.clone())
                }
                VPSieNodePhase::Ready => current_nodes += 1,
                VPSieNodePhase::Draining | VPSieNodePhase::Terminating => leaving_nodes += 1,
                // A failed worker's VM is deleted by its finalizer; it holds no capacity and no slot.
                VPSieNodePhase::Failed => {}
            }
        }

        Ok(GroupInfo {
            min_nodes: count("minNodes", spec.min_nodes)?,
            max_nodes: count("maxNodes", spec.max_nodes)?,
            datacenter: spec.datacenter.clone(),
            labels: spec.labels.clone(),
            taints: spec
                .taints
                .iter()
                .map(|t| Taint {
                    key: t.key.clone(),
                    value: t.value.clone(),
                    effect: match t.effect {
                        CrdTaintEffect::NoSchedule => TaintEffect::NoSchedule,
                        CrdTaintEffect::PreferNoSchedule => TaintEffect::PreferNoSchedule,
                        CrdTaintEffect::NoExecute => TaintEffect::NoExecute,
                    },
                })
                .collect(),
            offerings: offerings
                .into_iter()
                .filter(|o| spec.offerings.as_ref().is_none_or(|allowed| allowed.contains(&o.id)))
                .filter(|o| spec.resources.as_ref().is_none_or(|range| in_range(o, range)))
                .collect(),
            current_nodes,
            leaving_nodes,
            in_flight,
            scale_up_enabled: spec.scale_up.as_ref().and_then(|u| u.enabled).unwrap_or(true),
            max_nodes_per_scale_up: max_per_scale_up,
            scale_down,
            last_scale_up: group.status.as_ref().and_then(|s| s.last_scale_up.as_ref()).map(|e| e.time.0),
            namespace,
            name,
        })
    }
}

fn in_range(offering: &OfferingInfo, range: &ResourceRange) -> bool {
    let cores = offering.cpu_millis / 1000;
    let mib = offering.memory_bytes >> 20;
    range.min_cpu.is_none_or(|min| cores >= i64::from(min))
        && range.max_cpu.is_none_or(|max| cores <= i64::from(max))
        && range.min_memory_mib.is_none_or(|min| mib >= min)
        && range.max_memory_mib.is_none_or(|max| mib <= max)
}
