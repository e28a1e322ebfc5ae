//! The memory that mirrored copies may hold, all together.
//!
//! A copy holds three bodies until its comparison ends: the request, stable's answer and the
//! shadow's answer, each at most `--max-body-bytes`. With the in-flight limit alone, the worst
//! case would be `--max-in-flight` × 3 × `--max-body-bytes` (1.5 GiB with the defaults). Every
//! byte a copy keeps is therefore also reserved from one budget (`--max-copy-bytes`), as it
//! arrives; a copy that cannot reserve what it needs is dropped (or, for an answer, left
//! uncomparable) instead of growing the router's memory.
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservations are counted in KiB, so that a budget of several GiB fits the semaphore's
/// `u32` permit counts and a one-byte chunk does not cost a permit operation each.
const UNIT: usize = 1024;

/// The budget shared by every copy.
#[derive(Clone, Debug)]
pub struct Budget {
    units: Arc<Semaphore>,
}

impl Budget {
    pub fn new(bytes: usize) -> Self {
        Budget {
            units: Arc::new(Semaphore::new(
                bytes.div_ceil(UNIT).min(Semaphore::MAX_PERMITS),
            )),
        }
    }

    /// An empty reservation drawing on this budget.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.units.clone(),
            bytes: 0,
            held: None,
        }
    }

    /// Bytes not reserved by any copy (rounded down to the unit).
    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.units.available_permits() * UNIT
    }
}

/// Bytes one body of a copy holds; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Semaphore>,
    bytes: usize,
    held: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Reserves `more` bytes; false, reserving nothing more, when the budget cannot spare them.
    pub fn grow(&mut self, more: usize) -> bool {
        let bytes = self.bytes.saturating_add(more);
        let held = self.held.as_ref().map_or(0, |p| p.num_permits());
        let needed = bytes.div_ceil(UNIT).saturating_sub(held);
        if needed > 0 {
            let Ok(needed) = u32::try_from(needed) else {
                return false;
            };
            match self.budget.clone().try_acquire_many_owned(needed) {
                Ok(permit) => match &mut self.held {
                    Some(held) => held.merge(permit),
                    None => self.held = Some(permit),
                },
                Err(_) => return false,
            }
        }
        self.bytes = bytes;
        true
    }
}

/// A body whose data is reserved frame by frame; a frame the budget cannot spare ends it
/// with [`Exhausted`].
pub struct Metered<B> {
    body: B,
    reservation: Reservation,
}

impl<B> Metered<B> {
    pub fn new(body: B, reservation: Reservation) -> Self {
        Metered { body, reservation }
    }

    /// The reservation, to keep for as long as the collected body is kept.
    pub fn into_reservation(self) -> Reservation {
        self.reservation
    }
}

/// Why a metered body ended early.
#[derive(Debug)]
pub enum MeteredError<E> {
    Body(E),
    /// The budget could not spare the next frame.
    Exhausted,
}

impl<E: std::fmt::Display> std::fmt::Display for MeteredError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MeteredError::Body(error) => error.fmt(f),
            MeteredError::Exhausted => f.write_str("the copies' memory budget is exhausted"),
        }
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = MeteredError<B::Error>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        Poll::Ready(match frame {
            Some(Ok(frame)) => {
                let len = frame.data_ref().map_or(0, Bytes::len);
                if this.reservation.grow(len) {
                    Some(Ok(frame))
                } else {
                    Some(Err(MeteredError::Exhausted))
                }
            }
            Some(Err(error)) => Some(Err(MeteredError::Body(error))),
            None => None,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = Budget::new(10 * UNIT);
        let mut a = budget.reservation();
        assert!(a.grow(4 * UNIT));
        let mut b = budget.reservation();
        assert!(b.grow(6 * UNIT));
        assert_eq!(budget.available(), 0);
        // Nothing left: refused, and nothing is taken.
        assert!(!b.grow(1));
        assert!(!budget.reservation().grow(1));
        drop(a);
        assert_eq!(budget.available(), 4 * UNIT);
        assert!(b.grow(1));
        assert_eq!(budget.available(), 3 * UNIT);
    }

    #[test]
    fn small_growth_is_counted_in_bytes_not_per_call() {
        let budget = Budget::new(2 * UNIT);
        let mut r = budget.reservation();
        for _ in 0..UNIT {
            assert!(r.grow(2));
        }
        assert_eq!(budget.available(), 0);
        assert!(!r.grow(1));
    }

    #[test]
    fn a_huge_request_is_refused_not_wrapped() {
        let budget = Budget::new(UNIT);
        assert!(!budget.reservation().grow(usize::MAX));
        assert_eq!(budget.available(), UNIT);
    }

    #[tokio::test]
    async fn metered_bodies_stop_when_the_budget_is_spent() {
        let budget = Budget::new(4 * UNIT);
        let small = Metered::new(
            Full::new(Bytes::from(vec![1u8; 3 * UNIT])),
            budget.reservation(),
        );
        let collected = small.collect().await.map(|c| c.to_bytes().len());
        assert_eq!(collected.ok(), Some(3 * UNIT));
        // The first body's reservation went with it: the budget is whole again.
        assert_eq!(budget.available(), 4 * UNIT);
        let big = Metered::new(
            Full::new(Bytes::from(vec![1u8; 5 * UNIT])),
            budget.reservation(),
        );
        assert!(matches!(big.collect().await, Err(MeteredError::Exhausted)));
        assert_eq!(budget.available(), 4 * UNIT);
    }
}
