//! A circuit breaker for a shadow that cannot be reached: after some consecutive connection
//! failures, copies are not sent for a while, so a dead shadow costs neither connection
//! attempts nor DNS lookups on the router. Once the pause is over the next copies go out
//! again; one more failure pauses again, a success closes the breaker.
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Breaker {
    start: Instant,
    threshold: u32,
    pause: Duration,
    failures: AtomicU32,
    /// Milliseconds since `start` until which copies are not sent.
    open_until: AtomicU64,
}

impl Breaker {
    /// `threshold` 0 disables the breaker.
    pub fn new(threshold: u32, pause: Duration) -> Self {
        Breaker {
            start: Instant::now(),
            threshold,
            pause,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Whether a copy may be sent now.
    pub fn allows(&self) -> bool {
        self.allows_at(self.now())
    }

    pub fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// A connection to the shadow failed.
    pub fn failure(&self) {
        self.failure_at(self.now());
    }

    fn allows_at(&self, now: u64) -> bool {
        now >= self.open_until.load(Ordering::Relaxed)
    }

    fn failure_at(&self, now: u64) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if self.threshold > 0 && failures >= self.threshold {
            self.open_until
                .store(now + self.pause.as_millis() as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_retries_after_the_pause() {
        let breaker = Breaker::new(3, Duration::from_millis(1000));
        breaker.failure_at(0);
        breaker.failure_at(1);
        assert!(breaker.allows_at(2), "two failures are not enough");
        breaker.failure_at(2);
        assert!(!breaker.allows_at(3));
        assert!(!breaker.allows_at(1001));
        assert!(breaker.allows_at(1002), "paused for 1 s");
        // Still failing: one more failure pauses again.
        breaker.failure_at(1002);
        assert!(!breaker.allows_at(1003));
        assert!(breaker.allows_at(2002));
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = Breaker::new(2, Duration::from_millis(1000));
        breaker.failure_at(0);
        breaker.success();
        breaker.failure_at(1);
        assert!(breaker.allows_at(2));
        breaker.failure_at(2);
        assert!(!breaker.allows_at(3));
        breaker.success();
        // The pause already started still runs out, but the next failure alone does not reopen.
        assert!(breaker.allows_at(1003));
        breaker.failure_at(1003);
        assert!(breaker.allows_at(1004));
    }

    #[test]
    fn threshold_zero_never_opens() {
        let breaker = Breaker::new(0, Duration::from_secs(1));
        for t in 0..100 {
            breaker.failure_at(t);
        }
        assert!(breaker.allows_at(100));
    }
}
