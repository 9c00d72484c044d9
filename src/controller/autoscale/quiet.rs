//! Quiet periodic passes. A periodic pass that would read the same cluster as the last pass, when that
//! pass left nothing waiting on the clock, would decide the same nothing and write nothing: it is
//! skipped. At 1,000 idle nodes that is most of what the controller spends.
//!
//! Pipeline: observe (after each pass, a [`Reading`] of what it read and [`quiet_until`] from what it
//! decided), decide ([`Quiet::ended`] at the next periodic tick), report (the skipped-pass counter).
//!
//! What makes it safe: every pass started by an event still runs; any counted change to what a pass
//! reads ends the quiet; a pass that planned anything, has pods waiting, capacity on its way, a VPSieNode
//! between phases, a cloud error, or a rebalance (running or possible, whose maintenance windows are on
//! the clock) is never quiet; clock-bound scale-down blocks (cooldowns, unneeded timers, node ages,
//! drain backoffs) end it when the first of them lifts; and a whole pass runs at least every
//! `fullPassInterval` whatever else holds.

use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::{
    controller::wake::Changes,
    crd::{DRAIN_REQUEST_ANNOTATION, REBALANCE_LABEL, Rebalance, VPSieNode, VPSieNodePhase},
    scale::{down::ScaleDownPlan, up::ScaleUpPlan},
};

/// What a pass read, in two numbers: the watches' change count and the versions of the small caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub changes: Changes,
    pub versions: u64,
}

/// Left by a pass that may be followed by quiet periodic ticks.
#[derive(Debug, Clone, Copy)]
pub struct Quiet {
    /// What the pass read, taken before it read it (a change during the pass ends the quiet).
    pub read: Reading,
    /// When the clock alone could change the pass's answer.
    pub until: Timestamp,
    /// When the pass ran.
    pub at: Instant,
}

impl Quiet {
    /// Why a periodic tick that reads `now` at `clock`/`instant` must run its pass, or `None` when it
    /// may be skipped.
    pub fn ended(
        &self,
        now: Reading,
        clock: Timestamp,
        instant: Instant,
        full_pass_interval: Duration,
    ) -> Option<&'static str> {
        if let Some(watched) = now.changes.since(&self.read.changes) {
            Some(watched.changed())
        } else if now.versions != self.read.versions {
            Some("a NodeGroup, VPSieNode or Rebalance changed")
        } else if clock >= self.until {
            Some("a scale-down block lifts")
        } else if instant.saturating_duration_since(self.at) >= full_pass_interval {
            Some("a whole pass is due")
        } else {
            None
        }
    }
}

/// What a finished pass saw and decided, as far as quiet is concerned.
pub struct Outcome<'a> {
    pub pending: usize,
    pub up: &'a ScaleUpPlan,
    pub down: &'a ScaleDownPlan,
    pub cloud_trouble: bool,
    /// Created VPSieNodes the watch has not shown yet.
    pub expecting: bool,
    pub vpsienodes: &'a [VPSieNode],
    pub rebalances: &'a [Rebalance],
    /// Some group may start a rebalance (its policy or the controller's default enables it).
    pub rebalancing_enabled: bool,
}

/// Until when periodic passes may be skipped after this pass (while nothing it read changes), or
/// `None` when the next periodic pass must run; [`busy`] says why.
pub fn quiet_until(outcome: &Outcome<'_>) -> Option<Timestamp> {
    if busy(outcome).is_some() {
        return None;
    }
    Some(outcome.down.next_change().unwrap_or(Timestamp::MAX))
}

/// The first reason the pass left work for the next one, if any.
pub fn busy(o: &Outcome<'_>) -> Option<&'static str> {
    if o.pending > 0 || !o.up.is_empty() || !o.up.unschedulable.is_empty() {
        return Some("pods wait for capacity");
    }
    if !o.down.remove.is_empty() {
        return Some("a node is being removed");
    }
    if o.cloud_trouble {
        return Some("the cloud refused a read");
    }
    if o.expecting {
        return Some("a created VPSieNode is not in the cache yet");
    }
    if o.vpsienodes.iter().any(|v| !settled(v)) {
        return Some("a VPSieNode is between phases");
    }
    if o.rebalances.iter().any(|r| !r.status.as_ref().map(|s| s.phase).unwrap_or_default().is_terminal()) {
        return Some("a rebalance is running");
    }
    if o.rebalancing_enabled {
        return Some("a group may rebalance (maintenance windows follow the clock)");
    }
    None
}

/// A Ready VPSieNode nothing is being asked of.
fn settled(vn: &VPSieNode) -> bool {
    let phase = vn.status.as_ref().map(|s| s.phase).unwrap_or_default();
    let marked = |key: &str| vn.metadata.labels.as_ref().is_some_and(|l| l.contains_key(key));
    let asked = vn.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(DRAIN_REQUEST_ANNOTATION));
    phase == VPSieNodePhase::Ready && vn.metadata.deletion_timestamp.is_none() && !marked(REBALANCE_LABEL) && !asked
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use jiff::{SignedDuration, Timestamp};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use kube::ResourceExt;

    use super::{Outcome, Quiet, Reading, busy, quiet_until};
    use crate::controller::wake::{Wake, Watched};
    use crate::{
        crd::{DRAIN_REQUEST_ANNOTATION, VPSieNode, VPSieNodePhase, VPSieNodeStatus},
        scale::{
            ObjectRef,
            down::{Blocked, BlockedNode, ScaleDownPlan},
            up::ScaleUpPlan,
        },
    };

    fn vpsienode(phase: VPSieNodePhase) -> VPSieNode {
        let mut vn = VPSieNode::new(
            "pool-a",
            crate::crd::VPSieNodeSpec {
                node_group: "pool".into(),
                offering: "2".into(),
                cluster_identifier: "c".into(),
                datacenter: "d".into(),
            },
        );
        vn.metadata.namespace = Some("team".into());
        vn.status = Some(VPSieNodeStatus { phase, ..Default::default() });
        vn
    }

    fn blocked(reason: Blocked) -> BlockedNode {
        BlockedNode { group: ObjectRef::new("team", "pool"), node: "n1".into(), reason }
    }

    struct Fixture {
        up: ScaleUpPlan,
        down: ScaleDownPlan,
        vpsienodes: Vec<VPSieNode>,
    }

    impl Fixture {
        fn idle() -> Self {
            Self {
                up: ScaleUpPlan::default(),
                down: ScaleDownPlan::default(),
                vpsienodes: vec![vpsienode(VPSieNodePhase::Ready)],
            }
        }

        fn outcome(&self) -> Outcome<'_> {
            Outcome {
                pending: 0,
                up: &self.up,
                down: &self.down,
                cloud_trouble: false,
                expecting: false,
                vpsienodes: &self.vpsienodes,
                rebalances: &[],
                rebalancing_enabled: false,
            }
        }
    }

    #[test]
    fn an_idle_pass_with_no_clock_bound_block_is_quiet_until_something_changes() {
        let f = Fixture::idle();
        assert_eq!(busy(&f.outcome()), None);
        assert_eq!(quiet_until(&f.outcome()), Some(Timestamp::MAX));
    }

    #[test]
    fn the_quiet_ends_when_the_first_clock_bound_scale_down_block_lifts() {
        let now = Timestamp::now();
        let mut f = Fixture::idle();
        let at = |secs: i64| now + SignedDuration::from_secs(secs);
        f.down.blocked = vec![
            blocked(Blocked::PdbAllowsNoDisruption {
                pod: ObjectRef::new("team", "web"),
                pdb: ObjectRef::new("team", "pdb"),
            }),
            blocked(Blocked::NotUnneededLongEnough { since: at(-60), unneeded_time: Duration::from_secs(600) }),
            blocked(Blocked::Cooldown { until: at(300) }),
        ];
        assert_eq!(quiet_until(&f.outcome()), Some(at(300)), "the cooldown ends before the timer (540 s)");
        f.down.blocked.push(blocked(Blocked::TooYoung { min_age: Duration::from_secs(600), until: at(30) }));
        assert_eq!(quiet_until(&f.outcome()), Some(at(30)));
    }

    #[test]
    fn pending_pods_a_removal_or_a_vpsienode_on_its_way_keep_every_periodic_pass() {
        let f = Fixture::idle();
        let mut o = f.outcome();
        o.pending = 1;
        assert_eq!(quiet_until(&o), None);

        let mut f = Fixture::idle();
        f.down.remove.push(crate::scale::down::NodeRemoval {
            group: ObjectRef::new("team", "pool"),
            node: "n1".into(),
            moves: vec![],
        });
        assert_eq!(quiet_until(&f.outcome()), None);

        for phase in [VPSieNodePhase::Provisioning, VPSieNodePhase::Draining, VPSieNodePhase::Failed] {
            let mut f = Fixture::idle();
            f.vpsienodes.push(vpsienode(phase));
            assert_eq!(busy(&f.outcome()), Some("a VPSieNode is between phases"), "{phase:?}");
        }
        let mut f = Fixture::idle();
        f.vpsienodes[0].annotations_mut().insert(DRAIN_REQUEST_ANNOTATION.into(), "now".into());
        assert_eq!(busy(&f.outcome()), Some("a VPSieNode is between phases"), "a drain was asked for");
        let mut f = Fixture::idle();
        f.vpsienodes[0].metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert!(busy(&f.outcome()).is_some(), "being deleted");
    }

    #[test]
    fn cloud_trouble_capacity_expected_and_rebalancing_keep_every_periodic_pass() {
        let f = Fixture::idle();
        let mut o = f.outcome();
        o.cloud_trouble = true;
        assert!(busy(&o).is_some());
        let mut o = f.outcome();
        o.expecting = true;
        assert!(busy(&o).is_some());
        let mut o = f.outcome();
        o.rebalancing_enabled = true;
        assert!(busy(&o).is_some());
    }

    #[test]
    fn a_tick_is_skipped_only_with_the_same_reading_before_the_deadline_and_within_the_full_pass_interval() {
        let wake = Wake::default();
        let read = Reading { changes: wake.changes(), versions: 42 };
        let clock = Timestamp::now();
        let at = Instant::now();
        let quiet = Quiet { read, until: clock + SignedDuration::from_secs(100), at };
        let minute = Duration::from_secs(60);
        let later = at + Duration::from_secs(10);
        assert_eq!(quiet.ended(read, clock, later, minute), None);
        let ended = |now, clock, instant| quiet.ended(now, clock, instant, minute);
        wake.input_changed(Watched::Pod);
        assert_eq!(ended(Reading { changes: wake.changes(), ..read }, clock, later), Some("a watched pod changed"));
        wake.input_changed(Watched::Node);
        assert_eq!(
            ended(Reading { changes: wake.changes(), ..read }, clock, later),
            Some("a watched node changed"),
            "the first kind that changed is named"
        );
        assert_eq!(
            ended(Reading { versions: 1, ..read }, clock, later),
            Some("a NodeGroup, VPSieNode or Rebalance changed")
        );
        assert_eq!(ended(read, clock + SignedDuration::from_secs(100), later), Some("a scale-down block lifts"));
        assert_eq!(ended(read, clock, at + minute), Some("a whole pass is due"));
    }
}
