//! Polling with a deadline: the only way tests wait for the cluster.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`wait_for`] polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Calls `f` every 200 ms until it returns `Ok(Some(value))`, and returns that value.
///
/// `Ok(None)` means "not yet"; `Err(_)` is remembered and polling goes on (an API call
/// can fail while the cluster settles). When `timeout` passes, panics with `what`, the
/// time waited and the last error or "still None".
///
/// ```no_run
/// # async fn f(pods: kube::Api<k8s_openapi::api::core::v1::Pod>) {
/// use std::time::Duration;
/// let phase = modelship_e2e::wait_for("pod web-0 running", Duration::from_secs(30), || async {
///     let pod = pods.get("web-0").await?;
///     let phase = pod.status.and_then(|s| s.phase);
///     Ok(phase.filter(|p| p == "Running"))
/// })
/// .await;
/// # }
/// ```
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    wait_for_interval(what, timeout, POLL_INTERVAL, f).await
}

/// [`wait_for`] with another polling interval.
pub async fn wait_for_interval<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut f: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        let last: Box<dyn Display> = match f().await {
            Ok(Some(value)) => return value,
            Ok(None) => Box::new("still None"),
            Err(e) => Box::new(format!("error: {e:#}")),
        };
        if start.elapsed() >= timeout {
            panic!(
                "timed out waiting for {what} after {:.1} s (timeout {:?}); last poll: {last}",
                start.elapsed().as_secs_f64(),
                timeout
            );
        }
        tokio::time::sleep(interval).await;
    }
}
