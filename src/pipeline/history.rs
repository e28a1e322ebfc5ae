//! Bounded run history: runs beyond `runHistoryLimit` leave status, and their Jobs go. Pure.
use crate::api::{Run, RunPhase};
use std::collections::BTreeSet;

/// Keeps the newest `limit` runs (status lists them newest first), and any older run that
/// is still running or waiting for approval. Returns the names of the runs dropped.
pub fn trim(runs: &mut Vec<Run>, limit: usize) -> Vec<String> {
    let limit = limit.max(1);
    let mut dropped = Vec::new();
    let mut kept = 0;
    runs.retain(|r| {
        let active = matches!(r.phase, RunPhase::Running | RunPhase::WaitingApproval);
        if kept < limit || active {
            kept += 1;
            true
        } else {
            dropped.push(r.name.clone());
            false
        }
    });
    dropped
}

/// The runs, among those that have Jobs, that status no longer lists: their Jobs are deleted.
pub fn unwanted<'a>(
    runs_with_jobs: impl IntoIterator<Item = &'a str>,
    runs: &[Run],
) -> BTreeSet<String> {
    let kept: BTreeSet<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    runs_with_jobs
        .into_iter()
        .filter(|r| !kept.contains(r))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testing::{run, sample};

    fn runs(phases: &[(&str, RunPhase)]) -> Vec<Run> {
        let p = sample();
        phases
            .iter()
            .map(|(name, phase)| {
                let mut r = run(&p, name);
                r.phase = *phase;
                r
            })
            .collect()
    }

    fn names(runs: &[Run]) -> Vec<&str> {
        runs.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn keeps_the_newest() {
        let mut r = runs(&[
            ("r5", RunPhase::Failed),
            ("r4", RunPhase::Succeeded),
            ("r3", RunPhase::Failed),
            ("r2", RunPhase::Succeeded),
        ]);
        assert_eq!(trim(&mut r, 2), vec!["r3", "r2"]);
        assert_eq!(names(&r), vec!["r5", "r4"]);
        assert!(trim(&mut r, 2).is_empty());
    }

    #[test]
    fn never_drops_a_run_that_is_still_going() {
        let mut r = runs(&[
            ("r5", RunPhase::Running),
            ("r4", RunPhase::WaitingApproval),
            ("r3", RunPhase::Failed),
        ]);
        assert_eq!(trim(&mut r, 1), vec!["r3"]);
        assert_eq!(names(&r), vec!["r5", "r4"]);
    }

    #[test]
    fn a_limit_of_zero_still_keeps_one() {
        let mut r = runs(&[("r2", RunPhase::Failed), ("r1", RunPhase::Failed)]);
        trim(&mut r, 0);
        assert_eq!(names(&r), vec!["r2"]);
    }

    #[test]
    fn jobs_of_runs_no_longer_listed_are_unwanted() {
        let r = runs(&[("r5", RunPhase::Running), ("r4", RunPhase::Failed)]);
        let got = unwanted(["r5", "r3", "r4", "r1"], &r);
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec!["r1", "r3"]);
    }
}
