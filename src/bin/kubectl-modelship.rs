//! `kubectl modelship`: see and drive modelship's ModelDeployments and ModelPipelines.
use clap::Parser;
use modelship::plugin::{self, cli::Cli, complete};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    // kube's client uses rustls; name the one crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    // kubectl's completion asks through a hidden first argument, outside the command line.
    if args.get(1).map(String::as_str) == Some(complete::COMMAND) {
        return std::process::ExitCode::from(complete::run(&args[2..]).await);
    }
    std::process::ExitCode::from(plugin::run(Cli::parse()).await)
}
