//! Secrets (token, client id and secret) never reach errors, Debug output, metrics or logs.
//!
//! Alone in its own test binary: `tracing` caches per-callsite interest process-wide, so a
//! thread-local capture subscriber can miss events while other tests run concurrently.

mod cloud_common;

use std::sync::{Arc, Mutex};

use cloud_common::{CLIENT_ID, CLIENT_SECRET, Harness, Kind, client_config, sim_config};
use serde_json::json;
use vpsie_autoscaler::cloud::sim::LoopbackSim;
use vpsie_autoscaler::cloud::vpsie::{Credentials, VpsieClient};
use vpsie_autoscaler::cloud::{CloudError, CloudProvider, WorkerQuery};

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_appear_in_errors_debug_output_metrics_or_logs() {
    let capture = Capture::default();
    let sink = capture.clone();
    let subscriber =
        tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(move || sink.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let token = "static-token-7e3b19c4";
    let mut cfg = sim_config();
    cfg.api_keys.push(token.into());
    let h = Harness::with(Kind::Metered, cfg).await;
    let base = h.server.as_ref().map(LoopbackSim::base_url).unwrap_or_default();
    let mut errors: Vec<CloudError> = Vec::new();
    // A server that echoes our secrets back in its error messages.
    h.fault(json!({"endpoint": "groups", "times": 1, "fault": {"kind": "http_error", "status": 400,
        "message": format!("bad client {CLIENT_ID} with secret {CLIENT_SECRET}")}}));
    errors.extend(h.cloud.groups(&h.cluster).await.err());
    h.fault(json!({"endpoint": "cluster", "times": 1, "fault": {"kind": "http_error", "status": 200,
        "body_style": "error200", "message": format!("client {CLIENT_ID} expired; secret={CLIENT_SECRET}")}}));
    let token_client = VpsieClient::new(client_config(base.clone()), Credentials::token(token)).expect("client");
    h.fault(json!({"endpoint": "groups", "times": 1, "fault": {"kind": "http_error", "status": 401,
        "message": format!("token {token} revoked")}}));
    errors.extend(token_client.groups(&h.cluster).await.err());
    let unknown =
        VpsieClient::new(client_config(base.clone()), Credentials::token("unknown-tok-31f0")).expect("client");
    errors.extend(unknown.groups(&h.cluster).await.err()); // 401: unknown token
    let wrong = VpsieClient::new(
        client_config(base.clone()),
        Credentials::client_credentials(CLIENT_ID, "wrong-secret-5d8e2a"),
    )
    .expect("client");
    errors.extend(wrong.groups(&h.cluster).await.err());
    errors.extend(h.cloud.find_workers(&h.cluster, &WorkerQuery::default()).await.err());
    h.fault(json!({"endpoint": "cluster", "times": 3, "fault": {"kind": "drop_connection"}}));
    errors.extend(h.cloud.find_workers(&h.cluster, &WorkerQuery::default()).await.err());
    assert!(errors.len() >= 6, "{errors:?}");

    let mut seen = String::new();
    for e in &errors {
        seen.push_str(&format!("{e} {e:?}\n"));
    }
    seen.push_str(&format!("{token_client:?} {wrong:?}\n"));
    seen.push_str(&format!(
        "{:?} {:?}\n",
        Credentials::token(token),
        Credentials::client_credentials(CLIENT_ID, CLIENT_SECRET)
    ));
    if let Some(reg) = h.registry.as_ref() {
        prometheus_client::encoding::text::encode(&mut seen, reg).expect("encodes");
    }
    let logs = String::from_utf8_lossy(&capture.0.lock().map(|b| b.clone()).unwrap_or_default()).into_owned();
    assert!(logs.contains("retrying VPSie call"), "logs were captured: {logs}");
    seen.push_str(&logs);
    assert!(seen.contains("[redacted]"), "the echoed secrets were scrubbed: {seen}");
    for secret in [token, CLIENT_ID, CLIENT_SECRET, "wrong-secret-5d8e2a", "unknown-tok-31f0"] {
        assert!(!seen.contains(secret), "{secret} leaked:\n{seen}");
    }
}
