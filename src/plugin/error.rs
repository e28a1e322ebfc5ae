//! What can stop a plugin command.
use super::annotate::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// No kubeconfig, or the context asked for does not exist.
    #[error("kubeconfig: {0}")]
    Config(String),

    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: String,
        namespace: String,
        name: String,
    },

    /// A request to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// The command does not apply to the object as it stands.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),

    /// The object kept changing between our read and our write.
    #[error("{0} kept changing while the command ran; run it again")]
    Conflict(String),

    #[error("output: {0}")]
    Output(String),

    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
