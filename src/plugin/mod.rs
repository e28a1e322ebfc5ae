//! `kubectl modelship`: the kubectl plugin. The command line (`cli`), pure renderers
//! (`render`), annotation decisions (`annotate`) and the settle rule of `status` (`settle`)
//! are plain functions of the objects read; `client` is the only part that talks to the API.
pub mod annotate;
pub mod cli;
pub mod client;
pub mod complete;
pub mod error;
pub mod render;
pub mod settle;
pub mod view;

#[cfg(test)]
mod testdata;

use crate::api::{ModelDeployment, ModelPipeline};
use annotate::AnnotationPatch;
use clap::CommandFactory;
use cli::{Cli, Command, Get, GetArgs, Output, exit};
use error::PluginError;
use futures::{Stream, StreamExt};
use jiff::Timestamp;
use kube::{Api, Client};
use render::Style;
use settle::Settlement;
use std::io::{IsTerminal, Write};
use std::pin::Pin;
use std::time::Duration;

/// Longest wait between redraws of `--watch`: ages and durations move without events.
const REDRAW_EVERY: Duration = Duration::from_secs(5);

/// The binary's name; kubectl finds plugins by it.
pub const BIN: &str = "kubectl-modelship";

/// Runs one command; the process's exit code.
pub async fn run(cli: Cli) -> u8 {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}

async fn dispatch(cli: Cli) -> Result<u8, PluginError> {
    if let Command::Completion { shell } = cli.command {
        // Completes the binary by its own name: `kubectl modelship` is not one word to a shell.
        let mut cmd = Cli::command().bin_name(BIN);
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, BIN, &mut script);
        out(&String::from_utf8_lossy(&script))?;
        return Ok(exit::OK);
    }
    let (client, ns) = client::connect(cli.namespace, cli.context).await?;
    let md_api = Api::<ModelDeployment>::namespaced(client.clone(), &ns);
    let mp_api = Api::<ModelPipeline>::namespaced(client.clone(), &ns);
    // Values of act-once annotations must differ from the last handled one.
    let token = Timestamp::now().as_second().to_string();
    let patch = match cli.command {
        // Answered above, before a kubeconfig is needed.
        Command::Completion { .. } => return Ok(exit::OK),
        Command::Get(Get::Deployment(args)) => {
            get_deployment(&client, &ns, args).await?;
            return Ok(exit::OK);
        }
        Command::Get(Get::Pipeline(args)) => {
            get_pipeline(&client, &ns, args).await?;
            return Ok(exit::OK);
        }
        Command::History(args) if args.pipeline => {
            let mp = client::get(&mp_api, &ns, &args.name).await?;
            match args.output {
                Some(format) => {
                    let runs = mp.status.map(|s| s.runs).unwrap_or_default();
                    print_data(&runs, format)?
                }
                None => {
                    out(&render::history::render_runs(
                        &mp,
                        Timestamp::now(),
                        Style::detect(),
                    ))?;
                }
            }
            return Ok(exit::OK);
        }
        Command::History(args) => {
            let md = client::get(&md_api, &ns, &args.name).await?;
            match args.output {
                Some(format) => {
                    let history = md.status.map(|s| s.history).unwrap_or_default();
                    print_data(&history, format)?
                }
                None => {
                    out(&render::history::render(
                        &md,
                        Timestamp::now(),
                        Style::detect(),
                    ))?;
                }
            }
            return Ok(exit::OK);
        }
        Command::Status(args) => return status(&client, &ns, &args.name, args.timeout).await,
        Command::Approve(a) => {
            let decide = |md: &ModelDeployment| annotate::approve(md, &a.version);
            client::annotate(&md_api, &ns, &a.name, decide).await?
        }
        Command::Promote(a) => client::annotate(&md_api, &ns, &a.name, annotate::promote).await?,
        Command::Abort(a) => {
            let decide = |md: &ModelDeployment| annotate::abort(md, a.version.as_deref(), &token);
            client::annotate(&md_api, &ns, &a.name, decide).await?
        }
        Command::Retry(a) => {
            let decide = |md: &ModelDeployment| annotate::retry(md, a.version.as_deref(), &token);
            client::annotate(&md_api, &ns, &a.name, decide).await?
        }
        Command::Run(a) => {
            let token = a.token.unwrap_or_else(|| format!("plugin-{token}"));
            let decide = |mp: &ModelPipeline| annotate::run(mp, &token);
            client::annotate(&mp_api, &ns, &a.name, decide).await?
        }
        Command::ApproveRun(a) => {
            let decide = |mp: &ModelPipeline| annotate::approve_run(mp, a.run.as_deref());
            client::annotate(&mp_api, &ns, &a.name, decide).await?
        }
        Command::RejectRun(a) => {
            let decide = |mp: &ModelPipeline| annotate::reject_run(mp, a.run.as_deref());
            client::annotate(&mp_api, &ns, &a.name, decide).await?
        }
    };
    report_patch(&patch)?;
    Ok(exit::OK)
}

fn report_patch(p: &AnnotationPatch) -> Result<(), PluginError> {
    out(&format!("annotated {}={}: {}\n", p.key, p.value, p.effect))?;
    Ok(())
}

/// Writes `text` to stdout; `false` when the reader went away (`| head`), which ends the
/// output quietly instead of failing (or, with `print!`, panicking).
fn out(text: &str) -> Result<bool, PluginError> {
    write_out(&mut std::io::stdout().lock(), text)
}

fn write_out(w: &mut impl Write, text: &str) -> Result<bool, PluginError> {
    match w.write_all(text.as_bytes()).and_then(|()| w.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn print_data(value: &impl serde::Serialize, format: Output) -> Result<(), PluginError> {
    let text = match format {
        Output::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| PluginError::Output(e.to_string()))?,
        Output::Yaml => {
            serde_yaml_ng::to_string(value).map_err(|e| PluginError::Output(e.to_string()))?
        }
    };
    out(&text)?;
    Ok(())
}

async fn get_deployment(client: &Client, ns: &str, args: GetArgs) -> Result<(), PluginError> {
    let style = Style::detect();
    if let Some(format) = args.output {
        return print_data(
            &client::deployment_view(client, ns, &args.name).await?,
            format,
        );
    }
    let draw = || async {
        let view = client::deployment_view(client, ns, &args.name).await?;
        Ok(render::deployment::render(&view, Timestamp::now(), style))
    };
    if !args.watch {
        out(&draw().await?)?;
        return Ok(());
    }
    watch(client::deployment_changes(client, ns, &args.name), draw).await
}

async fn get_pipeline(client: &Client, ns: &str, args: GetArgs) -> Result<(), PluginError> {
    let style = Style::detect();
    let api = Api::<ModelPipeline>::namespaced(client.clone(), ns);
    if let Some(format) = args.output {
        return print_data(&client::get(&api, ns, &args.name).await?, format);
    }
    let draw = || async {
        let mp = client::get(&api, ns, &args.name).await?;
        Ok(render::pipeline::render(&mp, Timestamp::now(), style))
    };
    if !args.watch {
        out(&draw().await?)?;
        return Ok(());
    }
    watch(client::pipeline_changes(client, ns, &args.name), draw).await
}

/// Redraws on every change (and every few seconds, for ages) until interrupted. A terminal
/// is cleared between frames; a pipe gets each changed frame after the previous one.
async fn watch<F, Fut>(
    mut changes: Pin<Box<dyn Stream<Item = ()> + Send>>,
    draw: F,
) -> Result<(), PluginError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<String, PluginError>>,
{
    let terminal = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let frame = draw().await?;
        if let Some(text) = redraw(&last, &frame, terminal) {
            if !out(&text)? {
                return Ok(());
            }
            last = frame;
        }
        tokio::select! {
            _ = changes.next() => {
                // A burst of events (a rollout) makes one redraw.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ = tokio::time::sleep(REDRAW_EVERY) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// What to write for a new frame of `--watch`: nothing when it did not change; on a
/// terminal, the frame over a cleared screen; on a pipe, the frame after a blank line.
pub fn redraw(last: &str, frame: &str, terminal: bool) -> Option<String> {
    if frame == last {
        return None;
    }
    Some(match (terminal, last.is_empty()) {
        // Home the cursor and clear the screen: the tree is redrawn in place.
        (true, _) => format!("\x1b[H\x1b[2J{frame}"),
        (false, true) => frame.to_string(),
        (false, false) => format!("\n{frame}"),
    })
}

/// `status`: waits for the desired version to settle, printing each new step on stderr.
async fn status(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<u8, PluginError> {
    let api = Api::<ModelDeployment>::namespaced(client.clone(), ns);
    client::get(&api, ns, name).await?;
    // Watch errors are retried with backoff by the watcher; only objects count.
    let updates = client::deployment_updates(client, ns, name).filter_map(|u| async { u.ok() });
    let (code, line) =
        wait_settled(name, updates, timeout, |step| eprintln!("{name}: {step}")).await;
    out(&format!("{line}\n"))?;
    Ok(code)
}

/// Follows `updates` of a ModelDeployment until it settles or `timeout` passes; the exit
/// code and the line that says how it ended. `progress` hears each new pending step.
pub async fn wait_settled(
    name: &str,
    updates: impl Stream<Item = ModelDeployment>,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> (u8, String) {
    let mut updates = std::pin::pin!(updates);
    let mut last = String::new();
    let wait = async {
        while let Some(md) = updates.next().await {
            match settle::settle(&md) {
                Settlement::Stable { version } => {
                    return (exit::STABLE, format!("{name} is stable on {version}"));
                }
                Settlement::Failed { how, why } => {
                    return (how.exit_code(), format!("{name}: {why}"));
                }
                Settlement::Pending(why) if why != last => {
                    progress(&why);
                    last = why;
                }
                Settlement::Pending(_) => {}
            }
        }
        (exit::ERROR, format!("{name}: the watch ended"))
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(done) => done,
        Err(_) => (
            exit::TIMED_OUT,
            format!(
                "{name} did not settle within {}{}",
                humantime::format_duration(timeout),
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {last}")
                }
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::testdata::{assert_golden, deployment_view, now};

    /// What `get deployment --watch` writes to a pipe as the shadow's analysis moves on:
    /// the first tree, the changed one after a blank line, nothing for an unchanged one.
    #[test]
    fn watch_prints_each_changed_tree_once() {
        let mut view = deployment_view();
        let first = render::deployment::render(&view, now(), Style::PLAIN);
        let analysis = view.deployment.status.as_mut().unwrap();
        let analysis = analysis.analysis.as_mut().unwrap();
        analysis.verdict = Some(crate::api::Verdict::Pass);
        analysis.metrics[1].verdict = Some(crate::api::Verdict::Pass);
        analysis.metrics[1].value = Some(0.131);
        analysis.metrics[1].message = None;
        let second = render::deployment::render(&view, now(), Style::PLAIN);
        let mut out = String::new();
        let mut last = String::new();
        for frame in [&first, &first, &second, &second] {
            if let Some(text) = redraw(&last, frame, false) {
                out.push_str(&text);
                last = frame.clone();
            }
        }
        assert_golden("deployment-watch.txt", &out);
    }

    /// Shadowing, then promoting, then stable and ready on fraud-v2: exit 0, each step heard once.
    #[tokio::test]
    async fn status_follows_the_version_until_it_is_stable() {
        use crate::api::{DeploymentPhase, VersionRef};
        let step = |phase, stable: &str, message: &str| {
            let mut md = crate::plugin::testdata::deployment();
            let s = md.status.as_mut().unwrap();
            s.phase = Some(phase);
            s.message = Some(message.into());
            s.stable = Some(VersionRef {
                version: stable.into(),
                ..VersionRef::default()
            });
            md
        };
        let updates = futures::stream::iter([
            step(DeploymentPhase::Shadowing, "fraud-v1", "shadowing"),
            step(DeploymentPhase::Shadowing, "fraud-v1", "shadowing"),
            step(DeploymentPhase::Promoting, "fraud-v2", "promoting"),
            step(DeploymentPhase::Stable, "fraud-v2", "serving fraud-v2"),
        ]);
        let mut heard = Vec::new();
        let (code, line) = wait_settled("fraud", updates, Duration::from_secs(5), |s| {
            heard.push(s.to_string())
        })
        .await;
        assert_eq!(
            (code, line.as_str()),
            (exit::STABLE, "fraud is stable on fraud-v2")
        );
        assert_eq!(heard, ["Shadowing: shadowing", "Promoting: promoting"]);
    }

    #[tokio::test]
    async fn status_gives_up_at_the_timeout_with_the_last_step() {
        let updates = futures::stream::iter([crate::plugin::testdata::deployment()])
            .chain(futures::stream::pending());
        let (code, line) = wait_settled("fraud", updates, Duration::from_millis(50), |_| {}).await;
        assert_eq!(code, exit::TIMED_OUT);
        assert!(
            line.starts_with("fraud did not settle within 50ms: Shadowing"),
            "{line}"
        );
    }

    #[tokio::test]
    async fn status_reports_a_rejection_with_its_code() {
        let mut md = crate::plugin::testdata::deployment();
        md.status.as_mut().unwrap().phase = Some(crate::api::DeploymentPhase::Rejected);
        let (code, _) = wait_settled(
            "fraud",
            futures::stream::iter([md]),
            Duration::from_secs(5),
            |_| {},
        )
        .await;
        assert_eq!(code, exit::REJECTED);
    }

    /// `kubectl modelship history x | head -1`: a closed pipe ends the output, not in an error.
    #[test]
    fn a_reader_that_went_away_ends_the_output_quietly() {
        struct Closed(std::io::ErrorKind);
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(self.0.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let closed = write_out(&mut Closed(std::io::ErrorKind::BrokenPipe), "tree\n");
        assert!(matches!(closed, Ok(false)), "{closed:?}");
        let full = write_out(&mut Closed(std::io::ErrorKind::StorageFull), "tree\n");
        assert!(matches!(full, Err(PluginError::Io(_))), "{full:?}");
        let mut buf = Vec::new();
        assert!(write_out(&mut buf, "tree\n").unwrap());
        assert_eq!(buf, b"tree\n");
    }

    #[test]
    fn watch_on_a_terminal_redraws_in_place() {
        assert_eq!(redraw("", "a\n", true).unwrap(), "\x1b[H\x1b[2Ja\n");
        assert_eq!(redraw("a\n", "a\n", true), None);
    }

    /// The krew manifest names this binary and this crate's version.
    #[test]
    fn the_krew_manifest_matches_the_binary() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/krew/modelship.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let manifest: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(manifest["kind"], "Plugin");
        assert_eq!(manifest["metadata"]["name"], "modelship");
        let version = format!("v{}", env!("CARGO_PKG_VERSION"));
        assert_eq!(manifest["spec"]["version"], version.as_str());
        let platforms = manifest["spec"]["platforms"].as_array().unwrap();
        assert!(!platforms.is_empty());
        for p in platforms {
            assert_eq!(p["bin"], BIN);
            let uri = p["uri"].as_str().unwrap();
            assert!(uri.contains(&format!("/{version}/")), "{uri}");
        }
    }
}
