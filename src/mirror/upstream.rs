//! The client for one upstream: HTTP/1.1 keep-alive connections in a pool of its own, on
//! hyper's connection API.
//!
//! It does what the router needs of hyper-util's pooled client (connect with a timeout,
//! `TCP_NODELAY`, `Host` set from the upstream, origin-form request targets, idle connections
//! reused last-in first-out and closed after 90 s, a request that a pooled connection closed
//! before it was sent tried again on another), without that client's costs on every request:
//! no pool key built and hashed, no `Host` formatted, and no task spawned to put the
//! connection back. A connection goes back to the pool when its response body has been read
//! to the end, and the next request waits for it to be ready, which it is once its
//! connection task has seen that end.
use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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

/// A pooled HTTP/1.1 client for one upstream.
pub struct Client<B> {
    authority: Authority,
    host: HeaderValue,
    connect_timeout: Duration,
    builder: http1::Builder,
    pool: Arc<Pool<B>>,
}

impl<B> Client<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    pub fn new(authority: Authority, connect_timeout: Duration) -> Self {
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
        }
    }

    /// Sends `request` (whose URI may be absolute: it is sent in origin form) and returns the
    /// response, whose body puts the connection back in the pool once read to the end.
    pub async fn request(&self, mut request: Request<B>) -> Result<Response<PooledBody<B>>, Error> {
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

    async fn connect(&self) -> Result<SendRequest<B>, Error> {
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
            return Ok(sender);
        }
        Err(Error::Connect(last))
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

/// A response body that puts its connection back in the pool once read to the end.
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
            )
        };
        assert_eq!(client("model:8080").host, "model:8080");
        assert_eq!(client("model:80").host, "model");
        assert_eq!(client("model").host, "model");
        assert_eq!(client("[::1]:9000").host, "[::1]:9000");
    }
}
