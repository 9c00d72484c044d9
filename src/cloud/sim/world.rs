//! The simulated VPSie account: clusters, node groups, workers and their state machine,
//! on a virtual clock (reference §6.2).
//!
//! ```text
//! ACCEPTED -> PROVISIONING -> RUNNING -> JOINED
//!     fail_create: PROVISIONING -> FAILED -> GONE (vanishes)
//!     stuck:       PROVISIONING forever;  never_join: RUNNING forever
//! any -> DELETING -> GONE
//! ```
//! State advances lazily: every operation first calls [`World::tick`], so no background
//! task is needed for correctness (the driver only exists to fire node hooks on time).

use std::collections::VecDeque;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::catalog::{self, Plan};
use super::config::{CountAt, SimConfig, Span};

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
    fn new(scale: f64) -> Self {
        Self {
            anchor_real: Instant::now(),
            anchor_virtual: 0.0,
            scale: scale.max(1e-6),
        }
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
    durations: [f64; 3],
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

pub struct World {
    pub cfg: SimConfig,
    pub clock: Clock,
    pub rng: StdRng,
    pub started_wall: jiff::Timestamp,
    pub clusters: Vec<Cluster>,
    pub workers: Vec<WorkerRec>,
    next_id: u64,
    ip_counter: u32,
    pub events: VecDeque<Event>,
    pub hooks: Vec<Hook>,
}

impl World {
    pub fn new(cfg: SimConfig) -> Self {
        let mut w = Self {
            clock: Clock::new(cfg.settings.time_scale),
            rng: StdRng::seed_from_u64(cfg.seed),
            started_wall: jiff::Timestamp::now(),
            clusters: Vec::new(),
            workers: Vec::new(),
            next_id: 100,
            ip_counter: 10,
            events: VecDeque::new(),
            hooks: Vec::new(),
            cfg,
        };
        w.seed();
        w
    }

    fn seed(&mut self) {
        for seed in self.cfg.clusters.clone() {
            let identifier = seed.identifier.clone().unwrap_or_else(|| self.uuid());
            let dc = seed
                .datacenter
                .as_deref()
                .and_then(catalog::datacenter)
                .unwrap_or(&catalog::DATACENTERS[0]);
            let master = Master {
                id: self.next_id(),
                identifier: self.uuid(),
                hostname: format!("{}-master-main", seed.name),
                ip: self.next_ip("185.10"),
                private_ip: self.next_ip("10.0"),
            };
            let id = self.next_id();
            self.clusters.push(Cluster {
                id,
                identifier: identifier.clone(),
                name: seed.name.clone(),
                datacenter: dc.identifier.to_string(),
                created: 0.0,
                masters: vec![master],
                groups: Vec::new(),
            });
            for g in &seed.groups {
                let Ok(gid) = self.create_group(&identifier, &g.name, g.plan) else {
                    continue;
                };
                for _ in 0..g.workers {
                    if let Ok(i) = self.add_worker(&identifier, Some(gid), Fate::Normal, 1.0) {
                        self.force_joined(i);
                    }
                }
            }
        }
    }

    /// Seeded workers start life joined.
    fn force_joined(&mut self, i: usize) {
        let w = &mut self.workers[i];
        w.phase = Phase::Joined;
        w.visible_from = Some(0.0);
        w.next_at = None;
        w.registered = true;
        self.hooks.push(Hook::Joined(Box::new(w.clone())));
    }

    pub fn now(&self) -> f64 {
        self.clock.now()
    }

    /// Virtual seconds → wall-clock timestamp for API fields.
    pub fn wall(&self, at: f64) -> jiff::Timestamp {
        self.started_wall + jiff::SignedDuration::from_secs_f64(at.max(0.0))
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn uuid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }

    fn next_ip(&mut self, prefix: &str) -> String {
        self.ip_counter += 1;
        format!(
            "{prefix}.{}.{}",
            self.ip_counter / 250,
            self.ip_counter % 250 + 2
        )
    }

    fn draw(&mut self, s: Span) -> f64 {
        if s.max > s.min {
            self.rng.random_range(s.min..=s.max)
        } else {
            s.min.max(0.0)
        }
    }

    /// Advances every worker to the current virtual time.
    pub fn tick(&mut self) {
        let now = self.now();
        for i in 0..self.workers.len() {
            while let Some(t) = self.workers[i].next_at.filter(|t| *t <= now) {
                self.step(i, t);
            }
        }
    }

    fn step(&mut self, i: usize, t: f64) {
        let lag = self.cfg.settings.list_lag_secs.max(0.0);
        let linger = self.draw(self.cfg.settings.timings.failed_linger);
        let w = &mut self.workers[i];
        let from = w.phase;
        let [_, boot, join] = w.durations;
        let (to, next) = match (w.phase, w.fate) {
            (Phase::Accepted, Fate::Stuck) => (Phase::Provisioning, None),
            (Phase::Accepted, Fate::FailCreate) => (Phase::Provisioning, Some(t + boot / 2.0)),
            (Phase::Accepted, _) => (Phase::Provisioning, Some(t + boot)),
            (Phase::Provisioning, Fate::FailCreate) => (Phase::Failed, Some(t + linger)),
            (Phase::Provisioning, Fate::NeverJoin) => (Phase::Running, None),
            (Phase::Provisioning, _) => (Phase::Running, Some(t + join)),
            (Phase::Running, _) => (Phase::Joined, None),
            (Phase::Deleting | Phase::Failed, _) => (Phase::Gone, None),
            (p, _) => (p, None),
        };
        if to == Phase::Provisioning {
            w.visible_from = Some(t + lag);
        }
        if to == Phase::Gone {
            w.gone_at = Some(t);
        }
        w.phase = to;
        w.phase_since = t;
        w.next_at = next;
        let event = Event {
            at: t,
            worker: w.identifier.clone(),
            hostname: w.hostname.clone(),
            from,
            to,
        };
        match to {
            Phase::Joined => {
                w.registered = true;
                self.hooks.push(Hook::Joined(Box::new(w.clone())));
            }
            Phase::Gone if w.registered => {
                w.registered = false;
                self.hooks.push(Hook::Gone {
                    hostname: w.hostname.clone(),
                });
            }
            _ => {}
        }
        push_bounded(&mut self.events, event);
    }

    /// Finds a cluster by identifier, numeric id or name.
    pub fn cluster_index(&self, key: &str) -> Option<usize> {
        self.clusters.iter().position(|c| {
            c.identifier == key || c.id.to_string() == key || c.name.eq_ignore_ascii_case(key)
        })
    }

    pub fn create_group(&mut self, cluster: &str, name: &str, plan: u64) -> Result<u64, SimError> {
        let ci = self
            .cluster_index(cluster)
            .ok_or_else(SimError::no_cluster)?;
        if catalog::plan_by_id(plan).is_none() {
            return Err(SimError::new(400, format!("Invalid KubeSizeID {plan}")));
        }
        if name.trim().is_empty() {
            return Err(SimError::new(400, "groupName is required"));
        }
        let clash = self.clusters[ci]
            .groups
            .iter()
            .any(|g| !g.deleted && g.name == name);
        if clash {
            return Err(SimError::new(409, "Node group name already exists"));
        }
        let id = self.next_id();
        let identifier = self.uuid();
        let created = self.now();
        self.clusters[ci].groups.push(Group {
            id,
            identifier,
            name: name.to_string(),
            plan,
            created,
            deleted: false,
        });
        Ok(id)
    }

    pub fn delete_group(&mut self, gid: u64) -> Result<(), SimError> {
        let live = self
            .workers
            .iter()
            .any(|w| w.group == gid && is_live(w.phase, CountAt::Accepted));
        let g = self
            .clusters
            .iter_mut()
            .flat_map(|c| c.groups.iter_mut())
            .find(|g| g.id == gid && !g.deleted)
            .ok_or_else(|| SimError::new(404, "Node group not found"))?;
        if live {
            return Err(SimError::new(409, "Node group still has nodes"));
        }
        g.deleted = true;
        Ok(())
    }

    pub fn group(&self, ci: usize, gid: u64) -> Option<&Group> {
        self.clusters[ci]
            .groups
            .iter()
            .find(|g| g.id == gid && !g.deleted)
    }

    /// Live workers of a cluster (for quotas and counts).
    pub fn live_count(&self, cluster: &str, group: Option<u64>, at: CountAt) -> u32 {
        self.workers
            .iter()
            .filter(|w| w.cluster == cluster && group.is_none_or(|g| w.group == g))
            .filter(|w| is_live(w.phase, at))
            .count() as u32
    }

    /// Creates a worker in ACCEPTED; returns its index.
    pub fn add_worker(
        &mut self,
        cluster: &str,
        group: Option<u64>,
        fate: Fate,
        slow: f64,
    ) -> Result<usize, SimError> {
        let ci = self
            .cluster_index(cluster)
            .ok_or_else(SimError::no_cluster)?;
        let group = match group {
            Some(g) => self.group(ci, g).cloned(),
            None => self.clusters[ci]
                .groups
                .iter()
                .find(|g| !g.deleted)
                .cloned(),
        }
        .ok_or_else(|| SimError::new(404, "Node group not found"))?;
        let c = &self.clusters[ci];
        let (cid, cname) = (c.identifier.clone(), c.name.to_ascii_lowercase());
        if let Some(max) = self.cfg.settings.max_workers_per_cluster
            && self.live_count(&cid, None, CountAt::Accepted) >= max
        {
            return Err(SimError::quota(None));
        }
        let hostname = loop {
            let h = format!("{cname}-slave-{:04x}", self.rng.random::<u16>());
            if !self.workers.iter().any(|w| w.hostname == h) {
                break h;
            }
        };
        let t = self.cfg.settings.timings.clone();
        let slow = if slow.is_finite() && slow > 0.0 {
            slow
        } else {
            1.0
        };
        let durations = [
            self.draw(t.pending) * slow,
            self.draw(t.boot) * slow,
            self.draw(t.join) * slow,
        ];
        let now = self.now();
        let rec = WorkerRec {
            id: self.next_id(),
            identifier: self.uuid(),
            hostname,
            cluster: cid,
            group: group.id,
            plan: group.plan,
            phase: Phase::Accepted,
            fate,
            created: now,
            phase_since: now,
            next_at: Some(now + durations[0]),
            visible_from: None,
            gone_at: None,
            ip: self.next_ip("185.20"),
            private_ip: self.next_ip("10.1"),
            durations,
            registered: false,
        };
        self.workers.push(rec);
        Ok(self.workers.len() - 1)
    }

    /// Starts deleting a worker. Deleting one already deleting is accepted again;
    /// one that is gone (or unknown) is 404.
    pub fn delete_worker(
        &mut self,
        cluster: &str,
        identifier: &str,
        slow: f64,
    ) -> Result<(), SimError> {
        let ci = self
            .cluster_index(cluster)
            .ok_or_else(SimError::no_cluster)?;
        let cid = self.clusters[ci].identifier.clone();
        let i = self
            .workers
            .iter()
            .position(|w| w.cluster == cid && w.identifier == identifier && w.phase != Phase::Gone)
            .ok_or_else(|| SimError::new(404, "Node not found"))?;
        self.start_delete(i, slow);
        Ok(())
    }

    pub fn start_delete(&mut self, i: usize, slow: f64) {
        if matches!(self.workers[i].phase, Phase::Deleting | Phase::Gone) {
            return;
        }
        let d = self.draw(self.cfg.settings.timings.delete) * slow.max(0.0);
        let now = self.now();
        let w = &mut self.workers[i];
        let from = w.phase;
        w.phase = Phase::Deleting;
        w.phase_since = now;
        w.next_at = Some(now + d);
        let event = Event {
            at: now,
            worker: w.identifier.clone(),
            hostname: w.hostname.clone(),
            from,
            to: Phase::Deleting,
        };
        push_bounded(&mut self.events, event);
    }

    /// Whether the node list shows the worker now.
    pub fn listed(&self, w: &WorkerRec, now: f64) -> bool {
        let visible = w.visible_from.is_some_and(|v| v <= now);
        let lag = self.cfg.settings.list_lag_secs.max(0.0);
        match w.phase {
            Phase::Accepted => false,
            Phase::Gone => visible && w.gone_at.is_some_and(|g| g + lag > now),
            _ => visible,
        }
    }

    pub fn listed_workers(&self, cluster: &str) -> Vec<&WorkerRec> {
        let now = self.now();
        self.workers
            .iter()
            .filter(|w| w.cluster == cluster && self.listed(w, now))
            .collect()
    }

    pub fn plan_of(&self, w: &WorkerRec) -> Option<&'static Plan> {
        catalog::plan_by_id(w.plan)
    }

    /// Spend so far: each worker accrues monthly/720 per virtual hour from ACCEPTED to GONE.
    pub fn cost(&self) -> CostReport {
        let now = self.now();
        let mut total = 0.0;
        let mut hourly_now = 0.0;
        let mut live = 0;
        for w in &self.workers {
            let Some(p) = self.plan_of(w) else { continue };
            let end = w.gone_at.unwrap_or(now);
            total += (end - w.created).max(0.0) / 3600.0 * p.hourly();
            if w.gone_at.is_none() {
                hourly_now += p.hourly();
                live += 1;
            }
        }
        CostReport {
            virtual_hours: now / 3600.0,
            total_usd: total,
            hourly_usd_now: hourly_now,
            live_workers: live,
            workers_ever: self.workers.len(),
        }
    }
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
        Self {
            status,
            message: message.into(),
            in_200: false,
        }
    }

    pub fn no_cluster() -> Self {
        Self::new(404, "Cluster not found")
    }

    pub fn quota(message: Option<String>) -> Self {
        Self {
            status: 400,
            message: message
                .unwrap_or_else(|| "Worker nodes count exceeds the allowed limit".into()),
            in_200: true,
        }
    }
}
