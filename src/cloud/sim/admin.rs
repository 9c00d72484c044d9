//! The control plane under `/_sim/` (never under an API prefix): state, faults, request
//! log, events, cost meter, settings, clock, tokens, reset.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::Settings;
use super::core::{Sim, view};
use super::faults::FaultRule;

pub fn router() -> Router<Arc<Sim>> {
    Router::new()
        .route("/_sim/healthz", get(|| async { "ok" }))
        .route("/_sim/state", get(state))
        .route("/_sim/faults", get(list_faults).post(add_fault).delete(clear_faults))
        .route("/_sim/faults/{id}", put(replace_fault).delete(remove_fault))
        .route("/_sim/requests", get(requests).delete(clear_requests))
        .route("/_sim/events", get(events))
        .route("/_sim/cost", get(cost))
        .route("/_sim/settings", get(settings).put(put_settings))
        .route("/_sim/clock/advance", post(advance))
        .route("/_sim/tokens/revoke", post(revoke))
        .route("/_sim/reset", post(reset))
}

async fn state(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let g = sim.lock();
    let w = &g.world;
    let workers: Vec<Value> = w
        .workers
        .iter()
        .map(|r| {
            let listed = w.listed(r, w.now());
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            v["listed"] = json!(listed);
            v["node_name"] = json!(view(r, None).hostname);
            v
        })
        .collect();
    Json(json!({
        "now": w.now(),
        "wall": w.wall(w.now()).to_string(),
        "clusters": w.clusters,
        "workers": workers,
        "cost": w.cost(),
    }))
}

async fn list_faults(State(sim): State<Arc<Sim>>) -> Json<Vec<FaultRule>> {
    Json(sim.faults())
}

async fn add_fault(State(sim): State<Arc<Sim>>, body: axum::body::Bytes) -> Response {
    let rule: FaultRule = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&format!("invalid fault rule: {e}")),
    };
    match sim.add_fault(rule) {
        Ok(r) => (StatusCode::CREATED, Json(r)).into_response(),
        Err(e) => bad_request(&e),
    }
}

async fn clear_faults(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.clear_faults();
    StatusCode::NO_CONTENT
}

/// Replaces a rule (its counters restart), keeping its id.
async fn replace_fault(State(sim): State<Arc<Sim>>, Path(id): Path<u64>, body: axum::body::Bytes) -> Response {
    let rule: FaultRule = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&format!("invalid fault rule: {e}")),
    };
    match sim.replace_fault(id, rule) {
        Ok(Some(r)) => Json(r).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => bad_request(&e),
    }
}

async fn remove_fault(State(sim): State<Arc<Sim>>, Path(id): Path<u64>) -> StatusCode {
    if sim.remove_fault(id) { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND }
}

async fn requests(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(json!(sim.requests()))
}

async fn clear_requests(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.clear_requests();
    StatusCode::NO_CONTENT
}

async fn events(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(json!(sim.lock().world.events))
}

async fn cost(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(json!(sim.lock().world.cost()))
}

async fn settings(State(sim): State<Arc<Sim>>) -> Json<Settings> {
    Json(sim.settings())
}

/// Merges the posted fields into the current settings.
async fn put_settings(State(sim): State<Arc<Sim>>, Json(patch): Json<Value>) -> Response {
    let mut current = serde_json::to_value(sim.settings()).unwrap_or(Value::Null);
    if let (Value::Object(cur), Value::Object(p)) = (&mut current, patch) {
        cur.extend(p);
    }
    match serde_json::from_value::<Settings>(current) {
        Ok(s) => {
            sim.set_settings(s.clone());
            Json(s).into_response()
        }
        Err(e) => bad_request(&format!("invalid settings: {e}")),
    }
}

#[derive(Deserialize)]
struct Advance {
    seconds: f64,
}

async fn advance(State(sim): State<Arc<Sim>>, Json(a): Json<Advance>) -> Json<Value> {
    sim.advance_clock(a.seconds);
    Json(json!({"now": sim.lock().world.now()}))
}

async fn revoke(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.revoke_tokens();
    StatusCode::NO_CONTENT
}

async fn reset(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.reset();
    StatusCode::NO_CONTENT
}

fn bad_request(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}
