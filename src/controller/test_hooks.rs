//! Test-only fault injection for the end-to-end and reliability suites, driven by the file that
//! `VPSIE_AUTOSCALER_TEST_CRASH_FILE` names. Production deployments never set the variable, and then
//! every hook is a no-op.
//!
//! - `<site>` (or `crash:<site>`): the process exits abruptly (once; the file is removed) at a crash
//!   site, right after a step was recorded and before it acts: the worst instant for a crash.
//! - `pause:<step>`: while the file says so, an operation whose current step is `<step>` (a Rebalance's,
//!   see [`current_step`]; a VPSieNode's, see [`node_step`]) is held before its reconcile does anything,
//!   and `<file>.paused` says it is held. The reliability matrix injects its fault there, then removes
//!   the file to let the operation go on.

use crate::crd::{Rebalance, RebalancePhase, VPSieNode, VPSieNodePhase, rebalance::StepPhase};

fn hook_file() -> Option<String> {
    std::env::var("VPSIE_AUTOSCALER_TEST_CRASH_FILE").ok()
}

pub(crate) fn crash_point(site: &str) {
    let Some(path) = hook_file() else { return };
    let Ok(text) = std::fs::read_to_string(&path) else { return };
    let text = text.trim();
    if text == site || text.strip_prefix("crash:") == Some(site) {
        let _ = std::fs::remove_file(&path);
        tracing::error!(site, "test crash point reached; exiting without cleanup");
        std::process::exit(137);
    }
}

/// The name of the step an operation is at, as the matrix names steps.
pub fn current_step(rb: &Rebalance) -> &'static str {
    let Some(status) = rb.status.as_ref() else { return "preflight" };
    match status.phase {
        RebalancePhase::Pending | RebalancePhase::PreFlight => "preflight",
        RebalancePhase::RollingBack => "rollback",
        RebalancePhase::Running => {
            let step = status.steps.iter().map(|s| s.phase).find(|p| !matches!(p, StepPhase::Done));
            match step {
                None | Some(StepPhase::Pending) => "requested",
                Some(StepPhase::Provisioning) => "provisioning",
                Some(StepPhase::ReplacementReady) => "joined",
                Some(StepPhase::Cordoned) => "cordoned",
                Some(StepPhase::Draining) => "draining",
                Some(StepPhase::Verifying) => "verifying",
                Some(StepPhase::Removing) => "removing",
                Some(StepPhase::Done | StepPhase::RolledBack | StepPhase::Failed) => "ending",
            }
        }
        _ => "ended",
    }
}

/// Whether a pause at `step` is armed (for any namespace). A step that records itself and acts in the
/// same pass (a drain of pods that leave at once) ends its pass early when asked, so that [`paused`] can
/// hold it.
pub(crate) fn pause_requested(step: &str) -> bool {
    armed().is_some_and(|(armed, _)| armed == step)
}

/// The armed pause: `pause:<step>` holds that step everywhere, `pause:<step>@<namespace>` only the
/// objects of one namespace (a test's own, not those of a namespace being torn down beside it).
fn armed() -> Option<(String, Option<String>)> {
    let text = std::fs::read_to_string(hook_file()?).ok()?;
    let rest = text.trim().strip_prefix("pause:")?;
    Some(match rest.split_once('@') {
        Some((step, ns)) => (step.to_string(), Some(ns.to_string())),
        None => (rest.to_string(), None),
    })
}

/// The step a VPSieNode is at, as the matrix's scale-up and scale-down rows name it.
pub fn node_step(vn: &VPSieNode) -> &'static str {
    match vn.status.as_ref().map(|s| s.phase).unwrap_or_default() {
        VPSieNodePhase::Pending => "node-pending",
        VPSieNodePhase::Provisioning => "node-provisioning",
        VPSieNodePhase::Joining => "node-joining",
        VPSieNodePhase::Ready => "node-ready",
        VPSieNodePhase::Draining => "node-draining",
        VPSieNodePhase::Terminating => "node-terminating",
        VPSieNodePhase::Failed => "node-failed",
    }
}

/// Whether the Rebalance must be held here (and, if so, says so in the marker file).
pub(crate) fn paused(rb: &Rebalance) -> bool {
    hold(current_step(rb), rb.metadata.namespace.as_deref())
}

/// Whether the VPSieNode must be held here (and, if so, says so in the marker file).
pub(crate) fn node_paused(vn: &VPSieNode) -> bool {
    hold(node_step(vn), vn.metadata.namespace.as_deref())
}

fn hold(step: &str, namespace: Option<&str>) -> bool {
    let Some((armed, only_in)) = armed() else { return false };
    if armed != step || only_in.is_some_and(|ns| Some(ns.as_str()) != namespace) {
        return false;
    }
    if let Some(path) = hook_file() {
        let _ = std::fs::write(format!("{path}.paused"), step);
    }
    tracing::info!(step, "test pause point: operation held");
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{RebalanceStatus, rebalance::NodeStep};

    fn fresh() -> Rebalance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "autoscaler.vpsie.com/v1alpha1", "kind": "Rebalance", "metadata": {"name": "r"},
            "spec": {"nodeGroup": "pool", "strategy": "rolling", "maxConcurrent": 1, "drainTimeout": "60s",
                "healthCheckInterval": "1s", "rollbackOnFailure": true, "replacements": []},
        }))
        .unwrap()
    }

    fn at(phase: RebalancePhase, steps: &[StepPhase]) -> Rebalance {
        let mut rb = fresh();
        rb.status = Some(RebalanceStatus {
            phase,
            steps: steps.iter().map(|&phase| NodeStep { phase, ..Default::default() }).collect(),
            ..Default::default()
        });
        rb
    }

    #[test]
    fn the_current_step_is_the_first_unfinished_one_of_a_running_operation() {
        assert_eq!(current_step(&fresh()), "preflight");
        assert_eq!(current_step(&at(RebalancePhase::Running, &[StepPhase::Done, StepPhase::Draining])), "draining");
        assert_eq!(current_step(&at(RebalancePhase::Running, &[StepPhase::Provisioning])), "provisioning");
        assert_eq!(current_step(&at(RebalancePhase::RollingBack, &[StepPhase::Cordoned])), "rollback");
        assert_eq!(current_step(&at(RebalancePhase::RolledBack, &[])), "ended");
    }

    #[test]
    fn a_vpsienode_step_is_its_phase_and_a_new_one_is_pending() {
        let mut vn: VPSieNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "autoscaler.vpsie.com/v1alpha1", "kind": "VPSieNode", "metadata": {"name": "n"},
            "spec": {"nodeGroup": "pool", "offering": "1", "clusterIdentifier": "c", "datacenter": "d"},
        }))
        .unwrap();
        assert_eq!(node_step(&vn), "node-pending");
        vn.status = Some(crate::crd::VPSieNodeStatus { phase: VPSieNodePhase::Draining, ..Default::default() });
        assert_eq!(node_step(&vn), "node-draining");
    }
}
