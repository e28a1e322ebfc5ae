//! `history`: every finished version of a ModelDeployment with the evidence of its outcome.
use super::deployment::metrics_table;
use super::pipeline::run_node;
use super::{Color, Node, Style, age};
use crate::api::{ModelDeployment, ModelPipeline, Outcome};
use jiff::Timestamp;
use kube::ResourceExt;

fn outcome_color(o: Outcome) -> Color {
    match o {
        Outcome::Promoted => Color::Good,
        Outcome::Rejected | Outcome::RolledBack => Color::Bad,
        Outcome::Superseded | Outcome::Aborted => Color::Wait,
    }
}

/// Newest first, as `status.history` keeps them.
pub fn render(md: &ModelDeployment, now: Timestamp, style: Style) -> String {
    let history = md
        .status
        .as_ref()
        .map(|s| s.history.as_slice())
        .unwrap_or_default();
    let mut root = Node::new(format!(
        "{} {}/{}  {} finished version(s), newest first",
        style.paint(Some(Color::Bold), "History of ModelDeployment"),
        md.namespace().unwrap_or_default(),
        md.name_any(),
        history.len()
    ));
    for h in history {
        let mut detail = vec![
            format!("{}: {}", h.reason, h.message),
            format!("artifact {}", h.artifact),
        ];
        if h.metrics.is_empty() {
            detail.push("no measurements recorded with this decision".into());
        } else {
            detail.extend(metrics_table(&h.metrics, style));
        }
        root.child(
            Node::new(format!(
                "{}  {}  {} ago ({})",
                h.version,
                style.paint(Some(outcome_color(h.outcome)), &format!("{:?}", h.outcome)),
                age(now, Some(h.time)),
                h.time
            ))
            .with_detail(detail),
        );
    }
    root.draw()
}

/// Every run a ModelPipeline keeps, newest first, with its gates.
pub fn render_runs(mp: &ModelPipeline, now: Timestamp, style: Style) -> String {
    let runs = mp
        .status
        .as_ref()
        .map(|s| s.runs.as_slice())
        .unwrap_or_default();
    let mut root = Node::new(format!(
        "{} {}/{}  {} run(s), newest first",
        style.paint(Some(Color::Bold), "History of ModelPipeline"),
        mp.namespace().unwrap_or_default(),
        mp.name_any(),
        runs.len()
    ));
    for run in runs {
        root.child(run_node(run, now, style));
    }
    root.draw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::testdata::{assert_golden, deployment, now, pipeline};

    #[test]
    fn each_outcome_shows_its_reason_and_measurements() {
        assert_golden("history.txt", &render(&deployment(), now(), Style::PLAIN));
    }

    #[test]
    fn a_pipelines_history_is_its_runs_with_their_gates() {
        assert_golden(
            "history-pipeline.txt",
            &render_runs(&pipeline(), now(), Style::PLAIN),
        );
    }
}
