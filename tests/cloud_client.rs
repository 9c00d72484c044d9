//! Behaviours of the HTTP client that the in-process simulator has no equivalent for
//! (retries, breaker, rate limit, auth, secrecy, metrics), and the simulator's own HTTP
//! surface (admin API, catalogue, reduce, node hook).

mod cloud_common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloud_common::{CLIENT_ID, CLIENT_SECRET, Harness, Kind, client_config, eventually, sim_config};
use serde_json::{Value, json};
use vpsie_autoscaler::cloud::sim::{LoopbackSim, NodeRegistrar, RegistrarError};
use vpsie_autoscaler::cloud::vpsie::{Credentials, VpsieClient, VpsieConfig};
use vpsie_autoscaler::cloud::{BreakerState, CloudError, CloudProvider, Offering, Worker, WorkerQuery};

fn count(h: &Harness, endpoint: &str) -> usize {
    h.sim.requests().iter().filter(|r| r.endpoint == endpoint).count()
}

fn raw() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn json_of(r: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = r.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.expect("body read");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_single_503_is_retried_transparently() {
    let h = Harness::new(Kind::Http).await;
    h.fault(json!({"endpoint": "cluster", "times": 1,
        "fault": {"kind": "http_error", "status": 503}}));
    h.workers().await;
    assert_eq!(count(&h, "cluster"), 2);
}

#[tokio::test]
async fn a_500_is_not_retried_in_line() {
    let h = Harness::new(Kind::Http).await;
    h.fault(json!({"endpoint": "cluster", "times": 1,
        "fault": {"kind": "http_error", "status": 500}}));
    let e = h.workers_or_err().await;
    assert!(matches!(e, Err(CloudError::Transient { status: Some(500), .. })), "{e:?}");
    assert_eq!(count(&h, "cluster"), 1);
}

#[tokio::test]
async fn an_add_is_sent_exactly_once_even_when_the_gateway_fails() {
    let h = Harness::new(Kind::Http).await;
    let g = h.group("pool", 2).await;
    h.fault(json!({"endpoint": "add_worker", "times": 5,
        "fault": {"kind": "http_error", "status": 503, "body_style": "html"}}));
    let e = h.cloud.add_worker(&h.cluster, g.id).await;
    assert!(matches!(e, Err(CloudError::Transient { status: Some(503), .. })), "{e:?}");
    assert_eq!(h.add_requests(), 1);
}

#[tokio::test]
async fn a_short_retry_after_is_waited_out_and_the_call_succeeds() {
    let server = LoopbackSim::start(sim_config(), None).await.expect("sim");
    let mut cfg = client_config(server.base_url());
    cfg.backoff.max_retry_after = Duration::from_secs(2);
    let client = VpsieClient::new(cfg, Credentials::token("sim-token")).expect("client");
    let cluster = server.sim.lock().world.clusters[0].identifier.clone();
    let rule = serde_json::from_value(json!({"endpoint": "cluster", "times": 1,
        "fault": {"kind": "rate_limit", "retry_after": {"style": "seconds", "secs": 1}}}))
    .expect("rule");
    server.sim.add_fault(rule).expect("added");
    let start = Instant::now();
    client.find_workers(&cluster, &WorkerQuery::default()).await.expect("succeeds after waiting");
    assert!(start.elapsed() >= Duration::from_millis(950), "{:?}", start.elapsed());
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures_and_closes_after_a_good_probe() {
    let h = Harness::new(Kind::Http).await;
    h.workers().await;
    h.sim.clear_requests();
    let rule = h.fault(json!({"endpoint": "cluster",
        "fault": {"kind": "http_error", "status": 500}}));
    for _ in 0..5 {
        let e = h.workers_or_err().await;
        assert!(matches!(e, Err(CloudError::Transient { .. })), "{e:?}");
    }
    assert_eq!(h.cloud.breaker_state(), Some(BreakerState::Open));
    let e = h.workers_or_err().await;
    assert!(matches!(e, Err(CloudError::CircuitOpen { .. })), "{e:?}");
    assert_eq!(count(&h, "cluster"), 5, "an open breaker sends nothing");
    h.sim.remove_fault(rule.id);
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert_eq!(h.cloud.breaker_state(), Some(BreakerState::HalfOpen));
    h.workers().await;
    assert_eq!(h.cloud.breaker_state(), Some(BreakerState::Closed));
}

#[tokio::test]
async fn the_client_side_rate_limit_spaces_requests() {
    let server = LoopbackSim::start(sim_config(), None).await.expect("sim");
    let cfg = VpsieConfig { rate_per_sec: 10.0, burst: 2, ..client_config(server.base_url()) };
    let client = VpsieClient::new(cfg, Credentials::token("sim-token")).expect("client");
    let cluster = server.sim.lock().world.clusters[0].identifier.clone();
    let start = Instant::now();
    for _ in 0..5 {
        client.groups(&cluster).await.expect("groups");
    }
    assert!(start.elapsed() >= Duration::from_millis(280), "{:?}", start.elapsed());
}

#[tokio::test]
async fn both_token_answer_shapes_are_accepted() {
    for shape in ["govpsie", "autoscaler", "both"] {
        let mut cfg = sim_config();
        cfg.settings.auth_shape = serde_json::from_value(json!(shape)).expect("shape");
        let server = LoopbackSim::start(cfg, None).await.expect("sim");
        let client = VpsieClient::new(
            client_config(server.base_url()),
            Credentials::client_credentials(CLIENT_ID, CLIENT_SECRET),
        )
        .expect("client");
        let cluster = server.sim.lock().world.clusters[0].identifier.clone();
        client.groups(&cluster).await.expect(shape);
    }
}

#[tokio::test]
async fn a_static_token_is_used_as_is_and_a_bad_one_is_unauthorized_without_a_loop() {
    let server = LoopbackSim::start(sim_config(), None).await.expect("sim");
    let cluster = server.sim.lock().world.clusters[0].identifier.clone();
    let good = VpsieClient::new(client_config(server.base_url()), Credentials::token("sim-token")).expect("client");
    good.groups(&cluster).await.expect("static token works");
    let bad = VpsieClient::new(client_config(server.base_url()), Credentials::token("wrong-token")).expect("client");
    server.sim.clear_requests();
    let e = bad.groups(&cluster).await;
    assert!(matches!(e, Err(CloudError::Unauthorized { .. })), "{e:?}");
    assert_eq!(server.sim.requests().len(), 1);
    let creds =
        VpsieClient::new(client_config(server.base_url()), Credentials::client_credentials("nobody", "nothing"))
            .expect("client");
    let e = creds.groups(&cluster).await;
    assert!(matches!(e, Err(CloudError::Unauthorized { .. })), "{e:?}");
}

#[tokio::test]
async fn plain_http_to_a_remote_host_is_refused() {
    let e = VpsieClient::new(
        VpsieConfig { base_url: "http://api.vpsie.com".into(), ..VpsieConfig::default() },
        Credentials::token("t"),
    );
    assert!(matches!(e, Err(CloudError::Permanent { .. })));
}

#[tokio::test]
async fn the_simulator_accepts_form_and_json_logins_on_both_paths_and_bearer_tokens() {
    let server = LoopbackSim::start(sim_config(), None).await.expect("sim");
    let base = server.base_url();
    let http = raw();
    let form = format!("clientId={CLIENT_ID}&clientSecret={CLIENT_SECRET}");
    let (status, body) = json_of(
        http.post(format!("{base}/auth/from/api"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["accessToken"]["token"].is_string() && body["token"]["access"]["token"].is_string());
    let (status, body) = json_of(
        http.post(format!("{base}/apps/v2/auth/from/api"))
            .json(&json!({"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET})),
    )
    .await;
    assert_eq!(status, 200);
    let token = body["accessToken"]["token"].as_str().unwrap_or_default().to_string();
    let (status, body) = json_of(http.get(format!("{base}/apps/v2/k8s/cluster/all")).bearer_auth(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"][0]["cluster_name"], json!("sim-k8s-1a2b"));
    let (status, body) = json_of(http.get(format!("{base}/apps/v2/k8s/cluster/all"))).await;
    assert_eq!((status, body["error"].clone()), (401, json!(true)));
}

#[tokio::test]
async fn the_simulator_serves_the_catalogue_and_answers_unknown_routes_with_an_envelope() {
    let server = LoopbackSim::start(sim_config(), None).await.expect("sim");
    let base = server.base_url();
    let http = raw();
    let get = |p: &str| http.get(format!("{base}{p}")).header("Vpsie-Auth", "sim-token");
    let (_, dcs) = json_of(get("/apps/v2/datacenter")).await;
    assert_eq!(dcs["total"], json!(3));
    let (_, cats) = json_of(get("/api/v2/plans/category")).await;
    let cat = cats["data"][1]["identifier"].as_str().unwrap_or_default().to_string();
    let dc = dcs["data"][0]["identifier"].as_str().unwrap_or_default().to_string();
    let (_, plans) = json_of(
        http.post(format!("{base}/apps/v2/resources"))
            .header("Vpsie-Auth", "sim-token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "dcIdentifier={dc}&osIdentifier=x&planCatIdentifier={cat}&name=query&description=query&isCustom=0"
            )),
    )
    .await;
    let n = plans["data"].as_array().map(Vec::len).unwrap_or(0);
    assert!((3..8).contains(&n), "filtered by category: {n}");
    assert!(plans["data"][0]["price"].is_number());
    let (_, projects) = json_of(get("/apps/v2/projects")).await;
    assert_eq!(projects["data"]["count"], json!(1));
    let (status, body) = json_of(get("/apps/v2/nothing/here")).await;
    assert_eq!((status, body["error"].clone()), (404, json!(true)));
}

#[tokio::test]
async fn reduce_endpoints_let_vpsie_pick_the_newest_worker() {
    let h = Harness::new(Kind::Http).await;
    let g = h.group("pool", 2).await;
    let first = h.add_and_discover(g.id).await;
    let second = h.add_and_discover(g.id).await;
    let base = h.server.as_ref().map(LoopbackSim::base_url).unwrap_or_default();
    let (status, _) = json_of(
        raw()
            .delete(format!("{base}/apps/v2/k8s/cluster/byId/{}/reduce/slave", h.cluster))
            .header("Vpsie-Auth", "sim-token")
            .json(&json!({"groupId": g.id})),
    )
    .await;
    assert_eq!(status, 200);
    eventually("the newest is gone", Duration::from_secs(5), || async {
        let ids: Vec<String> = h.workers().await.into_iter().map(|w| w.identifier).collect();
        (ids == vec![first.identifier.clone()]).then_some(())
    })
    .await;
    assert_ne!(first.identifier, second.identifier);
}

#[tokio::test]
async fn the_admin_api_manages_faults_settings_clock_and_reports_state() {
    let server = LoopbackSim::start(sim_config(), None).await.expect("sim");
    let base = server.base_url();
    let http = raw();
    let (status, rule) = json_of(http.post(format!("{base}/_sim/faults")).json(&json!({
        "endpoint": "add_worker", "method": "POST", "times": 2, "probability": 1.0,
        "fault": {"kind": "http_error", "status": 503, "body_style": "error200"}
    })))
    .await;
    assert_eq!(status, 201);
    let id = rule["id"].as_u64().unwrap_or_default();
    assert!(id > 0);
    let (status, _) = json_of(http.post(format!("{base}/_sim/faults")).json(&json!({
        "endpoint": "nope", "fault": {"kind": "never_join"}})))
    .await;
    assert_eq!(status, 400);
    let (_, list) = json_of(http.get(format!("{base}/_sim/faults"))).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let (status, replaced) = json_of(http.put(format!("{base}/_sim/faults/{id}")).json(&json!({
        "endpoint": "cluster", "fault": {"kind": "latency", "ms": 5}})))
    .await;
    assert_eq!((status, replaced["id"].as_u64()), (200, Some(id)));
    assert_eq!(replaced["fault"]["kind"], json!("latency"));
    let del = http.delete(format!("{base}/_sim/faults/{id}")).send().await.expect("sent");
    assert_eq!(del.status().as_u16(), 204);
    let (_, s) = json_of(http.put(format!("{base}/_sim/settings")).json(&json!({"list_lag_secs": 5.0}))).await;
    assert_eq!(s["list_lag_secs"], json!(5.0));
    assert_eq!(s["time_scale"], json!(cloud_common::TIME_SCALE));
    let (_, now) = json_of(http.post(format!("{base}/_sim/clock/advance")).json(&json!({"seconds": 7200}))).await;
    assert!(now["now"].as_f64().unwrap_or_default() >= 7200.0);
    let (_, state) = json_of(http.get(format!("{base}/_sim/state"))).await;
    assert_eq!(state["clusters"][0]["name"], json!("sim-k8s-1a2b"));
    let (_, cost) = json_of(http.get(format!("{base}/_sim/cost"))).await;
    assert_eq!(cost["total_usd"], json!(0.0));
    let (_, reqs) = json_of(http.get(format!("{base}/_sim/requests"))).await;
    assert!(reqs.as_array().is_some());
    let reset = http.post(format!("{base}/_sim/reset")).send().await.expect("sent");
    assert_eq!(reset.status().as_u16(), 204);
    let (_, s) = json_of(http.get(format!("{base}/_sim/settings"))).await;
    assert_eq!(s["list_lag_secs"], json!(5.0), "settings survive a reset");
}

/// Records hook calls.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

#[async_trait]
impl NodeRegistrar for Recorder {
    async fn register(&self, w: &Worker, o: &Offering) -> Result<(), RegistrarError> {
        let mut c = self.calls.lock().map_err(|_| "poisoned")?;
        c.push(format!("+{} {}", w.hostname, o.name));
        Ok(())
    }
    async fn deregister(&self, hostname: &str) -> Result<(), RegistrarError> {
        let mut c = self.calls.lock().map_err(|_| "poisoned")?;
        c.push(format!("-{hostname}"));
        Ok(())
    }
}

#[tokio::test]
async fn joined_workers_are_registered_as_nodes_and_removed_when_gone() {
    let mut cfg = sim_config();
    cfg.clusters[0].groups.push(vpsie_autoscaler::cloud::sim::config::GroupSeed {
        name: "seeded".into(),
        plan: 5,
        workers: 1,
    });
    let rec = Arc::new(Recorder::default());
    let server = LoopbackSim::start(cfg, Some(rec.clone())).await.expect("sim");
    let client = VpsieClient::new(client_config(server.base_url()), Credentials::token("sim-token")).expect("client");
    let cluster = server.sim.lock().world.clusters[0].identifier.clone();
    let calls = || rec.calls.lock().map(|c| c.clone()).unwrap_or_default();
    eventually("the seeded worker is registered", Duration::from_secs(5), || async {
        calls().iter().any(|c| c.starts_with('+') && c.ends_with("c-2vcpu-4gb")).then_some(())
    })
    .await;
    let g = client.groups(&cluster).await.expect("groups")[0].clone();
    client.add_worker(&cluster, g.id).await.expect("add");
    eventually("the new worker is registered", Duration::from_secs(5), || async {
        (calls().iter().filter(|c| c.starts_with('+')).count() == 2).then_some(())
    })
    .await;
    let w = client.list_workers(&cluster, g.id).await.expect("list")[1].clone();
    client.delete_worker(&cluster, &w.identifier).await.expect("delete");
    eventually("the deleted worker's node is removed", Duration::from_secs(5), || async {
        calls().contains(&format!("-{}", w.hostname)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn metrics_use_bounded_labels_and_track_the_breaker() {
    let h = Harness::new(Kind::Metered).await;
    let g = h.group("pool", 2).await;
    let w = h.add_and_discover(g.id).await;
    let _ = h.cloud.get_worker(&h.cluster, "missing").await;
    let mut text = String::new();
    let reg = h.registry.as_ref().expect("metered harness has a registry");
    prometheus_client::encoding::text::encode(&mut text, reg).expect("encodes");
    assert!(
        text.contains(
            r#"vpsie_api_requests_total{endpoint="/apps/v2/k8s/cluster/byId/{cluster}",method="GET",code="ok"}"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"code="not_found""#), "{text}");
    assert!(text.contains(
        r#"vpsie_api_requests_total{endpoint="/apps/v2/k8s/cluster/byId/{cluster}/add/slave/group/{group}",method="POST",code="ok"} 1"#
    ), "{text}");
    assert!(text.contains("vpsie_api_request_duration_seconds_bucket"));
    assert!(text.contains("vpsie_api_circuit_breaker_state 0"));
    for unbounded in [&h.cluster, &w.hostname, &w.identifier] {
        assert!(!text.contains(unbounded.as_str()), "{unbounded} leaked into labels");
    }
}

/// A client with its metrics registered, against a fresh simulator.
async fn metered_client() -> (LoopbackSim, VpsieClient, prometheus_client::registry::Registry) {
    let server = LoopbackSim::start(sim_config(), None).await.expect("sim");
    let client = VpsieClient::new(client_config(server.base_url()), Credentials::token("sim-token")).expect("client");
    let mut registry = prometheus_client::registry::Registry::default();
    client.register_metrics(&mut registry);
    (server, client, registry)
}

fn fallbacks(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
    text.lines().find(|l| l.starts_with("vpsie_autoscaler_offerings_fallback_total ")).unwrap_or_default().to_string()
}

fn answers(server: &LoopbackSim, endpoint: &str) -> Vec<u16> {
    server.sim.requests().iter().filter(|r| r.endpoint == endpoint).map(|r| r.status).collect()
}

#[tokio::test]
async fn offerings_come_from_the_plan_list_when_the_offers_endpoint_is_absent() {
    let (server, client, registry) = metered_client().await;
    let absent = json!({"endpoint": "offers", "fault": {"kind": "http_error", "status": 404, "body_style": "html"}});
    server.sim.add_fault(serde_json::from_value(absent).expect("rule")).expect("added");
    let dc = vpsie_autoscaler::cloud::sim::catalog::DATACENTERS[0].identifier;

    let offers = client.offerings(dc).await.expect("offerings from the plan list");

    let expected: Vec<Offering> = vpsie_autoscaler::cloud::sim::catalog::PLANS.iter().map(|p| p.offering()).collect();
    assert_eq!(offers, expected);
    assert_eq!(answers(&server, "offers"), vec![404]);
    assert_eq!(answers(&server, "resources"), vec![200]);
    assert_eq!(fallbacks(&registry), "vpsie_autoscaler_offerings_fallback_total 1");
}

#[tokio::test]
async fn a_failing_offers_endpoint_is_not_mistaken_for_an_absent_one() {
    let (server, client, registry) = metered_client().await;
    let down = json!({"endpoint": "offers", "fault": {"kind": "http_error", "status": 503}});
    server.sim.add_fault(serde_json::from_value(down).expect("rule")).expect("added");
    let dc = vpsie_autoscaler::cloud::sim::catalog::DATACENTERS[0].identifier;

    let e = client.offerings(dc).await;

    assert!(matches!(e, Err(CloudError::Transient { status: Some(503), .. })), "{e:?}");
    assert!(answers(&server, "resources").is_empty());
    assert_eq!(fallbacks(&registry), "vpsie_autoscaler_offerings_fallback_total 0");
}
