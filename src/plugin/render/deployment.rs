//! `get deployment`: a ModelDeployment as a tree of its versions, tracks, Deployments, pods,
//! router, current analysis and last events.
use super::{Cell, Color, Node, Style, age, bound, num, table, verdict_color};
use crate::api::{AnalysisStatus, DeploymentPhase, MetricStatus, VersionRef};
use crate::deployment::desired::{LABEL_COMPONENT, LABEL_TRACK, LABEL_VERSION};
use crate::plugin::view::DeploymentView;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt;

/// How many events the tree shows, newest first.
pub const EVENTS_SHOWN: usize = 8;

/// The colour of a phase: settled, on its way, or failed.
pub fn phase_color(phase: Option<DeploymentPhase>) -> Option<Color> {
    match phase? {
        DeploymentPhase::Stable => Some(Color::Good),
        DeploymentPhase::Rejected | DeploymentPhase::RolledBack => Some(Color::Bad),
        _ => Some(Color::Wait),
    }
}

/// What a person can do now, when the deployment waits for one.
fn next_step(md: &crate::api::ModelDeployment) -> Option<String> {
    let status = md.status.as_ref()?;
    let candidate = &status.candidate.as_ref()?.version;
    let name = md.name_any();
    let awaiting = status
        .condition(crate::deployment::status::PROGRESSING)
        .is_some_and(|c| c.reason == "AwaitingApproval");
    match status.phase? {
        DeploymentPhase::Shadowing if awaiting => Some(format!(
            "waiting for approval: kubectl modelship promote {name}"
        )),
        DeploymentPhase::Rejected | DeploymentPhase::RolledBack => Some(format!(
            "to try {candidate} again: kubectl modelship retry {name}"
        )),
        _ => None,
    }
}

/// The whole tree.
pub fn render(view: &DeploymentView, now: Timestamp, style: Style) -> String {
    let md = &view.deployment;
    let status = md.status.clone().unwrap_or_default();
    let phase = status.phase;
    let phase_text = match (phase, status.phase_since) {
        (Some(p), Some(since)) => format!(
            "{} for {}",
            style.paint(phase_color(phase), p.as_str()),
            age(now, Some(since))
        ),
        (Some(p), None) => style.paint(phase_color(phase), p.as_str()),
        (None, _) => "no status yet: the operator has not acted on it".into(),
    };
    let mut root = Node::new(format!(
        "{} {}/{}  {phase_text}",
        style.paint(Some(Color::Bold), "ModelDeployment"),
        md.namespace().unwrap_or_default(),
        md.name_any(),
    ));
    let mut detail = Vec::new();
    if let Some(m) = &status.message {
        detail.push(m.clone());
    }
    let version_row = |label: &str, v: &Option<VersionRef>| -> Option<Vec<Cell>> {
        let v = v.as_ref()?;
        Some(vec![
            Cell::new(label, Some(Color::Dim)),
            Cell::from(v.version.as_str()),
            Cell::from(match v.since {
                Some(_) => format!("since {}", age(now, v.since)),
                None => String::new(),
            }),
            Cell::from(v.artifact.as_str()),
        ])
    };
    let rows: Vec<Vec<Cell>> = [
        version_row("desired", &status.desired),
        version_row("stable", &status.stable),
        version_row("candidate", &status.candidate),
        version_row("previous", &status.previous),
    ]
    .into_iter()
    .flatten()
    .collect();
    // The versions' table has no header: it reads as labelled lines.
    detail.extend(table(style, &["", "", "", ""], &rows).into_iter().skip(1));
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .map(|c| {
            let color = match (c.type_.as_str(), c.status.as_str()) {
                (_, "Unknown") => Some(Color::Wait),
                ("Degraded", "True") | ("Ready" | "MetricsAvailable", "False") => Some(Color::Bad),
                _ => None,
            };
            style.paint(color, &format!("{}={} ({})", c.type_, c.status, c.reason))
        })
        .collect();
    if !conditions.is_empty() {
        detail.push(conditions.join("  "));
    }
    if let Some(hint) = next_step(md) {
        detail.push(style.paint(Some(Color::Bold), &hint));
    }
    root.detail = detail;

    // While a new version bakes, the shadow track runs the previous one as its reference.
    let shadowed = match phase {
        Some(DeploymentPhase::Shadowing) => &status.candidate,
        Some(DeploymentPhase::Promoting | DeploymentPhase::Baking) => &status.previous,
        _ => &None,
    };
    for (track, version) in [("stable", &status.stable), ("shadow", shadowed)] {
        let workloads: Vec<&Deployment> = view
            .workloads
            .iter()
            .filter(|d| d.labels().get(LABEL_TRACK).map(String::as_str) == Some(track))
            .collect();
        // A candidate that is no longer shadowed has no shadow track.
        if workloads.is_empty() && track == "shadow" {
            continue;
        }
        let version = version.as_ref().map(|v| v.version.as_str()).unwrap_or("-");
        let mut node = Node::new(format!(
            "{} {track}  {version}",
            style.paint(Some(Color::Bold), "Track")
        ));
        for d in workloads {
            node.child(workload(view, d, now, style, |p| {
                p.labels().get(LABEL_TRACK).map(String::as_str) == Some(track)
            }));
        }
        root.child(node);
    }
    let routers: Vec<&Deployment> = view
        .workloads
        .iter()
        .filter(|d| d.labels().get(LABEL_COMPONENT).map(String::as_str) == Some("router"))
        .collect();
    if !routers.is_empty() {
        let mut node = Node::new(style.paint(Some(Color::Bold), "Router"));
        for d in routers {
            node.child(workload(view, d, now, style, |p| {
                p.labels().get(LABEL_COMPONENT).map(String::as_str) == Some("router")
            }));
        }
        root.child(node);
    }
    if let Some(analysis) = &status.analysis {
        root.child(analysis_node(analysis, phase, now, style));
    }
    root.child(events_node(&view.events, now, style));
    root.draw()
}

/// A Deployment and the pods of it that `owns` picks.
fn workload(
    view: &DeploymentView,
    d: &Deployment,
    now: Timestamp,
    style: Style,
    owns: impl Fn(&Pod) -> bool,
) -> Node {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let s = d.status.clone().unwrap_or_default();
    let ready = s.ready_replicas.unwrap_or(0);
    let color = if ready >= want {
        Color::Good
    } else {
        Color::Wait
    };
    let mut node = Node::new(format!(
        "Deployment {}  {} ready, {} up to date",
        d.name_any(),
        style.paint(Some(color), &format!("{ready}/{want}")),
        s.updated_replicas.unwrap_or(0)
    ));
    let mut pods: Vec<&Pod> = view.pods.iter().filter(|p| owns(p)).collect();
    pods.sort_by_key(|p| p.name_any());
    for p in pods {
        node.child(Node::new(pod_line(p, now, style)));
    }
    node
}

/// `Pod NAME  STATE  ready 1/1  restarts 0  age 5m`.
fn pod_line(p: &Pod, now: Timestamp, style: Style) -> String {
    let status = p.status.clone().unwrap_or_default();
    let containers = status.container_statuses.unwrap_or_default();
    // A waiting or terminated container says more than the pod's phase.
    let state = containers
        .iter()
        .find_map(|c| {
            let st = c.state.as_ref()?;
            st.waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .or_else(|| st.terminated.as_ref().and_then(|t| t.reason.clone()))
        })
        .or(status.phase)
        .unwrap_or_else(|| "Unknown".into());
    let ready = containers.iter().filter(|c| c.ready).count();
    let restarts: i32 = containers.iter().map(|c| c.restart_count).sum();
    let color = if ready == containers.len() && state == "Running" {
        Color::Good
    } else if state == "Pending" || state == "ContainerCreating" {
        Color::Wait
    } else {
        Color::Bad
    };
    // During a rollout a track's pods run two versions side by side.
    let version = p
        .labels()
        .get(LABEL_VERSION)
        .map(|v| format!("{v}  "))
        .unwrap_or_default();
    format!(
        "Pod {}  {version}{}  ready {ready}/{}  restarts {restarts}  age {}",
        p.name_any(),
        style.paint(Some(color), &state),
        containers.len(),
        age(now, p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
    )
}

/// Each metric's latest measurement, as a table.
pub fn metrics_table(metrics: &[MetricStatus], style: Style) -> Vec<String> {
    let rows: Vec<Vec<Cell>> = metrics
        .iter()
        .map(|m| {
            let verdict = m
                .verdict
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into());
            let samples = match (m.samples, m.min_samples) {
                (s, Some(min)) => format!("{} (min {min})", num(s)),
                (s, None) => num(s),
            };
            let reference = match m.reference_samples {
                Some(n) => format!("{} ({} samples)", num(m.stable_value), num(Some(n))),
                None => num(m.stable_value.or(m.baseline)),
            };
            let p = match (m.p_value, m.max_p_value) {
                (Some(p), Some(max)) => format!("{} (fails <= {})", num(Some(p)), num(Some(max))),
                (Some(p), None) => num(Some(p)),
                _ => "-".into(),
            };
            let mut note = Vec::new();
            if m.dry_run {
                note.push("dry run".to_string());
            }
            if let Some(msg) = &m.message {
                note.push(msg.clone());
            }
            vec![
                Cell::from(m.name.as_str()),
                Cell::from(num(m.value)),
                Cell::from(reference),
                Cell::from(bound(m.min, m.max)),
                Cell::new(verdict, verdict_color(m.verdict)),
                Cell::from(samples),
                Cell::from(format!("{}/{}", m.failures, m.failure_limit)),
                Cell::from(p),
                Cell::from(note.join("; ")),
            ]
        })
        .collect();
    table(
        style,
        &[
            "METRIC",
            "VALUE",
            "REFERENCE",
            "BOUND",
            "VERDICT",
            "SAMPLES",
            "FAILURES/LIMIT",
            "P-VALUE",
            "NOTE",
        ],
        &rows,
    )
}

fn analysis_node(
    a: &AnalysisStatus,
    phase: Option<DeploymentPhase>,
    now: Timestamp,
    style: Style,
) -> Node {
    let judged = match phase {
        Some(DeploymentPhase::Baking | DeploymentPhase::Promoting) => "new stable vs previous",
        _ => "shadow vs stable",
    };
    let verdict = a
        .verdict
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-".into());
    let requests = a
        .requests
        .map(|r| format!(", {} requests", num(Some(r))))
        .unwrap_or_default();
    // Before the window opens there is no start and no measurement to give an age of.
    let when = match (a.started_at, a.last_measured_at) {
        (None, _) => "not started yet".to_string(),
        (Some(_), None) => format!("started {} ago, not measured yet", age(now, a.started_at)),
        (Some(_), Some(_)) => format!(
            "started {} ago, measured {} ago",
            age(now, a.started_at),
            age(now, a.last_measured_at)
        ),
    };
    Node::new(format!(
        "{} ({judged})  {}  {when}{requests}",
        style.paint(Some(Color::Bold), "Analysis"),
        style.paint(verdict_color(a.verdict), &verdict),
    ))
    .with_detail(metrics_table(&a.metrics, style))
}

/// When an event last happened, whichever API wrote it.
fn event_time(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or(e.last_timestamp.as_ref().map(|t| t.0))
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.first_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn events_node(events: &[Event], now: Timestamp, style: Style) -> Node {
    let mut events: Vec<&Event> = events.iter().collect();
    events.sort_by_key(|e| std::cmp::Reverse(event_time(e)));
    let rows: Vec<Vec<Cell>> = events
        .iter()
        .take(EVENTS_SHOWN)
        .map(|e| {
            let type_ = e.type_.clone().unwrap_or_default();
            let color = (type_ == "Warning").then_some(Color::Bad);
            vec![
                Cell::from(age(now, event_time(e))),
                Cell::new(type_, color),
                Cell::from(e.reason.clone().unwrap_or_default()),
                Cell::from(e.message.clone().unwrap_or_default()),
            ]
        })
        .collect();
    let title = style.paint(Some(Color::Bold), "Events");
    if rows.is_empty() {
        return Node::new(format!("{title}  none"));
    }
    Node::new(title).with_detail(table(style, &["AGE", "TYPE", "REASON", "MESSAGE"], &rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DeploymentPhase, VersionRef};
    use crate::plugin::testdata::{assert_golden, deployment_view, now};

    #[test]
    fn a_shadowing_deployment_shows_tracks_router_analysis_and_events() {
        let view = deployment_view();
        assert_golden(
            "deployment-shadowing.txt",
            &render(&view, now(), Style::PLAIN),
        );
    }

    #[test]
    fn an_analysis_not_started_or_not_measured_says_so() {
        let mut a = AnalysisStatus::default();
        let line = |a: &AnalysisStatus| analysis_node(a, None, now(), Style::PLAIN).line;
        assert!(line(&a).ends_with("not started yet"), "{}", line(&a));
        a.started_at = Some(now() - jiff::SignedDuration::from_secs(30));
        assert!(
            line(&a).ends_with("started 30s ago, not measured yet"),
            "{}",
            line(&a)
        );
        a.last_measured_at = Some(now() - jiff::SignedDuration::from_secs(5));
        assert!(
            line(&a).ends_with("started 30s ago, measured 5s ago"),
            "{}",
            line(&a)
        );
    }

    #[test]
    fn a_baking_deployment_shadows_the_previous_version() {
        let mut view = deployment_view();
        for labels in view
            .pods
            .iter_mut()
            .map(|p| p.labels_mut())
            .chain(view.workloads.iter_mut().map(|d| d.labels_mut()))
        {
            if let Some(v) = labels.get_mut(LABEL_VERSION) {
                *v = if v == "fraud-v1" {
                    "fraud-v2"
                } else {
                    "fraud-v1"
                }
                .into();
            }
        }
        let status = view.deployment.status.as_mut().unwrap();
        status.phase = Some(DeploymentPhase::Baking);
        status.message = Some("baking fraud-v2: 12m of 30m".into());
        status.previous = status.stable.clone();
        let progressing = status
            .conditions
            .iter_mut()
            .find(|c| c.type_ == "Progressing");
        progressing.unwrap().reason = "Baking".into();
        status.stable = Some(VersionRef {
            version: "fraud-v2".into(),
            artifact: "s3://models/fraud/v2".into(),
            since: Some("2026-11-26T10:18:00Z".parse().unwrap()),
        });
        assert_golden("deployment-baking.txt", &render(&view, now(), Style::PLAIN));
    }

    #[test]
    fn the_next_step_is_named_when_a_person_is_awaited() {
        let mut view = deployment_view();
        let status = view.deployment.status.as_mut().unwrap();
        let progressing = status
            .conditions
            .iter_mut()
            .find(|c| c.type_ == "Progressing");
        progressing.unwrap().reason = "AwaitingApproval".into();
        let out = render(&view, now(), Style::PLAIN);
        assert!(
            out.contains("│ waiting for approval: kubectl modelship promote fraud\n"),
            "{out}"
        );
        let status = view.deployment.status.as_mut().unwrap();
        status.phase = Some(DeploymentPhase::RolledBack);
        let out = render(&view, now(), Style::PLAIN);
        assert!(
            out.contains("to try fraud-v2 again: kubectl modelship retry fraud"),
            "{out}"
        );
    }

    #[test]
    fn a_new_deployment_renders_before_the_operator_reports() {
        let mut view = deployment_view();
        view.deployment.status = None;
        view.workloads.clear();
        view.pods.clear();
        view.events.clear();
        assert_golden("deployment-new.txt", &render(&view, now(), Style::PLAIN));
    }

    #[test]
    fn colour_marks_the_phase_and_verdicts() {
        let out = render(&deployment_view(), now(), Style { color: true });
        assert!(out.contains("\x1b[33mShadowing\x1b[0m"), "{out}");
        assert!(out.contains("\x1b[32mPass\x1b[0m"));
        assert!(out.contains("\x1b[33mInconclusive\x1b[0m"));
        assert!(out.contains("\x1b[31mWarning\x1b[0m"));
    }
}
