//! Node join hook: what VPSie's own join (and cloud controller) would do to the cluster
//! when a worker joins or disappears. The kube implementation lives outside `cloud/`
//! (`crate::simnodes`), because this module must not depend on kube.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

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
/// Attempts per hook before it is given up (and logged).
const MAX_ATTEMPTS: u32 = 5;

/// Runs node hooks until `shutdown` resolves. Without a registrar the hooks are dropped
/// (the `/_sim/events` log still records every transition).
pub async fn drive(sim: Arc<Sim>, registrar: Option<Arc<dyn NodeRegistrar>>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut retry: Vec<(Hook, u32)> = Vec::new();
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(DRIVER_TICK) => {}
        }
        let fresh = sim.take_hooks().into_iter().map(|h| (h, 0));
        let batch: Vec<(Hook, u32)> = std::mem::take(&mut retry).into_iter().chain(fresh).collect();
        let Some(reg) = registrar.as_ref() else {
            continue;
        };
        for (hook, attempts) in batch {
            let result = run(reg.as_ref(), &hook).await;
            if let Err(e) = result {
                if attempts + 1 < MAX_ATTEMPTS {
                    tracing::debug!(error = %e, "node hook failed; will retry");
                    retry.push((hook, attempts + 1));
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
