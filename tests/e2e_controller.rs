//! The controller process against the real API server, running as its own ServiceAccount with the
//! shipped RBAC: it syncs its watches (readiness), exactly one replica holds the Lease, SIGTERM makes the
//! leader step down cleanly so the standby takes over without waiting for expiry, and a standby acts on
//! nothing until it leads.

mod support;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use futures::TryStreamExt as _;
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        events::v1::Event,
    },
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams},
};
use serde_json::{Value, json};
use support::{env, eventually, stack::start_sim};
use vpsie_autoscaler::crd::{NodeGroup, VPSieNode};

const LEASE: &str = "vpsie-autoscaler";
const WAIT: Duration = Duration::from_secs(60);

/// Both tests use the one Lease the shipped RBAC allows, and the one credentials Secret: they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

    async fn wait_ready(&self) {
        let ready = tokio::time::timeout(WAIT, async {
            loop {
                if let Some((200, _)) = self.get("/readyz").await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        assert!(ready.is_ok(), "{} never became ready; logs:\n{}", self.identity, self.logs());
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
    leases.get_opt(LEASE).await.ok()??.spec?.holder_identity.filter(|h| !h.is_empty())
}

fn holder_of(lease: Lease) -> Option<String> {
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

#[tokio::test]
async fn two_replicas_sync_one_leads_and_sigterm_hands_over_the_lease() {
    let _turn = SERIAL.lock().await;
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    start_sim(env, dir.path(), false);
    let kubeconfig = env.controller_kubeconfig(dir.path());
    let leases: Api<Lease> = Api::namespaced(env.admin().await, "kube-system");

    let a = Replica::start("replica-a", &kubeconfig, dir.path());
    let b = Replica::start("replica-b", &kubeconfig, dir.path());
    a.wait_ready().await;
    b.wait_ready().await;

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

    // Every write to the Lease from here on, in order.
    let rv = leases.get(LEASE).await.unwrap().metadata.resource_version.expect("resourceVersion");
    let params = WatchParams::default().fields(&format!("metadata.name={LEASE}"));
    let mut writes = Box::pin(leases.watch(&params, &rv).await.expect("watch the lease"));
    leader.terminate();
    let mut holders = Vec::new();
    let taken_over = tokio::time::timeout(WAIT, async {
        while let Some(event) = writes.try_next().await.expect("lease watch") {
            if let WatchEvent::Modified(lease) = event {
                let holder = holder_of(lease);
                let done = holder.as_deref() == Some(standby.identity.as_str());
                holders.push(holder);
                if done {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(taken_over, Ok(true), "the standby never took the lease; writes seen: {holders:?}");
    // Handed over, not expired: the leader's last write cleared the holder, and the standby's first took it.
    let (last, before) = holders.split_last().expect("a write");
    assert_eq!(last.as_deref(), Some(standby.identity.as_str()));
    let (released, renewals) = before.split_last().expect("the leader wrote before the standby");
    assert_eq!(released, &None, "{holders:?}");
    assert!(renewals.iter().all(|h| h.as_deref() == Some(leader.identity.as_str())), "{holders:?}");
    assert!(leader.logs().contains("released the leader lease"), "{}", leader.logs());
    assert!(leader.logs().contains("shut down cleanly"), "{}", leader.logs());
    eventually("the standby reports leadership", Duration::from_secs(10), || async {
        standby.get("/metrics").await?.1.contains("vpsie_autoscaler_leader 1").then_some(())
    })
    .await;
}

/// Successful reconciles of `controller` this replica reports.
fn reconciles(metrics: &str, controller: &str) -> usize {
    let label = format!(r#"controller="{controller}""#);
    metrics
        .lines()
        .filter(|l| l.starts_with("vpsie_autoscaler_reconcile_total{") && l.contains(&label))
        .filter(|l| l.contains(r#"result="success""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

async fn sim_requests(sim_url: &str) -> Vec<Value> {
    reqwest::get(format!("{sim_url}/_sim/requests")).await.unwrap().json().await.unwrap()
}

/// Runs when the test ends, pass or fail, after its replica is gone: strips the finalizers no controller is
/// left to handle, so the namespace can go, and deletes the Lease the test held.
struct Cleanup {
    namespace: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let env = env();
        let (_, names, _) = env.kubectl(&["-n", &self.namespace, "get", "vpsienodes", "-o", "name"]);
        for name in names.lines() {
            let unblock = r#"{"metadata":{"finalizers":null}}"#;
            env.kubectl(&["-n", &self.namespace, "patch", name, "--type", "merge", "-p", unblock]);
        }
        env.kubectl(&["-n", "kube-system", "delete", "lease", LEASE, "--ignore-not-found"]);
    }
}

#[tokio::test]
async fn a_standby_replica_calls_no_cloud_api_and_writes_nothing_until_it_holds_the_lease() {
    let _turn = SERIAL.lock().await;
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(env, dir.path(), false);
    let kubeconfig = env.controller_kubeconfig(dir.path());
    let admin = env.admin().await;
    let ns = env.namespace("standby").await;
    let _cleanup = Cleanup { namespace: ns.name.clone() };

    // Another replica holds the lease, for far longer than this test runs.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "kube-system");
    let _ = leases.delete(LEASE, &DeleteParams::default()).await;
    let now = MicroTime(Timestamp::now());
    let held = Lease {
        metadata: ObjectMeta { name: Some(LEASE.into()), ..ObjectMeta::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some("some-other-replica".into()),
            lease_duration_seconds: Some(3600),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            ..LeaseSpec::default()
        }),
    };
    leases.create(&PostParams::default(), &held).await.expect("hold the lease");

    // Work a leader would act on at once: a group below its minimum size.
    let offering = vpsie_autoscaler::cloud::sim::offering(2).expect("catalogue plan 2");
    let group: NodeGroup = serde_json::from_value(json!({
        "apiVersion": "autoscaler.vpsie.com/v1alpha1", "kind": "NodeGroup",
        "metadata": {"name": "workers"},
        "spec": {"minNodes": 1, "maxNodes": 2, "clusterIdentifier": sim.cluster, "datacenter": sim.datacenter,
            "offerings": [offering.id.to_string()]},
    }))
    .unwrap();
    let groups: Api<NodeGroup> = Api::namespaced(admin.clone(), &ns.name);
    let written = groups.create(&PostParams::default(), &group).await.unwrap().metadata.resource_version;
    let all_groups = Api::<NodeGroup>::all(admin.clone()).list(&ListParams::default()).await.unwrap().items.len();

    let standby = Replica::start("replica-standby", &kubeconfig, dir.path());
    standby.wait_ready().await;
    let (_, metrics) = standby.get("/metrics").await.expect("metrics");
    assert!(metrics.contains("vpsie_autoscaler_leader 0"), "{metrics}");
    // A follower looks at every NodeGroup again every 5 s, and nothing else makes it look (nobody writes the
    // groups; a watch re-list adds one look per group at most). So 3 looks per group and one more since it
    // became ready mean one group was looked at four times: the replica followed for over 10 s with our
    // group in the cache its autoscale loop reads, through at least three of that loop's 3 s passes.
    let synced = reconciles(&metrics, "nodegroup");
    eventually("the standby followed for three rounds", WAIT, || async {
        let (_, metrics) = standby.get("/metrics").await?;
        (reconciles(&metrics, "nodegroup") > synced + 3 * all_groups).then_some(())
    })
    .await;

    let requests = sim_requests(&sim.url).await;
    assert!(requests.is_empty(), "the standby called the cloud API: {requests:?}");
    let vpsienodes: Api<VPSieNode> = Api::namespaced(admin.clone(), &ns.name);
    let created = vpsienodes.list(&ListParams::default()).await.unwrap().items;
    assert!(created.is_empty(), "the standby created {created:?}");
    assert_eq!(groups.get("workers").await.unwrap().metadata.resource_version, written, "the standby wrote the group");
    let events: Api<Event> = Api::namespaced(admin.clone(), &ns.name);
    let ours = |e: &Event| e.reporting_controller.as_deref() == Some("vpsie-autoscaler");
    let published: Vec<Event> =
        events.list(&ListParams::default()).await.unwrap().items.into_iter().filter(ours).collect();
    assert!(published.is_empty(), "the standby published {published:?}");

    // The same replica, once it holds the lease, does each thing checked above: so their absence was its choice.
    leases.delete(LEASE, &DeleteParams::default()).await.expect("release the lease");
    eventually("the replica leads", WAIT, || async {
        standby.get("/metrics").await?.1.contains("vpsie_autoscaler_leader 1").then_some(())
    })
    .await;
    eventually("the leader creates a VPSieNode for the group", WAIT, || async {
        (!vpsienodes.list(&ListParams::default()).await.ok()?.items.is_empty()).then_some(())
    })
    .await;
    eventually("the leader asks the cloud for a worker", WAIT, || async {
        sim_requests(&sim.url).await.iter().any(|r| r["endpoint"] == "add_worker").then_some(())
    })
    .await;
    eventually("the leader writes the group's status", WAIT, || async {
        (groups.get("workers").await.ok()?.metadata.resource_version != written).then_some(())
    })
    .await;
    eventually("the leader publishes an Event", WAIT, || async {
        events.list(&ListParams::default()).await.ok()?.items.iter().any(ours).then_some(())
    })
    .await;
}
