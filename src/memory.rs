//! Hands memory the operator freed back to the operating system.
//!
//! glibc's allocator keeps freed memory in its arenas for reuse and returns it only from the
//! top of each heap. The operator's caches are long-lived and many small objects, decoded
//! from large transient JSON (every list page, every watch event), so freed pages end up
//! between live ones and the process's RSS stays at its high-water mark: at 1,000
//! ModelDeployments about half of it was free memory the allocator kept. `malloc_trim`
//! releases those pages (with `madvise`), a few milliseconds every few seconds.
use std::time::Duration;

/// How often free pages are released.
const EVERY: Duration = Duration::from_secs(5);

/// Releases free pages every [`EVERY`] until the task is dropped.
pub async fn release_periodically() {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        release();
    }
}

/// Releases the allocator's free pages to the operating system, where glibc is the allocator.
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes the arenas'
    // locks like any malloc call.
    unsafe {
        libc::malloc_trim(0);
    }
}
