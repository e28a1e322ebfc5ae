//! Deterministic sampling: the same request is always mirrored, or never, at a given share,
//! on every replica and across restarts, so a replayed load samples the same requests.
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// A share of requests, as a threshold on a 64-bit hash.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    /// A hash strictly below this is sampled; `u64::MAX` with `all` means every request.
    threshold: u64,
    all: bool,
}

/// What sampling needs to know before the request body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Mirror,
    Skip,
    /// Decided by the method, path and body, once the body has been read.
    NeedsBody,
}

impl Sampler {
    /// `percent` must be within 0 and 100 (checked by the flags).
    pub fn new(percent: f64) -> Self {
        let share = (percent / 100.0).clamp(0.0, 1.0);
        // 2^64 as f64; the cast saturates, and 100 % is handled by `all`.
        let threshold = (share * 18_446_744_073_709_551_616.0) as u64;
        Sampler {
            threshold,
            all: share >= 1.0,
        }
    }

    pub fn never(&self) -> bool {
        !self.all && self.threshold == 0
    }

    fn hit(&self, hash: u64) -> bool {
        self.all || hash < self.threshold
    }

    /// Decides from the request id alone when there is one (or when the share is 0 or 100 %).
    pub fn by_request_id(&self, request_id: Option<&[u8]>) -> Decision {
        if self.all {
            return Decision::Mirror;
        }
        if self.never() {
            return Decision::Skip;
        }
        match request_id {
            Some(id) if self.hit(xxh3_64(id)) => Decision::Mirror,
            Some(_) => Decision::Skip,
            None => Decision::NeedsBody,
        }
    }

    /// Decides from the method, the path with its query, and the body.
    pub fn by_content(&self, method: &[u8], path_and_query: &[u8], body: &[u8]) -> bool {
        if self.all || self.never() {
            return self.all;
        }
        let mut hasher = Xxh3::new();
        hasher.update(method);
        hasher.update(b" ");
        hasher.update(path_and_query);
        hasher.update(b"\n");
        hasher.update(body);
        self.hit(hasher.digest())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_hundred_percent() {
        let never = Sampler::new(0.0);
        let all = Sampler::new(100.0);
        for i in 0..1000u32 {
            let id = i.to_string();
            assert_eq!(never.by_request_id(Some(id.as_bytes())), Decision::Skip);
            assert_eq!(all.by_request_id(Some(id.as_bytes())), Decision::Mirror);
            assert!(!never.by_content(b"POST", b"/p", id.as_bytes()));
            assert!(all.by_content(b"POST", b"/p", id.as_bytes()));
        }
        assert_eq!(all.by_request_id(None), Decision::Mirror);
        assert_eq!(never.by_request_id(None), Decision::Skip);
    }

    #[test]
    fn without_an_id_the_body_decides() {
        assert_eq!(Sampler::new(50.0).by_request_id(None), Decision::NeedsBody);
    }

    #[test]
    fn deterministic() {
        let a = Sampler::new(30.0);
        let b = Sampler::new(30.0);
        for i in 0..1000u32 {
            let id = format!("req-{i}");
            assert_eq!(
                a.by_request_id(Some(id.as_bytes())),
                b.by_request_id(Some(id.as_bytes()))
            );
            assert_eq!(
                a.by_content(b"POST", b"/predict", id.as_bytes()),
                b.by_content(b"POST", b"/predict", id.as_bytes())
            );
        }
    }

    #[test]
    fn share_is_respected() {
        for percent in [1.0, 10.0, 25.0, 50.0, 90.0, 99.5] {
            let sampler = Sampler::new(percent);
            let n = 100_000;
            let by_id = (0..n)
                .filter(|i| {
                    sampler.by_request_id(Some(format!("{i}").as_bytes())) == Decision::Mirror
                })
                .count();
            let by_body = (0..n)
                .filter(|i| {
                    sampler.by_content(b"POST", b"/predict", format!("{{\"x\":{i}}}").as_bytes())
                })
                .count();
            for count in [by_id, by_body] {
                let share = count as f64 / n as f64 * 100.0;
                assert!((share - percent).abs() < 0.6, "{percent}% sampled {share}%");
            }
        }
    }

    #[test]
    fn lower_share_samples_a_subset_of_higher() {
        // A raised percentage keeps mirroring what it mirrored before.
        let low = Sampler::new(10.0);
        let high = Sampler::new(40.0);
        for i in 0..10_000u32 {
            let id = i.to_string();
            if low.by_request_id(Some(id.as_bytes())) == Decision::Mirror {
                assert_eq!(high.by_request_id(Some(id.as_bytes())), Decision::Mirror);
            }
        }
    }

    #[test]
    fn method_and_path_take_part() {
        let sampler = Sampler::new(50.0);
        let differ = (0..1000u32)
            .filter(|i| {
                let body = i.to_string();
                sampler.by_content(b"POST", b"/a", body.as_bytes())
                    != sampler.by_content(b"POST", b"/b", body.as_bytes())
            })
            .count();
        assert!(differ > 300, "{differ}");
    }
}
