//! The `{error, code?, message?, data?, total?}` envelope, checked on every response
//! whatever the HTTP status, and the mapping of failures to [`CloudError`].
//!
//! Everything here is total: arbitrary bytes never panic (see the proptests).

use std::time::Duration;

use serde_json::Value;

use crate::cloud::CloudError;

/// Longest API message we keep in an error: enough to read, bounded for logs and events.
const MAX_MESSAGE: usize = 300;

/// Messages VPSie uses for refusals that no retry will fix (reference §3).
const QUOTA_PATTERNS: &[&str] = &[
    "exceeds the allowed limit",
    "quota exceeded",
    "plan does not allow",
    "maximum number of",
    "limit reached",
    "subscription does not allow",
];

/// A successful answer: the `data` payload (or the whole body when there is no `data`
/// key, as in the auth exchange) and the optional `total`.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    pub data: Value,
    pub total: Option<u64>,
}

/// Interprets one HTTP answer. `retry_after` is the already-parsed `Retry-After` header.
pub fn parse_response(status: u16, body: &[u8], retry_after: Option<Duration>) -> Result<Envelope, CloudError> {
    let ok_status = (200..300).contains(&status);
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() {
        return if ok_status {
            Ok(Envelope { data: Value::Null, total: None })
        } else {
            Err(classify(status, "empty response body", retry_after))
        };
    }
    let value = match serde_json::from_slice::<Value>(trimmed) {
        Ok(value) => value,
        // A proxy's HTML page, garbage, or JSON cut off. With a 2xx we cannot tell whether the call
        // took effect, which is exactly what Transient means.
        Err(e) => {
            let what = if looks_like_html(trimmed) {
                "non-JSON (HTML) response body"
            } else if e.is_eof() {
                "truncated JSON response body"
            } else {
                "non-JSON response body"
            };
            return Err(if ok_status {
                CloudError::Transient { status: Some(status), message: what.into() }
            } else {
                classify(status, what, retry_after)
            });
        }
    };
    if let Value::Object(map) = &value {
        let flagged = map.get("error").is_some_and(error_flag);
        if flagged || !ok_status {
            let code = map
                .get("code")
                .and_then(lenient_u64)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..600).contains(c));
            let message = message_of(map).unwrap_or_else(|| "request failed".into());
            // The HTTP status wins unless it claims success: a 200 with error:true
            // carries its real class only in `code`.
            let effective = if ok_status { code.unwrap_or(status) } else { status };
            return Err(classify_flagged(effective, ok_status, &message, retry_after));
        }
        let total = map.get("total").and_then(lenient_u64);
        let data = match map.get("data") {
            Some(d) => d.clone(),
            None => value.clone(),
        };
        return Ok(Envelope { data, total });
    }
    if ok_status {
        // A bare value (array, `true`): tolerated as the payload itself.
        Ok(Envelope { data: value, total: None })
    } else {
        Err(classify(status, "request failed", retry_after))
    }
}

fn classify_flagged(status: u16, was_2xx: bool, message: &str, retry_after: Option<Duration>) -> CloudError {
    // `error: true` with a success status and no usable code: a refusal, not an outage,
    // unless the message says otherwise.
    if was_2xx && (200..300).contains(&status) {
        let lower = message.to_ascii_lowercase();
        if is_quota(&lower) {
            return CloudError::QuotaExceeded { message: message.into() };
        }
        if lower.contains("not found") || lower.contains("does not exist") {
            return CloudError::NotFound { message: message.into() };
        }
        return CloudError::Permanent { status: Some(status), message: message.into() };
    }
    classify(status, message, retry_after)
}

/// Maps a failed status and message to an error class.
pub fn classify(status: u16, message: &str, retry_after: Option<Duration>) -> CloudError {
    let message = truncate(message);
    let lower = message.to_ascii_lowercase();
    if is_quota(&lower) {
        return CloudError::QuotaExceeded { message };
    }
    match status {
        401 | 403 => CloudError::Unauthorized { message },
        404 | 410 => CloudError::NotFound { message },
        429 => CloudError::RateLimited { retry_after },
        408 | 500..=599 => CloudError::Transient { status: Some(status), message },
        _ if lower.contains("not found") => CloudError::NotFound { message },
        _ => CloudError::Permanent { status: Some(status), message },
    }
}

fn is_quota(lower: &str) -> bool {
    QUOTA_PATTERNS.iter().any(|p| lower.contains(p))
}

fn looks_like_html(body: &[u8]) -> bool {
    body.first() == Some(&b'<')
}

fn message_of(map: &serde_json::Map<String, Value>) -> Option<String> {
    ["message", "msg", "error", "detail"].iter().filter_map(|k| map.get(*k)).find_map(|v| match v {
        Value::String(s) if !s.trim().is_empty() && !is_flag_word(s) => Some(truncate(s)),
        _ => None,
    })
}

fn is_flag_word(s: &str) -> bool {
    matches!(s.trim(), "true" | "false" | "0" | "1")
}

/// `error` comes as a bool, 0/1, "0"/"1"/"true"/"false", or (in one client's reading) the
/// message itself; a non-empty message string means failure.
fn error_flag(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !matches!(s.trim().to_ascii_lowercase().as_str(), "" | "false" | "0"),
        Value::Null => false,
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_MESSAGE).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// A number given as a JSON number or a numeric string.
pub fn lenient_f64(v: &Value) -> Option<f64> {
    let f = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    f.is_finite().then_some(f)
}

/// A non-negative integer given as a number (integral float allowed) or a numeric string.
pub fn lenient_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64().filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1.8e19).map(|f| f as u64)
        }),
        Value::String(s) => {
            let t = s.trim();
            t.parse::<u64>().ok().or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1.8e19)
                    .map(|f| f as u64)
            })
        }
        _ => None,
    }
}

/// A boolean given as true/false, 0/1 or "0"/"1"/"true"/"false".
pub fn lenient_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => Some(true),
            "0" | "false" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A string field; numbers are rendered (ids sometimes come as numbers).
pub fn lenient_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// First present key among alternatives, mapped leniently.
pub fn field<T>(v: &Value, keys: &[&str], f: impl Fn(&Value) -> Option<T>) -> Option<T> {
    keys.iter().filter_map(|k| v.get(*k)).find_map(f)
}

/// A list payload: an array, or an object wrapping one under a usual key (`rows`, `items`…).
pub fn list_of(data: &Value) -> Vec<Value> {
    match data {
        Value::Array(a) => a.clone(),
        Value::Object(m) => ["rows", "items", "list", "data", "nodes"]
            .iter()
            .find_map(|k| m.get(*k).and_then(Value::as_array).cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (relative to `now`); past dates are zero.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(v).ok()?;
    let delta = when.as_millisecond().saturating_sub(now.as_millisecond());
    Some(Duration::from_millis(u64::try_from(delta).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap_or_default()
    }

    #[test]
    fn a_200_with_error_true_is_a_failure() {
        let r = parse_response(200, &body(json!({"error": true, "message": "boom"})), None);
        assert!(matches!(r, Err(CloudError::Permanent { .. })));
    }

    #[test]
    fn a_200_with_error_true_and_a_5xx_code_is_transient() {
        let r = parse_response(200, &body(json!({"error": "1", "code": "503", "message": "busy"})), None);
        assert!(matches!(r, Err(CloudError::Transient { status: Some(503), .. })));
    }

    #[test]
    fn quota_messages_are_quota_whatever_the_status() {
        for status in [200, 400, 403, 422, 500] {
            let r = parse_response(
                status,
                &body(json!({"error": true, "message": "Worker nodes count exceeds the allowed limit"})),
                None,
            );
            assert!(matches!(r, Err(CloudError::QuotaExceeded { .. })), "{status}");
        }
    }

    #[test]
    fn success_returns_data_and_total_or_the_whole_body() {
        let r = parse_response(200, &body(json!({"error": 0, "data": [1], "total": "1"})), None);
        assert_eq!(r, Ok(Envelope { data: json!([1]), total: Some(1) }));
        let r = parse_response(200, &body(json!({"accessToken": {"token": "t"}})), None);
        assert_eq!(r.map(|e| e.data["accessToken"]["token"].clone()), Ok(json!("t")));
        assert_eq!(parse_response(204, b"", None).map(|e| e.data), Ok(Value::Null));
    }

    #[test]
    fn html_and_empty_bodies_classify_by_status() {
        assert!(matches!(
            parse_response(502, b"<html>bad gateway</html>", None),
            Err(CloudError::Transient { status: Some(502), .. })
        ));
        assert!(matches!(parse_response(200, b"<html>", None), Err(CloudError::Transient { .. })));
        assert!(matches!(parse_response(404, b"", None), Err(CloudError::NotFound { .. })));
        assert_eq!(
            parse_response(429, b"", Some(Duration::from_secs(3))),
            Err(CloudError::RateLimited { retry_after: Some(Duration::from_secs(3)) })
        );
        assert!(matches!(parse_response(401, b"{}", None), Err(CloudError::Unauthorized { .. })));
    }

    #[test]
    fn not_found_in_a_200_error_body_is_not_found() {
        let r = parse_response(200, &body(json!({"error": true, "message": "Node not found"})), None);
        assert!(matches!(r, Err(CloudError::NotFound { .. })));
    }

    #[test]
    fn numbers_and_booleans_are_accepted_in_loose_forms() {
        assert_eq!(lenient_u64(&json!("42")), Some(42));
        assert_eq!(lenient_u64(&json!(42.0)), Some(42));
        assert_eq!(lenient_u64(&json!(-1)), None);
        assert_eq!(lenient_f64(&json!("9.5")), Some(9.5));
        assert_eq!(lenient_f64(&json!("NaN")), None);
        assert_eq!(lenient_bool(&json!("1")), Some(true));
        assert_eq!(lenient_bool(&json!(0)), Some(false));
        assert_eq!(lenient_bool(&json!("false")), Some(false));
        assert_eq!(lenient_bool(&json!("maybe")), None);
    }

    #[test]
    fn a_success_cut_off_mid_way_is_a_transient_error_that_says_truncated() {
        match parse_response(200, br#"{"error":false,"data":[{"identifier":"3f"#, None) {
            Err(CloudError::Transient { status: Some(200), message }) => {
                assert!(message.contains("truncated"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        match parse_response(200, b"\x00\xff garbage", None) {
            Err(CloudError::Transient { message, .. }) => assert_eq!(message, "non-JSON response body"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_messages_are_truncated() {
        let long = "x".repeat(5000);
        let e = classify(400, &long, None);
        assert!(e.to_string().len() < 400);
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = jiff::Timestamp::from_second(1_000_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&(now + jiff::SignedDuration::from_secs(30)))
            .unwrap_or_default();
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
