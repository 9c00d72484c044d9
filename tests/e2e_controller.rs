//! The controller process against the real API server, running as its own ServiceAccount with the
//! shipped RBAC: it syncs its watches (readiness), exactly one replica holds the Lease, and SIGTERM
//! makes the leader step down cleanly so the standby takes over without waiting for expiry.

mod support;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use support::{env, eventually};

struct Replica {
    identity: String,
    port: u16,
    child: Child,
    log: PathBuf,
}

impl Replica {
    fn start(identity: &str, kubeconfig: &Path, dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.join(format!("{identity}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_vpsie-autoscaler"))
            .args(["run", "--identity", identity])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--lease-duration", "4s", "--lease-renew-deadline", "3s", "--lease-retry-period", "500ms"])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env("VPSIE_LOG_LEVEL", "info")
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(std::fs::File::options().append(true).open(&log).unwrap()))
            .spawn()
            .expect("start the controller binary");
        Self { identity: identity.to_string(), port, child, log }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let resp = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port)).await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    }

    fn terminate(&self) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt("vpsie-autoscaler").await.ok()??.spec?.holder_identity.filter(|h| !h.is_empty())
}

#[tokio::test]
async fn two_replicas_sync_one_leads_and_sigterm_hands_over_the_lease() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = env.controller_kubeconfig(dir.path());
    let leases: Api<Lease> = Api::namespaced(env.admin().await, "kube-system");

    let a = Replica::start("replica-a", &kubeconfig, dir.path());
    let b = Replica::start("replica-b", &kubeconfig, dir.path());
    for r in [&a, &b] {
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Some((200, _)) = r.get("/readyz").await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        assert!(ready.is_ok(), "{} never became ready; logs:\n{}", r.identity, r.logs());
    }

    // A lease left by an earlier run expires after its 4 s; then one of ours holds it.
    let leader_id = eventually("a replica holds the lease", Duration::from_secs(30), || async {
        holder(&leases).await.filter(|h| h == "replica-a" || h == "replica-b")
    })
    .await;
    let (leader, standby) = if leader_id == "replica-a" { (&a, &b) } else { (&b, &a) };
    eventually("only the leader reports leadership", Duration::from_secs(10), || async {
        let (_, lm) = leader.get("/metrics").await?;
        let (_, sm) = standby.get("/metrics").await?;
        (lm.contains("vpsie_autoscaler_leader 1") && sm.contains("vpsie_autoscaler_leader 0")).then_some(())
    })
    .await;
    let (_, metrics) = standby.get("/metrics").await.unwrap();
    assert!(metrics.contains(r#"rebalancer_operations_total{operation="rollback",result="failure"} 0"#), "{metrics}");

    leader.terminate();
    let started = std::time::Instant::now();
    // The standby takes over well before the 4 s lease would have expired on its own.
    eventually("the standby takes over the released lease", Duration::from_secs(10), || async {
        (holder(&leases).await.as_deref() == Some(standby.identity.as_str())).then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(4), "handover took {:?}", started.elapsed());
    assert!(leader.logs().contains("released the leader lease"), "{}", leader.logs());
    assert!(leader.logs().contains("shut down cleanly"), "{}", leader.logs());
    eventually("the standby reports leadership", Duration::from_secs(10), || async {
        standby.get("/metrics").await?.1.contains("vpsie_autoscaler_leader 1").then_some(())
    })
    .await;
}
