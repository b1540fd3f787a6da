//! A token bucket for APIs with a per-account request rate (CloudTrail `LookupEvents`: 2 per second). One
//! bucket is shared by every caller in the process; a caller that would get its token only after its
//! deadline is refused at once instead of waiting in vain.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The next token would come after the caller's deadline (or the deadline has already passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLate {
    pub wait: Duration,
}

impl std::fmt::Display for TooLate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wait.is_zero() {
            f.write_str("the time allowed for lookups in this invocation was already spent")
        } else {
            write!(
                f,
                "the rate limit allows the next request only in {:?}, after the time allowed",
                self.wait
            )
        }
    }
}

impl std::error::Error for TooLate {}

#[derive(Debug)]
pub struct TokenBucket {
    per_second: f64,
    capacity: f64,
    /// Tokens available (negative: reserved by callers now waiting), as of the instant.
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// `per_second` tokens a second, at most `burst` at once; starts full.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let capacity = f64::from(burst.max(1));
        Self {
            per_second: f64::from(per_second.max(1)),
            capacity,
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Takes a token, waiting for it if need be, unless it would come after `deadline`.
    pub async fn acquire(&self, deadline: Instant) -> Result<(), TooLate> {
        let wait = self.reserve(deadline)?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Reserves a token and says how long until it is due.
    fn reserve(&self, deadline: Instant) -> Result<Duration, TooLate> {
        let now = Instant::now();
        // A poisoned lock only means another caller panicked mid-update; the numbers are still usable.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, since) = *state;
        let refilled =
            (tokens + now.duration_since(since).as_secs_f64() * self.per_second).min(self.capacity);
        let wait = if refilled >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - refilled) / self.per_second)
        };
        if now + wait > deadline {
            *state = (refilled, now);
            return Err(TooLate { wait });
        }
        *state = (refilled - 1.0, now);
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_steady_rate() {
        let bucket = TokenBucket::new(2, 2);
        let start = Instant::now();
        for _ in 0..2 {
            bucket.acquire(start + FAR).await.expect("burst");
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst does not wait");
        for n in 1..=4u32 {
            bucket.acquire(start + FAR).await.expect("steady");
            assert_eq!(start.elapsed(), Duration::from_millis(500) * n);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_at_once_when_the_token_comes_too_late() {
        let bucket = TokenBucket::new(2, 2);
        let start = Instant::now();
        bucket.acquire(start + FAR).await.expect("first");
        bucket.acquire(start + FAR).await.expect("second");
        let refused = bucket
            .acquire(start + Duration::from_millis(100))
            .await
            .expect_err("the third token is 500 ms away");
        assert_eq!(refused.wait, Duration::from_millis(500));
        assert_eq!(start.elapsed(), Duration::ZERO, "refused without waiting");
        // A refusal reserves nothing: the next caller with time gets the token when it is due.
        bucket.acquire(start + FAR).await.expect("later");
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_the_rate() {
        let bucket = std::sync::Arc::new(TokenBucket::new(2, 2));
        let start = Instant::now();
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let bucket = std::sync::Arc::clone(&bucket);
                tokio::spawn(async move {
                    bucket.acquire(start + FAR).await.expect("token");
                    start.elapsed()
                })
            })
            .collect();
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.expect("task"));
        }
        times.sort();
        let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 0, 500, 1000, 1500, 2000]);
    }
}
