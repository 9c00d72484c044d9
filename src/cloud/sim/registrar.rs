//! Node join hook: what VPSie's own join (and cloud controller) would do to the cluster
//! when a worker joins or disappears. The kube implementation lives outside `cloud/`
//! (`crate::simnodes`), because this module must not depend on kube.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::catalog;
use super::core::Sim;
use super::world::Hook;
use crate::cloud::{Offering, Worker};

pub type RegistrarError = Box<dyn std::error::Error + Send + Sync>;

/// Called by the simulator when a worker reaches JOINED, and when it is GONE.
#[async_trait]
pub trait NodeRegistrar: Send + Sync {
    /// Creates the node for `worker` (name = lower-case hostname), sized as `offering`.
    /// Must be idempotent: it may be called again after a failure.
    async fn register(&self, worker: &Worker, offering: &Offering) -> Result<(), RegistrarError>;
    /// Removes the node; a node that does not exist counts as removed.
    async fn deregister(&self, hostname: &str) -> Result<(), RegistrarError>;
}

/// How often the driver advances the world and runs hooks (real time).
pub const DRIVER_TICK: Duration = Duration::from_millis(50);
/// A failed hook is tried again after a delay that doubles up to [`RETRY_MAX_DELAY`], as a kubelet keeps
/// trying to register while the API server is away (a restart takes seconds), and is given up (and
/// logged) after this many attempts: about three minutes.
const MAX_ATTEMPTS: u32 = 100;
const RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

fn retry_delay(attempts: u32) -> Duration {
    DRIVER_TICK.saturating_mul(1 << attempts.min(8)).min(RETRY_MAX_DELAY)
}

/// Runs node hooks until `shutdown` resolves. Without a registrar the hooks are dropped
/// (the `/_sim/events` log still records every transition).
pub async fn drive(sim: Arc<Sim>, registrar: Option<Arc<dyn NodeRegistrar>>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    // (hook, failed attempts so far, not before)
    let mut retry: Vec<(Hook, u32, Instant)> = Vec::new();
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(DRIVER_TICK) => {}
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut retry).into_iter().partition(|(_, _, at)| *at <= now);
        retry = later;
        let fresh = sim.take_hooks().into_iter().map(|h| (h, 0, now));
        let batch: Vec<(Hook, u32, Instant)> = due.into_iter().chain(fresh).collect();
        let Some(reg) = registrar.as_ref() else {
            continue;
        };
        for (hook, attempts, _) in batch {
            let result = run(reg.as_ref(), &hook).await;
            if let Err(e) = result {
                if attempts + 1 < MAX_ATTEMPTS {
                    tracing::debug!(error = %e, attempts = attempts + 1, "node hook failed; will retry");
                    retry.push((hook, attempts + 1, Instant::now() + retry_delay(attempts)));
                } else {
                    tracing::warn!(error = %e, "node hook failed; giving up");
                }
            }
        }
    }
}

async fn run(reg: &dyn NodeRegistrar, hook: &Hook) -> Result<(), RegistrarError> {
    match hook {
        Hook::Joined(rec) => {
            let Some(plan) = catalog::plan_by_id(rec.plan) else {
                return Ok(());
            };
            let worker = Worker {
                identifier: rec.identifier.clone(),
                hostname: rec.hostname.to_ascii_lowercase(),
                ip: Some(rec.ip.clone()),
                private_ip: Some(rec.private_ip.clone()),
                group_id: Some(rec.group),
                state: crate::cloud::WorkerState::Ready,
                created: None,
            };
            reg.register(&worker, &plan.offering()).await
        }
        Hook::Gone { hostname } => reg.deregister(&hostname.to_ascii_lowercase()).await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Refuses every call until `refusals` ran out, as a registrar facing an API server that is restarting.
    struct Flaky {
        refusals: Mutex<u32>,
        removed: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl NodeRegistrar for Flaky {
        async fn register(&self, _: &Worker, _: &Offering) -> Result<(), RegistrarError> {
            Ok(())
        }
        async fn deregister(&self, hostname: &str) -> Result<(), RegistrarError> {
            let mut left = self.refusals.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err("connection refused".into());
            }
            self.removed.lock().unwrap().push(hostname.to_string());
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hook_refused_for_twenty_seconds_is_still_carried_out_once_the_api_server_is_back() {
        let sim = Sim::new(super::super::config::SimConfig::default());
        sim.lock().world.hooks.push(Hook::Gone { hostname: "Worker-1".into() });
        // With the 2 s ceiling, twenty attempts span more than twenty seconds of refusals.
        let flaky = Arc::new(Flaky { refusals: Mutex::new(20), removed: Mutex::new(Vec::new()) });
        let registrar: Arc<dyn NodeRegistrar> = flaky.clone();
        let driver = tokio::spawn(drive(sim, Some(registrar), std::future::pending()));
        let started = tokio::time::Instant::now();
        while flaky.removed.lock().unwrap().is_empty() {
            tokio::time::sleep(DRIVER_TICK).await;
        }
        driver.abort();
        assert_eq!(*flaky.removed.lock().unwrap(), ["worker-1"]);
        assert!(started.elapsed() >= Duration::from_secs(20), "it waited between attempts: {:?}", started.elapsed());
        assert_eq!(*flaky.refusals.lock().unwrap(), 0, "every refusal was met before the success");
    }

    #[test]
    fn the_retry_delay_doubles_from_one_tick_up_to_two_seconds() {
        assert_eq!(retry_delay(0), DRIVER_TICK);
        assert_eq!(retry_delay(1), DRIVER_TICK * 2);
        assert_eq!(retry_delay(5), DRIVER_TICK * 32);
        assert_eq!(retry_delay(6), RETRY_MAX_DELAY);
        assert_eq!(retry_delay(99), RETRY_MAX_DELAY);
    }
}
