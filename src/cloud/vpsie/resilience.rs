//! Client-side protection of the API and of ourselves: backoff, circuit breaker, token bucket.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::cloud::BreakerState;

/// Bounded exponential backoff with jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// Retries after the first attempt (so at most `max_retries + 1` requests).
    pub max_retries: u32,
    pub initial: Duration,
    pub max: Duration,
    /// Fraction of the delay randomised either way (0.2 = ±20 %).
    pub jitter: f64,
    /// A `Retry-After` longer than this is not waited out in-line: the call fails with
    /// `RateLimited` and the caller requeues.
    pub max_retry_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
            jitter: 0.2,
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.initial.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let base = exp.min(self.max);
        let j = self.jitter.clamp(0.0, 1.0);
        let factor = if j > 0.0 { rand::rng().random_range((1.0 - j)..=(1.0 + j)) } else { 1.0 };
        base.mul_f64(factor).min(self.max)
    }
}

/// Circuit breaker settings.
#[derive(Clone, Debug)]
pub struct BreakerConfig {
    /// Consecutive failures (5xx, 429, transport) that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before letting one probe through.
    pub open_for: Duration,
    /// Successful probes needed to close it again.
    pub close_after: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, open_for: Duration::from_secs(30), close_after: 2 }
    }
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// `probe_since`: when the in-flight probe started. A probe whose caller vanished
    /// (cancelled future) never reports, so after `open_for` another one is allowed.
    HalfOpen {
        probe_since: Option<Instant>,
        successes: u32,
    },
}

/// Counts 5xx, 429 and transport failures (pitfall 10: a breaker that ignores HTTP
/// failures never opens during a real outage).
#[derive(Debug)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    inner: Mutex<Inner>,
}

/// Permission to send one request; report the outcome with [`CircuitBreaker::record`].
#[derive(Debug)]
pub struct Permit {
    probe: bool,
}

impl CircuitBreaker {
    pub fn new(cfg: BreakerConfig) -> Self {
        Self { cfg, inner: Mutex::new(Inner::Closed { failures: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update; the state is
        // still a valid enum, so keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// `Err(wait)` while open, or while a half-open probe is already in flight.
    pub fn acquire(&self) -> Result<Permit, Duration> {
        let mut inner = self.lock();
        let now = Instant::now();
        match *inner {
            Inner::Closed { .. } => Ok(Permit { probe: false }),
            Inner::Open { until } if now < until => Err(until - now),
            Inner::Open { .. } => {
                *inner = Inner::HalfOpen { probe_since: Some(now), successes: 0 };
                Ok(Permit { probe: true })
            }
            Inner::HalfOpen { probe_since: Some(since), .. } if now.duration_since(since) < self.cfg.open_for => {
                Err(Duration::from_millis(100))
            }
            Inner::HalfOpen { successes, .. } => {
                *inner = Inner::HalfOpen { probe_since: Some(now), successes };
                Ok(Permit { probe: true })
            }
        }
    }

    /// Records whether the request failed in a way that counts (5xx, 429, transport).
    pub fn record(&self, permit: Permit, failed: bool) {
        let mut inner = self.lock();
        let open = || Inner::Open { until: Instant::now() + self.cfg.open_for };
        *inner = match (&*inner, failed) {
            (Inner::Closed { failures }, true) => {
                let failures = failures + 1;
                if failures >= self.cfg.failure_threshold { open() } else { Inner::Closed { failures } }
            }
            (Inner::Closed { .. }, false) => Inner::Closed { failures: 0 },
            (Inner::HalfOpen { .. }, true) if permit.probe => open(),
            (Inner::HalfOpen { successes, .. }, false) if permit.probe => {
                let successes = successes + 1;
                if successes >= self.cfg.close_after {
                    Inner::Closed { failures: 0 }
                } else {
                    Inner::HalfOpen { probe_since: None, successes }
                }
            }
            // A request admitted while closed that finished after the breaker moved on
            // does not change the new state.
            (Inner::HalfOpen { probe_since, successes }, _) => {
                Inner::HalfOpen { probe_since: *probe_since, successes: *successes }
            }
            (Inner::Open { until }, _) => Inner::Open { until: *until },
        };
    }
}

/// Client-side token bucket: `rate` requests per second on average, `burst` at once.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: rate_per_sec.max(0.001), burst, state: tokio::sync::Mutex::new((burst, Instant::now())) }
    }

    /// Waits for a token. The lock is held while sleeping so waiters queue fairly.
    pub async fn acquire(&self) {
        let mut st = self.state.lock().await;
        let now = Instant::now();
        let (tokens, last) = *st;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= 1.0 {
            *st = (tokens - 1.0, now);
            return;
        }
        let wait = Duration::from_secs_f64((1.0 - tokens) / self.rate);
        tokio::time::sleep(wait).await;
        *st = (0.0, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_ms: u64) -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_millis(open_ms),
            close_after: 2,
        })
    }

    fn fail(b: &CircuitBreaker) {
        if let Ok(p) = b.acquire() {
            b.record(p, true);
        }
    }

    fn succeed(b: &CircuitBreaker) -> bool {
        match b.acquire() {
            Ok(p) => {
                b.record(p, false);
                true
            }
            Err(_) => false,
        }
    }

    #[test]
    fn breaker_opens_after_consecutive_failures_only() {
        let b = breaker(10_000);
        fail(&b);
        fail(&b);
        assert!(succeed(&b));
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.acquire().is_err());
    }

    #[test]
    fn breaker_half_opens_lets_one_probe_and_closes_after_successes() {
        let b = breaker(20);
        for _ in 0..3 {
            fail(&b);
        }
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.acquire();
        assert!(probe.is_ok());
        assert!(b.acquire().is_err(), "second probe refused while one is in flight");
        if let Ok(p) = probe {
            b.record(p, false);
        }
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(succeed(&b));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_reopens_the_breaker() {
        let b = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 1,
            open_for: Duration::from_millis(30),
            close_after: 1,
        });
        fail(&b);
        std::thread::sleep(Duration::from_millis(40));
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let b = Backoff { jitter: 0.0, ..Backoff::default() };
        assert_eq!(b.delay(1), Duration::from_millis(200));
        assert_eq!(b.delay(2), Duration::from_millis(400));
        assert_eq!(b.delay(40), Duration::from_secs(10));
        let j = Backoff::default();
        for a in 1..6 {
            assert!(j.delay(a) <= j.max);
        }
    }

    #[tokio::test]
    async fn the_token_bucket_spaces_requests_beyond_the_burst() {
        let tb = TokenBucket::new(20.0, 2);
        let start = Instant::now();
        for _ in 0..4 {
            tb.acquire().await;
        }
        // Two free, then two at 50 ms each.
        assert!(start.elapsed() >= Duration::from_millis(90));
    }
}
