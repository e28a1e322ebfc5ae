//! Bodies: bounded reading of a request body, the body forwarded to stable, and the body
//! streamed to the client that copies what it streams for the comparison.
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::oneshot;

use super::budget::Reservation;
use super::grpc;
use super::grpc::Grpc;
use super::metrics::{Code, Metrics, Track};
use super::upstream::PooledBody;

/// Stable's response body as the router reads it.
pub type StableBody = PooledBody<UpstreamBody>;

/// A body read up to a limit.
pub enum Collected<B> {
    /// The whole body.
    Complete {
        body: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// More than the limit: what was read (more than `limit` bytes, or nothing when the
    /// declared length alone was too large) and the unread rest.
    TooLarge { prefix: Bytes, rest: B },
}

/// Reads `body` until its end or until more than `limit` bytes have arrived.
pub async fn collect_bounded<B>(mut body: B, limit: usize) -> Result<Collected<B>, B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    if body.size_hint().lower() > limit as u64 {
        return Ok(Collected::TooLarge {
            prefix: Bytes::new(),
            rest: body,
        });
    }
    // One chunk is the common case: keep it without copying.
    let mut first: Option<Bytes> = None;
    let mut more = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame?.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
                continue;
            }
        };
        match &first {
            None => first = Some(frame),
            Some(head) => {
                if more.is_empty() {
                    more.extend_from_slice(head);
                }
                more.extend_from_slice(&frame);
            }
        }
        let len = if more.is_empty() {
            first.as_ref().map_or(0, Bytes::len)
        } else {
            more.len()
        };
        if len > limit {
            let prefix = if more.is_empty() {
                first.unwrap_or_default()
            } else {
                more.freeze()
            };
            return Ok(Collected::TooLarge { prefix, rest: body });
        }
    }
    let body = if more.is_empty() {
        first.unwrap_or_default()
    } else {
        more.freeze()
    };
    Ok(Collected::Complete { body, trailers })
}

/// The request body sent to stable: a buffered part, then the unread rest if any.
pub struct UpstreamBody {
    prefix: Option<Bytes>,
    rest: Option<Incoming>,
    trailers: Option<HeaderMap>,
}

impl UpstreamBody {
    /// The client's body, untouched.
    pub fn streamed(body: Incoming) -> Self {
        UpstreamBody {
            prefix: None,
            rest: Some(body),
            trailers: None,
        }
    }

    /// A body read whole.
    pub fn buffered(body: Bytes, trailers: Option<HeaderMap>) -> Self {
        UpstreamBody {
            prefix: Some(body),
            rest: None,
            trailers,
        }
    }

    /// A body partly read: `prefix` first, then `rest`.
    pub fn chained(prefix: Bytes, rest: Incoming) -> Self {
        UpstreamBody {
            prefix: Some(prefix),
            rest: Some(rest),
            trailers: None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(prefix) = this.prefix.take().filter(|p| !p.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if let Some(rest) = this.rest.as_mut() {
            match ready!(Pin::new(rest).poll_frame(cx)) {
                Some(frame) => return Poll::Ready(Some(frame)),
                None => this.rest = None,
            }
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.as_ref().is_none_or(Bytes::is_empty)
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
            && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(prefix),
            Some(rest) => {
                let hint = rest.size_hint();
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower() + prefix);
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper + prefix);
                }
                sum
            }
        }
    }
}

/// Stable's answer as the client received it, for the comparison.
#[derive(Debug)]
pub enum Captured {
    Complete {
        status: u16,
        body: Bytes,
        /// The body's share of the copies' memory, held as long as the body.
        _reserved: Reservation,
        /// For a gRPC answer, its `grpc-status` from the headers or the trailers.
        grpc: Option<Grpc>,
    },
    /// The body was larger than the router keeps, or than the copies' memory could hold.
    TooLarge,
    /// No complete answer: stable failed, or the client went away before the end of the body.
    Failed,
}

/// The copy of a response body taken while it streams to the client.
pub struct Tap {
    status: u16,
    limit: usize,
    len: usize,
    /// The first chunk, and the others if there are more (most answers are one chunk).
    first: Option<Bytes>,
    more: Vec<Bytes>,
    overflow: bool,
    done: bool,
    reserved: Option<Reservation>,
    grpc: Option<Grpc>,
    tx: Option<oneshot::Sender<Captured>>,
}

impl Tap {
    pub fn new(
        status: u16,
        limit: usize,
        reserved: Reservation,
        tx: oneshot::Sender<Captured>,
    ) -> Self {
        Tap {
            status,
            limit,
            len: 0,
            first: None,
            more: Vec::new(),
            overflow: false,
            done: false,
            reserved: Some(reserved),
            grpc: None,
            tx: Some(tx),
        }
    }

    /// For a gRPC answer (see `grpc::Grpc::of`): its status is also captured.
    pub fn grpc(mut self, grpc: Option<Grpc>) -> Self {
        self.grpc = grpc;
        self
    }

    fn observe(&mut self, data: &Bytes) {
        if self.overflow {
            return;
        }
        self.len += data.len();
        let reserved = self.reserved.as_mut().is_some_and(|r| r.grow(data.len()));
        if self.len > self.limit || !reserved {
            self.overflow = true;
            self.reserved = None;
            self.first = None;
            self.more = Vec::new();
        } else if self.first.is_none() {
            // A refcounted clone, not a copy.
            self.first = Some(data.clone());
        } else {
            self.more.push(data.clone());
        }
    }

    /// Sends what was seen; called once, when the client body is dropped.
    fn finish(&mut self, complete: bool) {
        let Some(tx) = self.tx.take() else { return };
        let reserved = self.reserved.take();
        let captured = if !complete {
            Captured::Failed
        } else if let (false, Some(reserved)) = (self.overflow, reserved) {
            let first = self.first.take().unwrap_or_default();
            let body = if self.more.is_empty() {
                first
            } else {
                let mut all = BytesMut::with_capacity(self.len);
                all.extend_from_slice(&first);
                self.more.iter().for_each(|c| all.extend_from_slice(c));
                all.freeze()
            };
            Captured::Complete {
                status: self.status,
                body,
                _reserved: reserved,
                grpc: self.grpc,
            }
        } else {
            Captured::TooLarge
        };
        // The mirror task may have given up already; nothing to do then.
        let _ = tx.send(captured);
    }
}

enum Inner {
    Upstream(StableBody),
    Full(Option<Bytes>),
}

/// The body the client receives: stable's, streamed frame by frame, or one the router made.
pub struct ClientBody {
    inner: Inner,
    tap: Option<Tap>,
    pending: Option<Pending>,
}

/// A gRPC answer of stable's not counted yet: its status comes with the trailers.
pub struct Pending {
    metrics: Arc<Metrics>,
    track: Track,
    seconds: f64,
}

impl Pending {
    pub fn new(metrics: Arc<Metrics>, track: Track, seconds: f64) -> Self {
        Pending {
            metrics,
            track,
            seconds,
        }
    }

    /// Counts the answer with the HTTP status of its gRPC status; without one (no trailers,
    /// or the stream broke) as an error.
    fn count(self, trailers: Option<&HeaderMap>) {
        let code = trailers
            .and_then(grpc::status)
            .map_or(Code::Error, |s| Code::Status(grpc::http_equivalent(s)));
        self.metrics.request(self.track, code, self.seconds);
    }
}

impl ClientBody {
    pub fn upstream(body: StableBody, tap: Option<Tap>) -> Self {
        ClientBody {
            inner: Inner::Upstream(body),
            tap,
            pending: None,
        }
    }

    pub fn full(body: impl Into<Bytes>) -> Self {
        ClientBody {
            inner: Inner::Full(Some(body.into())),
            tap: None,
            pending: None,
        }
    }

    /// Counts a gRPC answer once its trailers have streamed (see [`Pending`]).
    pub fn counting(mut self, pending: Option<Pending>) -> Self {
        self.pending = pending;
        self
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Full(body) => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(body) => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                if let Some(Ok(frame)) = &frame
                    && let Some(trailers) = frame.trailers_ref()
                    && let Some(pending) = this.pending.take()
                {
                    pending.count(Some(trailers));
                }
                if let Some(tap) = this.tap.as_mut() {
                    match &frame {
                        Some(Ok(frame)) => {
                            if let Some(data) = frame.data_ref() {
                                tap.observe(data);
                            } else if let (Some(grpc), Some(trailers)) =
                                (tap.grpc.as_mut(), frame.trailers_ref())
                            {
                                grpc.trailers(trailers);
                            }
                        }
                        None => tap.done = true,
                        Some(Err(_)) => tap.finish(false),
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Full(body) => body.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Full(body) => SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        // hyper may stop polling once the body reports its end, so the end is either seen
        // (`done`) or reported by the inner body.
        // Counted before the comparison hears of the answer, so that the two agree.
        if let Some(pending) = self.pending.take() {
            pending.count(None);
        }
        let ended = self.is_end_stream();
        if let Some(tap) = self.tap.as_mut() {
            let complete = tap.done || ended;
            tap.finish(complete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::budget::Budget;
    use super::*;
    use http_body_util::{Full, StreamBody};

    type Frames = std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>;

    /// A body that arrives in the given chunks.
    fn chunks(parts: &[&'static str]) -> StreamBody<futures::stream::Iter<Frames>> {
        let frames: Vec<_> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn collects_small_bodies_whole() {
        match collect_bounded(chunks(&["ab", "cd", "e"]), 5)
            .await
            .unwrap()
        {
            Collected::Complete { body, trailers } => {
                assert_eq!(body, "abcde");
                assert!(trailers.is_none());
            }
            Collected::TooLarge { .. } => panic!("fits"),
        }
        match collect_bounded(Full::new(Bytes::from_static(b"{}")), 2)
            .await
            .unwrap()
        {
            Collected::Complete { body, .. } => assert_eq!(body, "{}"),
            Collected::TooLarge { .. } => panic!("fits"),
        }
    }

    #[tokio::test]
    async fn stops_past_the_limit_and_keeps_the_rest() {
        match collect_bounded(chunks(&["ab", "cd", "ef", "gh"]), 3)
            .await
            .unwrap()
        {
            Collected::TooLarge { prefix, rest } => {
                assert_eq!(prefix, "abcd");
                let rest = rest.collect().await.unwrap().to_bytes();
                assert_eq!(rest, "efgh");
            }
            Collected::Complete { .. } => panic!("too large"),
        }
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_reads_nothing() {
        match collect_bounded(Full::new(Bytes::from_static(b"0123456789")), 4)
            .await
            .unwrap()
        {
            Collected::TooLarge { prefix, rest } => {
                assert!(prefix.is_empty());
                assert_eq!(rest.collect().await.unwrap().to_bytes(), "0123456789");
            }
            Collected::Complete { .. } => panic!("too large"),
        }
    }

    #[test]
    fn tap_joins_chunks_and_bounds_them() {
        let (tx, mut rx) = oneshot::channel();
        let mut tap = Tap::new(200, 10, Budget::new(1 << 20).reservation(), tx);
        tap.observe(&Bytes::from_static(b"{\"a\":"));
        tap.observe(&Bytes::from_static(b"1}"));
        tap.finish(true);
        match rx.try_recv().unwrap() {
            Captured::Complete { status, body, .. } => {
                assert_eq!(status, 200);
                assert_eq!(body, "{\"a\":1}");
            }
            other => panic!("{other:?}"),
        }

        let (tx, mut rx) = oneshot::channel();
        let mut tap = Tap::new(200, 4, Budget::new(1 << 20).reservation(), tx);
        tap.observe(&Bytes::from_static(b"12345"));
        tap.finish(true);
        assert!(matches!(rx.try_recv().unwrap(), Captured::TooLarge));

        let (tx, mut rx) = oneshot::channel();
        let mut tap = Tap::new(200, 4, Budget::new(1 << 20).reservation(), tx);
        tap.observe(&Bytes::from_static(b"12"));
        tap.finish(false);
        assert!(matches!(rx.try_recv().unwrap(), Captured::Failed));
    }

    #[test]
    fn tap_keeps_only_what_the_budget_holds() {
        let budget = Budget::new(1024);
        let (tx, mut rx) = oneshot::channel();
        let mut tap = Tap::new(200, 1 << 20, budget.reservation(), tx);
        tap.observe(&Bytes::from(vec![b'1'; 1000]));
        assert_eq!(budget.available(), 0);
        // Past the budget: the copy is given up and its reservation released at once.
        tap.observe(&Bytes::from(vec![b'1'; 100]));
        assert_eq!(budget.available(), 1024);
        tap.finish(true);
        assert!(matches!(rx.try_recv().unwrap(), Captured::TooLarge));

        // A kept answer holds its reservation until the comparison drops it.
        let (tx, mut rx) = oneshot::channel();
        let mut tap = Tap::new(200, 1 << 20, budget.reservation(), tx);
        tap.observe(&Bytes::from(vec![b'1'; 10]));
        tap.finish(true);
        let captured = rx.try_recv().unwrap();
        assert_eq!(budget.available(), 0);
        drop(captured);
        assert_eq!(budget.available(), 1024);
    }
}
