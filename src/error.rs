//! The crate's one error type.

/// Everything that can go wrong in modelship.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A short, bounded label for metrics and events (never an object name or a message).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Config(_) => "config",
            Error::Io(_) => "io",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
