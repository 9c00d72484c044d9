//! The `run` subcommand: one replica of the controller. It wires the shared shutdown signal to every
//! task (server, leader election, controllers), so SIGTERM ends them all and vacates the Lease.

use std::{path::Path, sync::Arc};

use anyhow::Context as _;
use kube::{Client, config::KubeConfigOptions};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    cli::RunArgs,
    config::Config,
    controller::{self, Context},
    kube_requests::KubeRequests,
    lease::{LeaderElector, LeaseConfig},
    metrics::Metrics,
    server::{self, Readiness, ServerState},
};

/// Builds a client from a kubeconfig file, or from the in-cluster/default configuration.
pub async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    Ok(Client::try_from(kube_config(kubeconfig).await?)?)
}

/// A client whose every request is counted in `requests`.
pub async fn counted_kube_client(kubeconfig: Option<&Path>, requests: KubeRequests) -> anyhow::Result<Client> {
    let counting = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        requests.count(req.method(), req.uri());
        req
    });
    Ok(kube::client::ClientBuilder::try_from(kube_config(kubeconfig).await?)?.with_layer(&counting).build())
}

async fn kube_config(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Config> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    without_transparent_retries(&mut config);
    Ok(config)
}

/// kube's default client retries 429 up to 15 times with backoff. An eviction refused by a PDB answers
/// 429, so that retry would hide the refusal for minutes and blow through drain deadlines; our drains
/// and controllers retry on their own schedule instead.
pub fn without_transparent_retries(config: &mut kube::Config) {
    config.default_retry = false;
}

/// Fires the token on SIGTERM or SIGINT.
pub fn shutdown_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        }
        token.cancel();
    });
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let identity = match &args.identity {
        Some(id) => id.clone(),
        None => hostname()?,
    };

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let client = counted_kube_client(args.kubeconfig.as_deref(), KubeRequests::register(&mut registry)).await?;
    let cloud = crate::cloud_setup::provider(&client, &args, &config.vpsie_api.circuit_breaker, &mut registry).await?;
    let readiness = Readiness::default();
    let shutdown = CancellationToken::new();
    shutdown_on_signals(shutdown.clone());

    let server = tokio::spawn(server::serve(
        args.metrics_addr,
        ServerState { registry: Arc::new(registry), readiness: readiness.clone() },
        shutdown.clone(),
    ));

    let (leader_tx, leader_rx) = watch::channel(false);
    let elector = LeaderElector::new(
        client.clone(),
        LeaseConfig {
            name: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity: identity.clone(),
            lease_duration: args.lease_duration,
            renew_deadline: args.lease_renew_deadline,
            retry_period: args.lease_retry_period,
        },
    );
    let election = tokio::spawn(elector.run(leader_tx, shutdown.clone()));
    {
        let metrics = metrics.clone();
        let mut rx = leader_rx.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                metrics.leader.is_leader.set(i64::from(*rx.borrow()));
                metrics.leader.transitions.inc();
            }
        });
    }

    tracing::info!(%identity, lease = %args.lease_name, "starting controllers");
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter { controller: "vpsie-autoscaler".into(), instance: Some(identity.clone()) },
    );
    let ctx = Arc::new(Context::new(client, config, cloud, metrics, recorder, leader_rx, shutdown.clone()));
    let controllers = tokio::spawn(controller::run(ctx, readiness, shutdown.clone()));

    // Losing the lease ends the process: another replica may already be acting, and a fresh start is the
    // only sure way to drop every in-flight action.
    let outcome = election.await.context("leader election task panicked")?;
    shutdown.cancel();
    let _ = controllers.await;
    match server.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics server ended with an error"),
        Err(e) => tracing::warn!(error = %e, "metrics server task failed"),
        Ok(Ok(())) => {}
    }
    outcome.map_err(anyhow::Error::from)?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// The `sim` subcommand: the VPSie API simulator on a socket, optionally registering Nodes in a cluster.
pub async fn sim(args: crate::cli::SimArgs) -> anyhow::Result<()> {
    use crate::cloud::sim::{NodeRegistrar, Sim, SimConfig, serve};
    let mut cfg: SimConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            SimConfig::parse(&text, &path.display().to_string()).map_err(anyhow::Error::msg)?
        }
        None => SimConfig::default(),
    };
    if let Some(scale) = args.time_scale {
        anyhow::ensure!(scale > 0.0 && scale.is_finite(), "--time-scale must be a positive number, got {scale}");
        cfg.settings.time_scale = scale;
    }
    let registrar: Option<Arc<dyn NodeRegistrar>> = match &args.kubeconfig {
        Some(path) => Some(Arc::new(crate::simnodes::KubeNodeRegistrar::new(kube_client(Some(path)).await?))),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, nodes = registrar.is_some(), "VPSie API simulator listening");
    let shutdown = CancellationToken::new();
    shutdown_on_signals(shutdown.clone());
    serve(Sim::new(cfg), listener, registrar, async move { shutdown.cancelled().await }).await?;
    Ok(())
}

fn hostname() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .context("cannot tell this replica's identity: pass --identity or set POD_NAME")?;
    Ok(format!("{name}-{}", std::process::id()))
}
