//! The client for one upstream, on hyper's connection API: HTTP/1.1 keep-alive connections in
//! a pool of its own, or for an h2c upstream one HTTP/2 connection that all requests share.
//!
//! Whatever the client spoke, a request leaves in the upstream's protocol: its version is set
//! to it, and an HTTP/2 upstream gets none of HTTP/1.1's connection-specific headers (RFC 9113
//! section 8.2.2) and no `Host` (its `:authority` comes from the absolute URI); `te: trailers`,
//! which gRPC servers require, goes only to HTTP/2 upstreams.
//!
//! Over HTTP/1.1 it does what the router needs of hyper-util's pooled client (connect with a
//! timeout, `TCP_NODELAY`, `Host` set from the upstream, origin-form request targets, idle
//! connections reused last-in first-out and closed after 90 s, a request that a pooled
//! connection closed before it was sent tried again on another), without that client's costs
//! on every request: no pool key built and hashed, no `Host` formatted, and no task spawned to
//! put the connection back. A connection goes back to the pool when its response body has been read
//! to the end, and the next request waits for it to be ready, which it is once its
//! connection task has seen that end.
use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper::header::{self, HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{Request, Response, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::args::Protocol;

/// Idle connections older than this are closed, as hyper-util's pool does by default.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a request got no response.
#[derive(Debug)]
pub enum Error {
    /// No connection: name resolution, connecting, or the connect timeout.
    Connect(io::Error),
    /// The connection failed or closed while the request was sent or its answer read.
    Http(hyper::Error),
}

impl Error {
    /// Whether no connection could be made (the shadow's circuit breaker counts these).
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(error) => write!(f, "client error (Connect): {error}"),
            Error::Http(error) => write!(f, "client error: {error}"),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Connect(error) => Some(error),
            Error::Http(error) => Some(error),
        }
    }
}

struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

struct Pool<B> {
    idle: Mutex<VecDeque<Idle<B>>>,
}

impl<B> Pool<B> {
    fn put(&self, sender: SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        expire(&mut idle, now);
        idle.push_back(Idle { sender, since: now });
    }

    fn take(&self) -> Option<SendRequest<B>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let Idle { sender, since } = idle.pop_back()?;
            if since.elapsed() >= IDLE_TIMEOUT {
                // The most recent one is too old: so are all the others.
                idle.clear();
                return None;
            }
            if !sender.is_closed() {
                return Some(sender);
            }
        }
    }
}

/// Drops idle connections past the idle timeout (the oldest are at the front).
fn expire<B>(idle: &mut VecDeque<Idle<B>>, now: Instant) {
    while idle
        .front()
        .is_some_and(|oldest| now.saturating_duration_since(oldest.since) >= IDLE_TIMEOUT)
    {
        idle.pop_front();
    }
}

/// The connection to an h2c upstream, opened on first use and again once it has closed.
struct Shared<B> {
    builder: http2::Builder<TokioExecutor>,
    /// An async lock: requests arriving while it connects wait for that one connection.
    state: tokio::sync::Mutex<SharedState<B>>,
    /// Failed attempts to connect, so far.
    failures: AtomicU64,
}

struct SharedState<B> {
    sender: Option<http2::SendRequest<B>>,
    /// Why the last attempt to connect failed.
    failure: Option<(io::ErrorKind, String)>,
}

impl<B> Shared<B> {
    fn new() -> Self {
        Shared {
            builder: http2::Builder::new(TokioExecutor::new()),
            state: tokio::sync::Mutex::new(SharedState {
                sender: None,
                failure: None,
            }),
            failures: AtomicU64::new(0),
        }
    }
}

impl<B> Shared<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    /// The open connection, or a new one (then `true`). Requests that waited while an attempt
    /// to connect failed fail with it, rather than each trying again in turn.
    async fn sender(
        &self,
        connect: impl Future<Output = Result<TcpStream, Error>>,
    ) -> Result<(http2::SendRequest<B>, bool), Error> {
        let failures = self.failures.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        if let Some(sender) = state.sender.as_ref().filter(|sender| !sender.is_closed()) {
            return Ok((sender.clone(), false));
        }
        if self.failures.load(Ordering::Acquire) != failures
            && let Some((kind, message)) = &state.failure
        {
            return Err(Error::Connect(io::Error::new(*kind, message.clone())));
        }
        let connected = match connect.await {
            // A failed handshake is a connection not made, as a refused one is.
            Ok(stream) => self
                .builder
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|error| Error::Connect(io::Error::other(error))),
            Err(error) => Err(error),
        };
        match connected {
            Ok((sender, connection)) => {
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "upstream HTTP/2 connection");
                    }
                });
                state.sender = Some(sender.clone());
                state.failure = None;
                Ok((sender, true))
            }
            Err(error) => {
                state.failure = Some(match &error {
                    Error::Connect(error) => (error.kind(), error.to_string()),
                    Error::Http(error) => (io::ErrorKind::Other, error.to_string()),
                });
                self.failures.fetch_add(1, Ordering::Release);
                Err(error)
            }
        }
    }
}

/// A client for one upstream: pooled HTTP/1.1, or one multiplexed h2c connection.
pub struct Client<B> {
    authority: Authority,
    host: HeaderValue,
    connect_timeout: Duration,
    builder: http1::Builder,
    pool: Arc<Pool<B>>,
    /// Present for an h2c upstream.
    h2: Option<Shared<B>>,
}

impl<B> Client<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    pub fn new(authority: Authority, connect_timeout: Duration, protocol: Protocol) -> Self {
        // As hyper-util sets it: the host, and the port unless it is HTTP's default.
        let host = match authority.port_u16() {
            Some(port) if port != 80 => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        Client {
            host: HeaderValue::from_str(&host).expect("an authority is a valid header value"),
            authority,
            connect_timeout,
            builder: http1::Builder::new(),
            pool: Arc::new(Pool {
                idle: Mutex::new(VecDeque::new()),
            }),
            h2: (protocol == Protocol::H2c).then(Shared::new),
        }
    }

    /// Sends `request` and returns the response. Over HTTP/1.1 the URI (which may be absolute)
    /// is sent in origin form, and the response body puts the connection back in the pool once
    /// read to the end; over HTTP/2 the URI must be absolute.
    pub async fn request(&self, mut request: Request<B>) -> Result<Response<PooledBody<B>>, Error> {
        if let Some(h2) = &self.h2 {
            return self.request_h2(h2, request).await;
        }
        *request.version_mut() = Version::HTTP_11;
        // Only HTTP/2 peers get `te: trailers`; in HTTP/1.1 it belongs to the client's hop.
        request.headers_mut().remove(header::TE);
        request
            .headers_mut()
            .entry(HOST)
            .or_insert_with(|| self.host.clone());
        origin_form(request.uri_mut());
        loop {
            let (mut sender, reused) = match self.pool.take() {
                Some(sender) => (sender, true),
                // Boxed: connecting is rare, and its state would otherwise make every
                // request's future (moved on each spawn) larger.
                None => (Box::pin(self.connect()).await?, false),
            };
            if reused && sender.ready().await.is_err() {
                // Closed while idle: the request has not gone anywhere.
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let body = PooledBody {
                        body,
                        home: Some((sender, self.pool.clone())),
                    };
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut error) => match error.take_message() {
                    // Not sent: a pooled connection that closed meanwhile; try another one.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(Error::Http(error.into_error())),
                },
            }
        }
    }

    async fn request_h2(
        &self,
        h2: &Shared<B>,
        mut request: Request<B>,
    ) -> Result<Response<PooledBody<B>>, Error> {
        *request.version_mut() = Version::HTTP_2;
        http2_headers(request.headers_mut());
        loop {
            // Boxed: connecting is rare (see `request`).
            let (mut sender, fresh) = Box::pin(h2.sender(self.connect_tcp())).await?;
            match sender.try_send_request(request).await {
                Ok(response) => {
                    return Ok(response.map(|body| PooledBody { body, home: None }));
                }
                Err(mut error) => match error.take_message() {
                    // Not sent: the shared connection closed meanwhile; open another one.
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(Error::Http(error.into_error())),
                },
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<B>, Error> {
        let stream = self.connect_tcp().await?;
        let (sender, connection) = self
            .builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(Error::Http)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection");
            }
        });
        Ok(sender)
    }

    /// A TCP connection to the upstream, within the connect timeout.
    async fn connect_tcp(&self) -> Result<TcpStream, Error> {
        let host = self.authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = self.authority.port_u16().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(Error::Connect)?
            .collect();
        // As hyper-util does: the connect timeout is shared among the addresses.
        let timeout = self
            .connect_timeout
            .checked_div(addrs.len().max(1) as u32)
            .unwrap_or(self.connect_timeout);
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} resolved to no address"),
        );
        for addr in addrs {
            let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    last = error;
                    continue;
                }
                Err(_) => {
                    last = io::Error::new(io::ErrorKind::TimedOut, "connect timeout");
                    continue;
                }
            };
            // Small JSON requests and answers: never wait for Nagle.
            stream.set_nodelay(true).map_err(Error::Connect)?;
            return Ok(stream);
        }
        Err(Error::Connect(last))
    }
}

/// Headers of HTTP/1.1 connections, which HTTP/2 forbids (RFC 9113 section 8.2.2).
const CONNECTION_SPECIFIC: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Makes request headers fit for HTTP/2: no connection-specific headers, no `Host` (the URI's
/// authority is sent as `:authority`), and `te` only as `trailers`.
fn http2_headers(headers: &mut HeaderMap) {
    for name in &CONNECTION_SPECIFIC {
        headers.remove(name);
    }
    headers.remove(HOST);
    let trailers = headers.get_all(header::TE).iter().any(|value| {
        value.to_str().is_ok_and(|list| {
            list.split(',')
                .any(|coding| coding.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    headers.remove(header::TE);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// `scheme://authority/path?query` to `/path?query`, as HTTP/1.1 sends it to a server.
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    *uri = match uri.path_and_query() {
        Some(path) if path.as_str() != "/" => {
            let mut parts = hyper::http::uri::Parts::default();
            parts.path_and_query = Some(path.clone());
            Uri::from_parts(parts).unwrap_or_default()
        }
        _ => Uri::default(),
    };
}

/// A response body that puts its HTTP/1.1 connection back in the pool once read to the end
/// (an HTTP/2 answer's body has no connection of its own: `home` is `None`).
pub struct PooledBody<B> {
    body: Incoming,
    home: Option<(SendRequest<B>, Arc<Pool<B>>)>,
}

impl<B> PooledBody<B> {
    fn release(&mut self) {
        if let Some((sender, pool)) = self.home.take() {
            pool.put(sender);
        }
    }
}

impl<B> Body for PooledBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            None => this.release(),
            Some(Ok(_)) if this.body.is_end_stream() => this.release(),
            // A broken body: the connection is not reused.
            Some(Err(_)) => this.home = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for PooledBody<B> {
    fn drop(&mut self) {
        // Read to the end (hyper may stop polling once the body says so): reusable. Otherwise
        // the connection closes with its sender.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_keeps_path_and_query() {
        let mut uri: Uri = "http://s:80/predict?x=1".parse().unwrap();
        origin_form(&mut uri);
        assert_eq!(uri, "/predict?x=1");
        let mut uri: Uri = "http://s:80/".parse().unwrap();
        origin_form(&mut uri);
        assert_eq!(uri, "/");
        let mut uri: Uri = "/already".parse().unwrap();
        origin_form(&mut uri);
        assert_eq!(uri, "/already");
    }

    #[test]
    fn host_leaves_out_the_default_port() {
        let client = |authority: &str| {
            Client::<http_body_util::Full<Bytes>>::new(
                authority.parse().unwrap(),
                Duration::from_secs(1),
                Protocol::Http1,
            )
        };
        assert_eq!(client("model:8080").host, "model:8080");
        assert_eq!(client("model:80").host, "model");
        assert_eq!(client("model").host, "model");
        assert_eq!(client("[::1]:9000").host, "[::1]:9000");
    }

    #[tokio::test]
    async fn requests_waiting_on_a_failed_h2_connect_fail_with_it() {
        let shared = Shared::<http_body_util::Full<Bytes>>::new();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let tried_again = std::sync::atomic::AtomicBool::new(false);
        let refused = || Error::Connect(io::Error::new(io::ErrorKind::ConnectionRefused, "no"));
        // Polled in order: the first takes the lock and connects until released, the second
        // waits for the lock meanwhile.
        let (first, second, ()) = tokio::join!(
            shared.sender(async {
                let _ = released.await;
                Err(refused())
            }),
            shared.sender(async {
                tried_again.store(true, Ordering::Relaxed);
                Err(refused())
            }),
            async {
                release.send(()).unwrap();
            },
        );
        assert!(first.unwrap_err().is_connect());
        let second = second.unwrap_err();
        assert!(second.is_connect());
        assert_eq!(second.to_string(), "client error (Connect): no");
        assert!(!tried_again.load(Ordering::Relaxed));
        // A later request tries again.
        let later = shared.sender(async { Err(refused()) }).await;
        assert!(later.is_err());
        assert_eq!(shared.failures.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn http2_gets_no_connection_specific_headers_but_te_trailers() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("host", "router"),
            ("te", "trailers"),
            ("content-type", "application/grpc"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        http2_headers(&mut headers);
        let mut left: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![("content-type", "application/grpc"), ("te", "trailers")]
        );

        let mut headers = HeaderMap::new();
        headers.insert(header::TE, HeaderValue::from_static("gzip"));
        http2_headers(&mut headers);
        assert!(headers.is_empty());
        headers.insert(header::TE, HeaderValue::from_static("deflate, Trailers"));
        http2_headers(&mut headers);
        assert_eq!(headers.get(header::TE).unwrap(), "trailers");
    }
}
