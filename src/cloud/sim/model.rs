//! Records of the simulated account: phases, clusters, groups, workers, the virtual
//! clock, and the simulator's error and cost reports.

use std::collections::VecDeque;
use std::time::Instant;

use serde::Serialize;

use super::config::CountAt;

/// Bound on the request and event logs.
pub const LOG_CAP: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Accepted,
    Provisioning,
    Running,
    Joined,
    Deleting,
    Failed,
    Gone,
}

impl Phase {
    /// The `status` string the API reports.
    pub fn api_status(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Provisioning => "provisioning",
            Self::Running => "running",
            Self::Joined => "joined",
            Self::Deleting | Self::Gone => "deleting",
            Self::Failed => "failed",
        }
    }
}

/// What a worker is destined to do, decided by faults when it is created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    #[default]
    Normal,
    FailCreate,
    Stuck,
    NeverJoin,
}

/// Virtual time in seconds since the simulator started.
#[derive(Clone, Debug)]
pub struct Clock {
    anchor_real: Instant,
    anchor_virtual: f64,
    scale: f64,
}

impl Clock {
    pub fn new(scale: f64) -> Self {
        Self { anchor_real: Instant::now(), anchor_virtual: 0.0, scale: scale.max(1e-6) }
    }

    pub fn now(&self) -> f64 {
        self.anchor_virtual + self.anchor_real.elapsed().as_secs_f64() / self.scale
    }

    /// Changes speed without jumping.
    pub fn set_scale(&mut self, scale: f64) {
        self.anchor_virtual = self.now();
        self.anchor_real = Instant::now();
        self.scale = scale.max(1e-6);
    }

    pub fn advance(&mut self, secs: f64) {
        self.anchor_virtual += secs.max(0.0);
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Master {
    pub id: u64,
    pub identifier: String,
    pub hostname: String,
    pub ip: String,
    pub private_ip: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub id: u64,
    pub identifier: String,
    pub name: String,
    pub plan: u64,
    pub created: f64,
    pub deleted: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Cluster {
    pub id: u64,
    pub identifier: String,
    pub name: String,
    pub datacenter: String,
    pub created: f64,
    pub masters: Vec<Master>,
    pub groups: Vec<Group>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkerRec {
    pub id: u64,
    pub identifier: String,
    /// Canonical (lower-case) hostname: the Kubernetes node name.
    pub hostname: String,
    pub cluster: String,
    pub group: u64,
    pub plan: u64,
    pub phase: Phase,
    pub fate: Fate,
    pub created: f64,
    pub phase_since: f64,
    pub next_at: Option<f64>,
    /// First virtual second the node list shows it (after list lag).
    pub visible_from: Option<f64>,
    pub gone_at: Option<f64>,
    pub ip: String,
    pub private_ip: String,
    /// Pre-drawn durations: pending, boot, join.
    pub(super) durations: [f64; 3],
    pub registered: bool,
}

/// A node hook the driver must run.
#[derive(Clone, Debug)]
pub enum Hook {
    Joined(Box<WorkerRec>),
    Gone { hostname: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub at: f64,
    pub worker: String,
    pub hostname: String,
    pub from: Phase,
    pub to: Phase,
}

pub fn is_live(phase: Phase, at: CountAt) -> bool {
    match at {
        CountAt::Accepted => !matches!(phase, Phase::Failed | Phase::Gone),
        CountAt::Running => matches!(phase, Phase::Running | Phase::Joined | Phase::Deleting),
    }
}

pub fn push_bounded<T>(q: &mut VecDeque<T>, item: T) {
    if q.len() >= LOG_CAP {
        q.pop_front();
    }
    q.push_back(item);
}

#[derive(Clone, Debug, Serialize)]
pub struct CostReport {
    pub virtual_hours: f64,
    pub total_usd: f64,
    pub hourly_usd_now: f64,
    pub live_workers: usize,
    pub workers_ever: usize,
}

/// A refusal by the simulated API.
#[derive(Clone, Debug, PartialEq)]
pub struct SimError {
    pub status: u16,
    pub message: String,
    /// Quota refusals come as HTTP 200 with `error: true`, like the real API.
    pub in_200: bool,
}

impl SimError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), in_200: false }
    }

    pub fn no_cluster() -> Self {
        Self::new(404, "Cluster not found")
    }

    pub fn quota(message: Option<String>) -> Self {
        Self {
            status: 400,
            message: message.unwrap_or_else(|| "Worker nodes count exceeds the allowed limit".into()),
            in_200: true,
        }
    }
}
