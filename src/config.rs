//! The controller config file. Its `rebalancer:` block takes the runbook's "Safe Defaults" verbatim and
//! is the controller-wide default that each NodeGroup's `spec.rebalance` may override key by key.
//!
//! A bad file stops the process at start with an error naming the file and the key: unknown keys, bad
//! durations and out-of-range values are all refused rather than silently defaulted.

use std::{path::Path, time::Duration};

use serde::Deserialize;

use crate::crd::{KubeDuration, RebalancePolicy, RebalanceStrategy};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("invalid config file {file}: {message}")]
    Parse { file: String, message: String },
    #[error("invalid config file {file}: `{key}` {problem}")]
    Invalid { file: String, key: String, problem: String },
}

/// The whole file; every block is optional and defaults to the runbook's values.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub rebalancer: RebalancerDefaults,
    #[serde(default)]
    pub node_lifecycle: NodeLifecycle,
    #[serde(default)]
    pub autoscaling: Autoscaling,
    #[serde(default)]
    pub vpsie_api: VpsieApi,
}

/// How the controller protects itself and VPSie when the API misbehaves.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VpsieApi {
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
}

/// After `failureThreshold` failed calls in a row, calls are refused (never sent) for `openFor`; then one
/// probe decides whether the API is back.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreaker {
    #[serde(default = "five")]
    pub failure_threshold: u32,
    #[serde(default = "secs::<30>")]
    pub open_for: KubeDuration,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self { failure_threshold: five(), open_for: secs::<30>() }
    }
}

impl CircuitBreaker {
    pub fn open_for(&self) -> Duration {
        self.open_for.to_duration().unwrap_or(Duration::from_secs(30))
    }
}

/// When the autoscale loop plans. It plans as soon as something asks for it (a pod the scheduler gave
/// up on, a VPSieNode changing phase), gathering a burst into one pass, and at least every
/// `passInterval` as a safety net (scale-down timers, anything no watch signals).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Autoscaling {
    /// A pass starts once no new signal came for this long...
    #[serde(default = "secs::<1>")]
    pub batch_idle_duration: KubeDuration,
    /// ...or once the first signal of a batch has waited this long.
    #[serde(default = "secs::<10>")]
    pub batch_max_duration: KubeDuration,
    #[serde(default = "secs::<10>")]
    pub pass_interval: KubeDuration,
    /// A periodic pass is skipped while nothing it reads changed and nothing waits on the clock (see
    /// `controller/autoscale/quiet.rs`), but a whole pass still runs at least this often: the offering
    /// catalogue and anything else no watch signals. At `passInterval` or below, nothing is skipped.
    #[serde(default = "secs::<60>")]
    pub full_pass_interval: KubeDuration,
    /// After a VPSieNode of a group failed (quota, a create that failed, a worker that never joined), the
    /// group adds nothing for this long: no retry storm against a refusing cloud.
    #[serde(default = "secs::<60>")]
    pub failure_backoff: KubeDuration,
}

impl Default for Autoscaling {
    fn default() -> Self {
        Self {
            batch_idle_duration: secs::<1>(),
            batch_max_duration: secs::<10>(),
            pass_interval: secs::<10>(),
            full_pass_interval: secs::<60>(),
            failure_backoff: secs::<60>(),
        }
    }
}

impl Autoscaling {
    /// The batching window; the config was validated at load, so the durations parse.
    pub fn batching(&self) -> crate::controller::wake::Batching {
        crate::controller::wake::Batching {
            idle: self.batch_idle_duration.to_duration().unwrap_or(Duration::from_secs(1)),
            max_wait: self.batch_max_duration.to_duration().unwrap_or(Duration::from_secs(10)),
        }
    }

    pub fn pass_interval(&self) -> Duration {
        self.pass_interval.to_duration().unwrap_or(Duration::from_secs(10))
    }

    /// Never shorter than `passInterval`: a config that slows the periodic pass alone keeps working.
    pub fn full_pass_interval(&self) -> Duration {
        self.full_pass_interval.to_duration().unwrap_or(Duration::from_secs(60)).max(self.pass_interval())
    }

    pub fn failure_backoff(&self) -> Duration {
        self.failure_backoff.to_duration().unwrap_or(Duration::from_secs(60))
    }
}

/// Controller-wide rebalancer defaults (the runbook's "Safe Defaults").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RebalancerDefaults {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub strategy: RebalanceStrategy,
    #[serde(default = "one")]
    pub max_concurrent: i32,
    #[serde(default = "secs::<300>")]
    pub drain_timeout: KubeDuration,
    #[serde(default = "secs::<10>")]
    pub health_check_interval: KubeDuration,
    #[serde(default = "yes")]
    pub rollback_on_failure: bool,
    #[serde(default = "secs::<0>")]
    pub min_node_age: KubeDuration,
    #[serde(default = "ten")]
    pub min_savings_percent: i32,
    /// When a running operation counts the cluster as degraded and rolls back.
    #[serde(default)]
    pub cluster_health: ClusterHealthThresholds,
}

/// The cluster is degraded against an operation's pre-flight baseline when more of the group's nodes
/// are not Ready than `max(maxUnreadyNodes, maxUnreadyPercent % of the group)`, or when more than
/// `maxNewUnschedulablePods` pods the scheduler cannot place have appeared since pre-flight. A rollback
/// follows once the degradation has lasted one `healthCheckInterval`, so a pod waiting a moment for
/// the scheduler is not a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterHealthThresholds {
    #[serde(default = "three")]
    pub max_unready_nodes: u32,
    #[serde(default = "forty_five")]
    pub max_unready_percent: u32,
    #[serde(default)]
    pub max_new_unschedulable_pods: u32,
}

impl Default for ClusterHealthThresholds {
    fn default() -> Self {
        Self { max_unready_nodes: three(), max_unready_percent: forty_five(), max_new_unschedulable_pods: 0 }
    }
}

fn three() -> u32 {
    3
}
fn forty_five() -> u32 {
    45
}

/// Timeouts of a worker's way into the cluster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeLifecycle {
    #[serde(default = "secs::<600>")]
    pub provisioning_timeout: KubeDuration,
    #[serde(default = "secs::<900>")]
    pub joining_timeout: KubeDuration,
    /// How long a scale-down drain may take before the node is kept (PDBs are never overridden unless the
    /// group says `forceDrain`).
    #[serde(default = "secs::<600>")]
    pub drain_timeout: KubeDuration,
}

fn one() -> i32 {
    1
}
fn five() -> u32 {
    5
}
fn ten() -> i32 {
    10
}
fn yes() -> bool {
    true
}
fn secs<const N: u64>() -> KubeDuration {
    KubeDuration::from_secs(N)
}

impl Default for RebalancerDefaults {
    fn default() -> Self {
        Self {
            enabled: false,
            strategy: RebalanceStrategy::Rolling,
            max_concurrent: one(),
            drain_timeout: secs::<300>(),
            health_check_interval: secs::<10>(),
            rollback_on_failure: true,
            min_node_age: secs::<0>(),
            min_savings_percent: ten(),
            cluster_health: ClusterHealthThresholds::default(),
        }
    }
}

impl Default for NodeLifecycle {
    fn default() -> Self {
        Self { provisioning_timeout: secs::<600>(), joining_timeout: secs::<900>(), drain_timeout: secs::<600>() }
    }
}

/// The rebalancer settings in force for one group: its overrides over the controller-wide defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveRebalance {
    pub enabled: bool,
    pub strategy: RebalanceStrategy,
    pub max_concurrent: u32,
    pub drain_timeout: Duration,
    pub health_check_interval: Duration,
    pub rollback_on_failure: bool,
    pub min_node_age: Duration,
    pub min_savings_percent: u32,
}

impl RebalancerDefaults {
    /// Merges a group's overrides. A duration the API server let through but we cannot parse falls back
    /// to the default instead of failing, so one odd object never stops the controller.
    pub fn effective(&self, group: Option<&RebalancePolicy>) -> EffectiveRebalance {
        let dur = |over: Option<&KubeDuration>, default: &KubeDuration| {
            over.and_then(|d| d.to_duration().ok()).or_else(|| default.to_duration().ok()).unwrap_or_default()
        };
        let g = group.cloned().unwrap_or_default();
        EffectiveRebalance {
            enabled: g.enabled.unwrap_or(self.enabled),
            strategy: g.strategy.unwrap_or(self.strategy),
            max_concurrent: g.max_concurrent.unwrap_or(self.max_concurrent).max(1) as u32,
            drain_timeout: dur(g.drain_timeout.as_ref(), &self.drain_timeout),
            health_check_interval: dur(g.health_check_interval.as_ref(), &self.health_check_interval),
            rollback_on_failure: g.rollback_on_failure.unwrap_or(self.rollback_on_failure),
            min_node_age: dur(g.min_node_age.as_ref(), &self.min_node_age),
            min_savings_percent: g.min_savings_percent.unwrap_or(self.min_savings_percent).clamp(0, 100) as u32,
        }
    }
}

/// [`NodeLifecycle`] with its durations parsed (they were checked when the file was loaded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LifecycleTimeouts {
    pub provisioning_timeout: Duration,
    pub joining_timeout: Duration,
    pub drain_timeout: Duration,
}

impl NodeLifecycle {
    pub fn timeouts(&self) -> LifecycleTimeouts {
        let d = |k: &KubeDuration, fallback: u64| k.to_duration().unwrap_or(Duration::from_secs(fallback));
        LifecycleTimeouts {
            provisioning_timeout: d(&self.provisioning_timeout, 600),
            joining_timeout: d(&self.joining_timeout, 900),
            drain_timeout: d(&self.drain_timeout, 600),
        }
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Self::parse(&text, &file)
    }

    /// Parses and checks config text; `file` names the source in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        // An empty file (or one holding only comments) means "all defaults".
        let config: Config = if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            Config::default()
        } else {
            serde_saphyr::from_str(text)
                .map_err(|e| ConfigError::Parse { file: file.to_string(), message: e.to_string() })?
        };
        config.validate(file)?;
        Ok(config)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, problem: String| ConfigError::Invalid { file: file.to_string(), key: key.to_string(), problem };
        let r = &self.rebalancer;
        if !(1..=100).contains(&r.max_concurrent) {
            return Err(invalid(
                "rebalancer.maxConcurrent",
                format!("must be between 1 and 100, got {}", r.max_concurrent),
            ));
        }
        if !(0..=100).contains(&r.min_savings_percent) {
            return Err(invalid(
                "rebalancer.minSavingsPercent",
                format!("must be between 0 and 100, got {}", r.min_savings_percent),
            ));
        }
        if r.cluster_health.max_unready_percent > 100 {
            return Err(invalid(
                "rebalancer.clusterHealth.maxUnreadyPercent",
                format!("must be between 0 and 100, got {}", r.cluster_health.max_unready_percent),
            ));
        }
        let bounded = |key: &str, d: &KubeDuration, min: Duration, max: Duration| -> Result<(), ConfigError> {
            let value = d.to_duration().map_err(|e| invalid(key, e.to_string()))?;
            if value < min || value > max {
                return Err(invalid(key, format!("must be between {min:?} and {max:?}, got {d}")));
            }
            Ok(())
        };
        let s = Duration::from_secs;
        bounded("rebalancer.drainTimeout", &r.drain_timeout, s(1), s(24 * 3600))?;
        bounded("rebalancer.healthCheckInterval", &r.health_check_interval, s(1), s(600))?;
        bounded("rebalancer.minNodeAge", &r.min_node_age, s(0), s(90 * 24 * 3600))?;
        let l = &self.node_lifecycle;
        bounded("nodeLifecycle.provisioningTimeout", &l.provisioning_timeout, s(10), s(6 * 3600))?;
        bounded("nodeLifecycle.joiningTimeout", &l.joining_timeout, s(10), s(6 * 3600))?;
        bounded("nodeLifecycle.drainTimeout", &l.drain_timeout, s(1), s(24 * 3600))?;
        let a = &self.autoscaling;
        let ms = Duration::from_millis;
        bounded("autoscaling.batchIdleDuration", &a.batch_idle_duration, ms(0), s(60))?;
        bounded("autoscaling.batchMaxDuration", &a.batch_max_duration, ms(0), s(600))?;
        bounded("autoscaling.passInterval", &a.pass_interval, ms(100), s(600))?;
        bounded("autoscaling.fullPassInterval", &a.full_pass_interval, ms(100), s(3600))?;
        bounded("autoscaling.failureBackoff", &a.failure_backoff, s(1), s(3600))?;
        let b = &self.vpsie_api.circuit_breaker;
        bounded("vpsieApi.circuitBreaker.openFor", &b.open_for, s(1), s(600))?;
        if !(1..=100).contains(&b.failure_threshold) {
            return Err(invalid(
                "vpsieApi.circuitBreaker.failureThreshold",
                format!("must be between 1 and 100, got {}", b.failure_threshold),
            ));
        }
        if a.batch_idle_duration.to_duration().ok() > a.batch_max_duration.to_duration().ok() {
            return Err(invalid(
                "autoscaling.batchIdleDuration",
                format!("must not exceed autoscaling.batchMaxDuration ({})", a.batch_max_duration),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runbook's "Safe Defaults" block, character for character.
    const RUNBOOK_SAFE_DEFAULTS: &str = "# Rebalancer configuration
rebalancer:
  strategy: rolling      # Safer than surge
  maxConcurrent: 1       # One node at a time
  drainTimeout: 300s     # Allow time for graceful drain
  healthCheckInterval: 10s
  rollbackOnFailure: true
";

    fn rejected(text: &str) -> String {
        Config::parse(text, "/etc/vpsie/config.yaml").unwrap_err().to_string()
    }

    #[test]
    fn the_runbook_safe_defaults_block_parses_verbatim() {
        let config = Config::parse(RUNBOOK_SAFE_DEFAULTS, "runbook.yaml").unwrap();
        let r = &config.rebalancer;
        assert_eq!(r.strategy, RebalanceStrategy::Rolling);
        assert_eq!(r.max_concurrent, 1);
        assert_eq!(r.drain_timeout.to_duration().unwrap(), Duration::from_secs(300));
        assert_eq!(r.health_check_interval.to_duration().unwrap(), Duration::from_secs(10));
        assert!(r.rollback_on_failure);
    }

    #[test]
    fn an_empty_file_means_the_runbook_defaults() {
        let config = Config::parse("# nothing\n", "empty.yaml").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.rebalancer, Config::parse(RUNBOOK_SAFE_DEFAULTS, "r").unwrap().rebalancer);
    }

    #[test]
    fn an_unknown_key_is_rejected_naming_the_key_and_the_file() {
        let err = rejected("rebalancer:\n  maxConcurent: 2\n");
        assert!(err.contains("maxConcurent"), "{err}");
        assert!(err.contains("/etc/vpsie/config.yaml"), "{err}");
        let err = rejected("rebalancr:\n  maxConcurrent: 2\n");
        assert!(err.contains("rebalancr"), "{err}");
    }

    #[test]
    fn a_bad_duration_is_rejected_naming_the_key_and_the_file() {
        let err = rejected("rebalancer:\n  drainTimeout: 5 minutes\n");
        assert!(err.contains("rebalancer.drainTimeout"), "{err}");
        assert!(err.contains("`5 minutes`"), "{err}");
        assert!(err.contains("/etc/vpsie/config.yaml"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_rejected_naming_the_key() {
        let err = rejected("rebalancer:\n  maxConcurrent: 0\n");
        assert!(err.contains("rebalancer.maxConcurrent") && err.contains("got 0"), "{err}");
        let err = rejected("rebalancer:\n  healthCheckInterval: 2h\n");
        assert!(err.contains("rebalancer.healthCheckInterval"), "{err}");
        let err = rejected("nodeLifecycle:\n  provisioningTimeout: 1s\n");
        assert!(err.contains("nodeLifecycle.provisioningTimeout"), "{err}");
    }

    #[test]
    fn the_planning_batch_window_defaults_to_karpenters_and_refuses_an_idle_gap_longer_than_the_maximum() {
        let defaults = Config::parse("", "c").unwrap().autoscaling;
        assert_eq!(
            defaults.batching(),
            crate::controller::wake::Batching { idle: Duration::from_secs(1), max_wait: Duration::from_secs(10) }
        );
        assert_eq!(defaults.pass_interval(), Duration::from_secs(10));
        let tuned = Config::parse("autoscaling:\n  batchIdleDuration: 250ms\n  passInterval: 3s\n", "c").unwrap();
        assert_eq!(tuned.autoscaling.batching().idle, Duration::from_millis(250));
        assert_eq!(tuned.autoscaling.pass_interval(), Duration::from_secs(3));
        let err = rejected("autoscaling:\n  batchIdleDuration: 20s\n  batchMaxDuration: 5s\n");
        assert!(err.contains("autoscaling.batchIdleDuration") && err.contains("batchMaxDuration (5s)"), "{err}");
        let err = rejected("autoscaling:\n  passInterval: 10ms\n");
        assert!(err.contains("autoscaling.passInterval"), "{err}");
    }

    #[test]
    fn a_whole_pass_runs_at_least_every_minute_and_never_more_often_than_the_periodic_pass() {
        let defaults = Config::parse("", "c").unwrap().autoscaling;
        assert_eq!(defaults.full_pass_interval(), Duration::from_secs(60));
        let slow = Config::parse("autoscaling:\n  passInterval: 10m\n", "c").unwrap().autoscaling;
        assert_eq!(slow.full_pass_interval(), Duration::from_secs(600), "a slower periodic pass is not refused");
        let tuned = Config::parse("autoscaling:\n  fullPassInterval: 5m\n", "c").unwrap().autoscaling;
        assert_eq!(tuned.full_pass_interval(), Duration::from_secs(300));
        let err = rejected("autoscaling:\n  fullPassInterval: 2h\n");
        assert!(err.contains("autoscaling.fullPassInterval"), "{err}");
    }

    #[test]
    fn the_failure_backoff_and_the_breaker_default_to_a_minute_and_five_failures_for_thirty_seconds() {
        let defaults = Config::parse("", "c").unwrap();
        assert_eq!(defaults.autoscaling.failure_backoff(), Duration::from_secs(60));
        assert_eq!(defaults.vpsie_api.circuit_breaker.failure_threshold, 5);
        assert_eq!(defaults.vpsie_api.circuit_breaker.open_for(), Duration::from_secs(30));
        let tuned = Config::parse(
            "autoscaling:\n  failureBackoff: 5s\nvpsieApi:\n  circuitBreaker:\n    failureThreshold: 3\n    openFor: 4s\n",
            "c",
        )
        .unwrap();
        assert_eq!(tuned.autoscaling.failure_backoff(), Duration::from_secs(5));
        assert_eq!(tuned.vpsie_api.circuit_breaker.failure_threshold, 3);
        assert_eq!(tuned.vpsie_api.circuit_breaker.open_for(), Duration::from_secs(4));
        let err = rejected("vpsieApi:\n  circuitBreaker:\n    openFor: 0s\n");
        assert!(err.contains("vpsieApi.circuitBreaker.openFor"), "{err}");
        let err = rejected("vpsieApi:\n  circuitBreaker:\n    failureThreshold: 0\n");
        assert!(err.contains("vpsieApi.circuitBreaker.failureThreshold") && err.contains("got 0"), "{err}");
        let err = rejected("autoscaling:\n  failureBackoff: 2d\n");
        assert!(err.contains("autoscaling.failureBackoff"), "{err}");
    }

    #[test]
    fn an_unknown_strategy_is_rejected_with_the_allowed_values() {
        let err = rejected("rebalancer:\n  strategy: blue-green\n");
        assert!(err.contains("blue-green") && err.contains("rolling") && err.contains("surge"), "{err}");
    }

    #[test]
    fn a_group_override_wins_key_by_key_over_the_defaults() {
        let defaults = Config::parse(RUNBOOK_SAFE_DEFAULTS, "r").unwrap().rebalancer;
        let group = RebalancePolicy {
            strategy: Some(RebalanceStrategy::Surge),
            drain_timeout: Some(KubeDuration::new("1m")),
            rollback_on_failure: Some(false),
            ..Default::default()
        };
        let eff = defaults.effective(Some(&group));
        assert_eq!(eff.strategy, RebalanceStrategy::Surge);
        assert_eq!(eff.drain_timeout, Duration::from_secs(60));
        assert!(!eff.rollback_on_failure);
        assert_eq!(eff.max_concurrent, 1, "not overridden, so the default");
        assert_eq!(eff.health_check_interval, Duration::from_secs(10));
    }

    #[test]
    fn an_unparseable_group_duration_falls_back_to_the_default() {
        let defaults = RebalancerDefaults::default();
        let group = RebalancePolicy { drain_timeout: Some(KubeDuration::new("forever")), ..Default::default() };
        assert_eq!(defaults.effective(Some(&group)).drain_timeout, Duration::from_secs(300));
    }
}
