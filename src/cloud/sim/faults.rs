//! Fault-injection rules (reference §6.3), managed through `/_sim/faults`.
//!
//! A rule matches by endpoint name (see [`ENDPOINTS`], or `*`), optional method, cluster
//! and group, fires with `probability` and at most `times` times, and for `for_ms` after
//! it was created if that is set. What a fired rule does is its `fault`.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::AddShape;

/// Endpoint names rules can target.
pub const ENDPOINTS: &[&str] = &[
    "auth",
    "datacenters",
    "plan_categories",
    "resources",
    "offers",
    "projects",
    "clusters",
    "cluster",
    "groups",
    "add_group",
    "delete_group",
    "add_worker",
    "add_worker_default",
    "reduce_worker",
    "reduce",
    "delete_worker",
];

/// How an injected error body looks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyStyle {
    /// `{error: true, code, message}` with the given status.
    #[default]
    Enveloped,
    /// HTTP 200 with `{error: true, code, message}`: VPSie really does this.
    Error200,
    /// The status with an empty body.
    Empty,
    /// The status with a proxy's HTML page.
    Html,
    /// The status with bytes that are not JSON at all.
    Garbage,
    /// The status with a success envelope cut off mid-way (a connection lost behind a proxy).
    Truncated,
    /// The status with an unterminated body larger than any client should buffer (11 MiB).
    Huge,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "style")]
pub enum RetryAfter {
    #[default]
    None,
    Seconds {
        secs: u64,
    },
    HttpDate {
        secs: u64,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionMode {
    /// Connections are cut (the client sees transport errors).
    #[default]
    Drop,
    /// Every call answers 503.
    Unavailable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostnameCase {
    Lower,
    Upper,
    /// Each dash-separated part capitalised, like VPSie's `HEL-Kubernetes-49ab` names.
    Mixed,
}

impl HostnameCase {
    pub fn apply(self, h: &str) -> String {
        match self {
            Self::Lower => h.to_ascii_lowercase(),
            Self::Upper => h.to_ascii_uppercase(),
            Self::Mixed => h
                .split('-')
                .map(|p| {
                    let mut c = p.chars();
                    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join("-"),
        }
    }
}

fn default_delete_status() -> u16 {
    503
}

fn default_hang_ms() -> u64 {
    600_000
}

/// What a fired rule does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer `status` without doing anything.
    HttpError {
        status: u16,
        #[serde(default)]
        body_style: BodyStyle,
        #[serde(default)]
        message: Option<String>,
    },
    /// Answer 429, with or without `Retry-After`.
    RateLimit {
        #[serde(default)]
        retry_after: RetryAfter,
    },
    /// Delay, then proceed normally.
    Latency {
        ms: u64,
        #[serde(default)]
        jitter_ms: u64,
    },
    /// Hold the request for `ms` (default 10 min), then answer 504.
    Hang {
        #[serde(default = "default_hang_ms")]
        ms: u64,
    },
    /// Cut the connection without an answer.
    DropConnection,
    /// Every endpoint fails for `duration_ms` from the rule's creation.
    Partition {
        duration_ms: u64,
        #[serde(default)]
        mode: PartitionMode,
    },
    /// Add answers success, then the worker goes FAILED and vanishes; with `immediate`,
    /// the add fails at once (500) and nothing is created.
    FailCreate {
        #[serde(default)]
        immediate: bool,
    },
    /// The worker never leaves PROVISIONING.
    StuckProvisioning,
    /// The worker runs but never joins.
    NeverJoin,
    /// Multiplies the new worker's pending/boot/join (or a deletion's) durations.
    Slow { factor: f64 },
    /// The add (or group create) is refused with a quota message (HTTP 200, error:true),
    /// always or only once the cluster has `max_workers` live workers.
    Quota {
        #[serde(default)]
        max_workers: Option<u32>,
        #[serde(default)]
        message: Option<String>,
    },
    /// Delete endpoints fail with `status` and leave the worker alone.
    DeleteFail {
        #[serde(default = "default_delete_status")]
        status: u16,
        #[serde(default)]
        body_style: BodyStyle,
    },
    /// The delete happens but the answer is 404 "not found".
    DeleteAlreadyGone,
    /// The add (or group create) happens but the answer is a 504, as if it timed out:
    /// a client that retries blindly creates a second one.
    DuplicateCreateOnRetry,
    /// All exchanged tokens are revoked before this request is checked.
    RevokeTokens,
    /// Listed hostnames are shown in this case.
    HostnameCase { case: HostnameCase },
    /// Overrides the add answer's shape.
    AddResponse { shape: AddShape },
}

fn one() -> f64 {
    1.0
}

fn any() -> String {
    "*".into()
}

/// One rule as posted to `/_sim/faults`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Assigned by the simulator.
    #[serde(default)]
    pub id: u64,
    #[serde(default = "any")]
    pub endpoint: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub group: Option<u64>,
    /// Fires at most this many more times (`null`: unlimited).
    #[serde(default)]
    pub times: Option<u32>,
    #[serde(default = "one")]
    pub probability: f64,
    /// Active only this long after creation (`null`: until deleted).
    #[serde(default)]
    pub for_ms: Option<u64>,
    /// How many times it fired (reported back).
    #[serde(default)]
    pub hits: u64,
    pub fault: Fault,
    #[serde(skip)]
    pub created: Option<Instant>,
}

/// What identifies a request for matching.
#[derive(Clone, Debug, Default)]
pub struct RequestKey<'a> {
    pub endpoint: &'a str,
    pub method: &'a str,
    pub cluster: Option<&'a str>,
    pub group: Option<u64>,
}

impl FaultRule {
    /// Normalises a freshly posted rule.
    pub fn prepare(&mut self, id: u64, now: Instant) {
        self.id = id;
        self.hits = 0;
        self.created = Some(now);
        if let Fault::Partition { duration_ms, .. } = self.fault {
            self.endpoint = "*".into();
            self.for_ms = Some(duration_ms);
        }
        self.probability = self.probability.clamp(0.0, 1.0);
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.endpoint != "*" && !ENDPOINTS.contains(&self.endpoint.as_str()) {
            return Err(format!("unknown endpoint {:?}; use one of {ENDPOINTS:?} or \"*\"", self.endpoint));
        }
        if let Fault::HttpError { status, .. } | Fault::DeleteFail { status, .. } = self.fault
            && !(100..600).contains(&status)
        {
            return Err(format!("status {status} out of range"));
        }
        Ok(())
    }

    pub fn expired(&self, now: Instant) -> bool {
        match (self.for_ms, self.created) {
            (Some(ms), Some(c)) => now.duration_since(c) >= Duration::from_millis(ms),
            _ => false,
        }
    }

    /// Whether the rule applies (before the probability roll).
    pub fn matches(&self, key: &RequestKey<'_>, now: Instant) -> bool {
        self.times != Some(0)
            && !self.expired(now)
            && (self.endpoint == "*" || self.endpoint == key.endpoint)
            && self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(key.method))
            && self.cluster.as_deref().is_none_or(|c| key.cluster == Some(c))
            && self.group.is_none_or(|g| key.group == Some(g))
            && self.applies_to(key.endpoint)
    }

    /// Faults that only make sense on some endpoints ignore the others even under `*`.
    fn applies_to(&self, endpoint: &str) -> bool {
        let adds = matches!(endpoint, "add_worker" | "add_worker_default");
        let deletes = matches!(endpoint, "delete_worker" | "reduce_worker" | "reduce" | "delete_group");
        match self.fault {
            Fault::FailCreate { .. } | Fault::StuckProvisioning | Fault::NeverJoin | Fault::AddResponse { .. } => adds,
            Fault::Quota { .. } | Fault::DuplicateCreateOnRetry => adds || endpoint == "add_group",
            Fault::DeleteFail { .. } | Fault::DeleteAlreadyGone => deletes,
            Fault::Slow { .. } => adds || deletes,
            Fault::HostnameCase { .. } => matches!(endpoint, "cluster" | "add_worker"),
            _ => true,
        }
    }
}

/// The decision for one request, from all rules that fired.
#[derive(Clone, Debug, Default)]
pub struct Effects {
    /// Faults that fired, in rule order; the first answer-replacing one wins.
    pub fired: Vec<Fault>,
    /// Ids of the rules that fired (for the request log).
    pub rule_ids: Vec<u64>,
}

/// How the request must be answered instead of normally, if at all.
#[derive(Clone, Debug, PartialEq)]
pub enum Reject {
    Respond { status: u16, style: BodyStyle, message: String, retry_after: RetryAfter },
    Hang(Duration),
    Drop,
}

impl Effects {
    pub fn delay(&self) -> Duration {
        self.fired
            .iter()
            .map(|f| match f {
                Fault::Latency { ms, .. } => Duration::from_millis(*ms),
                _ => Duration::ZERO,
            })
            .sum()
    }

    /// The answer that replaces the normal one before anything is done.
    pub fn reject(&self) -> Option<Reject> {
        self.fired.iter().find_map(|f| match f {
            Fault::HttpError { status, body_style, message } => Some(Reject::Respond {
                status: *status,
                style: *body_style,
                message: message.clone().unwrap_or_else(|| default_message(*status)),
                retry_after: RetryAfter::None,
            }),
            Fault::DeleteFail { status, body_style } => Some(Reject::Respond {
                status: *status,
                style: *body_style,
                message: "Failed to delete node".into(),
                retry_after: RetryAfter::None,
            }),
            Fault::RateLimit { retry_after } => Some(Reject::Respond {
                status: 429,
                style: BodyStyle::Enveloped,
                message: "Rate limit exceeded".into(),
                retry_after: *retry_after,
            }),
            Fault::FailCreate { immediate: true } => Some(Reject::Respond {
                status: 500,
                style: BodyStyle::Enveloped,
                message: "Failed to create node".into(),
                retry_after: RetryAfter::None,
            }),
            Fault::Partition { mode: PartitionMode::Unavailable, .. } => Some(Reject::Respond {
                status: 503,
                style: BodyStyle::Html,
                message: "Service Unavailable".into(),
                retry_after: RetryAfter::None,
            }),
            Fault::Partition { mode: PartitionMode::Drop, .. } | Fault::DropConnection => Some(Reject::Drop),
            Fault::Hang { ms } => Some(Reject::Hang(Duration::from_millis(*ms))),
            _ => None,
        })
    }

    pub fn has(&self, pred: impl Fn(&Fault) -> bool) -> bool {
        self.fired.iter().any(pred)
    }

    pub fn find<T>(&self, f: impl Fn(&Fault) -> Option<T>) -> Option<T> {
        self.fired.iter().find_map(f)
    }
}

fn default_message(status: u16) -> String {
    match status {
        400 => "Bad request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not found",
        409 => "Conflict",
        422 => "Unprocessable entity",
        429 => "Rate limit exceeded",
        500 => "Internal server error",
        502 => "Bad gateway",
        503 => "Service unavailable",
        504 => "Gateway timeout",
        _ => "Injected error",
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_from_the_documented_json() {
        let r: Result<FaultRule, _> = serde_json::from_str(
            r#"{"endpoint":"add_worker","times":2,
                "fault":{"kind":"http_error","status":503,"body_style":"html"}}"#,
        );
        assert!(matches!(r, Ok(FaultRule { times: Some(2), fault: Fault::HttpError { status: 503, .. }, .. })));
        let r: Result<FaultRule, _> =
            serde_json::from_str(r#"{"fault":{"kind":"rate_limit","retry_after":{"style":"http_date","secs":3}}}"#);
        assert!(r.is_ok());
    }

    #[test]
    fn add_only_faults_ignore_other_endpoints_even_under_a_wildcard() {
        let mut r = FaultRule {
            id: 0,
            endpoint: "*".into(),
            method: None,
            cluster: None,
            group: None,
            times: None,
            probability: 1.0,
            for_ms: None,
            hits: 0,
            fault: Fault::StuckProvisioning,
            created: None,
        };
        let now = Instant::now();
        r.prepare(1, now);
        let key = |e| RequestKey { endpoint: e, method: "POST", ..RequestKey::default() };
        assert!(r.matches(&key("add_worker"), now));
        assert!(!r.matches(&key("cluster"), now));
    }

    #[test]
    fn mixed_case_capitalises_each_part() {
        assert_eq!(HostnameCase::Mixed.apply("sim-k8s-1a2b-slave-00af"), "Sim-K8s-1a2b-Slave-00af");
    }
}
