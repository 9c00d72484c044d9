//! Shared test harness: one simulator world, reached in-process, over loopback HTTP by the
//! real client, or through the metered wrapper around that client.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use vpsie_autoscaler::cloud::metered::Metered;
use vpsie_autoscaler::cloud::sim::{FaultRule, LoopbackSim, Sim, SimCloud, SimConfig};
use vpsie_autoscaler::cloud::vpsie::resilience::{Backoff, BreakerConfig};
use vpsie_autoscaler::cloud::vpsie::{Credentials, VpsieClient, VpsieConfig};
use vpsie_autoscaler::cloud::{CloudGroup, CloudProvider, Offering, Worker, WorkerQuery, WorkerState};

/// Virtual time runs 1000× faster: a full add → joined takes at most ~0.3 s.
pub const TIME_SCALE: f64 = 0.001;
/// Real seconds per virtual second that stop the simulator's clock: only `advance_clock` moves its
/// workers, so what a test sees of their life cycle cannot depend on how fast the machine runs.
pub const FROZEN: f64 = 1e9;
/// Request timeout of the client (and of the in-process provider for hangs).
pub const TIMEOUT: Duration = Duration::from_millis(800);
pub const CLIENT_ID: &str = "contract-client-id-4f1e";
pub const CLIENT_SECRET: &str = "contract-secret-9c2a7d";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    InProc,
    Http,
    Metered,
}

pub struct Harness {
    pub kind: Kind,
    pub sim: Arc<Sim>,
    pub cloud: Arc<dyn CloudProvider>,
    pub registry: Option<Registry>,
    pub server: Option<LoopbackSim>,
    pub cluster: String,
}

pub fn sim_config() -> SimConfig {
    let mut cfg = SimConfig::fast(TIME_SCALE);
    cfg.clients.push(vpsie_autoscaler::cloud::sim::config::ClientCredential {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
    });
    cfg
}

pub fn client_config(base: String) -> VpsieConfig {
    VpsieConfig {
        request_timeout: TIMEOUT,
        backoff: Backoff {
            max_retries: 2,
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
            jitter: 0.2,
            max_retry_after: Duration::from_millis(300),
        },
        breaker: BreakerConfig { failure_threshold: 5, open_for: Duration::from_millis(300), close_after: 1 },
        ..VpsieConfig::for_simulator(base)
    }
}

impl Harness {
    pub async fn new(kind: Kind) -> Self {
        Self::with(kind, sim_config()).await
    }

    pub async fn with(kind: Kind, cfg: SimConfig) -> Self {
        let (sim, server) = match kind {
            Kind::InProc => (Sim::new(cfg), None),
            Kind::Http | Kind::Metered => {
                let s = LoopbackSim::start(cfg, None).await.expect("loopback simulator starts");
                (s.sim.clone(), Some(s))
            }
        };
        let mut registry = None;
        let cloud: Arc<dyn CloudProvider> = match (&server, kind) {
            (Some(s), _) => {
                let client = VpsieClient::new(
                    client_config(s.base_url()),
                    Credentials::client_credentials(CLIENT_ID, CLIENT_SECRET),
                )
                .expect("client builds");
                if kind == Kind::Metered {
                    let mut reg = Registry::default();
                    let m = Metered::new(client, &mut reg);
                    registry = Some(reg);
                    Arc::new(m)
                } else {
                    Arc::new(client)
                }
            }
            (None, _) => Arc::new(SimCloud::new(sim.clone()).with_timeout(TIMEOUT)),
        };
        let cluster = sim.lock().world.clusters[0].identifier.clone();
        Self { kind, sim, cloud, registry, server, cluster }
    }

    /// A harness whose simulated clock moves only when the test advances it.
    pub async fn frozen(kind: Kind) -> Self {
        let mut cfg = sim_config();
        cfg.settings.time_scale = FROZEN;
        Self::with(kind, cfg).await
    }

    /// Virtual seconds by which any worker without a fault has joined.
    pub fn longest_normal_join(&self) -> f64 {
        let t = self.sim.settings().timings;
        t.pending.max + t.boot.max + t.join.max
    }

    /// Virtual seconds a worker without a fault needs at least to join.
    pub fn shortest_normal_join(&self) -> f64 {
        let t = self.sim.settings().timings;
        t.pending.min + t.boot.min + t.join.min
    }

    /// [`add_and_discover`](Self::add_and_discover) on a frozen clock: moves it just far enough for the new
    /// worker to be listed.
    pub async fn add_and_discover_frozen(&self, group: u64) -> Worker {
        use vpsie_autoscaler::cloud::{NewWorker, find_new_worker};
        let before = self.workers().await;
        let outcome = self.cloud.add_worker(&self.cluster, group).await.expect("add accepted");
        self.sim.advance_clock(self.sim.settings().timings.pending.max);
        match find_new_worker(&before, &self.workers().await, Some(group), Some(&outcome)) {
            NewWorker::Found(w) => w,
            other => panic!("the new worker is not listed once past its pending time: {other:?}"),
        }
    }

    /// Adds a worker without a fault, then one under `fault`, and moves the clock well past any normal join:
    /// the first must have joined (so time did pass for the second too); returns the states of both.
    pub async fn states_long_after_a_normal_join(kind: Kind, fault: serde_json::Value) -> (WorkerState, WorkerState) {
        let h = Self::frozen(kind).await;
        let g = h.group("pool", 2).await;
        let normal = h.add_and_discover_frozen(g.id).await;
        h.fault(fault);
        let faulty = h.add_and_discover_frozen(g.id).await;
        h.sim.advance_clock(10.0 * h.longest_normal_join());
        (h.state_of(&normal.identifier).await, h.state_of(&faulty.identifier).await)
    }

    pub fn fault(&self, rule: serde_json::Value) -> FaultRule {
        let rule: FaultRule = serde_json::from_value(rule).expect("fault rule parses");
        self.sim.add_fault(rule).expect("fault rule accepted")
    }

    pub fn offering(&self, plan: u64) -> Offering {
        vpsie_autoscaler::cloud::sim::offering(plan).expect("plan exists")
    }

    pub async fn group(&self, name: &str, plan: u64) -> CloudGroup {
        self.cloud.ensure_group(&self.cluster, &self.offering(plan), name).await.expect("group ensured")
    }

    pub async fn workers(&self) -> Vec<Worker> {
        self.cloud.find_workers(&self.cluster, &WorkerQuery::default()).await.expect("workers listed")
    }

    pub async fn workers_or_err(&self) -> Result<Vec<Worker>, vpsie_autoscaler::cloud::CloudError> {
        self.cloud.find_workers(&self.cluster, &WorkerQuery::default()).await
    }

    /// Waits until the cluster no longer lists the worker.
    pub async fn wait_gone(&self, identifier: &str) {
        eventually("the worker is gone", Duration::from_secs(5), || async {
            self.cloud
                .get_worker(&self.cluster, identifier)
                .await
                .err()
                .filter(vpsie_autoscaler::cloud::CloudError::is_not_found)
        })
        .await;
    }

    pub async fn state_of(&self, identifier: &str) -> vpsie_autoscaler::cloud::WorkerState {
        self.cloud.get_worker(&self.cluster, identifier).await.expect("worker listed").state
    }

    /// Waits out a breaker opened by a previous step (open_for is 300 ms in tests).
    pub async fn settle_breaker(&self) {
        if self.cloud.breaker_state() == Some(vpsie_autoscaler::cloud::BreakerState::Open) {
            tokio::time::sleep(Duration::from_millis(320)).await;
        }
    }

    /// Count of add requests the simulator saw.
    pub fn add_requests(&self) -> usize {
        self.sim.requests().iter().filter(|r| r.endpoint == "add_worker").count()
    }

    /// Number of workers the simulator ever created.
    pub fn workers_ever(&self) -> usize {
        self.sim.lock().world.workers.len()
    }

    /// Adds one worker and finds it by diffing, as the controller will.
    pub async fn add_and_discover(&self, group: u64) -> Worker {
        use vpsie_autoscaler::cloud::{NewWorker, find_new_worker};
        let before = self.workers().await;
        let outcome = self.cloud.add_worker(&self.cluster, group).await.expect("add accepted");
        eventually("the new worker is listed", Duration::from_secs(5), || async {
            match find_new_worker(&before, &self.workers().await, Some(group), Some(&outcome)) {
                NewWorker::Found(w) => Some(w),
                _ => None,
            }
        })
        .await
    }
}

/// Polls `f` every 20 ms until it yields, or panics after `limit` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
