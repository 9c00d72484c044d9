//! The HTTP endpoints of a replica: `/metrics`, `/healthz` (the process is alive) and `/readyz` (its
//! watches have synced). Neither probe touches the VPSie API: an outage of the cloud must not restart
//! the controller, nor spend its rate-limit budget.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get};
use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio_util::sync::CancellationToken;

/// Set once, when every watch of this replica has listed its objects.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
pub struct ServerState {
    pub registry: Arc<Registry>,
    pub readiness: Readiness,
}

pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<ServerState>) -> impl IntoResponse {
    let mut body = String::new();
    match encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics failed: {e}")).into_response(),
    }
}

async fn readyz(State(state): State<ServerState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced yet")
    }
}

/// Serves the router until `shutdown` fires.
pub async fn serve(addr: SocketAddr, state: ServerState, shutdown: CancellationToken) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(state)).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn state() -> (ServerState, Metrics) {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        (ServerState { registry: Arc::new(registry), readiness: Readiness::default() }, metrics)
    }

    async fn get(state: &ServerState, path: &str) -> (StatusCode, String) {
        let req = axum::http::Request::get(path).body(Body::empty()).unwrap();
        let resp = router(state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn healthz_answers_ok_before_the_watches_sync() {
        let (state, _) = state();
        assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn readyz_is_unavailable_until_the_watches_sync() {
        let (state, _) = state();
        assert_eq!(get(&state, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        state.readiness.set_ready();
        assert_eq!(get(&state, "/readyz").await, (StatusCode::OK, "ok".to_string()));
    }

    #[tokio::test]
    async fn metrics_show_the_runbook_rebalancer_series_from_the_start() {
        let (state, metrics) = state();
        let (status, body) = get(&state, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(r#"rebalancer_operations_total{operation="rollback",result="failure"} 0"#), "{body}");
        assert!(body.contains(r#"rebalancer_operations_total{operation="rebalance",result="success"} 0"#), "{body}");
        metrics.leader.is_leader.set(1);
        let (_, body) = get(&state, "/metrics").await;
        assert!(body.contains("vpsie_autoscaler_leader 1"), "{body}");
        assert!(body.ends_with("# EOF\n"));
    }
}
