//! When and how a call is tried again: on UNAVAILABLE (a replica down or stopping, the database
//! unavailable, or COMMIT_OUTCOME_UNKNOWN), on DEADLINE_EXCEEDED of one attempt, and on
//! CANCELLED (what a tonic server answers when an attempt's grpc-timeout expires before the
//! handler does), with exponential backoff, never past the call's overall deadline.
//!
//! Retrying a mutation is safe only because the request is built once, with its request_id (and
//! a CreateOffering's offering_id) filled in before the first attempt: every attempt sends the
//! same bytes, and the server answers a repeat with the original result.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Status};

use crate::Error;

/// How a call is retried. The defaults suit a service calling subledger: 30 s for the whole call,
/// 10 s for one attempt, backoff from 50 ms doubling to 2 s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts at most, the first included (1: never retry).
    pub attempts_max: u32,
    /// The pause before the first retry; each later one doubles it, up to `backoff_max`. A pause
    /// is drawn between half of it and all of it, so that clients that failed together do not
    /// come back together.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// One attempt's time (sent as grpc-timeout): a replica that does not answer gives way to
    /// the next one. WatchHistory's stream is not limited by it, only its opening.
    pub attempt_timeout: Duration,
    /// The whole call's time, retries and pauses included.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts_max: 10,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry (within the same deadline).
    pub fn never(self) -> Self {
        Self {
            attempts_max: 1,
            ..self
        }
    }
}

/// Whether a failed attempt may be tried again with the same request.
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
    )
}

/// Runs `attempt(n, timeout)` for n = 0, 1, ... until it succeeds, fails with a status that is
/// not retryable, or the policy's attempts or deadline run out; returns the last status as an
/// [`Error`]. `timeout` is what is left for that attempt; it is also enforced here, so an
/// attempt stuck before it reaches the server (a connect that hangs) ends too.
pub(crate) async fn run<T, F, Fut>(policy: &RetryPolicy, mut attempt: F) -> Result<T, Error>
where
    F: FnMut(u32, Duration) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let deadline = Instant::now() + policy.deadline;
    let mut backoff = policy.backoff_initial;
    let mut attempts = 0;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout = remaining.min(policy.attempt_timeout);
        let status = match tokio::time::timeout(timeout, attempt(attempts, timeout)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(status)) => status,
            Err(_) => Status::deadline_exceeded(format!("no answer within {timeout:?}")),
        };
        attempts += 1;
        if !retryable(&status) || attempts >= policy.attempts_max {
            return Err(Error::from_status(status));
        }
        let pause = jittered(backoff);
        if Instant::now() + pause >= deadline {
            return Err(Error::from_status(status));
        }
        tokio::time::sleep(pause).await;
        backoff = (backoff * 2).min(policy.backoff_max);
    }
}

/// Between half of `backoff` and all of it, at random.
fn jittered(backoff: Duration) -> Duration {
    // RandomState is seeded per instance from the OS's randomness: enough for spreading retries.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = backoff / 2;
    let spread_us = half.as_micros().max(1) as u64;
    half + Duration::from_micros(random % spread_us)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;

    fn commit_outcome_unknown() -> Status {
        let details = ErrorDetails::with_error_info(
            "COMMIT_OUTCOME_UNKNOWN",
            "subledger.v1",
            std::collections::HashMap::<String, String>::new(),
        );
        Status::with_error_details(Code::Unavailable, "retry", details)
    }

    /// An attempt that fails with `failures` in turn, then succeeds; it records what it was
    /// asked to send each time.
    fn flaky(
        failures: Vec<Status>,
        sent: Arc<Mutex<Vec<String>>>,
        request: String,
    ) -> impl FnMut(u32, Duration) -> std::future::Ready<Result<String, Status>> {
        let mut failures = failures.into_iter();
        move |_, _| {
            sent.lock().unwrap().push(request.clone());
            std::future::ready(match failures.next() {
                Some(status) => Err(status),
                None => Ok("done".to_owned()),
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unavailable_deadline_exceeded_and_cancelled_are_retried_with_the_same_request() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let failures = vec![
            Status::unavailable("connection refused"),
            commit_outcome_unknown(),
            Status::deadline_exceeded("slow replica"),
            Status::cancelled("Timeout expired"),
        ];
        let started = Instant::now();
        let result = run(
            &RetryPolicy::default(),
            flaky(failures, sent.clone(), "request_id=r-1".into()),
        )
        .await;
        assert_eq!(result.unwrap(), "done");
        assert_eq!(*sent.lock().unwrap(), vec!["request_id=r-1"; 5]);
        // Backoff 50, 100, 200, 400 ms, each jittered to at least half.
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(375), "{waited:?}");
        assert!(waited <= Duration::from_millis(750), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_not_retried() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let refusal = Status::failed_precondition("over the cap");
        let result = run(
            &RetryPolicy::default(),
            flaky(vec![refusal], sent.clone(), "r".into()),
        )
        .await;
        assert!(matches!(result, Err(Error::Other(s)) if s.code() == Code::FailedPrecondition));
        assert_eq!(sent.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline_and_at_the_attempts_max() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let always = vec![commit_outcome_unknown(); 1000];
        let policy = RetryPolicy {
            deadline: Duration::from_secs(5),
            attempts_max: 1000,
            ..RetryPolicy::default()
        };
        let started = Instant::now();
        let result = run(&policy, flaky(always.clone(), sent.clone(), "r".into())).await;
        assert!(
            matches!(result, Err(Error::Unavailable { reason: Some(r), .. }) if r == "COMMIT_OUTCOME_UNKNOWN")
        );
        assert!(started.elapsed() <= Duration::from_secs(5));
        // 50 ms doubling to 2 s: about 8 attempts fit in 5 s.
        let attempts = sent.lock().unwrap().len();
        assert!((4..=10).contains(&attempts), "{attempts}");

        sent.lock().unwrap().clear();
        let result = run(
            &RetryPolicy::default().never(),
            flaky(always, sent.clone(), "r".into()),
        )
        .await;
        assert!(result.is_err());
        assert_eq!(sent.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_hangs_ends_at_its_timeout_and_the_next_one_runs() {
        let policy = RetryPolicy {
            attempt_timeout: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let mut calls = 0;
        let started = Instant::now();
        let result = run(&policy, |attempt, timeout| {
            calls += 1;
            assert!(timeout <= Duration::from_secs(1));
            async move {
                if attempt == 0 {
                    std::future::pending::<()>().await;
                }
                Ok::<_, Status>(attempt)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 1);
        assert_eq!(calls, 2);
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_between_half_and_all() {
        for _ in 0..100 {
            let pause = jittered(Duration::from_millis(100));
            assert!(pause >= Duration::from_millis(50) && pause <= Duration::from_millis(100));
        }
    }
}
