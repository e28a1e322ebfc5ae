//! The crate's one error type.

/// Everything that can go wrong in modelship.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the Kubernetes API failed; usually transient.
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),

    /// The spec asks for something the schema cannot rule out but the operator cannot do.
    /// Waits for the spec to change.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// The API server rejected an object built from the spec (for example an invalid pod
    /// template). Waits for the spec to change.
    #[error("rejected by the API server: {0}")]
    Rejected(String),

    /// An object of modelship's kinds does not deserialize (see `guarded`). Waits for it to
    /// change.
    #[error("invalid object: {0}")]
    InvalidObject(String),

    /// A child's name is held by an object that this owner did not create: left alone,
    /// reported (a condition and an event naming it) and looked at again later (it may be
    /// a deleted predecessor's child that the garbage collector has not removed yet).
    #[error("not ours: {0}")]
    NotOwned(String),

    /// A write sent as a tenant's ServiceAccount (see `tenancy`) was refused (403): the
    /// message names the ServiceAccount and what it may not do. Reported and looked at again
    /// later (the namespace's RBAC may grant it).
    #[error("forbidden: {0}")]
    Forbidden(String),

    /// Prometheus could not be queried.
    #[error("prometheus: {0}")]
    Prometheus(String),

    /// Leader election failed.
    #[error("leader election: {0}")]
    Lease(String),

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),

    #[error("serialisation: {0}")]
    Serialization(#[from] serde_json::Error),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        match &e {
            // 400 and 422 mean the object itself is wrong: retrying cannot help.
            kube::Error::Api(status) if status.code == 422 || status.code == 400 => {
                Error::Rejected(status.message.clone())
            }
            _ => Error::Kube(e),
        }
    }
}

impl Error {
    /// A short, bounded label for metrics and events (never an object name or a message).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_api",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Rejected(_) => "rejected",
            Error::InvalidObject(_) => "invalid_object",
            Error::NotOwned(_) => "not_owned",
            Error::Forbidden(_) => "forbidden",
            Error::Prometheus(_) => "prometheus",
            Error::Lease(_) => "leader_election",
            Error::Config(_) => "config",
            Error::Io(_) => "io",
            Error::Serialization(_) => "serialization",
        }
    }

    /// Whether only a change of the spec can fix it (so the object waits, without retries).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::InvalidSpec(_) | Error::Rejected(_) | Error::InvalidObject(_)
        )
    }

    /// Whether the error is an update conflict (someone wrote first): retry at once.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
