//! Flags of `modelship mirror` and their validation into a [`Config`].
use std::net::SocketAddr;
use std::time::Duration;

use hyper::Uri;
use hyper::header::HeaderName;

use crate::Error;

/// Flags of `modelship mirror`. Every flag can also be set through its environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct MirrorArgs {
    /// Address the router serves client traffic on.
    #[arg(long, env = "MODELSHIP_MIRROR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Base URL of the stable track (plain HTTP). Every request goes there and clients get its answer.
    #[arg(
        long,
        env = "MODELSHIP_MIRROR_STABLE",
        default_value = "http://127.0.0.1:8081"
    )]
    pub stable: String,

    /// Base URL of the shadow track (plain HTTP). Without it nothing is mirrored.
    #[arg(long, env = "MODELSHIP_MIRROR_SHADOW")]
    pub shadow: Option<String>,

    /// Share of requests copied to the shadow, in percent (0 to 100).
    #[arg(long, env = "MODELSHIP_MIRROR_PERCENT", default_value_t = 100.0)]
    pub mirror_percent: f64,

    /// JSON pointer (RFC 6901) to the prediction in a response body; repeatable, comma-separated
    /// in the environment. None compares and records the whole document.
    #[arg(
        long = "compare-pointer",
        env = "MODELSHIP_MIRROR_COMPARE_POINTERS",
        value_delimiter = ','
    )]
    pub compare_pointers: Vec<String>,

    /// Largest absolute difference at which two numbers still match.
    #[arg(long, env = "MODELSHIP_MIRROR_TOLERANCE", default_value_t = 1e-6)]
    pub tolerance: f64,

    /// Address of `/metrics`, `/livez` and `/readyz`.
    #[arg(
        long,
        env = "MODELSHIP_MIRROR_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: SocketAddr,

    /// How long stable may take to send its response head before the client gets a 504.
    #[arg(long, env = "MODELSHIP_MIRROR_STABLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub stable_timeout: Duration,

    /// How long a mirrored request may take, response body included, before it counts as a shadow error.
    #[arg(long, env = "MODELSHIP_MIRROR_SHADOW_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shadow_timeout: Duration,

    /// Timeout for opening a TCP connection to either track.
    #[arg(long, env = "MODELSHIP_MIRROR_CONNECT_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Consecutive connection failures to the shadow after which copies pause (0: never pause).
    #[arg(
        long,
        env = "MODELSHIP_MIRROR_SHADOW_FAILURES_BEFORE_PAUSE",
        default_value_t = 5
    )]
    pub shadow_failures_before_pause: u32,

    /// How long copies pause once the shadow cannot be reached; each counts as a shadow error.
    #[arg(long, env = "MODELSHIP_MIRROR_SHADOW_PAUSE", default_value = "1s", value_parser = humantime::parse_duration)]
    pub shadow_pause: Duration,

    /// Largest request or response body kept for mirroring and comparison; larger ones are not mirrored.
    #[arg(long, env = "MODELSHIP_MIRROR_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most mirrored requests in flight at once; beyond it copies are dropped, never queued.
    #[arg(long, env = "MODELSHIP_MIRROR_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,

    /// Memory all mirrored copies together may hold for their bodies (request and both
    /// answers), reserved as the bytes arrive; a copy that does not fit is dropped.
    #[arg(long, env = "MODELSHIP_MIRROR_MAX_COPY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_copy_bytes: usize,

    /// How long a client may take to send a request body the router reads (a sampled one);
    /// past it the client gets a 408. Other bodies stream to stable within --stable-timeout.
    #[arg(long, env = "MODELSHIP_MIRROR_REQUEST_BODY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_body_timeout: Duration,

    /// How long a client may take to send a request's headers before its connection closes.
    #[arg(long, env = "MODELSHIP_MIRROR_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// Most client connections served at once; further ones wait in the listen backlog.
    #[arg(long, env = "MODELSHIP_MIRROR_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Threads serving clients, each with its own event loop and upstream connections; a
    /// connection stays on the thread that accepted it. 0: one per CPU the router may use
    /// (its CPU limit, when it has one).
    #[arg(long, env = "MODELSHIP_MIRROR_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Request headers removed from mirrored copies (comma-separated, case-insensitive).
    #[arg(
        long,
        env = "MODELSHIP_MIRROR_STRIP_HEADERS",
        value_delimiter = ',',
        default_value = "authorization,cookie,proxy-authorization,x-api-key"
    )]
    pub strip_headers: Vec<String>,

    /// Request header whose value decides sampling; without it the method, path and body do.
    #[arg(
        long,
        env = "MODELSHIP_MIRROR_REQUEST_ID_HEADER",
        default_value = "x-request-id"
    )]
    pub request_id_header: String,

    /// Most distinct prediction labels counted per track; the rest count as `__other__`.
    #[arg(long, env = "MODELSHIP_MIRROR_MAX_LABELS", default_value_t = 64)]
    pub max_labels: usize,

    /// Bucket bounds of the prediction value histogram (comma-separated, increasing).
    #[arg(
        long,
        env = "MODELSHIP_MIRROR_PREDICTION_BUCKETS",
        value_delimiter = ',',
        default_value = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1"
    )]
    pub prediction_buckets: Vec<f64>,

    /// Protocol spoken to the stable track: `http1` (pooled keep-alive connections) or `h2c`
    /// (HTTP/2 cleartext with prior knowledge, one multiplexed connection; gRPC servers need it).
    #[arg(
        long,
        env = "MODELSHIP_MIRROR_STABLE_PROTOCOL",
        value_enum,
        default_value_t = Protocol::Http1
    )]
    pub stable_protocol: Protocol,

    /// Protocol spoken to the shadow track, as `--stable-protocol`.
    #[arg(
        long,
        env = "MODELSHIP_MIRROR_SHADOW_PROTOCOL",
        value_enum,
        default_value_t = Protocol::Http1
    )]
    pub shadow_protocol: Protocol,

    /// How long shutdown waits for in-flight client requests before exiting.
    #[arg(long, env = "MODELSHIP_MIRROR_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// How long the router keeps serving after a shutdown signal, unready and answering with
    /// `Connection: close`, so that Service endpoints and clients' pooled connections move to
    /// other replicas before it stops accepting.
    #[arg(long, env = "MODELSHIP_MIRROR_SHUTDOWN_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,
}

/// The protocol the router speaks to an upstream; clients may use either, whatever it is.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 cleartext with prior knowledge (RFC 9113 section 3.3).
    H2c,
}

/// An upstream base URL split into the parts each request needs.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: hyper::http::uri::Scheme,
    pub authority: hyper::http::uri::Authority,
    /// Path prefix without a trailing slash; empty for `/`.
    pub prefix: String,
}

/// The validated configuration the router runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub stable: Upstream,
    pub shadow: Option<Upstream>,
    pub mirror_percent: f64,
    pub pointers: Vec<String>,
    pub tolerance: f64,
    pub stable_timeout: Duration,
    pub shadow_timeout: Duration,
    pub connect_timeout: Duration,
    pub shadow_failures_before_pause: u32,
    pub shadow_pause: Duration,
    pub max_body_bytes: usize,
    pub max_in_flight: usize,
    pub max_copy_bytes: usize,
    pub request_body_timeout: Duration,
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// At least 1.
    pub workers: usize,
    pub strip_headers: Vec<HeaderName>,
    pub request_id_header: HeaderName,
    pub max_labels: usize,
    pub prediction_buckets: Vec<f64>,
    pub shutdown_timeout: Duration,
    pub shutdown_delay: Duration,
    pub stable_protocol: Protocol,
    pub shadow_protocol: Protocol,
}

impl MirrorArgs {
    /// Checks every flag and returns the configuration, or an error naming the bad flag.
    pub fn validate(self) -> Result<Config, Error> {
        let stable = parse_upstream("--stable", &self.stable)?;
        let shadow = self
            .shadow
            .as_deref()
            .map(|s| parse_upstream("--shadow", s))
            .transpose()?;
        if !(0.0..=100.0).contains(&self.mirror_percent) {
            return Err(config(format!(
                "--mirror-percent must be within 0 and 100, got {}",
                self.mirror_percent
            )));
        }
        let mut pointers = Vec::with_capacity(self.compare_pointers.len());
        for pointer in self.compare_pointers {
            let pointer = pointer.trim().to_owned();
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(config(format!(
                    "--compare-pointer {pointer:?} is not a JSON pointer: it must be empty or start with '/'"
                )));
            }
            if let Some(bad) = invalid_escape(&pointer) {
                return Err(config(format!(
                    "--compare-pointer {pointer:?} has an invalid escape {bad:?} (only ~0 and ~1)"
                )));
            }
            pointers.push(pointer);
        }
        if pointers.is_empty() {
            // The empty pointer is the whole document.
            pointers.push(String::new());
        }
        if !self.tolerance.is_finite() || self.tolerance < 0.0 {
            return Err(config(format!(
                "--tolerance must be a finite number >= 0, got {}",
                self.tolerance
            )));
        }
        for (flag, value) in [
            ("--stable-timeout", self.stable_timeout),
            ("--shadow-timeout", self.shadow_timeout),
            ("--connect-timeout", self.connect_timeout),
            ("--request-body-timeout", self.request_body_timeout),
            ("--header-timeout", self.header_timeout),
        ] {
            if value.is_zero() {
                return Err(config(format!("{flag} must be greater than zero")));
            }
        }
        if self.max_in_flight == 0 {
            return Err(config("--max-in-flight must be at least 1".into()));
        }
        if self.max_connections == 0 {
            return Err(config("--max-connections must be at least 1".into()));
        }
        if self.max_copy_bytes < self.max_body_bytes {
            return Err(config(format!(
                "--max-copy-bytes ({}) must be at least --max-body-bytes ({}), or no body that may be mirrored would fit",
                self.max_copy_bytes, self.max_body_bytes
            )));
        }
        let mut strip_headers = Vec::new();
        for name in self
            .strip_headers
            .iter()
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
        {
            let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| config(format!("--strip-headers: {name:?} is not a header name")))?;
            strip_headers.push(header);
        }
        let request_id_header = HeaderName::from_bytes(
            self.request_id_header
                .trim()
                .to_ascii_lowercase()
                .as_bytes(),
        )
        .map_err(|_| {
            config(format!(
                "--request-id-header: {:?} is not a header name",
                self.request_id_header
            ))
        })?;
        let buckets = self.prediction_buckets;
        if buckets.is_empty()
            || buckets.iter().any(|b| !b.is_finite())
            || buckets.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(config(format!(
                "--prediction-buckets must be finite and strictly increasing, got {buckets:?}"
            )));
        }
        Ok(Config {
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            stable,
            shadow,
            mirror_percent: self.mirror_percent,
            pointers,
            tolerance: self.tolerance,
            stable_timeout: self.stable_timeout,
            shadow_timeout: self.shadow_timeout,
            connect_timeout: self.connect_timeout,
            shadow_failures_before_pause: self.shadow_failures_before_pause,
            shadow_pause: self.shadow_pause,
            max_body_bytes: self.max_body_bytes,
            max_in_flight: self.max_in_flight,
            max_copy_bytes: self.max_copy_bytes,
            request_body_timeout: self.request_body_timeout,
            header_timeout: self.header_timeout,
            max_connections: self.max_connections,
            workers: match self.workers {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            },
            strip_headers,
            request_id_header,
            max_labels: self.max_labels,
            prediction_buckets: buckets,
            shutdown_timeout: self.shutdown_timeout,
            shutdown_delay: self.shutdown_delay,
            stable_protocol: self.stable_protocol,
            shadow_protocol: self.shadow_protocol,
        })
    }
}

fn config(message: String) -> Error {
    Error::Config(message)
}

/// Parses an upstream base URL: `http` only (the router runs next to the model in-cluster),
/// with a host, an optional path prefix and no query.
fn parse_upstream(flag: &str, value: &str) -> Result<Upstream, Error> {
    let uri: Uri = value
        .trim()
        .parse()
        .map_err(|e| config(format!("{flag} {value:?} is not a URL: {e}")))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| config(format!("{flag} {value:?} has no scheme (http://…)")))?;
    if scheme != hyper::http::uri::Scheme::HTTP {
        return Err(config(format!(
            "{flag} {value:?}: only http:// upstreams are supported"
        )));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| config(format!("{flag} {value:?} has no host")))?;
    if uri.query().is_some() {
        return Err(config(format!("{flag} {value:?} must not have a query")));
    }
    let prefix = uri.path().trim_end_matches('/').to_owned();
    Ok(Upstream {
        scheme,
        authority,
        prefix,
    })
}

/// The first `~` escape other than `~0` and `~1`, if any.
pub fn invalid_escape(pointer: &str) -> Option<String> {
    let bytes = pointer.as_bytes();
    bytes
        .iter()
        .enumerate()
        .find_map(|(i, b)| match (b, bytes.get(i + 1)) {
            (b'~', Some(b'0' | b'1')) => None,
            (b'~', next) => Some(format!("~{}", next.map(|n| *n as char).unwrap_or_default())),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MirrorArgs,
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("mirror").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.args.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&[]).unwrap();
        assert!(config.shadow.is_none());
        assert_eq!(config.pointers, vec![String::new()]);
        assert_eq!(
            config.strip_headers,
            vec![
                HeaderName::from_static("authorization"),
                HeaderName::from_static("cookie"),
                HeaderName::from_static("proxy-authorization"),
                HeaderName::from_static("x-api-key"),
            ]
        );
        assert_eq!(
            config.request_id_header,
            HeaderName::from_static("x-request-id")
        );
        assert_eq!(config.stable.authority.as_str(), "127.0.0.1:8081");
        assert_eq!(config.stable.prefix, "");
        assert_eq!(config.stable_protocol, Protocol::Http1);
        assert_eq!(config.shadow_protocol, Protocol::Http1);
        assert_eq!(
            config.workers,
            std::thread::available_parallelism().map_or(1, usize::from)
        );
        assert_eq!(parse(&["--workers=3"]).unwrap().workers, 3);
    }

    #[test]
    fn protocols_per_track() {
        let config = parse(&["--stable-protocol=h2c"]).unwrap();
        assert_eq!(config.stable_protocol, Protocol::H2c);
        assert_eq!(config.shadow_protocol, Protocol::Http1);
        let config = parse(&["--shadow-protocol=h2c", "--stable-protocol=http1"]).unwrap();
        assert_eq!(config.stable_protocol, Protocol::Http1);
        assert_eq!(config.shadow_protocol, Protocol::H2c);
        let error = parse(&["--stable-protocol=h2"]).unwrap_err();
        assert!(error.contains("--stable-protocol"), "{error}");
    }

    #[test]
    fn full_flags() {
        let config = parse(&[
            "--stable=http://stable.ns.svc:8080/v1/",
            "--shadow=http://shadow:8080",
            "--mirror-percent=12.5",
            "--compare-pointer=/predictions",
            "--compare-pointer=/scores/0",
            "--tolerance=0.01",
            "--shadow-timeout=250ms",
            "--strip-headers=Authorization,X-Api-Key",
            "--request-id-header=X-Trace",
        ])
        .unwrap();
        assert_eq!(config.stable.prefix, "/v1");
        assert_eq!(config.shadow.unwrap().authority.as_str(), "shadow:8080");
        assert_eq!(config.mirror_percent, 12.5);
        assert_eq!(config.pointers, vec!["/predictions", "/scores/0"]);
        assert_eq!(config.shadow_timeout, Duration::from_millis(250));
        assert_eq!(
            config.strip_headers[1],
            HeaderName::from_static("x-api-key")
        );
        assert_eq!(config.request_id_header, HeaderName::from_static("x-trace"));
    }

    #[test]
    fn rejects_bad_values_with_the_flag_named() {
        for (args, needle) in [
            (&["--stable=not a url"][..], "--stable"),
            (&["--stable=https://x:1"], "only http://"),
            (&["--stable=/just/a/path"], "no scheme"),
            (&["--shadow=http://x:1/?a=b"], "query"),
            (&["--mirror-percent=100.5"], "--mirror-percent"),
            (&["--mirror-percent=-1"], "--mirror-percent"),
            (&["--compare-pointer=predictions"], "not a JSON pointer"),
            (&["--compare-pointer=/a~2b"], "invalid escape"),
            (&["--compare-pointer=/a~"], "invalid escape"),
            (&["--tolerance=-0.1"], "--tolerance"),
            (&["--shadow-timeout=0s"], "--shadow-timeout"),
            (&["--max-in-flight=0"], "--max-in-flight"),
            (&["--max-connections=0"], "--max-connections"),
            (&["--request-body-timeout=0s"], "--request-body-timeout"),
            (&["--max-copy-bytes=1000"], "--max-copy-bytes"),
            (&["--strip-headers=bad header"], "--strip-headers"),
            (&["--prediction-buckets=1,0.5"], "--prediction-buckets"),
        ] {
            let error = parse(args).expect_err(&format!("{args:?} should be rejected"));
            assert!(error.contains(needle), "{args:?}: {error}");
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(invalid_escape("/a~0b~1c"), None);
        assert_eq!(invalid_escape("/a~x").as_deref(), Some("~x"));
    }
}
