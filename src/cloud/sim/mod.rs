//! The VPSie API simulator (reference §6): an HTTP server the real client talks to
//! unchanged, plus the same world as an in-process [`CloudProvider`](crate::cloud::CloudProvider).
//!
//! - [`router`] / [`serve`]: the HTTP form (API paths + `/_sim/` admin API).
//! - [`SimCloud`]: the in-process form.
//! - [`NodeRegistrar`]: the node join hook; `crate::simnodes` has the kube implementation.

mod admin;
pub mod api;
pub mod catalog;
pub mod config;
mod core;
mod endpoints;
pub mod faults;
mod inproc;
mod model;
pub mod registrar;
pub mod world;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use self::config::{Settings, SimConfig};
pub use self::core::{RequestLog, Sim};
pub use self::faults::{Fault, FaultRule};
pub use self::inproc::{SimCloud, offering};
pub use self::registrar::{NodeRegistrar, RegistrarError};

/// The whole HTTP surface: admin routes under `/_sim/`, everything else the VPSie dialect.
pub fn router(sim: Arc<Sim>) -> axum::Router {
    admin::router().fallback(api::handle).with_state(sim)
}

/// How long shutdown waits for in-flight requests (a `hang` fault holds one for minutes).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `sim` on `listener` and runs node hooks through `registrar` until `shutdown`.
pub async fn serve(
    sim: Arc<Sim>,
    listener: tokio::net::TcpListener,
    registrar: Option<Arc<dyn NodeRegistrar>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut driver_stop = stop_rx.clone();
    let driver = tokio::spawn(registrar::drive(sim.clone(), registrar, async move {
        let _ = driver_stop.wait_for(|s| *s).await;
    }));
    let server = axum::serve(listener, router(sim)).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut grace = stop_rx;
    let result = tokio::select! {
        r = server => r,
        () = async {
            let _ = grace.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => Ok(()),
    };
    driver.abort();
    result
}

/// A simulator served on an ephemeral loopback port, for tests and the `sim` command.
/// Dropping it stops the server.
pub struct LoopbackSim {
    pub sim: Arc<Sim>,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl LoopbackSim {
    pub async fn start(cfg: SimConfig, registrar: Option<Arc<dyn NodeRegistrar>>) -> std::io::Result<Self> {
        let sim = Sim::new(cfg);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(sim.clone(), listener, registrar, async move {
            let _ = rx.await;
        }));
        Ok(Self { sim, addr, stop: Some(tx), task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for LoopbackSim {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}
