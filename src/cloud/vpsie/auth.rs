//! Access tokens: a static token, or a client-credentials exchange refreshed ahead of expiry.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::credentials::{Auth, Secret};
use super::envelope::{lenient_f64, lenient_string};
use crate::cloud::CloudError;

/// Lifetime assumed when the exchange answer has no usable `expires`.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Refresh this long before expiry (or at half-life for short-lived tokens).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Cached {
    token: Secret,
    refresh_at: Instant,
}

/// Holds the current token. A tokio mutex, so concurrent callers wait for one exchange
/// instead of each starting their own.
#[derive(Debug)]
pub struct TokenCache {
    auth: Auth,
    current: tokio::sync::Mutex<Option<Cached>>,
}

impl TokenCache {
    pub fn new(auth: Auth) -> Self {
        Self { auth, current: tokio::sync::Mutex::new(None) }
    }

    /// Whether a 401 could be cured by logging in again.
    pub fn can_refresh(&self) -> bool {
        matches!(self.auth, Auth::ClientCredentials { .. })
    }

    /// The token to send, exchanging credentials through `exchange` when needed.
    /// `exchange` gets the JSON body to POST and returns the answer's payload.
    pub async fn token<F, Fut>(&self, exchange: F) -> Result<Secret, CloudError>
    where
        F: FnOnce(Value) -> Fut,
        Fut: std::future::Future<Output = Result<Value, CloudError>>,
    {
        let (id, secret) = match &self.auth {
            Auth::Token(t) => return Ok(t.clone()),
            Auth::ClientCredentials { client_id, client_secret } => (client_id, client_secret),
        };
        let mut cur = self.current.lock().await;
        if let Some(c) = cur.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let body = serde_json::json!({
            "clientId": id.expose(),
            "clientSecret": secret.expose(),
        });
        let answer = exchange(body).await?;
        let (token, ttl) = token_from_answer(&answer, jiff::Timestamp::now())
            .ok_or_else(|| CloudError::Unauthorized { message: "auth exchange answered without a token".into() })?;
        let margin = REFRESH_MARGIN.min(ttl / 2);
        *cur = Some(Cached { token: token.clone(), refresh_at: Instant::now() + ttl.saturating_sub(margin) });
        Ok(token)
    }

    /// Forgets `used` after the API refused it, unless a newer token already replaced it.
    pub async fn invalidate(&self, used: &Secret) {
        let mut cur = self.current.lock().await;
        if cur.as_ref().is_some_and(|c| &c.token == used) {
            *cur = None;
        }
    }
}

/// Reads both known answer shapes: govpsie's `token.access.{token,expires}` and the Go
/// autoscaler's `accessToken.{token,expires}` (plus bare-string variants).
pub fn token_from_answer(v: &Value, now: jiff::Timestamp) -> Option<(Secret, Duration)> {
    let access = v
        .pointer("/token/access")
        .or_else(|| v.get("accessToken"))
        .or_else(|| v.get("access_token"))
        .or_else(|| v.get("token"))?;
    let (token, expires) = match access {
        Value::String(s) => (s.clone(), v.get("expires").or_else(|| v.get("expires_in"))),
        Value::Object(_) => (access.get("token").and_then(Value::as_str)?.to_string(), access.get("expires")),
        _ => return None,
    };
    if token.trim().is_empty() {
        return None;
    }
    let ttl = expires.and_then(|e| ttl_of(e, now)).unwrap_or(DEFAULT_TTL);
    Some((Secret::new(token.trim()), ttl))
}

/// `expires` as RFC 3339, or a number: epoch seconds (or milliseconds) when large,
/// else seconds from now.
fn ttl_of(e: &Value, now: jiff::Timestamp) -> Option<Duration> {
    let at = if let Some(s) = lenient_string(e).filter(|s| s.parse::<f64>().is_err()) {
        s.parse::<jiff::Timestamp>().ok()?
    } else {
        let n = lenient_f64(e)?;
        if n < 1e9 {
            return Some(Duration::from_secs_f64(n.max(0.0)));
        }
        let secs = if n > 1e12 { n / 1000.0 } else { n };
        jiff::Timestamp::from_second(secs as i64).ok()?
    };
    let ms = at.as_millisecond().saturating_sub(now.as_millisecond());
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn in_secs(s: i64) -> String {
        (now() + jiff::SignedDuration::from_secs(s)).to_string()
    }

    #[test]
    fn both_exchange_answer_shapes_are_understood() {
        let a = json!({"error": false, "token": {"access": {"token": "A", "expires": in_secs(600)},
                        "refresh": {"token": "R", "expires": in_secs(9999)}}});
        let b = json!({"accessToken": {"token": "B", "expires": in_secs(120)},
                       "refreshToken": {"token": "R"}});
        let (ta, la) = token_from_answer(&a, now()).unwrap_or((Secret::new(""), Duration::ZERO));
        let (tb, lb) = token_from_answer(&b, now()).unwrap_or((Secret::new(""), Duration::ZERO));
        assert_eq!((ta.expose(), la), ("A", Duration::from_secs(600)));
        assert_eq!((tb.expose(), lb), ("B", Duration::from_secs(120)));
    }

    #[test]
    fn missing_or_unparseable_expiry_falls_back_to_an_hour() {
        let v = json!({"accessToken": {"token": "B", "expires": "next tuesday"}});
        assert_eq!(token_from_answer(&v, now()).map(|x| x.1), Some(DEFAULT_TTL));
        let v = json!({"accessToken": {"token": "B"}});
        assert_eq!(token_from_answer(&v, now()).map(|x| x.1), Some(DEFAULT_TTL));
    }

    #[test]
    fn an_answer_without_a_token_is_rejected() {
        assert!(token_from_answer(&json!({"error": false}), now()).is_none());
        assert!(token_from_answer(&json!({"accessToken": {"token": " "}}), now()).is_none());
    }

    #[tokio::test]
    async fn tokens_are_reused_until_the_refresh_point() {
        let cache = TokenCache::new(Auth::ClientCredentials {
            client_id: Secret::new("id"),
            client_secret: Secret::new("secret"),
        });
        let calls = std::sync::atomic::AtomicU32::new(0);
        let ex = |_b: Value| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok(json!({"accessToken": {"token": "T"}})) }
        };
        let t1 = cache.token(ex).await;
        let t2 = cache.token(ex).await;
        assert_eq!(t1, t2);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        if let Ok(t) = t1 {
            cache.invalidate(&t).await;
        }
        let _ = cache.token(ex).await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
