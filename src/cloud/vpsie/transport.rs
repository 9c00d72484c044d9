//! One logical API call: rate limit → breaker → send → envelope, with bounded retries for
//! the idempotent calls and one re-authentication on 401.

use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use serde_json::Value;

use super::VpsieClient;
use super::credentials::{Secret, scrub};
use super::envelope::{Envelope, parse_response, parse_retry_after};
use crate::cloud::CloudError;

/// A request as the client methods describe it.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub method: Method,
    /// Absolute path (already percent-encoded).
    pub path: String,
    pub body: Body,
    /// Whether repeating the request is harmless. Creates set this to false: they are
    /// sent exactly once (reference §3, §7).
    pub idempotent: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum Body {
    None,
    Json(Value),
    /// `application/x-www-form-urlencoded`: what the plan catalogue (`/apps/v2/resources`) takes.
    Form(Vec<(&'static str, String)>),
}

/// The raw outcome of one attempt.
struct Attempt {
    result: Result<Envelope, CloudError>,
    /// HTTP status, when a response arrived.
    status: Option<u16>,
}

impl VpsieClient {
    /// Sends an authenticated call; re-authenticates once if the API answers 401.
    pub(crate) async fn call(&self, call: Call) -> Result<Envelope, CloudError> {
        let mut reauthed = false;
        loop {
            let token = self.current_token().await?;
            let (result, status) = self.execute(&call, Some(&token)).await;
            if status == Some(401) && !reauthed && self.tokens.can_refresh() {
                // A 401 means the server refused before acting, so even a create may be
                // sent again.
                tracing::debug!(path = %call.path, "token refused; logging in again");
                self.tokens.invalidate(&token).await;
                reauthed = true;
                continue;
            }
            return result.map_err(|e| self.scrubbed(e));
        }
    }

    async fn current_token(&self) -> Result<Secret, CloudError> {
        let exchange = |body: Value| async move {
            let call = Call {
                method: Method::POST,
                path: self.cfg.auth_path.clone(),
                body: Body::Json(body),
                idempotent: true,
            };
            self.execute(&call, None).await.0.map(|e| e.data)
        };
        self.tokens.token(exchange).await.map_err(|e| self.scrubbed(e))
    }

    /// Attempts (with retries if idempotent) and returns the last result and HTTP status.
    async fn execute(&self, call: &Call, token: Option<&Secret>) -> (Result<Envelope, CloudError>, Option<u16>) {
        let mut retries = 0;
        let mut last: Option<(CloudError, Option<u16>)> = None;
        loop {
            self.limiter.acquire().await;
            let permit = match self.breaker.acquire() {
                Ok(p) => p,
                // The breaker opened during our own retries: the real error says more.
                Err(wait) => {
                    return match last {
                        Some((e, status)) => (Err(e), status),
                        None => (Err(CloudError::CircuitOpen { retry_after: wait }), None),
                    };
                }
            };
            let Attempt { result, status } = self.attempt(call, token).await;
            self.breaker.record(permit, counts_against_breaker(&result));
            let err = match result {
                Ok(env) => return (Ok(env), status),
                Err(e) => e,
            };
            if !call.idempotent || retries >= self.cfg.backoff.max_retries || !retry_in_line(&err) {
                return (Err(err), status);
            }
            retries += 1;
            let delay = match err.retry_after() {
                Some(ra) if ra > self.cfg.backoff.max_retry_after => return (Err(err), status),
                Some(ra) => ra,
                None => self.cfg.backoff.delay(retries),
            };
            tracing::debug!(
                path = %call.path,
                kind = err.kind(),
                retry = retries,
                delay_ms = delay.as_millis() as u64,
                "retrying VPSie call"
            );
            tokio::time::sleep(delay).await;
            last = Some((err, status));
        }
    }

    async fn attempt(&self, call: &Call, token: Option<&Secret>) -> Attempt {
        let url = format!("{}{}", self.cfg.base_url, call.path);
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(t) = token {
            // Sensitive headers are masked by hyper/reqwest debug output.
            match (HeaderValue::from_str(t.expose()), HeaderValue::from_str(&format!("Bearer {}", t.expose()))) {
                (Ok(mut v), Ok(mut b)) => {
                    v.set_sensitive(true);
                    b.set_sensitive(true);
                    headers.insert("Vpsie-Auth", v);
                    headers.insert(AUTHORIZATION, b);
                }
                _ => {
                    return Attempt {
                        result: Err(CloudError::Unauthorized {
                            message: "token contains characters not allowed in a header".into(),
                        }),
                        status: None,
                    };
                }
            }
        }
        let mut req = self.http.request(call.method.clone(), url).headers(headers).timeout(self.cfg.request_timeout);
        req = match &call.body {
            Body::None => req,
            Body::Json(body) => req.json(body),
            Body::Form(fields) => req.form(fields),
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt { result: Err(transport_error(&e)), status: None };
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
        let body = match self.read_body(resp).await {
            Ok(b) => b,
            Err(e) => {
                return Attempt { result: Err(e), status: Some(status) };
            }
        };
        Attempt { result: parse_response(status, &body, retry_after), status: Some(status) }
    }

    async fn read_body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, CloudError> {
        let limit = self.cfg.max_body_bytes;
        if resp.content_length().is_some_and(|l| l > limit as u64) {
            return Err(CloudError::transient("response body too large"));
        }
        let mut buf = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if buf.len() + chunk.len() > limit {
                        return Err(CloudError::transient("response body too large"));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(buf),
                Err(e) => return Err(transport_error(&e)),
            }
        }
    }

    fn scrubbed(&self, e: CloudError) -> CloudError {
        let s = |m: String| scrub(&m, &self.secret_values);
        match e {
            CloudError::NotFound { message } => CloudError::NotFound { message: s(message) },
            CloudError::QuotaExceeded { message } => CloudError::QuotaExceeded { message: s(message) },
            CloudError::Unauthorized { message } => CloudError::Unauthorized { message: s(message) },
            CloudError::Transient { status, message } => CloudError::Transient { status, message: s(message) },
            CloudError::Permanent { status, message } => CloudError::Permanent { status, message: s(message) },
            other => other,
        }
    }
}

/// Describes a reqwest failure by its kind only: its Display carries the URL and source
/// chain, which we do not want to reason about leaking.
fn transport_error(e: &reqwest::Error) -> CloudError {
    let what = if e.is_timeout() {
        "request timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "connection lost while reading the response"
    } else if e.is_request() {
        "no response (connection closed or refused)"
    } else {
        "transport error"
    };
    CloudError::transient(what)
}

/// What the breaker counts: 5xx, 429 and transport failures (no HTTP status).
fn counts_against_breaker(result: &Result<Envelope, CloudError>) -> bool {
    match result {
        Err(CloudError::RateLimited { .. }) => true,
        Err(CloudError::Transient { status, .. }) => status.is_none_or(|s| s >= 500),
        _ => false,
    }
}

/// What is retried in line: connect errors, timeouts, 408, 429, 502, 503, 504.
/// A 500 is not: it more often means "your request broke something" than "try again".
fn retry_in_line(e: &CloudError) -> bool {
    match e {
        CloudError::RateLimited { .. } => true,
        CloudError::Transient { status, .. } => {
            matches!(status, None | Some(408 | 502 | 503 | 504))
        }
        _ => false,
    }
}

/// Percent-encodes one path segment (identifiers come from user input).
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("abc-123"), "abc-123");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn the_breaker_counts_5xx_429_and_transport_failures_only() {
        let t = |s| Err(CloudError::Transient { status: s, message: String::new() });
        assert!(counts_against_breaker(&t(None)));
        assert!(counts_against_breaker(&t(Some(500))));
        assert!(!counts_against_breaker(&t(Some(200))));
        assert!(counts_against_breaker(&Err(CloudError::RateLimited { retry_after: None })));
        assert!(!counts_against_breaker(&Err(CloudError::NotFound { message: String::new() })));
    }

    #[test]
    fn only_gateway_errors_timeouts_and_rate_limits_are_retried_in_line() {
        let t = |s| CloudError::Transient { status: s, message: String::new() };
        assert!(retry_in_line(&t(None)));
        assert!(retry_in_line(&t(Some(503))));
        assert!(!retry_in_line(&t(Some(500))));
        assert!(!retry_in_line(&CloudError::permanent("x")));
    }
}
