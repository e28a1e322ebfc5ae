//! `get pipeline`: a ModelPipeline's production version, candidates, and each run with its
//! stages and gates.
use super::{Cell, Color, Node, Style, age, between, num, table, verdict_color};
use crate::api::{Candidate, ModelPipeline, PipelinePhase, Run, RunPhase, StagePhase};
use jiff::Timestamp;
use kube::ResourceExt;

fn run_color(phase: RunPhase) -> Color {
    match phase {
        RunPhase::Succeeded => Color::Good,
        RunPhase::Failed | RunPhase::Rejected => Color::Bad,
        RunPhase::Running | RunPhase::WaitingApproval => Color::Wait,
    }
}

fn stage_color(phase: StagePhase) -> Option<Color> {
    match phase {
        StagePhase::Succeeded => Some(Color::Good),
        StagePhase::Failed => Some(Color::Bad),
        StagePhase::Running | StagePhase::Starting => Some(Color::Wait),
        StagePhase::Pending => Some(Color::Dim),
    }
}

/// The whole tree.
pub fn render(mp: &ModelPipeline, now: Timestamp, style: Style) -> String {
    let status = mp.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or(PipelinePhase::Idle);
    let phase_color = match phase {
        PipelinePhase::Succeeded => Color::Good,
        PipelinePhase::Failed => Color::Bad,
        PipelinePhase::Idle => Color::Dim,
        PipelinePhase::Running | PipelinePhase::WaitingApproval => Color::Wait,
    };
    let mut root = Node::new(format!(
        "{} {}/{}  {}",
        style.paint(Some(Color::Bold), "ModelPipeline"),
        mp.namespace().unwrap_or_default(),
        mp.name_any(),
        style.paint(Some(phase_color), phase.as_str()),
    ));
    let mut detail = Vec::new();
    if let Some(m) = &status.message {
        detail.push(m.clone());
    }
    let candidate_row = |label: &str, c: &Option<Candidate>| -> Option<Vec<Cell>> {
        let c = c.as_ref()?;
        Some(vec![
            Cell::new(label, Some(Color::Dim)),
            Cell::from(c.version.as_str()),
            Cell::from(format!("run {}", c.run)),
            Cell::from(c.artifact.as_str()),
        ])
    };
    let mut rows = Vec::new();
    if let Some(p) = &status.production {
        let from = match (&p.deployment, &p.run) {
            (Some(d), Some(r)) => format!("served by {d}, run {r}"),
            (Some(d), None) => format!("served by {d}"),
            _ => String::new(),
        };
        rows.push(vec![
            Cell::new("production", Some(Color::Dim)),
            Cell::from(p.version.as_str()),
            Cell::from(from),
            Cell::from(p.artifact.as_str()),
        ]);
    }
    rows.extend(candidate_row("latest candidate", &status.latest_candidate));
    rows.extend(candidate_row("latest approved", &status.latest_approved));
    detail.extend(table(style, &["", "", "", ""], &rows).into_iter().skip(1));
    if let Some(t) = &status.last_trigger {
        detail.push(format!(
            "last trigger: {} ({}) {} ago",
            t.reason.as_str(),
            t.detail,
            age(now, Some(t.time))
        ));
    }
    if let Some(q) = &status.queued {
        detail.push(format!(
            "queued: {} ({}), starts when the current run ends",
            q.reason.as_str(),
            q.detail
        ));
    }
    let waiting = status.waiting_for_approval();
    for run in waiting {
        let name = mp.name_any();
        detail.push(style.paint(
            Some(Color::Bold),
            &format!(
                "run {run} waits for approval: kubectl modelship approve-run {name} {run} (or reject-run)"
            ),
        ));
    }
    if let Some(next) = status.next_schedule_time {
        detail.push(format!("next scheduled run at {next}"));
    }
    root.detail = detail;
    if status.runs.is_empty() {
        root.child(Node::new("no runs yet"));
    }
    for run in &status.runs {
        root.child(run_node(run, now, style));
    }
    root.draw()
}

/// A run: its outcome and why, its stages, its gates and its candidate.
pub fn run_node(run: &Run, now: Timestamp, style: Style) -> Node {
    let took = match run.finished_at {
        Some(end) => format!("took {}", between(Some(run.started_at), Some(end))),
        None if run.phase == RunPhase::WaitingApproval => "waiting for approval".into(),
        None => format!("running for {}", age(now, Some(run.started_at))),
    };
    let mut node = Node::new(format!(
        "{} {}  {}  {}  {} ({})  started {} ago, {took}",
        style.paint(Some(Color::Bold), "Run"),
        run.name,
        style.paint(Some(run_color(run.phase)), run.phase.as_str()),
        run.version,
        run.trigger.reason.as_str(),
        run.trigger.detail,
        age(now, Some(run.started_at)),
    ));
    let mut detail = Vec::new();
    if let Some(m) = &run.message {
        let reason = run.reason.as_deref().unwrap_or_default();
        detail.push(format!("{reason}: {m}"));
    }
    let rows: Vec<Vec<Cell>> = run
        .stages
        .iter()
        .map(|s| {
            let took = match (s.started_at, s.finished_at) {
                (Some(_), Some(_)) => between(s.started_at, s.finished_at),
                (Some(_), None) => format!("{} so far", age(now, s.started_at)),
                _ => "-".into(),
            };
            let mut note = Vec::new();
            if let Some(code) = s.exit_code {
                note.push(format!("exit code {code}"));
            }
            if let Some(m) = &s.message {
                note.push(m.clone());
            }
            vec![
                Cell::from(s.name.as_str()),
                Cell::new(format!("{:?}", s.phase), stage_color(s.phase)),
                Cell::from(took),
                Cell::from(s.job.as_str()),
                Cell::from(note.join("; ")),
            ]
        })
        .collect();
    detail.extend(table(
        style,
        &["STAGE", "STATE", "DURATION", "JOB", "NOTE"],
        &rows,
    ));
    if !run.gates.is_empty() {
        let verdict = run
            .verdict
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into());
        detail.push(String::new());
        detail.push(format!(
            "gates: {}",
            style.paint(verdict_color(run.verdict), &verdict)
        ));
        let rows: Vec<Vec<Cell>> = run
            .gates
            .iter()
            .map(|g| {
                let baseline = match &g.baseline_from {
                    Some(from) => format!("{} ({from})", num(g.baseline)),
                    None => num(g.baseline),
                };
                let mut reason = g.reason.clone();
                if g.relative_skipped {
                    reason.push_str("; relative bound skipped: no baseline");
                }
                vec![
                    Cell::from(g.metric.as_str()),
                    Cell::from(format!("{:?}", g.stage)),
                    Cell::from(num(g.value)),
                    Cell::from(baseline),
                    Cell::from(g.bound.as_str()),
                    Cell::new(g.verdict.to_string(), verdict_color(Some(g.verdict))),
                    Cell::from(reason),
                ]
            })
            .collect();
        detail.extend(table(
            style,
            &[
                "METRIC",
                "STAGE",
                "CANDIDATE",
                "BASELINE",
                "BOUND",
                "VERDICT",
                "REASON",
            ],
            &rows,
        ));
    }
    if let Some(c) = &run.candidate {
        detail.push(format!("candidate {} at {}", c.version, c.artifact));
    }
    node.detail = detail;
    node
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::testdata::{assert_golden, now, pipeline};

    #[test]
    fn a_pipeline_shows_production_candidates_runs_stages_and_gates() {
        assert_golden(
            "pipeline-waiting.txt",
            &render(&pipeline(), now(), Style::PLAIN),
        );
    }

    #[test]
    fn a_new_pipeline_says_it_has_no_runs() {
        let mut mp = pipeline();
        mp.status = None;
        assert_golden("pipeline-new.txt", &render(&mp, now(), Style::PLAIN));
    }
}
