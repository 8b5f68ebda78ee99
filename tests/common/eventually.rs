//! Waiting for a condition the test does not control the timing of (a reload, a reconnect, a
//! listener closing): one helper instead of one polling loop per test file.

use std::future::Future;
use std::time::Duration;

/// How often a condition is looked at again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `condition` until it yields `Some`, and returns that; panics, naming `what` and the
/// last state `condition` reported, if `within` passes first.
#[track_caller]
pub fn eventually<T, S, F, Fut>(
    what: &str,
    within: Duration,
    mut condition: F,
) -> impl Future<Output = T>
where
    S: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, S>>,
{
    let caller = std::panic::Location::caller();
    let what = what.to_owned();
    async move {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let state = match condition().await {
                Ok(done) => return done,
                Err(state) => state,
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "{caller}: {what} not within {within:?}; last seen: {state:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}
