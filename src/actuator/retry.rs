//! Bounded retries with exponential backoff for API calls that failed in a way a retry can fix:
//! conflicts (409, and 422 from a failed JSON-patch `test`, i.e. someone changed the object), rate
//! limiting (429), server errors (5xx), dropped connections and our own request timeouts.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per step before the rollback is marked failed (and escalated).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Each API call of a step is abandoned after this long. The daemon's client also has a
    /// deadline per request (`crate::kubeclient`, `[kubernetes] request_timeout`); this one stays
    /// because it also bounds the wait for the client's rate limiter and covers clients built
    /// without those layers (tests, custom services).
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempt + 1` (attempt counts from 1): base x 2^(attempt-1), capped.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1).min(16))
            .unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Why an attempt failed, classified for the retry decision.
#[derive(Debug)]
pub enum Failure {
    Retryable(String),
    Fatal(String),
}

/// Classify a kube client error.
pub fn classify(err: &kube::Error) -> Failure {
    match err {
        kube::Error::Api(status) => match status.code {
            409 | 422 | 429 | 500..=599 => Failure::Retryable(format!(
                "{} {}: {}",
                status.code, status.reason, status.message
            )),
            _ => Failure::Fatal(format!(
                "{} {}: {}",
                status.code, status.reason, status.message
            )),
        },
        kube::Error::Service(e) => Failure::Retryable(format!("connection: {e}")),
        kube::Error::HyperError(e) => Failure::Retryable(format!("connection: {e}")),
        other => Failure::Fatal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(3), Duration::from_millis(400));
        assert_eq!(p.delay(30), Duration::from_secs(3));
    }

    #[test]
    fn conflicts_and_server_errors_retry_but_not_found_does_not() {
        let status = |code| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            }))
        };
        assert!(matches!(classify(&status(409)), Failure::Retryable(_)));
        assert!(matches!(classify(&status(503)), Failure::Retryable(_)));
        assert!(matches!(classify(&status(404)), Failure::Fatal(_)));
        assert!(matches!(classify(&status(403)), Failure::Fatal(_)));
    }
}
