//! modelship: CI/CD for machine-learning models on Kubernetes.
pub mod error;
pub mod mirror;
pub mod telemetry;

pub use error::{Error, Result};
