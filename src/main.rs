use clap::{Parser, Subcommand};
use modelship::{api, mirror, operator, telemetry};

/// modelship: CI/CD for machine-learning models on Kubernetes.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "MODELSHIP_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    log_format: telemetry::LogFormat,
    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long, env = "MODELSHIP_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator: the ModelDeployment and ModelPipeline controllers.
    Run(operator::RunArgs),
    /// Print the CustomResourceDefinitions (the content of `crds/`).
    Crd,
    /// Run the mirroring router that sits in front of a model's stable and shadow tracks.
    Mirror(mirror::MirrorArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Both kube and the Prometheus client use rustls; name the one crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    telemetry::init(cli.log_format, &cli.log);
    let result = match cli.command {
        Command::Run(args) => operator::run(args, shutdown_signal()).await,
        Command::Crd => {
            print!("{}", api::crds_yaml());
            Ok(())
        }
        Command::Mirror(args) => mirror::run(args, shutdown_signal()).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "exiting");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
