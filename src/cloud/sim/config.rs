//! Simulator settings. Every field has a default, so `{}` is a valid config file.

use serde::{Deserialize, Serialize};

/// A `[min, max]` range of virtual seconds; each worker draws its own value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub min: f64,
    pub max: f64,
}

impl Span {
    pub const fn new(min: f64, max: f64) -> Self {
        Self { min, max }
    }
}

/// Worker life-cycle durations in virtual seconds (reference §6.2 defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    /// ACCEPTED → PROVISIONING.
    pub pending: Span,
    /// PROVISIONING → RUNNING.
    pub boot: Span,
    /// RUNNING → JOINED.
    pub join: Span,
    /// DELETING → GONE.
    pub delete: Span,
    /// How long a FAILED worker stays listed before it vanishes.
    pub failed_linger: Span,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            pending: Span::new(5.0, 20.0),
            boot: Span::new(45.0, 120.0),
            join: Span::new(60.0, 180.0),
            delete: Span::new(10.0, 40.0),
            failed_linger: Span::new(30.0, 60.0),
        }
    }
}

/// Shape of the add-worker answer's `data` (the real shape is unknown; `true` is the
/// worst case because it names nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddShape {
    #[default]
    True,
    Object,
    ObjectWithoutIdentifier,
}

/// When a group's `nodes_count` includes a new worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountAt {
    #[default]
    Accepted,
    Running,
}

/// Which worker the non-targeted `reduce` endpoints remove.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReducePick {
    #[default]
    Newest,
    Oldest,
    Random,
}

/// Which token shape(s) the auth exchange answers with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthShape {
    #[default]
    Both,
    /// `token.access.{token,expires}` only.
    Govpsie,
    /// `accessToken.{token,expires}` only.
    Autoscaler,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientCredential {
    pub client_id: String,
    pub client_secret: String,
}

/// A node group present at start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupSeed {
    pub name: String,
    /// Kube size id of the plan (see the catalogue).
    pub plan: u64,
    /// Workers already JOINED at start.
    #[serde(default)]
    pub workers: u32,
}

/// A managed cluster present at start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterSeed {
    pub name: String,
    /// Defaults to a UUID drawn from the seed.
    #[serde(default)]
    pub identifier: Option<String>,
    /// Datacenter identifier; defaults to the first datacenter.
    #[serde(default)]
    pub datacenter: Option<String>,
    #[serde(default)]
    pub groups: Vec<GroupSeed>,
}

/// Settings that may change while the simulator runs (`PUT /_sim/settings`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Real seconds per virtual second: 0.01 runs the world 100× faster.
    pub time_scale: f64,
    pub timings: Timings,
    /// New workers appear in, and removed ones leave, the node list this many virtual
    /// seconds late.
    pub list_lag_secs: f64,
    /// Lifetime of exchanged tokens, in real seconds (the client reads real timestamps).
    pub token_ttl_secs: u64,
    pub add_response: AddShape,
    pub count_at: CountAt,
    pub reduce_picks: ReducePick,
    pub auth_shape: AuthShape,
    /// A standing per-cluster worker limit; adding beyond it answers the quota message.
    pub max_workers_per_cluster: Option<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            time_scale: 1.0,
            timings: Timings::default(),
            list_lag_secs: 0.0,
            token_ttl_secs: 3600,
            add_response: AddShape::True,
            count_at: CountAt::Accepted,
            reduce_picks: ReducePick::Newest,
            auth_shape: AuthShape::Both,
            max_workers_per_cluster: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// Seed for every random choice (hostnames, ids, timings, fault probabilities).
    pub seed: u64,
    #[serde(flatten)]
    pub settings: Settings,
    /// Static tokens accepted as `Vpsie-Auth` or `Authorization: Bearer`.
    pub api_keys: Vec<String>,
    /// Client credentials accepted by the auth exchange.
    pub clients: Vec<ClientCredential>,
    pub clusters: Vec<ClusterSeed>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            settings: Settings::default(),
            api_keys: vec!["sim-token".into()],
            clients: vec![ClientCredential { client_id: "sim-client".into(), client_secret: "sim-secret".into() }],
            clusters: vec![ClusterSeed {
                name: "sim-k8s-1a2b".into(),
                identifier: None,
                datacenter: None,
                groups: Vec::new(),
            }],
        }
    }
}

impl SimConfig {
    /// A config for tests: the default world running `1 / time_scale` times faster.
    pub fn fast(time_scale: f64) -> Self {
        let mut c = Self::default();
        c.settings.time_scale = time_scale;
        c
    }

    /// Parses a config file's text (YAML, or JSON, which is YAML too); `file` names it in errors,
    /// which also show the line and the key that could not be read.
    pub fn parse(text: &str, file: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_saphyr::from_str(text).map_err(|e| format!("invalid simulator config {file}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_config_file_is_the_default_and_fields_override_it() {
        let c: Result<SimConfig, _> = serde_json::from_str("{}");
        assert_eq!(c.ok(), Some(SimConfig::default()));
        let c: Result<SimConfig, _> = serde_json::from_str(
            r#"{"seed": 7, "time_scale": 0.01, "add_response": "object",
                "timings": {"boot": {"min": 1, "max": 2}},
                "clusters": [{"name": "c1", "groups": [{"name": "g", "plan": 3, "workers": 2}]}]}"#,
        );
        let c = c.unwrap_or_default();
        assert_eq!((c.seed, c.settings.time_scale), (7, 0.01));
        assert_eq!(c.settings.add_response, AddShape::Object);
        assert_eq!(c.settings.timings.boot, Span::new(1.0, 2.0));
        assert_eq!(c.settings.timings.join, Timings::default().join);
        assert_eq!(c.clusters[0].groups[0].workers, 2);
    }

    #[test]
    fn a_config_file_in_yaml_parses_and_a_bad_value_is_reported_with_the_file_and_the_key() {
        let c = SimConfig::parse("seed: 9\ntime_scale: 0.5\n", "sim.yaml").unwrap();
        assert_eq!((c.seed, c.settings.time_scale), (9, 0.5));
        assert_eq!(SimConfig::parse("", "empty.yaml").unwrap(), SimConfig::default());
        let err = SimConfig::parse("api_keys: [a]\nseed: lots\n", "/etc/sim.yaml").unwrap_err();
        assert!(err.contains("/etc/sim.yaml"), "{err}");
        assert!(err.contains("seed"), "the key is shown: {err}");
    }
}
