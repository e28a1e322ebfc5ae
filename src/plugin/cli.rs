//! The command line of `kubectl modelship`.
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::time::Duration;

/// Exit codes of `status`, also shown in its help.
pub mod exit {
    /// The command did what it was asked.
    pub const OK: u8 = 0;
    /// `status`: stable on the desired version.
    pub const STABLE: u8 = 0;
    /// The command could not run: the object is missing, the API is unreachable, or an
    /// annotation command refused.
    pub const ERROR: u8 = 1;
    /// Wrong arguments (clap's own code).
    pub const USAGE: u8 = 2;
    /// The desired version failed in shadow (or its shadow was aborted).
    pub const REJECTED: u8 = 3;
    /// The desired version degraded after promotion and production went back (or its
    /// promotion was aborted).
    pub const ROLLED_BACK: u8 = 4;
    /// The version had not settled when the time ran out.
    pub const TIMED_OUT: u8 = 5;
}

/// Drive and inspect modelship from kubectl: see every decision of a ModelDeployment or a
/// ModelPipeline, approve, promote, abort and retry versions, request and approve runs, and
/// wait for a rollout to settle in CI.
#[derive(Parser, Debug)]
#[command(name = "kubectl-modelship", bin_name = "kubectl modelship", version)]
pub struct Cli {
    /// Namespace of the object; defaults to the namespace of the kubeconfig's current context.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use instead of the current one.
    #[arg(long, global = true)]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show a ModelDeployment or a ModelPipeline as a tree of everything that explains it.
    #[command(subcommand)]
    Get(Get),
    /// Every finished version of a ModelDeployment, newest first, with the measurements each
    /// decision was taken on; with --pipeline, every run of a ModelPipeline with its gates.
    History(HistoryArgs),
    /// Approve the candidate of a ModelDeployment with manual promotion
    /// (annotation modelship.io/approve). VERSION must be the candidate: an approval names
    /// what was reviewed. It is promoted as soon as its analysis passes.
    Approve(ApproveArgs),
    /// Promote the candidate that passed its analysis and waits for approval, whatever its
    /// version (annotation modelship.io/approve=<candidate>).
    Promote(Target),
    /// Stop the shadow or the bake of the current candidate (annotation modelship.io/abort).
    /// A shadow is stopped without touching production; a promoted version is rolled back.
    Abort(VersionArgs),
    /// Try a rejected or rolled-back version again (annotation modelship.io/retry).
    Retry(VersionArgs),
    /// Request a run of a ModelPipeline, even with unchanged code and data
    /// (annotation modelship.io/run).
    Run(RunArgs),
    /// Approve the candidate of a pipeline run that waits for approval
    /// (annotation modelship.io/approve-run); it is published as status.latestApproved.
    ApproveRun(RunRef),
    /// Reject the candidate of a pipeline run that waits for approval
    /// (annotation modelship.io/reject-run); nothing is published.
    RejectRun(RunRef),
    /// Wait until a ModelDeployment settles on its desired version, for CI jobs and GitOps
    /// hooks.
    #[command(after_help = STATUS_EXIT_CODES)]
    Status(StatusArgs),
    /// Print a shell completion script, for example
    /// `kubectl-modelship completion bash > /etc/bash_completion.d/kubectl-modelship`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

const STATUS_EXIT_CODES: &str = "\
Exit codes:
  0  stable on the desired version (phase Stable, Ready)
  1  the command could not run (object missing, API unreachable)
  2  wrong arguments
  3  rejected: the desired version failed in shadow, or its shadow was aborted
  4  rolled back: it degraded after promotion, or its promotion was aborted
  5  timed out before the version settled";

#[derive(Subcommand, Debug)]
pub enum Get {
    /// A ModelDeployment: its versions, tracks, Deployments and pods, router, current
    /// analysis (each metric's value, reference, bound, verdict and samples) and last events.
    #[command(visible_alias = "md", visible_alias = "modeldeployment")]
    Deployment(GetArgs),
    /// A ModelPipeline: production version, candidates, and each run with its stages'
    /// durations and states and its gates table.
    #[command(visible_alias = "mp", visible_alias = "modelpipeline")]
    Pipeline(GetArgs),
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Name of the object.
    pub name: String,
    /// Keep watching and redraw whenever something changes.
    #[arg(short, long, conflicts_with = "output")]
    pub watch: bool,
    /// Print the objects as data instead of the tree.
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Name of the ModelDeployment (or of the ModelPipeline, with --pipeline).
    pub name: String,
    /// NAME is a ModelPipeline: show its runs (as many as spec.runHistoryLimit keeps).
    #[arg(long)]
    pub pipeline: bool,
    /// Print the history as data.
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
}

#[derive(Args, Debug)]
pub struct Target {
    /// Name of the ModelDeployment.
    pub name: String,
}

#[derive(Args, Debug)]
pub struct ApproveArgs {
    /// Name of the ModelDeployment.
    pub name: String,
    /// The candidate version being approved, as `get deployment` shows it.
    pub version: String,
}

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Name of the ModelDeployment.
    pub name: String,
    /// The candidate version; when given, the command refuses if it is not the candidate.
    pub version: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Name of the ModelPipeline.
    pub name: String,
    /// The request token; a token the operator already acted on starts nothing.
    /// Default: a new one from the current time.
    #[arg(long)]
    pub token: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunRef {
    /// Name of the ModelPipeline.
    pub name: String,
    /// The run (for example r7); default: the one run that waits for approval.
    pub run: Option<String>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Name of the ModelDeployment.
    pub name: String,
    /// How long to wait, for example 90s, 10m or 1h.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Data formats.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn status_takes_a_human_timeout() {
        let cli = Cli::try_parse_from(["kubectl-modelship", "status", "fraud", "--timeout", "90s"])
            .unwrap();
        let Command::Status(args) = cli.command else {
            panic!("not status")
        };
        assert_eq!(args.timeout, Duration::from_secs(90));
    }

    #[test]
    fn watch_and_output_exclude_each_other() {
        let r = Cli::try_parse_from([
            "kubectl-modelship",
            "get",
            "md",
            "fraud",
            "-w",
            "-o",
            "json",
        ]);
        assert!(r.is_err());
    }
}
