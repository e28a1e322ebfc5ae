//! The analysis judge's own benchmark (`make bench-analysis`; figures in docs/analysis.md).
//!
//! Runs the router (`modelship mirror`) in front of two model servers as local processes,
//! scraped by the local Prometheus (`e2e/prometheus/up`), sends them steady traffic while
//! other processes compete for the CPU, and runs the operator's own judge
//! (`modelship::analysis::measure` and `summarize`) every interval, as the operator does:
//!
//! - A/A: the candidate is identical to stable. Every verdict is false; counts false
//!   rejections (the shadow judged against stable) and false rollbacks (the new stable judged
//!   against the previous version answering copies) over consecutive analyses.
//! - A/B: a known regression is injected into the judged track at a known moment; counts the
//!   analysis intervals until the verdict and which metric named it.
//!
//! Each judge runs twice on the same data: with the current defaults, and with the previous
//! ones (fixed thresholds on point values; the bake judged against a recorded baseline), the
//! baseline the figures are compared with.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use modelship::analysis::prometheus::Prometheus;
use modelship::analysis::verdict::summarize;
use modelship::analysis::{self, Target, defaults};
use modelship::api::{
    AnalysisMetric, AnalysisPhase, AnalysisStatus, MetricStatus, ModelDeployment, RelativeBound,
    Verdict,
};
use modelship_e2e::{Process, binary, free_port, http_client, prom, repo_root, wait_for};
use serde_json::{Value, json};

const NAMESPACE: &str = "bench-analysis";
const NAME: &str = "churn";

fn duration(s: &str) -> Result<Duration, String> {
    modelship::deployment::validate::parse_duration("duration", s)
}

/// Benchmark of the analysis judge: false verdicts on noise, and time to catch regressions.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Client requests per second (every one is mirrored).
    #[arg(long, default_value_t = 600)]
    rate: u32,
    /// Time between two measurements (`spec.analysis.interval`).
    #[arg(long, default_value = "2s", value_parser = duration)]
    interval: Duration,
    /// Range of the rate windows (`spec.analysis.window`).
    #[arg(long, default_value = "6s", value_parser = duration)]
    window: Duration,
    /// A/A analyses per judge.
    #[arg(long, default_value_t = 10)]
    aa_analyses: usize,
    /// Measurements per A/A analysis (a 10-minute shadow measured every 30 s is 20).
    #[arg(long, default_value_t = 30)]
    analysis_length: usize,
    /// A/B trials per regression and phase.
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// Intervals after which an A/B trial counts as missed.
    #[arg(long, default_value_t = 10)]
    max_intervals: usize,
    /// Processes that compete for the CPU in bursts, as a build does.
    #[arg(long, default_value_t = 3)]
    burners: usize,
    /// Experiments to run: aa, error, latency, agreement, shift (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the report (Markdown); default bench/.out/analysis.md.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Burns CPU in random bursts until killed (the benchmark's noise).
    Burn {
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// The model servers' service time and error rate before any regression.
fn base_knobs() -> Value {
    json!({"error_rate": 0.01, "latency_ms": 20.0, "latency_spread": 0.3, "alter_share": 0.0, "score_shift": 0.0})
}

/// A regression injected into the judged track, and the metric that should name it.
struct Regression {
    key: &'static str,
    what: &'static str,
    knobs: Value,
    metric: &'static str,
}

fn regressions() -> Vec<Regression> {
    vec![
        Regression {
            key: "error",
            what: "error rate +2 points (1 % to 3 %)",
            knobs: json!({"error_rate": 0.03}),
            metric: "error-rate",
        },
        Regression {
            key: "latency",
            what: "service time ×1.3 (p99 +30 %)",
            knobs: json!({"latency_ms": 26.0}),
            metric: "latency-p99",
        },
        Regression {
            key: "agreement",
            what: "agreement 5 points below the minimum (0.85 for 0.9)",
            knobs: json!({"alter_share": 0.15}),
            metric: "agreement",
        },
        Regression {
            key: "shift",
            what: "prediction shift (+0.05 on every score)",
            knobs: json!({"score_shift": 0.05}),
            metric: "agreement",
        },
    ]
}

/// The ModelDeployment whose defaults are judged: the built-in router, shadowing on.
fn model_deployment() -> ModelDeployment {
    let spec = json!({
        "model": {"version": "v1", "artifact": "file:///models/churn.json"},
        "template": {"spec": {"containers": [{"name": "server", "image": "model-server"}]}},
    });
    ModelDeployment::new(NAME, serde_json::from_value(spec).expect("a valid spec"))
}

/// The defaults before the judge had significance tests: fixed thresholds on point values.
fn previous_defaults() -> Vec<AnalysisMetric> {
    let mut error = defaults::error_rate();
    error.test = None;
    let mut latency = defaults::error_rate();
    latency.name = "latency-p99".into();
    latency.query = "histogram_quantile(0.99, sum by (le) (rate(modelship_mirror_request_duration_seconds_bucket{namespace=\"{{namespace}}\",deployment=\"{{name}}\",track=\"{{track}}\"}[{{window}}])))".into();
    latency.relative_to_stable = Some(RelativeBound {
        max_increase_percent: Some(50.0),
        max_decrease_percent: None,
        slack: 0.025,
    });
    latency.test = None;
    let mut agreement = defaults::agreement(0.9);
    agreement.test = None;
    let mut metrics = vec![error, latency, agreement];
    for m in &mut metrics {
        m.failure_limit = 1;
    }
    metrics
}

/// Which defaults a judge uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Defaults {
    Current,
    Previous,
}

impl Defaults {
    fn label(self) -> &'static str {
        match self {
            Defaults::Current => "these defaults",
            Defaults::Previous => "previous defaults",
        }
    }
}

/// One judge: a phase, the metrics, and the analysis so far.
struct Judge {
    defaults: Defaults,
    phase: AnalysisPhase,
    metrics: Vec<AnalysisMetric>,
    status: AnalysisStatus,
    measurements: usize,
}

impl Judge {
    fn new(defaults: Defaults, phase: AnalysisPhase) -> Judge {
        let metrics = match defaults {
            Defaults::Current => defaults::effective_metrics(&model_deployment()),
            Defaults::Previous => previous_defaults(),
        };
        Judge {
            defaults,
            phase,
            metrics,
            status: AnalysisStatus::default(),
            measurements: 0,
        }
    }

    /// The judged track, and the live reference (none for the previous bake, which compared
    /// with a value recorded before it started).
    fn tracks(&self) -> (&'static str, Option<&'static str>) {
        match (self.phase, self.defaults) {
            (AnalysisPhase::Shadowing, _) => ("shadow", Some("stable")),
            (AnalysisPhase::Baking, Defaults::Current) => ("stable", Some("shadow")),
            (AnalysisPhase::Baking, Defaults::Previous) => ("stable", None),
        }
    }

    fn target<'a>(&self, window: &'a str) -> Target<'a> {
        let (track, reference) = self.tracks();
        Target {
            name: NAME,
            namespace: NAMESPACE,
            window,
            phase: self.phase,
            track,
            version: "",
            reference: reference.map(|r| (r, "")),
            requests_query: None,
        }
    }

    /// Starts a new analysis; the previous bake first records stable's values, as the
    /// operator did when a version was promoted.
    async fn restart(&mut self, source: &Prometheus, window: &str) {
        self.measurements = 0;
        self.status = AnalysisStatus::default();
        if self.phase == AnalysisPhase::Baking && self.defaults == Defaults::Previous {
            let target = Target {
                reference: None,
                ..self.target(window)
            };
            let recorded = analysis::measure(
                source,
                &self.metrics,
                &target,
                &AnalysisStatus::default(),
                jiff::Timestamp::now(),
            )
            .await;
            self.status.metrics = recorded
                .status
                .metrics
                .into_iter()
                .map(|m| MetricStatus {
                    name: m.name,
                    baseline: m.value,
                    ..MetricStatus::default()
                })
                .collect();
        }
    }

    /// Measures once; returns the metrics named by a failed analysis, if it failed.
    async fn measure(&mut self, source: &Prometheus, window: &str) -> Option<Vec<String>> {
        let target = self.target(window);
        let measured = analysis::measure(
            source,
            &self.metrics,
            &target,
            &self.status,
            jiff::Timestamp::now(),
        )
        .await;
        self.status = measured.status;
        self.measurements += 1;
        let summary = summarize(&self.metrics, &self.status, self.phase);
        summary.failed.map(|_| {
            self.metrics
                .iter()
                .filter(|m| {
                    self.status
                        .metrics
                        .iter()
                        .any(|s| s.name == m.name && s.failures > m.failure_limit)
                })
                .map(|m| m.name.clone())
                .collect()
        })
    }

    fn latest(&self, metric: &str) -> Option<&MetricStatus> {
        self.status.metrics.iter().find(|m| m.name == metric)
    }
}

/// The processes under test.
struct Rig {
    _stable: Process,
    stable_port: u16,
    _shadow: Process,
    shadow_port: u16,
    router: Option<Process>,
    router_port: u16,
    metrics_port: u16,
    _target: prom::Target,
}

fn model_server(name: &str, port: u16, model: &std::path::Path) -> Process {
    let knobs = base_knobs();
    let mut cmd = Command::new(binary("model-server"));
    cmd.args([
        format!("--listen=127.0.0.1:{port}"),
        format!("--model-uri={}", model.display()),
        format!("--model-version={NAME}-{name}"),
        format!("--error-rate={}", knobs["error_rate"]),
        format!("--latency-ms={}", knobs["latency_ms"]),
        format!("--latency-spread={}", knobs["latency_spread"]),
        "--shutdown-delay-ms=0".into(),
        "--log=warn".into(),
    ]);
    Process::spawn(name, cmd)
}

impl Rig {
    async fn start() -> anyhow::Result<Rig> {
        let model = repo_root().join("model-server/models/churn-v1.json");
        let (stable_port, shadow_port) = (free_port(), free_port());
        let stable = model_server("stable", stable_port, &model);
        let shadow = model_server("shadow", shadow_port, &model);
        let (router_port, metrics_port) = (free_port(), free_port());
        let labels = BTreeMap::from([
            ("namespace".to_string(), NAMESPACE.to_string()),
            ("deployment".to_string(), NAME.to_string()),
            ("component".to_string(), "router".to_string()),
        ]);
        let target = prom::register_target(
            "bench-analysis-router",
            &format!("127.0.0.1:{metrics_port}"),
            &labels,
        );
        let mut rig = Rig {
            _stable: stable,
            stable_port,
            _shadow: shadow,
            shadow_port,
            router: None,
            router_port,
            metrics_port,
            _target: target,
        };
        for port in [stable_port, shadow_port] {
            wait_healthy(port).await;
        }
        rig.router(true).await;
        prom::wait_until_scraped(&rig._target, Duration::from_secs(60)).await;
        Ok(rig)
    }

    /// (Re)starts the router, mirroring to the shadow or not. A new router starts with fresh
    /// counters, as a router pod does when a shadow starts.
    async fn router(&mut self, mirror: bool) {
        if let Some(mut old) = self.router.take() {
            old.terminate(Duration::from_secs(10));
        }
        let mut cmd = Command::new(binary("modelship"));
        cmd.args([
            "mirror".to_string(),
            format!("--listen=127.0.0.1:{}", self.router_port),
            format!("--metrics-listen=127.0.0.1:{}", self.metrics_port),
            format!("--stable=http://127.0.0.1:{}", self.stable_port),
            "--shutdown-delay=0s".into(),
            "--shutdown-timeout=1s".into(),
        ]);
        if mirror {
            cmd.args([
                format!("--shadow=http://127.0.0.1:{}", self.shadow_port),
                "--mirror-percent=100".into(),
                "--shadow-timeout=2s".into(),
                "--tolerance=0.01".into(),
                "--compare-pointer=/predictions".into(),
            ]);
        }
        cmd.env("RUST_LOG", "warn");
        self.router = Some(Process::spawn("router", cmd));
        wait_healthy(self.metrics_port).await;
    }

    async fn knobs(&self, port: u16, knobs: &Value) -> anyhow::Result<()> {
        let r = http_client()
            .put(format!("http://127.0.0.1:{port}/admin/knobs"))
            .json(knobs)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("PUT /admin/knobs: {}", r.status());
        }
        Ok(())
    }

    async fn reset(&self) -> anyhow::Result<()> {
        self.knobs(self.stable_port, &base_knobs()).await?;
        self.knobs(self.shadow_port, &base_knobs()).await
    }
}

async fn wait_healthy(port: u16) {
    let http = http_client();
    wait_for(
        &format!("127.0.0.1:{port} to answer"),
        Duration::from_secs(30),
        || {
            let http = http.clone();
            async move {
                let up = http
                    .get(format!("http://127.0.0.1:{port}/metrics"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let health = http
                    .get(format!("http://127.0.0.1:{port}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                Ok((up || health).then_some(()))
            }
        },
    )
    .await;
}

/// Open-loop client traffic at a fixed rate, each request with its own id and features.
fn drive(port: u16, rate: u32) -> (tokio::task::JoinHandle<()>, Arc<AtomicU64>) {
    let sent = Arc::new(AtomicU64::new(0));
    let count = sent.clone();
    let task = tokio::spawn(async move {
        let http = http_client();
        let url = format!("http://127.0.0.1:{port}/predict");
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for n in 0u64.. {
            tick.tick().await;
            let (http, url) = (http.clone(), url.clone());
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let x = n as f64;
                let body = json!({"instances": [[(x * 0.37) % 10.0, (x * 1.3) % 7.0 - 3.0, (x * 0.11) % 4.0]]});
                let _ = http
                    .post(&url)
                    .header("x-request-id", format!("bench-{n}"))
                    .json(&body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
            });
        }
    });
    (task, sent)
}

/// Burns CPU the way a build does: busy and quiet phases of 2–15 s at random; in a busy
/// phase each 100 ms is 60–100 % busy, in a quiet one 0–10 %.
fn burn(seed: u64) -> ! {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut random = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let period = Duration::from_millis(100);
    loop {
        let busy_phase = random() < 0.5;
        let phase = Duration::from_secs_f64(2.0 + 13.0 * random());
        let phase_start = Instant::now();
        while phase_start.elapsed() < phase {
            let duty = if busy_phase {
                0.6 + 0.4 * random()
            } else {
                0.1 * random()
            };
            let busy = period.mul_f64(duty);
            let start = Instant::now();
            let mut spin = 0u64;
            while start.elapsed() < busy {
                spin = std::hint::black_box(spin.wrapping_add(1));
            }
            std::thread::sleep(period - busy);
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Sleeps until `start + k * interval`.
async fn tick(start: tokio::time::Instant, k: usize, interval: Duration) {
    tokio::time::sleep_until(start + interval * k as u32).await;
}

#[derive(Default)]
struct AaResult {
    analyses: usize,
    measurements: usize,
    verdicts: usize,
    /// Failed measurements per metric.
    failed: BTreeMap<String, usize>,
    /// Measurements beyond a bound that the test found could be noise.
    held: BTreeMap<String, usize>,
    /// Measurements beyond a bound by the p-value they had: ≤ 0.01, ≤ 0.001, ≤ 0.0001.
    p_values: BTreeMap<String, [usize; 3]>,
    /// Verdicts with the metrics they named.
    named: Vec<String>,
    /// The judged track's worst excursion from its reference seen per metric: the largest
    /// ratio for latency, the largest difference for error rate, the lowest agreement.
    worst: BTreeMap<String, f64>,
}

/// How far a measurement strayed from its reference, in the metric's own terms.
fn excursion(m: &MetricStatus) -> Option<(f64, bool)> {
    let v = m.value?;
    match m.name.as_str() {
        "latency-p99" => Some((v / m.stable_value?, true)),
        "error-rate" => Some((v - m.stable_value?, true)),
        "agreement" => Some((v, false)),
        _ => None,
    }
}

fn describe(name: &str, x: f64) -> String {
    match name {
        "latency-p99" => format!("p99 ×{x:.2}"),
        "error-rate" => format!("{:+.2} points", x * 100.0),
        "agreement" => format!("agreement {x:.3}"),
        _ => format!("{x}"),
    }
}

async fn run_aa(
    args: &Args,
    source: &Prometheus,
    window: &str,
    report: &mut String,
) -> anyhow::Result<()> {
    let mut judges: Vec<(Judge, AaResult)> = [Defaults::Current, Defaults::Previous]
        .into_iter()
        .flat_map(|d| {
            [AnalysisPhase::Shadowing, AnalysisPhase::Baking]
                .map(|p| (Judge::new(d, p), AaResult::default()))
        })
        .collect();
    eprintln!(
        "A/A: {} analyses of {} measurements per judge ({} s)",
        args.aa_analyses,
        args.analysis_length,
        (args.aa_analyses * args.analysis_length) as u64 * args.interval.as_secs()
    );
    let mut loads = Vec::new();
    for analysis in 0..args.aa_analyses {
        for (judge, result) in &mut judges {
            judge.restart(source, window).await;
            result.analyses += 1;
        }
        let start = tokio::time::Instant::now();
        for k in 1..=args.analysis_length {
            tick(start, k, args.interval).await;
            let rounds = judges.iter_mut().map(|(judge, result)| async move {
                let failed = judge.measure(source, window).await;
                result.measurements += 1;
                for m in &judge.status.metrics {
                    if m.measured_at != judge.status.last_measured_at {
                        continue;
                    }
                    if let Some((x, higher_is_worse)) = excursion(m) {
                        let worst = result.worst.entry(m.name.clone()).or_insert(x);
                        if (higher_is_worse && x > *worst) || (!higher_is_worse && x < *worst) {
                            *worst = x;
                        }
                    }
                    if let Some(p) = m.p_value {
                        let counts = result.p_values.entry(m.name.clone()).or_default();
                        for (i, level) in [1e-2, 1e-3, 1e-4].into_iter().enumerate() {
                            if p <= level {
                                counts[i] += 1;
                            }
                        }
                    }
                    match m.verdict {
                        Some(Verdict::Fail) => {
                            *result.failed.entry(m.name.clone()).or_default() += 1
                        }
                        Some(Verdict::Inconclusive) if m.p_value.is_some() => {
                            *result.held.entry(m.name.clone()).or_default() += 1
                        }
                        _ => {}
                    }
                }
                if let Some(names) = failed {
                    result.verdicts += 1;
                    result.named.push(names.join("+"));
                    // A verdict ends the analysis; the next candidate starts afresh.
                    judge.status = AnalysisStatus::default();
                }
            });
            futures_join_all(rounds).await;
        }
        loads.push(load_average());
        eprintln!(
            "  analysis {}/{} done; load average {}; verdicts so far: {}",
            analysis + 1,
            args.aa_analyses,
            loads.last().unwrap(),
            judges
                .iter()
                .map(|(j, r)| format!("{} {:?} {}", j.defaults.label(), j.phase, r.verdicts))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let windows = (args.aa_analyses * args.analysis_length) as f64 * args.interval.as_secs_f64()
        / args.window.as_secs_f64();
    writeln!(
        report,
        "### A/A: candidate identical to stable\n\n{} analyses of {} measurements per judge ({:.0} windows of {} s); load averages during the run: {}.\n",
        args.aa_analyses,
        args.analysis_length,
        windows,
        args.window.as_secs(),
        loads.join("; ")
    )?;
    writeln!(
        report,
        "| judge | phase | false verdicts | analyses | measurements | failing measurements | beyond a bound, held as noise by the test | beyond a bound with p ≤ 0.01 / 0.001 / 0.0001 | worst excursion seen | verdicts named |\n|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for (judge, r) in &judges {
        let kind = match judge.phase {
            AnalysisPhase::Shadowing => "shadow (false rejection)",
            AnalysisPhase::Baking => "bake (false rollback)",
        };
        let fmt_map = |m: &BTreeMap<String, usize>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let worst: Vec<String> = r.worst.iter().map(|(k, x)| describe(k, *x)).collect();
        writeln!(
            report,
            "| {} | {kind} | **{}** ({:.1} %) | {} | {} | {} | {} | {} | {} | {} |",
            judge.defaults.label(),
            r.verdicts,
            100.0 * r.verdicts as f64 / r.analyses.max(1) as f64,
            r.analyses,
            r.measurements,
            fmt_map(&r.failed),
            if judge.defaults == Defaults::Current {
                fmt_map(&r.held)
            } else {
                "(no test)".into()
            },
            if judge.defaults == Defaults::Current {
                r.p_values
                    .iter()
                    .map(|(k, c)| format!("{k} {}/{}/{}", c[0], c[1], c[2]))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                "(no test)".into()
            },
            worst.join(", "),
            if r.named.is_empty() {
                "—".into()
            } else {
                r.named.join(", ")
            }
        )?;
    }
    writeln!(report)?;
    Ok(())
}

/// Runs futures concurrently (the judges measure in parallel, as separate objects would).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let handles: Vec<F> = futures.collect();
    futures::future::join_all(handles).await;
}

/// One A/B trial's outcome for one judge: intervals until the verdict and the metrics named.
#[derive(Clone, Debug)]
enum Outcome {
    Caught(usize, Vec<String>),
    Missed,
}

/// The regression as the current judge measured it at the end of a trial.
fn measured(judge: &Judge, metric: &str) -> Option<String> {
    let m = judge.latest(metric)?;
    let (x, _) = excursion(m)?;
    Some(describe(metric, x))
}

async fn run_ab(
    args: &Args,
    rig: &mut Rig,
    source: &Prometheus,
    window: &str,
    report: &mut String,
) -> anyhow::Result<()> {
    writeln!(
        report,
        "### A/B: known regressions\n\nEach regression is injected into the judged track at a known moment: the shadow (a candidate that is worse from its first request: the router restarts with fresh counters, as a router pod does when a shadow starts) or the new stable during its bake (the previous version answering copies; the window still holds data from before the onset). Intervals are counted from the onset; a trial without a verdict in {} intervals is missed.\n",
        args.max_intervals
    )?;
    writeln!(
        report,
        "| regression | phase | judge | intervals until the verdict (each trial) | median | metric that named it | as measured |\n|---|---|---|---|---|---|---|"
    )?;
    for regression in regressions() {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == regression.key) {
            continue;
        }
        for phase in [AnalysisPhase::Shadowing, AnalysisPhase::Baking] {
            let mut outcomes: Vec<(Defaults, Vec<Outcome>)> =
                vec![(Defaults::Current, vec![]), (Defaults::Previous, vec![])];
            let mut seen = Vec::new();
            for trial in 0..args.trials {
                rig.reset().await?;
                let judged_port = match phase {
                    AnalysisPhase::Shadowing => {
                        // No shadow track for a whole window: the candidate's series start empty.
                        rig.router(false).await;
                        tokio::time::sleep(args.window + Duration::from_secs(3)).await;
                        rig.shadow_port
                    }
                    AnalysisPhase::Baking => {
                        if rig.router.is_none() {
                            rig.router(true).await;
                        }
                        // A clean window of identical tracks before the onset.
                        tokio::time::sleep(args.window + Duration::from_secs(3)).await;
                        rig.stable_port
                    }
                };
                let mut judges: Vec<Judge> = [Defaults::Current, Defaults::Previous]
                    .map(|d| Judge::new(d, phase))
                    .into_iter()
                    .collect();
                if phase == AnalysisPhase::Baking {
                    for j in &mut judges {
                        j.restart(source, window).await;
                    }
                }
                rig.knobs(judged_port, &regression.knobs).await?;
                if phase == AnalysisPhase::Shadowing {
                    rig.router(true).await;
                }
                let start = tokio::time::Instant::now();
                let mut results: Vec<Option<Outcome>> = vec![None; judges.len()];
                for k in 1..=args.max_intervals {
                    tick(start, k, args.interval).await;
                    let rounds = judges.iter_mut().zip(results.iter_mut()).map(
                        |(judge, result)| async move {
                            if result.is_some() {
                                return;
                            }
                            if let Some(names) = judge.measure(source, window).await {
                                *result = Some(Outcome::Caught(k, names));
                            }
                        },
                    );
                    futures_join_all(rounds).await;
                    if results.iter().all(Option::is_some) {
                        break;
                    }
                }
                let current = judges[0].latest(regression.metric).cloned();
                seen.extend(measured(&judges[0], regression.metric));
                for ((_, list), result) in outcomes.iter_mut().zip(results) {
                    list.push(result.unwrap_or(Outcome::Missed));
                }
                eprintln!(
                    "  {} / {:?} / trial {}: {:?}; {}: {}",
                    regression.key,
                    phase,
                    trial + 1,
                    outcomes
                        .iter()
                        .map(|(_, l)| l.last().cloned())
                        .collect::<Vec<_>>(),
                    regression.metric,
                    current
                        .and_then(|m| m.message)
                        .unwrap_or_else(|| "not measured".into())
                );
            }
            rig.reset().await?;
            for (defaults, list) in &outcomes {
                let mut caught: Vec<usize> = list
                    .iter()
                    .filter_map(|o| match o {
                        Outcome::Caught(k, _) => Some(*k),
                        Outcome::Missed => None,
                    })
                    .collect();
                caught.sort_unstable();
                let each: Vec<String> = list
                    .iter()
                    .map(|o| match o {
                        Outcome::Caught(k, _) => k.to_string(),
                        Outcome::Missed => "missed".into(),
                    })
                    .collect();
                let median = if caught.len() * 2 > list.len() {
                    caught[caught.len() / 2].to_string()
                } else {
                    "missed".into()
                };
                let mut named: Vec<String> = list
                    .iter()
                    .filter_map(|o| match o {
                        Outcome::Caught(_, names) => Some(names.join("+")),
                        Outcome::Missed => None,
                    })
                    .collect();
                named.sort();
                named.dedup();
                writeln!(
                    report,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    regression.what,
                    match phase {
                        AnalysisPhase::Shadowing => "shadow",
                        AnalysisPhase::Baking => "bake",
                    },
                    defaults.label(),
                    each.join(", "),
                    median,
                    if named.is_empty() {
                        "—".into()
                    } else {
                        named.join(", ")
                    },
                    if *defaults == Defaults::Current {
                        seen.join(", ")
                    } else {
                        String::new()
                    }
                )?;
            }
        }
    }
    writeln!(report)?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Sub::Burn { seed }) = args.command {
        burn(seed);
    }
    modelship_e2e::install_crypto_provider();
    if !prom::is_ready().await {
        bail!(
            "Prometheus is not answering at {}: start it with e2e/prometheus/up (make bench-analysis does)",
            prom::url()
        );
    }
    let limits = modelship::analysis::prometheus::Limits {
        timeout: Duration::from_secs(10),
        max_response_bytes: modelship::analysis::prometheus::DEFAULT_MAX_RESPONSE_BYTES,
    };
    let source = Prometheus::new(&prom::url(), limits).map_err(|e| anyhow::anyhow!("{e}"))?;
    let window = format!("{}s", args.window.as_secs().max(1));
    let mut rig = Rig::start()
        .await
        .context("starting the router and model servers")?;
    let (load, sent) = drive(rig.router_port, args.rate);
    let burners: Vec<Process> = (0..args.burners)
        .map(|i| {
            let mut cmd = Command::new(std::env::current_exe().expect("own path"));
            cmd.args(["burn", &format!("--seed={}", i + 1)]);
            Process::spawn(&format!("burner-{i}"), cmd)
        })
        .collect();
    // Fill one window before judging anything.
    tokio::time::sleep(args.window + Duration::from_secs(3)).await;

    let mut report = String::new();
    writeln!(
        report,
        "## The analysis judge's benchmark\n\n{} ({} cores), {} requests/s mirrored at 100 % ({:.0} per track per window), interval {} s, window {} s, {} CPU burners (each in busy and quiet phases of 2–15 s at random, as a build's steps come and go). Model servers: 1 % errors, service time 20 ms × a log-normal factor (σ 0.3, p99 ≈ 38 ms), answers compared on /predictions within 0.01.\n",
        jiff::Zoned::now().strftime("%Y-%m-%d %H:%M"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.rate,
        f64::from(args.rate) * args.window.as_secs_f64(),
        args.interval.as_secs(),
        args.window.as_secs(),
        args.burners,
    )?;
    if args.only.is_empty() || args.only.iter().any(|o| o == "aa") {
        run_aa(&args, &source, &window, &mut report).await?;
    }
    run_ab(&args, &mut rig, &source, &window, &mut report).await?;
    load.abort();
    drop(burners);
    writeln!(
        report,
        "{} requests sent; load average at the end {}.",
        sent.load(Ordering::Relaxed),
        load_average()
    )?;
    println!("{report}");
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| repo_root().join("bench/.out/analysis.md"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("report written to {}", out.display());
    Ok(())
}
