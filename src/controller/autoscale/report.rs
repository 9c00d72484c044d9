//! The report step of the autoscale pass: NodeGroup status and conditions, and the Events that explain
//! a pass. A pass runs every few seconds; an Event is published when what it says is new (or has not been
//! said for [`REPEAT`]), so a quiet cluster gets no writes from passes that change nothing.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Node, Pod},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams},
    runtime::events::EventType,
};
use serde_json::json;

use super::{belongs_to, key};
use crate::{
    controller::{Context, Error},
    crd::{
        FIELD_MANAGER, NodeGroup, NodeGroupStatus, VPSieNode, VPSieNodePhase,
        conditions::{condition, set_condition},
        nodegroup::ScaleEvent,
    },
    metrics::{GroupLabel, PhaseLabel},
    scale::{
        down::{Blocked, ScaleDownPlan},
        up::ScaleUpPlan,
    },
};

/// How often an unchanged explanation is published again, so it stays visible in `kubectl describe`
/// (the API server drops Events after an hour by default).
const REPEAT: Duration = Duration::from_secs(15 * 60);

/// What the last passes explained, by subject, and when.
#[derive(Debug, Default)]
pub struct Announced {
    said: HashMap<String, (String, Instant)>,
    seen: Vec<String>,
}

impl Announced {
    /// Whether `note` about `subject` should be published now: it is new, it changed, or it was last said
    /// [`REPEAT`] ago. Every subject asked about in a pass counts as still current for [`Announced::forget_rest`].
    pub fn is_news(&mut self, subject: &str, note: &str, now: Instant) -> bool {
        self.seen.push(subject.to_string());
        match self.said.get(subject) {
            Some((said, at)) if said == note && now.duration_since(*at) < REPEAT => false,
            _ => {
                self.said.insert(subject.to_string(), (note.to_string(), now));
                true
            }
        }
    }

    /// Forgets subjects not asked about since the last call, so a condition that clears and comes back is
    /// announced again.
    pub fn forget_rest(&mut self) {
        let seen: std::collections::HashSet<String> = self.seen.drain(..).collect();
        self.said.retain(|subject, _| seen.contains(subject));
    }
}

/// Events on pods no group can take and on nodes whose scale-down is blocked.
pub async fn events(ctx: &Context, announced: &mut Announced, up: &ScaleUpPlan, down: &ScaleDownPlan) {
    let now = Instant::now();
    for miss in &up.unschedulable {
        let note = miss.to_string();
        if !announced.is_news(&format!("pod {}/{}", miss.pod.namespace, miss.pod.name), &note, now) {
            continue;
        }
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(miss.pod.name.clone()),
                namespace: Some(miss.pod.namespace.clone()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let mut reference = pod.object_ref(&());
        // Events need the uid only for display grouping; namespace/name suffice for kubectl describe.
        reference.uid = None;
        ctx.publish(&reference, EventType::Warning, "NoNodeGroupFits", "Autoscale", &note).await;
    }
    for blocked in down.blocked.iter().filter(|b| !matches!(b.reason, Blocked::NotUnneededLongEnough { .. })) {
        let note = format!("scale-down of {} blocked: {}", blocked.node, blocked.reason);
        if !announced.is_news(&format!("node {}", blocked.node), &note, now) {
            continue;
        }
        // On the Node, where `kubectl describe node` shows it.
        let node = Node {
            metadata: ObjectMeta { name: Some(blocked.node.clone()), ..ObjectMeta::default() },
            ..Node::default()
        };
        ctx.publish(&node.object_ref(&()), EventType::Normal, "ScaleDownBlocked", blocked.reason.kind(), &note).await;
    }
    announced.forget_rest();
}

pub async fn write_group_status(
    ctx: &Context,
    group: &NodeGroup,
    vpsienodes: &[VPSieNode],
    up: &ScaleUpPlan,
    down: &ScaleDownPlan,
    added: Option<i32>,
    trouble: Option<&String>,
) -> Result<(), Error> {
    let ours: Vec<&VPSieNode> = vpsienodes.iter().filter(|v| belongs_to(v, group)).collect();
    let phase = |v: &VPSieNode| v.status.as_ref().map(|s| s.phase).unwrap_or_default();
    let current = ours
        .iter()
        // A Terminating worker is drained and on its way out even before its deletion is recorded.
        .filter(|v| {
            v.metadata.deletion_timestamp.is_none()
                && !matches!(phase(v), VPSieNodePhase::Failed | VPSieNodePhase::Terminating)
        })
        .count() as i32;
    let ready = ours.iter().filter(|v| phase(v) == VPSieNodePhase::Ready).count() as i32;
    let planned = up
        .group(&group.namespace().unwrap_or_default(), &group.name_any())
        .map(|g| g.nodes.len() as i32)
        .unwrap_or_default();
    let removing = down.remove.iter().filter(|r| r.group.name == group.name_any()).count() as i32;

    let old = group.status.clone().unwrap_or_default();
    let mut status = NodeGroupStatus {
        observed_generation: group.metadata.generation,
        current_nodes: current + added.unwrap_or_default(),
        desired_nodes: (current + planned - removing).clamp(group.spec.min_nodes, group.spec.max_nodes),
        ready_nodes: ready,
        ..old.clone()
    };
    // The VPSie groups outlive their workers, so ids once learned are kept.
    for v in &ours {
        if let Some(id) = v.status.as_ref().and_then(|s| s.vpsie_group_id) {
            status.vpsie_groups.insert(v.spec.offering.clone(), id);
        }
    }
    let now = Timestamp::now();
    if let Some(n) = added.filter(|n| *n > 0) {
        let why = up.group(&group.namespace().unwrap_or_default(), &group.name_any()).map(|g| g.to_string());
        status.last_scale_up = Some(ScaleEvent { time: Time(now), nodes: n, reason: why.unwrap_or_default() });
    }
    if removing > 0 {
        status.last_scale_down = Some(ScaleEvent { time: Time(now), nodes: removing, reason: "unneeded nodes".into() });
    }
    let generation = group.metadata.generation;
    let ready_ok = ready >= group.spec.min_nodes;
    set_condition(
        &mut status.conditions,
        condition(
            "Ready",
            ready_ok,
            if ready_ok { "MinNodesReady" } else { "BelowMinNodes" },
            format!("{ready} of at least {} nodes Ready", group.spec.min_nodes),
            generation,
        ),
        now,
    );
    let cloud_ok = trouble.is_none();
    set_condition(
        &mut status.conditions,
        condition(
            "CloudReachable",
            cloud_ok,
            if cloud_ok { "Ok" } else { "CloudError" },
            trouble.cloned().unwrap_or_default(),
            generation,
        ),
        now,
    );
    let blocked: Vec<String> = down
        .blocked
        .iter()
        .filter(|b| b.group.name == group.name_any() && b.group.namespace == group.namespace().unwrap_or_default())
        .map(|b| format!("{}: {}", b.node, b.reason))
        .collect();
    set_condition(
        &mut status.conditions,
        condition(
            "ScaleDownBlocked",
            !blocked.is_empty(),
            if blocked.is_empty() { "NoneBlocked" } else { "Blocked" },
            blocked.join("; "),
            generation,
        ),
        now,
    );
    ctx.metrics
        .lifecycle
        .group_size
        .get_or_create(&GroupLabel { namespace: group.namespace().unwrap_or_default(), nodegroup: group.name_any() })
        .set(i64::from(status.current_nodes));
    if status == old {
        return Ok(());
    }
    let api: Api<NodeGroup> = Api::namespaced(ctx.client.clone(), &group.namespace().unwrap_or_default());
    // Computed from the cached copy, so written only over that exact version: if the group moved on, the
    // next pass computes again from the newer copy instead of overwriting it.
    let patch = json!({
        "apiVersion": "autoscaler.vpsie.com/v1alpha1",
        "kind": "NodeGroup",
        "metadata": {"name": group.name_any(), "resourceVersion": group.metadata.resource_version},
        "status": status,
    });
    match api.patch_status(&group.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(_) => Ok(()),
        Err(source) => match Error::write("NodeGroup status", source) {
            Error::Conflict { .. } => {
                tracing::debug!(group = %key(group), "NodeGroup changed since it was cached; status written next pass");
                Ok(())
            }
            other => Err(other),
        },
    }
}

/// The VPSieNode count and oldest age per phase, as metrics.
pub fn phases<'a>(ctx: &Context, vpsienodes: impl IntoIterator<Item = &'a VPSieNode>, now: Timestamp) {
    for (phase, (n, oldest)) in phase_figures(vpsienodes, now) {
        ctx.metrics.lifecycle.vpsienodes.get_or_create(&PhaseLabel { phase }).set(n);
        ctx.metrics.lifecycle.phase_age_max.get_or_create(&PhaseLabel { phase }).set(oldest);
    }
}

/// Per phase (every phase, so each series exists): how many VPSieNodes are in it, and the seconds the
/// one longest in it has spent there. A VPSieNode with no recorded transition counts from its creation.
fn phase_figures<'a>(
    vpsienodes: impl IntoIterator<Item = &'a VPSieNode>,
    now: Timestamp,
) -> BTreeMap<&'static str, (i64, f64)> {
    let mut out: BTreeMap<&'static str, (i64, f64)> =
        VPSieNodePhase::ALL.iter().map(|p| (p.as_str(), (0, 0.0))).collect();
    for vn in vpsienodes {
        let status = vn.status.as_ref();
        let phase = status.map(|s| s.phase).unwrap_or_default().as_str();
        let since = status
            .and_then(|s| s.last_phase_transition.as_ref())
            .or(vn.metadata.creation_timestamp.as_ref())
            .map(|t| t.0);
        let age = since.map(|t| now.duration_since(t).as_secs_f64().max(0.0)).unwrap_or(0.0);
        let entry = out.entry(phase).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(age);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    use super::{Announced, phase_figures};
    use crate::crd::{VPSieNode, VPSieNodePhase, VPSieNodeSpec, VPSieNodeStatus};

    #[test]
    fn an_unchanged_explanation_is_published_once_until_it_changes_clears_or_grows_old() {
        let mut a = Announced::default();
        let t0 = Instant::now();
        assert!(a.is_news("node n1", "blocked: pdb web", t0));
        a.forget_rest();
        assert!(!a.is_news("node n1", "blocked: pdb web", t0 + Duration::from_secs(3)), "same note, next pass");
        a.forget_rest();
        assert!(a.is_news("node n1", "blocked: local storage", t0 + Duration::from_secs(6)), "the reason changed");
        a.forget_rest();
        a.forget_rest();
        assert!(a.is_news("node n1", "blocked: local storage", t0 + Duration::from_secs(9)), "it cleared in between");
        a.forget_rest();
        assert!(
            a.is_news("node n1", "blocked: local storage", t0 + Duration::from_secs(9 + 15 * 60)),
            "said 15 min ago"
        );
    }

    fn in_phase(name: &str, phase: VPSieNodePhase, since_secs_ago: i64) -> VPSieNode {
        let mut vn = VPSieNode::new(
            name,
            VPSieNodeSpec {
                node_group: "pool".into(),
                offering: "2".into(),
                cluster_identifier: "c".into(),
                datacenter: "d".into(),
            },
        );
        let since = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(since_secs_ago);
        vn.status = Some(VPSieNodeStatus { phase, last_phase_transition: Some(Time(since)), ..Default::default() });
        vn
    }

    #[test]
    fn phase_figures_count_every_phase_and_age_each_by_its_longest_resident() {
        let now = Timestamp::now();
        let nodes = [
            in_phase("a", VPSieNodePhase::Provisioning, 600),
            in_phase("b", VPSieNodePhase::Provisioning, 30),
            in_phase("c", VPSieNodePhase::Ready, 7200),
        ];
        let figures = phase_figures(&nodes, now);
        assert_eq!(figures.len(), VPSieNodePhase::ALL.len(), "every phase has its series");
        let (count, oldest) = figures["Provisioning"];
        assert_eq!(count, 2);
        assert!((599.0..=601.0).contains(&oldest), "the older Provisioning node counts: {oldest}");
        assert_eq!(figures["Joining"], (0, 0.0), "an empty phase reads 0");
        assert!(figures["Ready"].1 >= 7199.0);
    }
}
