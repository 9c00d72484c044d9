//! Leader election against a fake API server that keeps one Lease with real resourceVersion semantics
//! (404 when absent, 409 on a stale write), so races between candidates are decided as they would be.

use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

use super::*;

#[derive(Default)]
struct FakeState {
    lease: Option<Value>,
    rv: u64,
    unavailable: bool,
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

impl FakeApi {
    async fn handle(&self, req: http::Request<Body>) -> http::Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let mut s = self.0.lock().unwrap();
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
                let mut lease: Value = serde_json::from_slice(&body).unwrap();
                s.rv += 1;
                lease["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                s.lease = Some(lease.clone());
                ok(&lease)
            }
            "PUT" => {
                let mut lease: Value = serde_json::from_slice(&body).unwrap();
                let current_rv = s.lease.as_ref().map(|l| l["metadata"]["resourceVersion"].clone());
                if current_rv != Some(lease["metadata"]["resourceVersion"].clone()) {
                    return status(409, "Conflict");
                }
                s.rv += 1;
                lease["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                s.lease = Some(lease.clone());
                ok(&lease)
            }
            other => panic!("unexpected {other} {path}"),
        }
    }

    fn client(&self) -> kube::Client {
        let api = self.clone();
        let svc = tower::service_fn(move |req| {
            let api = api.clone();
            async move { Ok::<_, std::convert::Infallible>(api.handle(req).await) }
        });
        kube::Client::new(svc, "default")
    }

    fn holder(&self) -> Option<String> {
        let s = self.0.lock().unwrap();
        s.lease.as_ref().and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
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
}

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
    let elector = LeaderElector::new(api.client(), config(identity));
    let task = tokio::spawn(elector.run(tx, shutdown.clone()));
    Candidate { leader, shutdown, task }
}

async fn wait_for(mut rx: watch::Receiver<bool>, want: bool, within: Duration) -> bool {
    tokio::time::timeout(within, rx.wait_for(|v| *v == want)).await.is_ok()
}

#[tokio::test]
async fn of_two_candidates_exactly_one_leads() {
    let api = FakeApi::default();
    let a = campaign(&api, "replica-a");
    let b = campaign(&api, "replica-b");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leaders = [*a.leader.borrow(), *b.leader.borrow()];
    assert_eq!(leaders.iter().filter(|l| **l).count(), 1, "{leaders:?}");
    let expected = if leaders[0] { "replica-a" } else { "replica-b" };
    assert_eq!(api.holder().as_deref(), Some(expected));
    // Well past several lease durations, renewals keep the same leader.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!([*a.leader.borrow(), *b.leader.borrow()], leaders);
}

#[tokio::test]
async fn a_holder_whose_lease_is_taken_stops_acting_and_reports_the_loss() {
    let api = FakeApi::default();
    let a = campaign(&api, "replica-a");
    assert!(wait_for(a.leader.clone(), true, Duration::from_secs(2)).await);
    api.overwrite_holder("replica-z");
    let result = tokio::time::timeout(Duration::from_secs(2), a.task).await.expect("run ends").unwrap();
    assert!(matches!(result, Err(LeaseError::Lost(_))), "{result:?}");
    assert!(!*a.leader.borrow());
    assert_eq!(api.holder().as_deref(), Some("replica-z"), "the loser must not write the lease back");
}

#[tokio::test]
async fn a_holder_that_cannot_renew_within_the_deadline_gives_up() {
    let api = FakeApi::default();
    let a = campaign(&api, "replica-a");
    assert!(wait_for(a.leader.clone(), true, Duration::from_secs(2)).await);
    api.set_unavailable(true);
    let result = tokio::time::timeout(Duration::from_secs(3), a.task).await.expect("run ends").unwrap();
    assert!(matches!(result, Err(LeaseError::Lost(_))), "{result:?}");
    assert!(!*a.leader.borrow());
}

#[tokio::test]
async fn a_released_lease_is_taken_by_the_other_candidate_without_waiting_for_expiry() {
    let api = FakeApi::default();
    let a = campaign(&api, "replica-a");
    assert!(wait_for(a.leader.clone(), true, Duration::from_secs(2)).await);
    let b = campaign(&api, "replica-b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!*b.leader.borrow(), "b must not lead while a renews");
    a.shutdown.cancel();
    a.task.await.unwrap().unwrap();
    // Released, not expired: b takes over within a few retry periods, far sooner than the lease duration
    // would allow for a silent holder.
    assert!(wait_for(b.leader.clone(), true, Duration::from_millis(600)).await);
    assert_eq!(api.holder().as_deref(), Some("replica-b"));
    b.shutdown.cancel();
}

#[tokio::test]
async fn an_abandoned_lease_is_taken_over_only_after_it_expires() {
    let api = FakeApi::default();
    let mut ghost = LeaderElector::new(api.client(), config("crashed-replica"));
    assert!(ghost.try_acquire_or_renew().await.unwrap());
    let started = Instant::now();
    let b = campaign(&api, "replica-b");
    assert!(wait_for(b.leader.clone(), true, Duration::from_secs(3)).await);
    assert!(started.elapsed() >= Duration::from_secs(1), "took over after {:?}", started.elapsed());
    let s = api.0.lock().unwrap();
    assert_eq!(s.lease.as_ref().unwrap()["spec"]["leaseTransitions"], json!(1));
}
