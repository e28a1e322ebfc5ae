//! `kubectl modelship`: see and drive modelship's ModelDeployments and ModelPipelines.
use clap::Parser;
use modelship::plugin::{self, cli::Cli};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // kube's client uses rustls; name the one crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::process::ExitCode::from(plugin::run(cli).await)
}
