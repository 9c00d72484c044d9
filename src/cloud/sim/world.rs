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

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::catalog::{self, Plan};
use super::config::{CountAt, SimConfig, Span};
pub use super::model::*;

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

/// Where a simulator's numeric ids start: VPSie never reuses an id, so two simulators with different
/// seeds (one after the other against one cluster) must not hand out the same group or worker ids either.
/// The default seed keeps the familiar start at 101.
fn first_id(seed: u64) -> u64 {
    100 + (seed.wrapping_sub(1) % 1_000_000) * 1_000
}

impl World {
    pub fn new(cfg: SimConfig) -> Self {
        let mut w = Self {
            clock: Clock::new(cfg.settings.time_scale),
            rng: StdRng::seed_from_u64(cfg.seed),
            started_wall: jiff::Timestamp::now(),
            clusters: Vec::new(),
            workers: Vec::new(),
            next_id: first_id(cfg.seed),
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
            let dc = seed.datacenter.as_deref().and_then(catalog::datacenter).unwrap_or(&catalog::DATACENTERS[0]);
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
        uuid::Builder::from_random_bytes(self.rng.random()).into_uuid().to_string()
    }

    fn next_ip(&mut self, prefix: &str) -> String {
        self.ip_counter += 1;
        format!("{prefix}.{}.{}", self.ip_counter / 250, self.ip_counter % 250 + 2)
    }

    fn draw(&mut self, s: Span) -> f64 {
        if s.max > s.min { self.rng.random_range(s.min..=s.max) } else { s.min.max(0.0) }
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
        let event = Event { at: t, worker: w.identifier.clone(), hostname: w.hostname.clone(), from, to };
        match to {
            Phase::Joined => {
                w.registered = true;
                self.hooks.push(Hook::Joined(Box::new(w.clone())));
            }
            Phase::Gone if w.registered => {
                w.registered = false;
                self.hooks.push(Hook::Gone { hostname: w.hostname.clone() });
            }
            _ => {}
        }
        push_bounded(&mut self.events, event);
    }

    /// Finds a cluster by identifier, numeric id or name.
    pub fn cluster_index(&self, key: &str) -> Option<usize> {
        self.clusters
            .iter()
            .position(|c| c.identifier == key || c.id.to_string() == key || c.name.eq_ignore_ascii_case(key))
    }

    pub fn create_group(&mut self, cluster: &str, name: &str, plan: u64) -> Result<u64, SimError> {
        let ci = self.cluster_index(cluster).ok_or_else(SimError::no_cluster)?;
        if catalog::plan_by_id(plan).is_none() {
            return Err(SimError::new(400, format!("Invalid KubeSizeID {plan}")));
        }
        if name.trim().is_empty() {
            return Err(SimError::new(400, "groupName is required"));
        }
        let clash = self.clusters[ci].groups.iter().any(|g| !g.deleted && g.name == name);
        if clash {
            return Err(SimError::new(409, "Node group name already exists"));
        }
        let id = self.next_id();
        let identifier = self.uuid();
        let created = self.now();
        self.clusters[ci].groups.push(Group { id, identifier, name: name.to_string(), plan, created, deleted: false });
        Ok(id)
    }

    pub fn delete_group(&mut self, gid: u64) -> Result<(), SimError> {
        let live = self.workers.iter().any(|w| w.group == gid && is_live(w.phase, CountAt::Accepted));
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
        self.clusters[ci].groups.iter().find(|g| g.id == gid && !g.deleted)
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
    pub fn add_worker(&mut self, cluster: &str, group: Option<u64>, fate: Fate, slow: f64) -> Result<usize, SimError> {
        let ci = self.cluster_index(cluster).ok_or_else(SimError::no_cluster)?;
        let group = match group {
            Some(g) => self.group(ci, g).cloned(),
            None => self.clusters[ci].groups.iter().find(|g| !g.deleted).cloned(),
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
        let slow = if slow.is_finite() && slow > 0.0 { slow } else { 1.0 };
        let durations = [self.draw(t.pending) * slow, self.draw(t.boot) * slow, self.draw(t.join) * slow];
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
    pub fn delete_worker(&mut self, cluster: &str, identifier: &str, slow: f64) -> Result<(), SimError> {
        let ci = self.cluster_index(cluster).ok_or_else(SimError::no_cluster)?;
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
        let event =
            Event { at: now, worker: w.identifier.clone(), hostname: w.hostname.clone(), from, to: Phase::Deleting };
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
        self.workers.iter().filter(|w| w.cluster == cluster && self.listed(w, now)).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::sim::config::GroupSeed;

    fn world() -> World {
        let mut cfg = SimConfig::default();
        cfg.clusters[0].groups.push(GroupSeed { name: "g".into(), plan: 2, workers: 0 });
        World::new(cfg)
    }

    fn phase_after(w: &mut World, secs: f64, i: usize) -> Phase {
        w.clock.advance(secs);
        w.tick();
        w.workers[i].phase
    }

    #[test]
    fn simulators_with_different_seeds_hand_out_different_ids_and_identifiers() {
        let other = World::new(SimConfig { seed: 2, ..SimConfig::default() });
        let one = World::new(SimConfig::default());
        assert_eq!(one.clusters[0].id, 102, "the default seed starts ids at 101 (master 101, cluster 102)");
        assert!(
            other.clusters[0].id > one.clusters[0].id + 500,
            "ids {} and {}",
            other.clusters[0].id,
            one.clusters[0].id
        );
        assert_ne!(one.clusters[0].identifier, other.clusters[0].identifier);
    }

    #[test]
    fn the_same_seed_gives_the_same_identifiers_and_hostnames() {
        let (mut a, mut b) = (world(), world());
        let cid = a.clusters[0].identifier.clone();
        assert_eq!(cid, b.clusters[0].identifier);
        for w in [&mut a, &mut b] {
            let _ = w.add_worker(&cid, None, Fate::Normal, 1.0);
        }
        assert_eq!(a.workers[0].hostname, b.workers[0].hostname);
        assert_eq!(a.workers[0].identifier, b.workers[0].identifier);
        assert!(a.workers[0].hostname.starts_with("sim-k8s-1a2b-slave-"));
        assert_eq!(a.workers[0].hostname.len(), "sim-k8s-1a2b-slave-".len() + 4);
    }

    #[test]
    fn a_worker_walks_accepted_provisioning_running_joined_and_fires_the_join_hook() {
        let mut w = world();
        let cid = w.clusters[0].identifier.clone();
        let i = w.add_worker(&cid, None, Fate::Normal, 1.0).unwrap_or(0);
        assert_eq!(w.workers[i].phase, Phase::Accepted);
        assert!(w.listed_workers(&cid).is_empty(), "accepted workers are not listed");
        assert_eq!(phase_after(&mut w, 20.0, i), Phase::Provisioning);
        assert_eq!(w.listed_workers(&cid).len(), 1);
        assert_eq!(phase_after(&mut w, 120.0, i), Phase::Running);
        assert_eq!(phase_after(&mut w, 180.0, i), Phase::Joined);
        assert!(matches!(w.hooks.as_slice(), [Hook::Joined(_)]));
    }

    #[test]
    fn deletion_ends_in_gone_and_stops_the_cost_meter() {
        let mut w = world();
        let cid = w.clusters[0].identifier.clone();
        let i = w.add_worker(&cid, None, Fate::Normal, 1.0).unwrap_or(0);
        phase_after(&mut w, 400.0, i);
        let id = w.workers[i].identifier.clone();
        assert!(w.delete_worker(&cid, &id, 1.0).is_ok());
        assert_eq!(phase_after(&mut w, 40.0, i), Phase::Gone);
        assert!(matches!(w.hooks.last(), Some(Hook::Gone { .. })));
        assert_eq!(w.delete_worker(&cid, &id, 1.0).map_err(|e| e.status), Err(404));
        let c1 = w.cost().total_usd;
        w.clock.advance(3600.0);
        assert!((w.cost().total_usd - c1).abs() < 1e-12, "no accrual once gone");
        assert_eq!(w.cost().live_workers, 0);
    }

    #[test]
    fn fates_stop_the_machine_where_the_fault_says() {
        let mut w = world();
        let cid = w.clusters[0].identifier.clone();
        let stuck = w.add_worker(&cid, None, Fate::Stuck, 1.0).unwrap_or(0);
        let never = w.add_worker(&cid, None, Fate::NeverJoin, 1.0).unwrap_or(0);
        let fail = w.add_worker(&cid, None, Fate::FailCreate, 1.0).unwrap_or(0);
        w.clock.advance(10_000.0);
        w.tick();
        assert_eq!(w.workers[stuck].phase, Phase::Provisioning);
        assert_eq!(w.workers[never].phase, Phase::Running);
        assert_eq!(w.workers[fail].phase, Phase::Gone);
        assert!(w.hooks.is_empty(), "none of them joined");
    }

    #[test]
    fn nodes_count_follows_the_count_at_knob() {
        let mut w = world();
        let cid = w.clusters[0].identifier.clone();
        let _ = w.add_worker(&cid, None, Fate::Normal, 1.0);
        assert_eq!(w.live_count(&cid, None, CountAt::Accepted), 1);
        assert_eq!(w.live_count(&cid, None, CountAt::Running), 0);
    }

    #[test]
    fn a_standing_cluster_limit_refuses_with_the_quota_message() {
        let mut w = world();
        w.cfg.settings.max_workers_per_cluster = Some(1);
        let cid = w.clusters[0].identifier.clone();
        assert!(w.add_worker(&cid, None, Fate::Normal, 1.0).is_ok());
        let e = w.add_worker(&cid, None, Fate::Normal, 1.0);
        assert!(e.is_err_and(|e| e.in_200 && e.message.contains("exceeds the allowed limit")));
    }
}
