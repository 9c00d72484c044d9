//! Test-only fault injection for the end-to-end and reliability suites, driven by the file that
//! `VPSIE_AUTOSCALER_TEST_CRASH_FILE` names. Production deployments never set the variable, and then
//! every hook is a no-op.
//!
//! - `<site>` (or `crash:<site>`): the process exits abruptly (once; the file is removed) at a crash
//!   site, right after a step was recorded and before it acts: the worst instant for a crash.
//! - `pause:<step>`: while the file says so, an operation whose current step is `<step>` (see
//!   [`current_step`]) is held before its reconcile does anything, and `<file>.paused` says it is held.
//!   The reliability matrix injects its fault there, then removes the file to let the operation go on.

use crate::crd::{Rebalance, RebalancePhase, rebalance::StepPhase};

fn hook_file() -> Option<String> {
    std::env::var("VPSIE_AUTOSCALER_TEST_CRASH_FILE").ok()
}

pub(super) fn crash_point(site: &str) {
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

/// Whether a pause at `step` is armed. A step that records itself and acts in the same pass (a drain of
/// pods that leave at once) ends its pass early when asked, so that [`paused`] can hold it.
pub(super) fn pause_requested(step: &str) -> bool {
    let Some(path) = hook_file() else { return false };
    std::fs::read_to_string(&path).is_ok_and(|text| text.trim().strip_prefix("pause:") == Some(step))
}

/// Whether the operation must be held here (and, if so, says so in the marker file).
pub(super) fn paused(rb: &Rebalance) -> bool {
    let Some(path) = hook_file() else { return false };
    let Ok(text) = std::fs::read_to_string(&path) else { return false };
    let step = current_step(rb);
    if text.trim().strip_prefix("pause:") != Some(step) {
        return false;
    }
    let _ = std::fs::write(format!("{path}.paused"), step);
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
}
