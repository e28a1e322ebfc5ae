//! Exponential backoff per object for transient errors, reset by a successful reconcile.
//! kube-runtime has no per-object backoff of its own.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Retry delays per object key (namespace/name).
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempts: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// The delay before the next retry of `key`, doubling with each failure up to the maximum.
    pub fn next_delay(&self, key: &str) -> Duration {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let n = attempts.entry(key.to_string()).or_insert(0);
        let delay = self
            .base
            .saturating_mul(1u32.checked_shl(*n).unwrap_or(u32::MAX))
            .min(self.max);
        *n = n.saturating_add(1);
        delay
    }

    /// Keeps only the objects for which `live` is true (the others were deleted).
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|key, _| live(key));
    }

    /// How many objects have failures on record.
    pub fn tracked(&self) -> usize {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Forgets the failures of `key` after a success.
    pub fn reset(&self, key: &str) {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_resets_per_object() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let delays: Vec<u64> = (0..6).map(|_| b.next_delay("ns/a").as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(
            b.next_delay("ns/b").as_secs(),
            1,
            "another object has its own count"
        );
        b.reset("ns/a");
        assert_eq!(b.next_delay("ns/a").as_secs(), 1);
    }
}
