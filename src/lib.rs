//! modelship: CI/CD for machine-learning models on Kubernetes.
pub mod admin;
pub mod analysis;
pub mod api;
pub mod apply;
pub mod backoff;
pub mod caches;
pub mod compact;
pub mod conditions;
pub mod context;
pub mod deployment;
pub mod error;
pub mod events;
pub mod guarded;
pub mod memory;
pub mod metrics;
pub mod mirror;
#[cfg(test)]
pub mod mock_api;
pub mod operator;
pub mod pipeline;
pub mod plugin;
pub mod reconciler;
pub mod scope;
pub mod telemetry;
pub mod tenancy;

pub use error::{Error, Result};
