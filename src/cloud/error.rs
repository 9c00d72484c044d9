//! Typed failures of the cloud layer.
//!
//! Messages come from the API (truncated, and scrubbed of our own secrets by the client);
//! never put a credential into a variant.

use std::time::Duration;

/// Why a cloud call failed. `kind()` is bounded and safe as a metric label or event reason.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CloudError {
    /// The object does not exist (any more). For deletes this means "done".
    #[error("not found: {message}")]
    NotFound { message: String },
    /// The account or plan refuses more resources. Retrying will not help until someone acts.
    #[error("quota exceeded: {message}")]
    QuotaExceeded { message: String },
    /// The API asked us to slow down.
    #[error("rate limited (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    /// Credentials were refused (after one re-authentication).
    #[error("unauthorized: {message}")]
    Unauthorized { message: String },
    /// Might work later: 5xx, timeouts, connection failures, unreadable answers.
    /// For a create, the outcome is unknown: list before deciding anything.
    #[error("transient failure{}: {message}", fmt_status(*.status))]
    Transient { status: Option<u16>, message: String },
    /// The request is wrong or refused for good.
    #[error("permanent failure{}: {message}", fmt_status(*.status))]
    Permanent { status: Option<u16>, message: String },
    /// Our own circuit breaker is open; no request was sent.
    #[error("circuit breaker open (retry after {retry_after:?})")]
    CircuitOpen { retry_after: Duration },
}

fn fmt_status(status: Option<u16>) -> String {
    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
}

impl CloudError {
    /// Bounded identifier of the failure class, for metric labels and event reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Transient { .. } => "transient",
            Self::Permanent { .. } => "permanent",
            Self::CircuitOpen { .. } => "circuit_open",
        }
    }

    /// Whether trying again later could succeed. (A caller must still never repeat a
    /// create without first listing: see `CloudProvider::add_worker`.)
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Transient { .. } | Self::CircuitOpen { .. })
    }

    /// How long the API (or the breaker) asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            Self::CircuitOpen { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the failure proves a create was not carried out: a 429 is a refusal before acting, and
    /// an open breaker sent nothing. Every other failure of a create leaves its outcome to discovery.
    pub fn proves_nothing_was_done(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::CircuitOpen { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    pub(crate) fn transient(message: impl Into<String>) -> Self {
        Self::Transient { status: None, message: message.into() }
    }

    pub(crate) fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent { status: None, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rate_limits_transients_and_open_breakers_are_retryable() {
        let m = || "x".to_string();
        assert!(CloudError::RateLimited { retry_after: None }.is_retryable());
        assert!(CloudError::transient("t").is_retryable());
        assert!(CloudError::CircuitOpen { retry_after: Duration::from_secs(1) }.is_retryable());
        assert!(!CloudError::NotFound { message: m() }.is_retryable());
        assert!(!CloudError::QuotaExceeded { message: m() }.is_retryable());
        assert!(!CloudError::Unauthorized { message: m() }.is_retryable());
        assert!(!CloudError::permanent("p").is_retryable());
    }

    #[test]
    fn only_a_rate_limit_or_an_open_breaker_proves_a_create_was_not_carried_out() {
        assert!(CloudError::RateLimited { retry_after: None }.proves_nothing_was_done());
        assert!(CloudError::CircuitOpen { retry_after: Duration::from_secs(1) }.proves_nothing_was_done());
        assert!(!CloudError::transient("timed out").proves_nothing_was_done());
        assert!(!CloudError::Transient { status: Some(502), message: "x".into() }.proves_nothing_was_done());
        assert!(!CloudError::permanent("p").proves_nothing_was_done());
    }

    #[test]
    fn display_names_the_status_when_known() {
        let e = CloudError::Transient { status: Some(503), message: "busy".into() };
        assert_eq!(e.to_string(), "transient failure (HTTP 503): busy");
        assert_eq!(e.kind(), "transient");
    }
}
