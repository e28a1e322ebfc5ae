//! The built-in mirroring router (`modelship mirror`).

/// Flags of `modelship mirror`.
#[derive(clap::Args, Debug, Clone)]
pub struct MirrorArgs {}

/// Runs the router until `shutdown` resolves.
pub async fn run(
    _args: MirrorArgs,
    _shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), crate::Error> {
    Ok(())
}
