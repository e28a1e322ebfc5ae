//! Local processes started by tests (the operator, the router, model servers).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{run_dir, test_name};

/// A spawned local process whose stdout and stderr go to `e2e/.run/<test>-<name>.log`.
///
/// Dropping it stops the process (SIGTERM, then SIGKILL after 5 s). When it is dropped
/// because the test panicked, the last lines of its log are printed to stderr.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Spawns `command` with stdin closed and its output appended to a fresh log file.
    /// Panics when it cannot be started.
    pub fn spawn(name: &str, mut command: Command) -> Process {
        let log = run_dir().join(format!("{}-{name}.log", test_name()));
        let out = File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("cloning a file handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({command:?}): {e}"));
        Process {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(file) = File::open(&self.log) else {
            return String::new();
        };
        let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `Some(exit status)` once the process has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("waiting on a child process")
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Asks the process to stop (SIGTERM), waits up to `grace` for it, then kills it.
    /// Returns its exit status.
    pub fn terminate(&mut self, grace: Duration) -> std::process::ExitStatus {
        if self.try_wait().is_none() {
            // SAFETY: kill(2) with our own child's pid.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + grace;
            while self.try_wait().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
        self.child.wait().expect("waiting on a child process")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(5));
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {} ({}) ---\n{}\n---",
                self.name,
                self.log.display(),
                self.log_tail(40)
            );
        }
    }
}
