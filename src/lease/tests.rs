//! Leader election against a fake API server that keeps one Lease with real resourceVersion semantics
//! (404 when absent, 409 on a stale write), so races between candidates are decided as they would be.

use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

use super::*;

/// One request the fake answered: who sent it, what it was, and for a write that succeeded, the holder
/// it left in the lease.
#[derive(Clone, Debug)]
struct Seen {
    who: String,
    method: String,
    wrote: Option<Option<String>>,
}

#[derive(Default)]
struct FakeState {
    lease: Option<Value>,
    rv: u64,
    unavailable: bool,
    log: Vec<Seen>,
}

#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<FakeState>>);

fn status(code: u16, reason: &str) -> http::Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": reason, "code": code});
    http::Response::builder().status(code).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap()
}

fn ok(value: &Value) -> http::Response<Body> {
    http::Response::builder().status(200).body(Body::from(serde_json::to_vec(value).unwrap())).unwrap()
}

fn holder_of(lease: &Value) -> Option<String> {
    lease["spec"]["holderIdentity"].as_str().map(String::from)
}

impl FakeApi {
    async fn handle(&self, who: &str, req: http::Request<Body>) -> http::Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let mut s = self.0.lock().unwrap();
        let mut seen = Seen { who: who.to_string(), method: method.to_string(), wrote: None };
        let response = Self::answer(&mut s, &method, &path, &body, &mut seen);
        s.log.push(seen);
        response
    }

    fn answer(
        s: &mut FakeState,
        method: &http::Method,
        path: &str,
        body: &[u8],
        seen: &mut Seen,
    ) -> http::Response<Body> {
        if s.unavailable {
            return status(503, "ServiceUnavailable");
        }
        assert!(path.starts_with("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"), "{path}");
        match method.as_str() {
            "GET" => match &s.lease {
                Some(l) => ok(l),
                None => status(404, "NotFound"),
            },
            "POST" => {
                if s.lease.is_some() {
                    return status(409, "AlreadyExists");
                }
                let mut lease: Value = serde_json::from_slice(body).unwrap();
                s.rv += 1;
                lease["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                seen.wrote = Some(holder_of(&lease));
                s.lease = Some(lease.clone());
                ok(&lease)
            }
            "PUT" => {
                let mut lease: Value = serde_json::from_slice(body).unwrap();
                let current_rv = s.lease.as_ref().map(|l| l["metadata"]["resourceVersion"].clone());
                if current_rv != Some(lease["metadata"]["resourceVersion"].clone()) {
                    return status(409, "Conflict");
                }
                s.rv += 1;
                lease["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                seen.wrote = Some(holder_of(&lease));
                s.lease = Some(lease.clone());
                ok(&lease)
            }
            other => panic!("unexpected {other} {path}"),
        }
    }

    /// A client whose requests the fake logs as coming from `who`.
    fn client(&self, who: &str) -> kube::Client {
        let api = self.clone();
        let who = who.to_string();
        let svc = tower::service_fn(move |req| {
            let (api, who) = (api.clone(), who.clone());
            async move { Ok::<_, std::convert::Infallible>(api.handle(&who, req).await) }
        });
        kube::Client::new(svc, "default")
    }

    fn holder(&self) -> Option<String> {
        self.0.lock().unwrap().lease.as_ref().and_then(holder_of)
    }

    fn log(&self) -> Vec<Seen> {
        self.0.lock().unwrap().log.clone()
    }

    /// Holders left by every successful write, in order.
    fn writes(&self) -> Vec<Option<String>> {
        self.log().into_iter().filter_map(|s| s.wrote).collect()
    }

    /// Requests `who` sent with `method`.
    fn count(&self, who: &str, method: &str) -> usize {
        self.log().iter().filter(|s| s.who == who && s.method == method).count()
    }

    /// Writes the lease as another party would, bumping the resourceVersion.
    fn overwrite_holder(&self, holder: &str) {
        let mut s = self.0.lock().unwrap();
        s.rv += 1;
        let rv = s.rv.to_string();
        let lease = s.lease.as_mut().expect("a lease exists");
        lease["spec"]["holderIdentity"] = json!(holder);
        lease["spec"]["renewTime"] = json!(Timestamp::now().to_string());
        lease["metadata"]["resourceVersion"] = json!(rv);
    }

    fn set_unavailable(&self, unavailable: bool) {
        self.0.lock().unwrap().unavailable = unavailable;
    }

    /// Polls the request log until `done` holds; fails the test after `WAIT`.
    async fn wait_until(&self, what: &str, done: impl Fn(&FakeApi) -> bool) {
        let waited = tokio::time::timeout(WAIT, async {
            while !done(self) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out waiting until {what}; requests: {:?}", self.log());
    }
}

/// Only a guard against a hung test: every wait below ends on a condition, long before this on a healthy run.
const WAIT: Duration = Duration::from_secs(20);

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        name: "vpsie-autoscaler".into(),
        namespace: "kube-system".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(600),
        retry_period: Duration::from_millis(100),
    }
}

struct Candidate {
    leader: watch::Receiver<bool>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), LeaseError>>,
}

fn campaign(api: &FakeApi, identity: &str) -> Candidate {
    let (tx, leader) = watch::channel(false);
    let shutdown = CancellationToken::new();
    let elector = LeaderElector::new(api.client(identity), config(identity));
    let task = tokio::spawn(elector.run(tx, shutdown.clone()));
    Candidate { leader, shutdown, task }
}

/// Waits on a clone, so the candidate's own receiver still tells whether leadership was ever announced.
async fn wait_for(rx: &watch::Receiver<bool>, want: bool) {
    let mut rx = rx.clone();
    let reached = tokio::time::timeout(WAIT, rx.wait_for(|v| *v == want)).await;
    assert!(reached.is_ok(), "leadership never became {want}");
}

#[tokio::test]
async fn of_two_candidates_exactly_one_leads_and_keeps_leading_while_it_renews() {
    let api = FakeApi::default();
    let a = campaign(&api, "replica-a");
    let b = campaign(&api, "replica-b");
    api.wait_until("a candidate holds the lease", |api| api.holder().is_some()).await;
    let leader_id = api.holder().expect("a holder");
    let (leader, other, other_id) =
        if leader_id == "replica-a" { (&a, &b, "replica-b") } else { (&b, &a, "replica-a") };
    wait_for(&leader.leader, true).await;

    // The other candidate must have judged the record many times, over several lease durations (it reads
    // once per retry period), for "it never tried to take over" to mean anything.
    let cfg = config(other_id);
    let looks = 3 * (cfg.lease_duration.as_millis() / cfg.retry_period.as_millis()) as usize;
    api.wait_until("the other candidate looked at the lease many times", |api| api.count(other_id, "GET") >= looks)
        .await;
    let writes = api.writes();
    assert!(writes.len() > looks / 2, "the leader renews: {writes:?}");
    assert!(writes.iter().all(|h| h.as_deref() == Some(leader_id.as_str())), "{writes:?}");
    assert_eq!(api.count(other_id, "PUT"), 0, "the other candidate tried to take a renewed lease over");
    assert!(!other.leader.has_changed().expect("campaign running"), "the other candidate announced leadership");
    assert!(*leader.leader.borrow());
}

#[tokio::test]
async fn a_holder_whose_lease_is_taken_stops_acting_and_reports_the_loss() {
    let api = FakeApi::default();
    let a = campaign(&api, "replica-a");
    wait_for(&a.leader, true).await;
    api.overwrite_holder("replica-z");
    let result = tokio::time::timeout(WAIT, a.task).await.expect("run ends").unwrap();
    assert!(matches!(result, Err(LeaseError::Lost(_))), "{result:?}");
    assert!(!*a.leader.borrow());
    assert_eq!(api.holder().as_deref(), Some("replica-z"), "the loser must not write the lease back");
}

#[tokio::test]
async fn a_holder_that_cannot_renew_within_the_deadline_gives_up() {
    let api = FakeApi::default();
    let a = campaign(&api, "replica-a");
    wait_for(&a.leader, true).await;
    api.set_unavailable(true);
    let result = tokio::time::timeout(WAIT, a.task).await.expect("run ends").unwrap();
    assert!(matches!(result, Err(LeaseError::Lost(_))), "{result:?}");
    assert!(!*a.leader.borrow());
}

#[tokio::test]
async fn a_released_lease_is_taken_by_the_other_candidate_without_waiting_for_expiry() {
    let api = FakeApi::default();
    let a = campaign(&api, "replica-a");
    wait_for(&a.leader, true).await;
    let b = campaign(&api, "replica-b");
    api.wait_until("b has looked at a's lease three times", |api| api.count("replica-b", "GET") >= 3).await;
    assert_eq!(api.count("replica-b", "PUT"), 0, "b must not take a lease a renews");
    assert!(!b.leader.has_changed().expect("campaign running"), "b must not lead while a renews");

    a.shutdown.cancel();
    a.task.await.unwrap().unwrap();
    wait_for(&b.leader, true).await;
    assert_eq!(api.holder().as_deref(), Some("replica-b"));
    // Released, not expired: b takes the lease on its first look after the release. Waiting for expiry
    // would have taken it one lease duration of looks (ten here).
    let log = api.log();
    let released = log.iter().position(|s| s.who == "replica-a" && s.wrote == Some(None)).expect("a released");
    let taken = log
        .iter()
        .position(|s| s.who == "replica-b" && s.wrote == Some(Some("replica-b".to_string())))
        .expect("b wrote the lease");
    assert!(released < taken, "{log:?}");
    let looks = log[released..taken].iter().filter(|s| s.who == "replica-b" && s.method == "GET").count();
    assert_eq!(looks, 1, "{log:?}");
    b.shutdown.cancel();
}

#[tokio::test]
async fn an_abandoned_lease_is_taken_over_only_after_it_expires() {
    let api = FakeApi::default();
    let mut ghost = LeaderElector::new(api.client("crashed-replica"), config("crashed-replica"));
    assert!(ghost.try_acquire_or_renew().await.unwrap());
    let started = Instant::now();
    let b = campaign(&api, "replica-b");
    wait_for(&b.leader, true).await;
    assert!(started.elapsed() >= Duration::from_secs(1), "took over after {:?}", started.elapsed());
    let s = api.0.lock().unwrap();
    assert_eq!(s.lease.as_ref().unwrap()["spec"]["leaseTransitions"], json!(1));
}
