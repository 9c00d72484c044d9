//! The simulator's shared core: world + faults + tokens + request log behind one lock,
//! and the API operations with fault effects applied. The HTTP layer and the in-process
//! provider both go through here, so they cannot drift apart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rand::Rng;
use serde::Serialize;

use super::catalog::{self, Plan};
use super::config::{AddShape, Settings, SimConfig};
use super::faults::{Effects, Fault, FaultRule, HostnameCase, RequestKey};
use super::world::{Cluster, Fate, Group, Hook, Phase, SimError, WorkerRec, World, push_bounded};
use crate::cloud::{Worker, WorkerState};

/// One line of the request log.
#[derive(Clone, Debug, Serialize)]
pub struct RequestLog {
    pub seq: u64,
    pub at: f64,
    pub method: String,
    pub endpoint: String,
    pub path: String,
    /// HTTP status answered (0 for a cut connection).
    pub status: u16,
    pub faults: Vec<u64>,
}

pub struct State {
    pub world: World,
    pub faults: Vec<FaultRule>,
    next_fault: u64,
    /// Exchanged tokens and their (real) expiry.
    tokens: HashMap<String, jiff::Timestamp>,
    pub requests: VecDeque<RequestLog>,
    seq: u64,
}

/// The simulator. Share it as `Arc<Sim>`.
pub struct Sim {
    state: Mutex<State>,
}

/// A worker as the node list shows it.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub rec: WorkerRec,
    pub hostname: String,
    pub status: &'static str,
}

/// The answer to an add.
#[derive(Clone, Debug)]
pub struct AddReply {
    pub rec: WorkerRec,
    pub shape: AddShape,
    /// Set when the add happened but must be answered with this error (duplicate-on-retry).
    pub answer_error: Option<SimError>,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                world: World::new(cfg),
                faults: Vec::new(),
                next_fault: 1,
                tokens: HashMap::new(),
                requests: VecDeque::new(),
                seq: 0,
            }),
        })
    }

    /// Locks the state (never held across an await). Ticks the world first.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.world.tick();
        g
    }

    /// Back to the seeded start; fault rules and logs are cleared. Nodes registered for
    /// the old world are reported gone so the hook can remove them.
    pub fn reset(&self) {
        let mut g = self.lock();
        let cfg = g.world.cfg.clone();
        let gone: Vec<Hook> = g
            .world
            .workers
            .iter()
            .filter(|w| w.registered)
            .map(|w| Hook::Gone { hostname: w.hostname.clone() })
            .collect();
        g.world = World::new(cfg);
        g.world.hooks.splice(0..0, gone);
        g.faults.clear();
        g.tokens.clear();
        g.requests.clear();
    }

    pub fn settings(&self) -> Settings {
        self.lock().world.cfg.settings.clone()
    }

    pub fn set_settings(&self, s: Settings) {
        let mut g = self.lock();
        g.world.clock.set_scale(s.time_scale);
        g.world.cfg.settings = s;
    }

    pub fn advance_clock(&self, secs: f64) {
        let mut g = self.lock();
        g.world.clock.advance(secs);
        g.world.tick();
    }

    pub fn take_hooks(&self) -> Vec<Hook> {
        std::mem::take(&mut self.lock().world.hooks)
    }

    pub fn add_fault(&self, mut rule: FaultRule) -> Result<FaultRule, String> {
        rule.validate()?;
        let mut g = self.lock();
        let id = g.next_fault;
        g.next_fault += 1;
        rule.prepare(id, Instant::now());
        g.faults.push(rule.clone());
        Ok(rule)
    }

    /// Replaces rule `id`; `Ok(None)` if there is no such rule.
    pub fn replace_fault(&self, id: u64, mut rule: FaultRule) -> Result<Option<FaultRule>, String> {
        rule.validate()?;
        let mut g = self.lock();
        let Some(slot) = g.faults.iter_mut().find(|r| r.id == id) else {
            return Ok(None);
        };
        rule.prepare(id, Instant::now());
        *slot = rule.clone();
        Ok(Some(rule))
    }

    pub fn faults(&self) -> Vec<FaultRule> {
        self.lock().faults.clone()
    }

    pub fn remove_fault(&self, id: u64) -> bool {
        let mut g = self.lock();
        let before = g.faults.len();
        g.faults.retain(|r| r.id != id);
        g.faults.len() != before
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Evaluates fault rules for one request (consuming `times` and rolling probabilities).
    pub fn admit(&self, key: &RequestKey<'_>) -> Effects {
        let mut g = self.lock();
        let now = Instant::now();
        let State { world, faults, .. } = &mut *g;
        let mut effects = Effects::default();
        for rule in faults.iter_mut() {
            if !rule.matches(key, now) {
                continue;
            }
            if rule.probability < 1.0 && world.rng.random::<f64>() >= rule.probability {
                continue;
            }
            if let Some(t) = rule.times.as_mut() {
                *t -= 1;
            }
            rule.hits += 1;
            effects.rule_ids.push(rule.id);
            effects.fired.push(rule.fault.clone());
        }
        if effects.has(|f| matches!(f, Fault::RevokeTokens)) {
            g.tokens.clear();
        }
        effects
    }

    pub fn log(&self, key: &RequestKey<'_>, path: &str, status: u16, effects: &Effects) {
        let mut g = self.lock();
        g.seq += 1;
        let entry = RequestLog {
            seq: g.seq,
            at: g.world.now(),
            method: key.method.to_string(),
            endpoint: key.endpoint.to_string(),
            path: path.to_string(),
            status,
            faults: effects.rule_ids.clone(),
        };
        push_bounded(&mut g.requests, entry);
    }

    pub fn requests(&self) -> Vec<RequestLog> {
        self.lock().requests.iter().cloned().collect()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Whether `token` is a configured API key or an unexpired exchanged token.
    pub fn authorized(&self, token: Option<&str>) -> bool {
        let Some(t) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return false;
        };
        let g = self.lock();
        g.world.cfg.api_keys.iter().any(|k| k == t) || g.tokens.get(t).is_some_and(|exp| *exp > jiff::Timestamp::now())
    }

    /// The client-credentials exchange: a new token and its expiry, if the pair is known.
    pub fn exchange(&self, id: &str, secret: &str) -> Option<(String, jiff::Timestamp)> {
        let mut g = self.lock();
        let known = g.world.cfg.clients.iter().any(|c| c.client_id == id && c.client_secret == secret);
        if !known {
            return None;
        }
        let token = format!("simtok-{}", g.world.uuid());
        let ttl = g.world.cfg.settings.token_ttl_secs;
        let exp = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(ttl as i64);
        g.tokens.insert(token.clone(), exp);
        Some((token, exp))
    }

    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    // ---- API operations ----

    pub fn offers(&self, dc: &str) -> Result<Vec<&'static Plan>, SimError> {
        catalog::datacenter(dc)
            .map(|_| catalog::PLANS.iter().collect())
            .ok_or_else(|| SimError::new(404, "Datacenter not found"))
    }

    /// The cluster's live node groups with their `nodes_count`, and the cluster itself.
    pub fn groups(&self, cluster: &str) -> Result<(Cluster, Vec<(Group, u32)>), SimError> {
        let g = self.lock();
        let ci = g.world.cluster_index(cluster).ok_or_else(SimError::no_cluster)?;
        let c = g.world.clusters[ci].clone();
        let at = g.world.cfg.settings.count_at;
        let rows = c
            .groups
            .iter()
            .filter(|gr| !gr.deleted)
            .map(|gr| {
                let n = g.world.live_count(&c.identifier, Some(gr.id), at);
                (gr.clone(), n)
            })
            .collect();
        Ok((c, rows))
    }

    pub fn add_group(&self, cluster: &str, name: &str, plan: u64, fx: &Effects) -> Result<(), SimError> {
        let mut g = self.lock();
        check_quota(&g.world, cluster, fx)?;
        g.world.create_group(cluster, name, plan)?;
        if fx.has(|f| matches!(f, Fault::DuplicateCreateOnRetry)) {
            return Err(SimError::new(504, "Gateway timeout"));
        }
        Ok(())
    }

    pub fn delete_group(&self, gid: u64) -> Result<(), SimError> {
        self.lock().world.delete_group(gid)
    }

    /// The cluster's listed workers (masters excluded), as shown to clients.
    pub fn nodes(&self, cluster: &str, fx: &Effects) -> Result<Vec<NodeView>, SimError> {
        let g = self.lock();
        let ci = g.world.cluster_index(cluster).ok_or_else(SimError::no_cluster)?;
        let cid = g.world.clusters[ci].identifier.clone();
        let case = hostname_case(fx);
        Ok(g.world.listed_workers(&cid).into_iter().map(|w| view(w, case)).collect())
    }

    pub fn add_worker(&self, cluster: &str, group: Option<u64>, fx: &Effects) -> Result<AddReply, SimError> {
        let mut g = self.lock();
        check_quota(&g.world, cluster, fx)?;
        let fate = fx
            .find(|f| match f {
                Fault::FailCreate { immediate: false } => Some(Fate::FailCreate),
                Fault::StuckProvisioning => Some(Fate::Stuck),
                Fault::NeverJoin => Some(Fate::NeverJoin),
                _ => None,
            })
            .unwrap_or_default();
        let i = g.world.add_worker(cluster, group, fate, slow_factor(fx))?;
        let shape = fx
            .find(|f| match f {
                Fault::AddResponse { shape } => Some(*shape),
                _ => None,
            })
            .unwrap_or(g.world.cfg.settings.add_response);
        let answer_error =
            fx.has(|f| matches!(f, Fault::DuplicateCreateOnRetry)).then(|| SimError::new(504, "Gateway timeout"));
        Ok(AddReply { rec: g.world.workers[i].clone(), shape, answer_error })
    }

    pub fn delete_worker(&self, cluster: &str, identifier: &str, fx: &Effects) -> Result<(), SimError> {
        self.lock().world.delete_worker(cluster, identifier, slow_factor(fx))?;
        already_gone(fx)
    }

    /// `reduce` endpoints: VPSie picks the victim (newest, oldest or random).
    pub fn reduce(&self, cluster: &str, group: Option<u64>, fx: &Effects) -> Result<(), SimError> {
        let mut g = self.lock();
        let ci = g.world.cluster_index(cluster).ok_or_else(SimError::no_cluster)?;
        let cid = g.world.clusters[ci].identifier.clone();
        let candidates: Vec<usize> = g
            .world
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.cluster == cid && group.is_none_or(|gr| w.group == gr))
            .filter(|(_, w)| !matches!(w.phase, Phase::Deleting | Phase::Gone | Phase::Failed))
            .map(|(i, _)| i)
            .collect();
        let policy = g.world.cfg.settings.reduce_picks;
        let pick = match policy {
            super::config::ReducePick::Newest => candidates.last().copied(),
            super::config::ReducePick::Oldest => candidates.first().copied(),
            super::config::ReducePick::Random if !candidates.is_empty() => {
                let k = g.world.rng.random_range(0..candidates.len());
                candidates.get(k).copied()
            }
            super::config::ReducePick::Random => None,
        };
        let i = pick.ok_or_else(|| SimError::new(400, "No node to remove"))?;
        g.world.start_delete(i, slow_factor(fx));
        drop(g);
        already_gone(fx)
    }
}

fn check_quota(world: &World, cluster: &str, fx: &Effects) -> Result<(), SimError> {
    let Some((max, message)) = fx.find(|f| match f {
        Fault::Quota { max_workers, message } => Some((*max_workers, message.clone())),
        _ => None,
    }) else {
        return Ok(());
    };
    let cid = world.cluster_index(cluster).map(|ci| world.clusters[ci].identifier.clone()).unwrap_or_default();
    let live = world.live_count(&cid, None, super::config::CountAt::Accepted);
    if max.is_none_or(|m| live >= m) {
        return Err(SimError::quota(message));
    }
    Ok(())
}

fn slow_factor(fx: &Effects) -> f64 {
    fx.fired
        .iter()
        .map(|f| match f {
            Fault::Slow { factor } if factor.is_finite() && *factor > 0.0 => *factor,
            _ => 1.0,
        })
        .product()
}

fn already_gone(fx: &Effects) -> Result<(), SimError> {
    if fx.has(|f| matches!(f, Fault::DeleteAlreadyGone)) { Err(SimError::new(404, "Node not found")) } else { Ok(()) }
}

fn hostname_case(fx: &Effects) -> Option<HostnameCase> {
    fx.find(|f| match f {
        Fault::HostnameCase { case } => Some(*case),
        _ => None,
    })
}

pub fn view(w: &WorkerRec, case: Option<HostnameCase>) -> NodeView {
    NodeView {
        hostname: case.map_or_else(|| w.hostname.clone(), |c| c.apply(&w.hostname)),
        status: w.phase.api_status(),
        rec: w.clone(),
    }
}

impl NodeView {
    /// The domain view, exactly what the HTTP client would parse from the JSON.
    pub fn to_worker(&self, created: jiff::Timestamp) -> Worker {
        Worker {
            identifier: self.rec.identifier.clone(),
            hostname: self.hostname.clone(),
            ip: Some(self.rec.ip.clone()),
            private_ip: Some(self.rec.private_ip.clone()),
            group_id: Some(self.rec.group),
            state: WorkerState::from_api(self.status),
            // The API reports whole seconds.
            created: jiff::Timestamp::from_second(created.as_second()).ok(),
        }
    }
}
