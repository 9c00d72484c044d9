//! The rebalancer's own starts, pure: for one group, is an operation due now, and which one? Due when
//! rebalancing is enabled for the group, one of its maintenance windows is open, no operation of the
//! group is running, the last rollback is more than [`ROLLBACK_BACKOFF`] ago, and the analysis found
//! candidates. The operation replaces every candidate (at most [`MAX_REPLACEMENTS`]) with the settings in
//! force for the group; a person's `Rebalance` skips all of this.

use std::time::Duration;

use jiff::Timestamp;

use super::{Analysis, window};
use crate::{
    config::EffectiveRebalance,
    crd::{
        KubeDuration, RebalanceSpec,
        nodegroup::MaintenanceWindow,
        rebalance::{PlannedReplacement, RebalancePhase},
    },
};

/// After a rollback the group is left alone this long: whatever made it fail (capacity, a PDB, a
/// flaky workload) rarely clears within minutes, and retrying sooner only churns nodes.
pub const ROLLBACK_BACKOFF: Duration = Duration::from_secs(3600);

/// The most replacements one operation lists (the CRD's bound).
pub const MAX_REPLACEMENTS: usize = 100;

/// What is known of one of the group's earlier or current operations.
#[derive(Debug, Clone, PartialEq)]
pub struct PastOperation {
    pub name: String,
    pub phase: RebalancePhase,
    /// When it ended, if it ended after a rollback.
    pub rolled_back_at: Option<Timestamp>,
}

/// Why no operation starts for the group now.
#[derive(Debug, Clone, PartialEq)]
pub enum NotNow {
    Disabled,
    WindowClosed,
    BadWindow(String),
    Running(String),
    Backoff { until: Timestamp },
}

impl std::fmt::Display for NotNow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Disabled => write!(f, "rebalancing is disabled for the group"),
            Self::WindowClosed => write!(f, "no maintenance window of the group is open"),
            Self::BadWindow(e) => write!(f, "the group's maintenance windows cannot be evaluated: {e}"),
            Self::Running(name) => write!(f, "operation {name} is still running"),
            Self::Backoff { until } => write!(f, "a rollback happened recently; rebalancing resumes after {until}"),
        }
    }
}

/// Whether the group may start an operation now; `Ok` carries the opening of the current window.
pub fn may_start(
    enabled: bool,
    windows: &[MaintenanceWindow],
    past: &[PastOperation],
    now: Timestamp,
) -> Result<Timestamp, NotNow> {
    if !enabled {
        return Err(NotNow::Disabled);
    }
    if let Some(running) = past.iter().find(|p| !p.phase.is_terminal()) {
        return Err(NotNow::Running(running.name.clone()));
    }
    if let Some(last) = past.iter().filter_map(|p| p.rolled_back_at).max() {
        let until = last.checked_add(ROLLBACK_BACKOFF).unwrap_or(Timestamp::MAX);
        if until > now {
            return Err(NotNow::Backoff { until });
        }
    }
    match window::opened_at(windows, now) {
        Ok(Some(opened)) => Ok(opened),
        Ok(None) => Err(NotNow::WindowClosed),
        Err(e) => Err(NotNow::BadWindow(e.to_string())),
    }
}

/// The operation replacing the group's candidates, or `None` when there are none.
pub fn proposal(
    analysis: &Analysis,
    group_key: &str,
    group_name: &str,
    settings: &EffectiveRebalance,
) -> Option<RebalanceSpec> {
    let replacements: Vec<PlannedReplacement> = analysis
        .candidates
        .iter()
        .filter(|c| c.group == group_key)
        .take(MAX_REPLACEMENTS)
        .map(|c| PlannedReplacement {
            old_node: c.node.clone(),
            old_vpsie_node: c.vpsienode.rsplit('/').next().unwrap_or_default().to_string(),
            old_offering: c.from_offering.clone(),
            new_offering: c.to_offering.clone(),
            old_hourly_price: c.from_hourly_price,
            new_hourly_price: c.to_hourly_price,
        })
        .collect();
    if replacements.is_empty() {
        return None;
    }
    let secs = |d: Duration| KubeDuration::from_secs(d.as_secs().max(1));
    Some(RebalanceSpec {
        node_group: group_name.to_string(),
        strategy: settings.strategy,
        max_concurrent: settings.max_concurrent.clamp(1, 100) as i32,
        drain_timeout: secs(settings.drain_timeout),
        health_check_interval: secs(settings.health_check_interval),
        rollback_on_failure: settings.rollback_on_failure,
        replacements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rebalance::Candidate;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn op(name: &str, phase: RebalancePhase, rolled_back_at: Option<&str>) -> PastOperation {
        PastOperation { name: name.into(), phase, rolled_back_at: rolled_back_at.map(at) }
    }

    fn window(start: &str, end: &str, zone: &str) -> MaintenanceWindow {
        MaintenanceWindow { days: vec![], start: start.into(), end: end.into(), timezone: Some(zone.into()) }
    }

    #[test]
    fn a_group_starts_only_when_enabled_idle_out_of_backoff_and_inside_a_window() {
        let now = at("2026-11-29T12:00:00Z");
        // 21:00 in Tokyo.
        let open = [window("20:00", "22:00", "Asia/Tokyo")];
        assert_eq!(may_start(true, &open, &[], now), Ok(at("2026-11-29T11:00:00Z")));
        assert_eq!(may_start(false, &open, &[], now), Err(NotNow::Disabled));
        let closed = [window("08:00", "10:00", "Asia/Tokyo")];
        assert_eq!(may_start(true, &closed, &[], now), Err(NotNow::WindowClosed));
        let running = [op("rb-1", RebalancePhase::Running, None)];
        assert_eq!(may_start(true, &open, &running, now), Err(NotNow::Running("rb-1".into())));
        let recent = [op("rb-1", RebalancePhase::RolledBack, Some("2026-11-29T11:30:00Z"))];
        assert_eq!(may_start(true, &open, &recent, now), Err(NotNow::Backoff { until: at("2026-11-29T12:30:00Z") }));
        let long_ago = [op("rb-1", RebalancePhase::RolledBack, Some("2026-11-29T10:59:00Z"))];
        assert!(may_start(true, &open, &long_ago, now).is_ok());
        let bad = [window("20:00", "22:00", "Mars/Olympus")];
        assert!(matches!(may_start(true, &bad, &[], now), Err(NotNow::BadWindow(e)) if e.contains("Mars/Olympus")));
    }

    fn candidate(group: &str, node: &str) -> Candidate {
        Candidate {
            group: group.into(),
            node: node.into(),
            vpsienode: format!("ns/vn-{node}"),
            from_offering: "5".into(),
            from_hourly_price: 0.04,
            to_offering: "2".into(),
            to_hourly_price: 0.03,
            hourly_saving: 0.01,
            saving_percent: 25.0,
            pods: 1,
        }
    }

    #[test]
    fn the_proposal_replaces_the_groups_candidates_with_the_settings_in_force() {
        let analysis = Analysis {
            candidates: vec![candidate("ns/g", "a"), candidate("ns/other", "b"), candidate("ns/g", "c")],
            skipped: vec![],
        };
        let settings = crate::config::RebalancerDefaults::default().effective(None);
        let spec = proposal(&analysis, "ns/g", "g", &settings).unwrap();
        let olds: Vec<&str> = spec.replacements.iter().map(|r| r.old_node.as_str()).collect();
        assert_eq!(olds, ["a", "c"]);
        assert_eq!(spec.replacements[0].old_vpsie_node, "vn-a");
        assert_eq!(spec.drain_timeout, KubeDuration::from_secs(300));
        assert!(spec.rollback_on_failure);
        assert_eq!(proposal(&analysis, "ns/none", "none", &settings), None);
    }
}
