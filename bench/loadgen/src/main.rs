//! The load generator of modelship's benchmarks: `bench/bench.py` runs it against every
//! target, so all of them see the same client.
//!
//! It is built to take as little CPU as it can from the machine it shares with what it
//! measures: one thread (a single-threaded tokio runtime), plain HTTP/1.1 on keep-alive
//! connections with `TCP_NODELAY`, one request at a time on a connection (no pipelining),
//! the request prepared once and written with one `write`, the answer read with as few
//! `read`s as it arrives in and parsed with `httparse`.
//!
//! - Open loop (`--rate N`): N requests a second, by default exactly 1/N s apart, or with
//!   `--arrivals poisson` as a Poisson process (gaps drawn from an exponential distribution,
//!   reproducible by `--seed`), paced by a timerfd (nanosecond resolution; tokio's own
//!   timer has millisecond resolution), on an idle connection or,
//!   when every connection is busy, on a new one: requests go out at the rate whatever the
//!   answers do.
//! - Closed loop (`--rate 0 --connections W`): W connections, each sending its next request
//!   as soon as the previous answer has been read whole.
//!
//! `--warmup` seconds of the same load run first and are not counted; their connections are
//! kept. Latency runs from just before the request is written (or, on a new connection,
//! before connecting) until the last byte of the answer has been read, as vegeta measures
//! it; percentiles are exact (nearest rank over every answered request). Throughput is the
//! number of 2xx answers to requests sent during the measurement, divided by the time from
//! its start until the last of them was answered. Prints one JSON object on stdout.
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// HTTP/1.1 load generator: fixed rate (open loop) or fixed concurrency (closed loop).
#[derive(Parser)]
struct Args {
    /// Target, `http://IP:PORT/path`.
    #[arg(long)]
    url: String,
    /// Request method.
    #[arg(long, default_value = "POST")]
    method: String,
    /// File whose content is the request body.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Extra request header, `Name: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Requests per second (open loop); 0 for a closed loop over `--connections`.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Connections of the closed loop.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Most connections the open loop opens; a request finding none is counted as an error.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Seconds of the same load before the measurement, not counted.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Seconds a request may take, connecting included.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// How the open loop spaces its requests: `uniform` (exactly 1/rate apart) or `poisson`
    /// (exponential gaps averaging 1/rate, so the schedule cannot lock in phase with a
    /// periodic timer in what is measured, and comes in bursts as real traffic does).
    #[arg(long, value_enum, default_value_t = Arrivals::Uniform)]
    arrivals: Arrivals,
    /// Seed of the Poisson schedule: the same seed sends at the same offsets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Arrivals {
    Uniform,
    Poisson,
}

/// The open loop's send times, as offsets from its start.
struct Schedule {
    arrivals: Arrivals,
    mean_gap_ns: f64,
    next_ns: f64,
    /// xorshift64* state: a reproducible sequence without a dependency.
    state: u64,
}

impl Schedule {
    fn new(arrivals: Arrivals, rate: u64, seed: u64) -> Schedule {
        Schedule {
            arrivals,
            mean_gap_ns: 1e9 / rate.max(1) as f64,
            next_ns: 0.0,
            state: seed.max(1),
        }
    }

    /// The offset of the next request.
    fn next(&mut self) -> Duration {
        let gap = match self.arrivals {
            Arrivals::Uniform => self.mean_gap_ns,
            Arrivals::Poisson => {
                self.state ^= self.state >> 12;
                self.state ^= self.state << 25;
                self.state ^= self.state >> 27;
                let bits = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
                // Uniform in (0, 1]: never ln(0).
                let u = (bits + 1) as f64 / (1u64 << 53) as f64;
                -u.ln() * self.mean_gap_ns
            }
        };
        self.next_ns += gap;
        Duration::from_nanos(self.next_ns as u64)
    }
}

struct Target {
    addr: SocketAddr,
    request: Rc<[u8]>,
    timeout: Duration,
}

fn target(args: &Args) -> Result<Target, String> {
    let rest = args
        .url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url {:?}: only http:// is supported", args.url))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .parse()
        .map_err(|e| format!("--url {:?}: the host must be IP:PORT: {e}", args.url))?;
    let body = match &args.body_file {
        Some(path) => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => Vec::new(),
    };
    let mut request = format!("{} {path} HTTP/1.1\r\nHost: {authority}\r\n", args.method);
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("--header {header:?}: expected `Name: value`"))?;
        request.push_str(&format!("{}: {}\r\n", name.trim(), value.trim()));
    }
    if !body.is_empty() || args.method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(&body);
    Ok(Target {
        addr,
        request: request.into(),
        timeout: Duration::from_secs_f64(args.timeout),
    })
}

/// A keep-alive connection and its read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends one request and reads its whole answer: the status, and whether the
    /// connection may carry another request.
    async fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, bool)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            if self.buf.len() == self.buf.capacity() {
                self.buf.reserve(self.buf.capacity());
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the end of the answer",
                ));
            }
            if let Some(done) = complete(&self.buf)? {
                return Ok(done);
            }
        }
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Whether `buf` holds a whole answer; if so its status and whether the connection stays open.
fn complete(buf: &[u8]) -> io::Result<Option<(u16, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf).map_err(|e| invalid(e.to_string()))? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(head) => head,
    };
    let status = response.code.unwrap_or(0);
    let mut keep = response.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or("");
        if header.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| invalid("bad content-length"))?,
            );
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if header.name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                keep = false;
            } else if value.contains("keep-alive") {
                keep = true;
            }
        }
    }
    let body = &buf[head..];
    let done = if status == 204 || status == 304 || (100..200).contains(&status) {
        true
    } else if chunked {
        chunked_end(body)?.is_some()
    } else if let Some(length) = length {
        body.len() >= length
    } else {
        return Err(invalid(
            "an answer without a length (close-delimited) is not supported",
        ));
    };
    Ok(done.then_some((status, keep)))
}

/// Where a chunked body ends, once all of it is in `body`.
fn chunked_end(body: &[u8]) -> io::Result<Option<usize>> {
    let mut at = 0;
    loop {
        let Some(eol) = find(&body[at..], b"\r\n") else {
            return Ok(None);
        };
        let line =
            std::str::from_utf8(&body[at..at + eol]).map_err(|_| invalid("bad chunk size"))?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid("bad chunk size"))?;
        at += eol + 2;
        if size == 0 {
            // Trailers, if any, then an empty line.
            if body.len() >= at + 2 && &body[at..at + 2] == b"\r\n" {
                return Ok(Some(at + 2));
            }
            return Ok(find(&body[at..], b"\r\n\r\n").map(|i| at + i + 4));
        }
        if body.len() < at + size + 2 {
            return Ok(None);
        }
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the measured requests got.
#[derive(Default)]
struct Stats {
    /// Latency of every answered request, in nanoseconds.
    latencies: Vec<u64>,
    codes: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    last_answer: Option<Instant>,
    /// Open loop: how late each tick was handled, in nanoseconds.
    lags: Vec<u64>,
}

impl Stats {
    fn answered(&mut self, status: u16, latency: Duration) {
        self.latencies.push(latency.as_nanos() as u64);
        *self.codes.entry(status).or_default() += 1;
        self.last_answer = Some(Instant::now());
    }

    fn failed(&mut self, error: &io::Error) {
        let kind = if error.kind() == io::ErrorKind::Other {
            error.to_string()
        } else {
            format!("{:?}", error.kind())
        };
        *self.errors.entry(kind).or_default() += 1;
    }

    fn report(mut self, mode: &str, start: Instant, connections: usize) -> serde_json::Value {
        self.latencies.sort_unstable();
        self.lags.sort_unstable();
        let ms = |ns: u64| ns as f64 / 1e6;
        let rank = |sorted: &[u64], p: f64| -> f64 {
            if sorted.is_empty() {
                return f64::NAN;
            }
            let index =
                ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            ms(sorted[index])
        };
        let answered = self.latencies.len() as u64;
        let errors: u64 = self.errors.values().sum();
        let requests = answered + errors;
        let ok: u64 = self
            .codes
            .iter()
            .filter(|(code, _)| (200..300).contains(*code))
            .map(|(_, n)| n)
            .sum();
        let elapsed = self.last_answer.map_or(0.0, |last| {
            last.saturating_duration_since(start).as_secs_f64()
        });
        let mean = self
            .latencies
            .iter()
            .sum::<u64>()
            .checked_div(answered)
            .map_or(f64::NAN, ms);
        serde_json::json!({
            "mode": mode,
            "requests": requests,
            "ok": ok,
            "success": if requests > 0 { ok as f64 / requests as f64 } else { 0.0 },
            "codes": self.codes.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "errors": self.errors,
            "throughput": if elapsed > 0.0 { ok as f64 / elapsed } else { 0.0 },
            "elapsed_s": elapsed,
            "connections": connections,
            "mean_ms": mean,
            "p50_ms": rank(&self.latencies, 50.0),
            "p90_ms": rank(&self.latencies, 90.0),
            "p99_ms": rank(&self.latencies, 99.0),
            "p999_ms": rank(&self.latencies, 99.9),
            "max_ms": self.latencies.last().map_or(f64::NAN, |&ns| ms(ns)),
            "lag_p99_ms": rank(&self.lags, 99.0),
            "lag_max_ms": self.lags.last().map_or(f64::NAN, |&ns| ms(ns)),
        })
    }
}

/// A one-shot timer on a timerfd: nanosecond resolution (tokio's own timer has millisecond
/// resolution).
struct Ticker {
    fd: AsyncFd<OwnedFd>,
}

impl Ticker {
    fn new() -> io::Result<Ticker> {
        // SAFETY: plain system calls on a descriptor this function owns.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an OwnedFd keeps its descriptor open and the same until it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Ticker { fd })
    }

    /// Arms the timer to expire once, `delay` from now (at least 1 ns: zero would disarm it).
    fn arm(&self, delay: Duration) -> io::Result<()> {
        let delay = delay.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: delay.as_secs() as libc::time_t,
                tv_nsec: delay.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        if unsafe {
            libc::timerfd_settime(
                self.fd.get_ref().as_raw_fd(),
                0,
                &spec,
                std::ptr::null_mut(),
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until the armed timer expires.
    async fn tick(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = 0u64;
            // SAFETY: reads 8 bytes into a u64, as timerfd(2) specifies.
            let read = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    (&mut expirations as *mut u64).cast(),
                    8,
                )
            };
            // The read drained the timer either way; it is armed again before the next wait.
            guard.clear_ready();
            if read == 8 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::WouldBlock {
                return Err(error);
            }
        }
    }
}

/// State shared by the open loop's requests (one thread: `Rc<RefCell>`).
#[derive(Default)]
struct Pool {
    idle: Vec<Conn>,
    open: usize,
    opened: usize,
    in_flight: usize,
    stats: Stats,
}

async fn open_loop(args: &Args, target: Rc<Target>) -> io::Result<serde_json::Value> {
    let mut schedule = Schedule::new(args.arrivals, args.rate, args.seed);
    let ticker = Ticker::new()?;
    let zero = Instant::now();
    let start = zero + Duration::from_secs_f64(args.warmup);
    let end = start + Duration::from_secs_f64(args.duration);
    let pool = Rc::new(RefCell::new(Pool::default()));
    let mut scheduled = zero + schedule.next();
    while scheduled < end {
        ticker.arm(scheduled.saturating_duration_since(Instant::now()))?;
        ticker.tick().await?;
        let now = Instant::now();
        // Every request due by now goes out, late ones with their lag recorded.
        while scheduled <= now && scheduled < end {
            let counted = scheduled >= start;
            if counted {
                let lag = now.saturating_duration_since(scheduled);
                pool.borrow_mut().stats.lags.push(lag.as_nanos() as u64);
            }
            send(&pool, &target, args.max_connections, counted);
            scheduled = zero + schedule.next();
        }
    }
    // Requests still in flight are answered (or time out) before the report.
    let deadline = Instant::now() + target.timeout + Duration::from_secs(1);
    while pool.borrow().in_flight > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let pool = Rc::try_unwrap(pool)
        .map_err(|_| io::Error::other("requests still in flight after their timeout"))?
        .into_inner();
    Ok(pool.stats.report("open", start, pool.opened))
}

/// One request of the open loop, on an idle connection or a new one.
fn send(pool: &Rc<RefCell<Pool>>, target: &Rc<Target>, max_connections: usize, counted: bool) {
    let conn = {
        let mut p = pool.borrow_mut();
        let conn = p.idle.pop();
        if conn.is_none() {
            if p.open >= max_connections {
                if counted {
                    p.stats
                        .failed(&io::Error::other("no connection left (--max-connections)"));
                }
                return;
            }
            p.open += 1;
            p.opened += 1;
        }
        p.in_flight += 1;
        conn
    };
    let (pool, target) = (pool.clone(), target.clone());
    tokio::task::spawn_local(async move {
        let began = Instant::now();
        let result = tokio::time::timeout(target.timeout, async {
            let mut conn = match conn {
                Some(conn) => conn,
                None => Conn::connect(target.addr).await?,
            };
            let (status, keep) = conn.exchange(&target.request).await?;
            Ok::<_, io::Error>((status, keep, conn))
        })
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")));
        let latency = began.elapsed();
        let mut p = pool.borrow_mut();
        p.in_flight -= 1;
        match result {
            Ok((status, keep, conn)) => {
                if counted {
                    p.stats.answered(status, latency);
                }
                if keep {
                    p.idle.push(conn);
                } else {
                    p.open -= 1;
                }
            }
            Err(error) => {
                p.open -= 1;
                if counted {
                    p.stats.failed(&error);
                }
            }
        }
    });
}

async fn closed_loop(args: &Args, target: Rc<Target>) -> io::Result<serde_json::Value> {
    let start = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = start + Duration::from_secs_f64(args.duration);
    let stats = Rc::new(RefCell::new(Stats::default()));
    let opened = Rc::new(RefCell::new(0usize));
    let mut workers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let (target, stats, opened) = (target.clone(), stats.clone(), opened.clone());
        workers.push(tokio::task::spawn_local(async move {
            let mut conn: Option<Conn> = None;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let counted = began >= start;
                let result = tokio::time::timeout(target.timeout, async {
                    if conn.is_none() {
                        conn = Some(Conn::connect(target.addr).await?);
                        *opened.borrow_mut() += 1;
                    }
                    match conn.as_mut() {
                        Some(c) => c.exchange(&target.request).await,
                        None => unreachable!("connected above"),
                    }
                })
                .await
                .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")));
                let latency = began.elapsed();
                match result {
                    Ok((status, keep)) => {
                        if counted {
                            stats.borrow_mut().answered(status, latency);
                        }
                        if !keep {
                            conn = None;
                        }
                    }
                    Err(error) => {
                        conn = None;
                        if counted {
                            stats.borrow_mut().failed(&error);
                        }
                        // A refused connection must not turn the loop into a spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await.map_err(io::Error::other)?;
    }
    let opened = *opened.borrow();
    let stats = Rc::try_unwrap(stats)
        .map_err(|_| io::Error::other("a worker outlived the run"))?
        .into_inner();
    Ok(stats.report("closed", start, opened))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let target = match target(&args) {
        Ok(target) => Rc::new(target),
        Err(error) => {
            eprintln!("loadgen: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the runtime");
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, async {
        if args.rate > 0 {
            open_loop(&args, target).await
        } else {
            closed_loop(&args, target).await
        }
    });
    match report {
        Ok(report) => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadgen: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_with_a_length() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n";
        assert_eq!(complete(head).unwrap(), None);
        assert_eq!(complete(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap(), None);
        let mut whole = head.to_vec();
        whole.extend_from_slice(b"abcd");
        assert_eq!(complete(&whole).unwrap(), Some((200, true)));
        assert_eq!(
            complete(b"HTTP/1.1 503 x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap(),
            Some((503, false))
        );
        assert_eq!(
            complete(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap(),
            Some((200, false))
        );
    }

    #[test]
    fn chunked_answers() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (body, done) in [
            ("", false),
            ("4\r\nabcd\r\n", false),
            ("4\r\nabcd\r\n0\r\n", false),
            ("4\r\nabcd\r\n0\r\n\r\n", true),
            ("4;x=y\r\nabcd\r\n2\r\nef\r\n0\r\nT: 1\r\n\r\n", true),
            ("4\r\nab", false),
        ] {
            let answer = format!("{head}{body}");
            assert_eq!(
                complete(answer.as_bytes()).unwrap().is_some(),
                done,
                "{body:?}"
            );
        }
    }

    #[test]
    fn requests_are_prepared_once() {
        let args = Args::parse_from([
            "loadgen",
            "--url",
            "http://127.0.0.1:8080/predict",
            "--header",
            "Content-Type: application/json",
        ]);
        let target = target(&args).unwrap();
        assert_eq!(
            std::str::from_utf8(&target.request).unwrap(),
            "POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn poisson_gaps_average_one_over_the_rate_and_vary() {
        let mut schedule = Schedule::new(Arrivals::Poisson, 1000, 7);
        let offsets: Vec<Duration> = (0..100_000).map(|_| schedule.next()).collect();
        let mean_ms = offsets.last().unwrap().as_secs_f64() * 1e3 / offsets.len() as f64;
        assert!((mean_ms - 1.0).abs() < 0.02, "mean gap {mean_ms} ms");
        // An exponential distribution: about e^-1 of the gaps exceed the mean.
        let long = offsets
            .windows(2)
            .filter(|w| w[1] - w[0] > Duration::from_millis(1))
            .count();
        let share = long as f64 / offsets.len() as f64;
        assert!(
            (share - (-1f64).exp()).abs() < 0.01,
            "share of long gaps {share}"
        );
        // The same seed, the same schedule.
        let mut again = Schedule::new(Arrivals::Poisson, 1000, 7);
        assert_eq!(again.next(), offsets[0]);
    }

    #[test]
    fn uniform_gaps_are_exact() {
        let mut schedule = Schedule::new(Arrivals::Uniform, 1000, 7);
        assert_eq!(schedule.next(), Duration::from_millis(1));
        assert_eq!(schedule.next(), Duration::from_millis(2));
    }
}
