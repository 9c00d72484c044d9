//! The VPSie HTTP dialect (reference §2, govpsie paths), served by one fallback handler so
//! that every request goes through the same pipeline: route → faults → auth → operation →
//! envelope → request log.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::config::AuthShape;
use super::core::Sim;
use super::faults::{BodyStyle, Reject, RequestKey, RetryAfter};
use super::world::SimError;

/// Path parameters that fault rules can match on.
#[derive(Clone, Debug, Default)]
pub struct Params {
    pub cluster: Option<String>,
    pub group: Option<u64>,
}

/// Maps a request to an endpoint name (see `faults::ENDPOINTS`).
pub fn route(method: &Method, path: &str) -> Option<(&'static str, Params)> {
    let segs: Vec<String> = path.trim_matches('/').split('/').map(percent_decode).collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let cluster = |id: &str| Params { cluster: Some(id.to_string()), group: None };
    let m = method.as_str();
    let r = match (m, s.as_slice()) {
        ("POST", ["apps", "v2", "auth", "from", "api"])
        | ("POST", ["auth", "from", "api"])
        | ("POST", ["v2", "auth", "from", "api"]) => ("auth", Params::default()),
        ("GET", ["apps", "v2", "datacenter"]) => ("datacenters", Params::default()),
        ("GET", ["api", "v2", "plans", "category"]) => ("plan_categories", Params::default()),
        ("POST", ["apps", "v2", "resources"]) => ("resources", Params::default()),
        ("POST", ["apps", "v2", "k8s", "offers"]) => ("offers", Params::default()),
        ("GET", ["apps", "v2", "projects"]) => ("projects", Params::default()),
        ("GET", ["apps", "v2", "k8s", "cluster", "all"]) => ("clusters", Params::default()),
        ("GET", ["apps", "v2", "k8s", "cluster", "byId", id]) => ("cluster", cluster(id)),
        ("GET", ["apps", "v2", "k8s", "node", "groups", "byClusterId", id]) => ("groups", cluster(id)),
        ("POST", ["apps", "v2", "k8s", "cluster", "add", "group"]) => ("add_group", Params::default()),
        ("DELETE", ["apps", "v2", "k8s", "cluster", "delete", "group", gid]) => {
            ("delete_group", Params { cluster: None, group: Some(gid.parse().ok()?) })
        }
        ("POST", ["apps", "v2", "k8s", "cluster", "byId", id, "add", "slave", "group", gid]) => {
            ("add_worker", Params { cluster: Some(id.to_string()), group: Some(gid.parse().ok()?) })
        }
        ("POST", ["apps", "v2", "k8s", "cluster", "byId", id, "add", "slave"]) => ("add_worker_default", cluster(id)),
        ("DELETE", ["apps", "v2", "k8s", "cluster", "byId", id, "reduce", "slave"]) => ("reduce_worker", cluster(id)),
        ("DELETE", ["apps", "v2", "k8s", "cluster", "byId", id, "reduce"]) => ("reduce", cluster(id)),
        ("DELETE", ["apps", "v2", "k8s", "cluster", "byId", id, "delete", "slave"]) => ("delete_worker", cluster(id)),
        _ => return None,
    };
    Some(r)
}

/// The API handler (mounted as the router's fallback).
pub async fn handle(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let Some((endpoint, params)) = route(&method, &path) else {
        return render_error(404, BodyStyle::Enveloped, "Route not found", RetryAfter::None);
    };
    let key = RequestKey { endpoint, method: method.as_str(), cluster: params.cluster.as_deref(), group: params.group };
    let fx = sim.admit(&key);
    let delay = fx.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match fx.reject() {
        Some(Reject::Drop) => {
            sim.log(&key, &path, 0, &fx);
            return dropped_connection();
        }
        Some(Reject::Hang(d)) => {
            sim.log(&key, &path, 504, &fx);
            tokio::time::sleep(d).await;
            return render_error(504, BodyStyle::Html, "Gateway Timeout", RetryAfter::None);
        }
        Some(Reject::Respond { status, style, message, retry_after }) => {
            sim.log(&key, &path, status, &fx);
            return render_error(status, style, &message, retry_after);
        }
        None => {}
    }
    let args = body_map(&body);
    let result = if endpoint == "auth" {
        auth(&sim, &args)
    } else if !sim.authorized(token_of(&headers).as_deref()) {
        Err(SimError::new(401, "Unauthorized"))
    } else {
        super::endpoints::operation(&sim, endpoint, &params, &args, &fx)
    };
    let response = match result {
        Ok(v) => {
            let mut r = axum::Json(v).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => {
            let style = if e.in_200 { BodyStyle::Error200 } else { BodyStyle::Enveloped };
            render_error(e.status, style, &e.message, RetryAfter::None)
        }
    };
    sim.log(&key, &path, response.status().as_u16(), &fx);
    response
}

fn token_of(headers: &HeaderMap) -> Option<String> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    get("vpsie-auth")
        .map(str::to_string)
        .or_else(|| get("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_string)))
}

fn auth(sim: &Sim, args: &Map<String, Value>) -> Result<Value, SimError> {
    let s = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or_default();
    let (token, exp) = sim
        .exchange(s("clientId"), s("clientSecret"))
        .ok_or_else(|| SimError::new(401, "Invalid client credentials"))?;
    let refresh = format!("refresh-{token}");
    let access = json!({"token": token, "expires": exp.to_string()});
    let refresh = json!({"token": refresh, "expires": exp.to_string()});
    let mut out = json!({"error": false});
    let shape = sim.settings().auth_shape;
    if shape != AuthShape::Autoscaler {
        out["token"] = json!({"access": access, "refresh": refresh});
    }
    if shape != AuthShape::Govpsie {
        out["accessToken"] = access;
        out["refreshToken"] = refresh;
    }
    Ok(out)
}

/// Bytes of an error answer, shared with the in-process provider so both report the
/// same error for the same fault.
pub fn error_parts(
    status: u16,
    style: BodyStyle,
    message: &str,
    retry_after: RetryAfter,
) -> (u16, Option<String>, Vec<u8>) {
    let retry = match retry_after {
        RetryAfter::None => None,
        RetryAfter::Seconds { secs } => Some(secs.to_string()),
        RetryAfter::HttpDate { secs } => {
            let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs as i64);
            jiff::fmt::rfc2822::DateTimePrinter::new().timestamp_to_rfc9110_string(&at).ok()
        }
    };
    let envelope =
        || serde_json::to_vec(&json!({"error": true, "code": status, "message": message})).unwrap_or_default();
    let (http, body) = match style {
        BodyStyle::Enveloped => (status, envelope()),
        BodyStyle::Error200 => (200, envelope()),
        BodyStyle::Empty => (status, Vec::new()),
        BodyStyle::Html => (
            status,
            format!("<html><head><title>{status}</title></head><body><h1>{message}</h1></body></html>").into_bytes(),
        ),
        BodyStyle::Garbage => (status, b"\x00\xff\xfe garbage \x1b[0m not json".to_vec()),
        BodyStyle::Truncated => (status, br#"{"error":false,"data":[{"identifier":"3f2a"#.to_vec()),
        BodyStyle::Huge => {
            let mut body = br#"{"error":false,"data":""#.to_vec();
            body.resize(11 * 1024 * 1024, b'x');
            (status, body)
        }
    };
    (http, retry, body)
}

fn render_error(status: u16, style: BodyStyle, message: &str, ra: RetryAfter) -> Response {
    let (http, retry, body) = error_parts(status, style, message, ra);
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let ct = match style {
        BodyStyle::Html => "text/html",
        _ => "application/json",
    };
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    if let Some(v) = retry.and_then(|v| HeaderValue::from_str(&v).ok()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// A response whose body fails at once: hyper then cuts the connection, which the client
/// sees as a transport error.
fn dropped_connection() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected connection drop",
        ))
    });
    Response::new(Body::from_stream(stream))
}

/// The request's arguments: a JSON object, or a form body (the auth exchange and the
/// resources call send forms).
pub fn body_map(body: &[u8]) -> Map<String, Value> {
    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
        return m;
    }
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(&k.replace('+', " ")), Value::String(percent_decode(&v.replace('+', " "))))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(h), Some(l)) if hex(*h).is_some() && hex(*l).is_some() => {
                let v = hex(*h).unwrap_or(0) * 16 + hex(*l).unwrap_or(0);
                out.push(v as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_cover_the_k8s_paths_and_reject_others() {
        let r = route(&Method::POST, "/apps/v2/k8s/cluster/byId/abc/add/slave/group/7");
        assert!(matches!(r, Some(("add_worker", Params { group: Some(7), .. }))));
        assert!(route(&Method::GET, "/apps/v2/k8s/cluster/byId/abc").is_some());
        assert!(route(&Method::POST, "/auth/from/api").is_some());
        assert!(route(&Method::GET, "/apps/v2/k8s/cluster/byId/abc/add/slave/group/x").is_none());
        assert!(route(&Method::GET, "/nope").is_none());
    }

    #[test]
    fn forms_and_json_bodies_both_become_maps() {
        let m = body_map(b"clientId=a%2Bb&clientSecret=x+y");
        assert_eq!(m.get("clientId"), Some(&json!("a+b")));
        assert_eq!(m.get("clientSecret"), Some(&json!("x y")));
        let m = body_map(br#"{"clientId":"j"}"#);
        assert_eq!(m.get("clientId"), Some(&json!("j")));
    }
}
