use super::*;
use crate::api::{Condition, ModelDeploymentStatus};
use crate::plugin::testdata::{deployment, pipeline};
use serde_json::json;

/// The fixture (shadowing fraud-v2, manual promotion) with its status edited.
fn md(edit: impl FnOnce(&mut ModelDeploymentStatus)) -> ModelDeployment {
    let mut md = deployment();
    edit(md.status.as_mut().unwrap());
    md
}

fn awaiting(status: &mut ModelDeploymentStatus) {
    let c: &mut Condition = status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == PROGRESSING)
        .unwrap();
    c.reason = "AwaitingApproval".into();
}

fn refusal<T: std::fmt::Debug>(r: Result<T, Refusal>) -> String {
    r.expect_err("must refuse").0
}

#[test]
fn a_patch_touches_only_annotations_with_the_version_read() {
    let patch = approve(&deployment(), "fraud-v2").unwrap();
    assert_eq!(
        patch.merge_patch(),
        json!({"metadata": {
            "annotations": {"modelship.io/approve": "fraud-v2"},
            "resourceVersion": "1234"
        }})
    );
}

#[test]
fn approve_names_the_candidate_and_says_when_it_is_promoted() {
    let p = approve(&deployment(), "fraud-v2").unwrap();
    assert_eq!((p.key, p.value.as_str()), (ANNOTATION_APPROVE, "fraud-v2"));
    assert!(p.effect.contains("as soon as its analysis passes"));
    let p = approve(&md(awaiting), "fraud-v2").unwrap();
    assert!(p.effect.contains("promoted now"), "{}", p.effect);
}

#[test]
fn approve_refuses_a_version_that_is_not_the_candidate() {
    let why = refusal(approve(&deployment(), "fraud-v3"));
    assert_eq!(
        why,
        "fraud-v3 is not the candidate of fraud: the candidate is fraud-v2"
    );
}

#[test]
fn approve_refuses_without_a_candidate() {
    let why = refusal(approve(
        &md(|s| {
            s.candidate = None;
            s.phase = Some(DeploymentPhase::Stable);
        }),
        "fraud-v2",
    ));
    assert!(
        why.contains("has no candidate: it serves fraud-v1"),
        "{why}"
    );
}

#[test]
fn approve_refuses_under_automatic_promotion() {
    let mut md = deployment();
    md.spec.shadow.promotion = Promotion::Automatic;
    assert!(refusal(approve(&md, "fraud-v2")).contains("promotes automatically"));
}

#[test]
fn approve_refuses_a_promoted_or_failed_candidate_and_a_repeat() {
    let baking = md(|s| s.phase = Some(DeploymentPhase::Baking));
    assert!(refusal(approve(&baking, "fraud-v2")).contains("already promoted"));
    let rejected = md(|s| s.phase = Some(DeploymentPhase::Rejected));
    assert!(refusal(approve(&rejected, "fraud-v2")).contains("retry fraud"));
    let mut again = deployment();
    again
        .annotations_mut()
        .insert(ANNOTATION_APPROVE.into(), "fraud-v2".into());
    assert!(refusal(approve(&again, "fraud-v2")).contains("already approved"));
}

#[test]
fn promote_needs_a_candidate_that_passed_its_analysis() {
    let why = refusal(promote(&deployment()));
    assert!(why.contains("has not passed its analysis yet"), "{why}");
    assert!(why.contains("approve fraud fraud-v2"), "{why}");
    let p = promote(&md(awaiting)).unwrap();
    assert_eq!((p.key, p.value.as_str()), (ANNOTATION_APPROVE, "fraud-v2"));
}

#[test]
fn abort_stops_a_shadow_or_rolls_back_a_bake() {
    let p = abort(&deployment(), None, "t1").unwrap();
    assert_eq!((p.key, p.value.as_str()), (ANNOTATION_ABORT, "fraud-v2"));
    assert!(p.effect.contains("production is not touched"));
    let p = abort(
        &md(|s| s.phase = Some(DeploymentPhase::Baking)),
        Some("fraud-v2"),
        "t1",
    )
    .unwrap();
    assert!(p.effect.contains("rolled back"));
}

#[test]
fn abort_of_an_already_handled_value_gets_a_token() {
    let p = abort(
        &md(|s| s.handled_abort = Some("fraud-v2".into())),
        None,
        "1764150000",
    )
    .unwrap();
    assert_eq!(p.value, "fraud-v2/1764150000");
}

#[test]
fn abort_refuses_another_version_an_ended_try_and_a_pending_request() {
    assert!(refusal(abort(&deployment(), Some("fraud-v1"), "t")).contains("not the candidate"));
    let ended = md(|s| s.phase = Some(DeploymentPhase::Rejected));
    assert!(refusal(abort(&ended, None, "t")).contains("nothing runs to abort"));
    let mut pending = deployment();
    pending
        .annotations_mut()
        .insert(ANNOTATION_ABORT.into(), "fraud-v2".into());
    assert!(refusal(abort(&pending, None, "t")).contains("already requested"));
}

#[test]
fn retry_applies_to_a_rejected_or_rolled_back_candidate() {
    for phase in [DeploymentPhase::Rejected, DeploymentPhase::RolledBack] {
        let p = retry(&md(|s| s.phase = Some(phase)), Some("fraud-v2"), "t").unwrap();
        assert_eq!((p.key, p.value.as_str()), (ANNOTATION_RETRY, "fraud-v2"));
    }
    let again = md(|s| {
        s.phase = Some(DeploymentPhase::Rejected);
        s.handled_retry = Some("fraud-v2".into());
    });
    assert_eq!(retry(&again, None, "7").unwrap().value, "fraud-v2/7");
}

#[test]
fn retry_refuses_a_candidate_still_under_way() {
    let why = refusal(retry(&deployment(), None, "t"));
    assert_eq!(
        why,
        "fraud-v2 is Shadowing, not rejected or rolled back: there is nothing to retry"
    );
}

#[test]
fn run_writes_a_new_token_and_says_whether_it_queues() {
    let p = run(&pipeline(), "plugin-1").unwrap();
    assert_eq!((p.key, p.value.as_str()), (ANNOTATION_RUN, "plugin-1"));
    assert_eq!(p.effect, "run r4 starts");
    let mut busy = pipeline();
    busy.status.as_mut().unwrap().runs[0].phase = RunPhase::Running;
    assert!(run(&busy, "plugin-1").unwrap().effect.contains("queued"));
}

#[test]
fn run_refuses_a_token_already_used() {
    assert!(refusal(run(&pipeline(), "again-1")).contains("already acted on"));
}

#[test]
fn approve_run_picks_the_one_waiting_run() {
    let p = approve_run(&pipeline(), None).unwrap();
    assert_eq!((p.key, p.value.as_str()), (ANNOTATION_APPROVE_RUN, "r3"));
    assert!(p.effect.contains("fraud-v1.3.0-2026-11-26-f4c9a2"));
    assert_eq!(
        p.merge_patch(),
        json!({"metadata": {"annotations": {"modelship.io/approve-run": "r3"}, "resourceVersion": "987"}})
    );
}

#[test]
fn approve_run_uses_a_new_value_when_the_runs_name_was_refused_before() {
    let mut early = pipeline();
    early
        .annotations_mut()
        .insert(ANNOTATION_APPROVE_RUN.into(), "r3".into());
    early.status.as_mut().unwrap().approval = Some(crate::api::HandledApproval {
        value: "r3".into(),
        result: crate::api::ApprovalResult::Refused,
        run: Some("r3".into()),
        version: None,
        artifact: None,
        sha256: None,
        seen_at: "2026-11-26T10:00:00Z".parse().unwrap(),
        acted_at: None,
        message: None,
    });
    let p = approve_run(&early, None).unwrap();
    assert_eq!(p.value, "r3/2");
}

#[test]
fn approve_run_refuses_a_run_that_waits_for_nothing() {
    assert_eq!(
        refusal(approve_run(&pipeline(), Some("r2"))),
        "run r2 is Failed, it waits for no approval"
    );
    assert_eq!(
        refusal(approve_run(&pipeline(), Some("r9"))),
        "fraud has no run r9"
    );
    let mut none = pipeline();
    none.status.as_mut().unwrap().runs[0].phase = RunPhase::Succeeded;
    assert_eq!(
        refusal(approve_run(&none, None)),
        "no run of fraud waits for approval"
    );
}

#[test]
fn approve_run_asks_which_when_several_wait() {
    let mut two = pipeline();
    two.status.as_mut().unwrap().runs[1].phase = RunPhase::WaitingApproval;
    assert!(refusal(approve_run(&two, None)).contains("runs r3, r2 wait"));
    assert_eq!(approve_run(&two, Some("r2")).unwrap().value, "r2");
}

#[test]
fn approve_run_refuses_a_run_already_rejected() {
    let mut mp = pipeline();
    mp.annotations_mut()
        .insert(ANNOTATION_REJECT_RUN.into(), "r3".into());
    assert!(refusal(approve_run(&mp, None)).contains("rejection wins"));
    assert!(refusal(reject_run(&mp, None)).contains("already rejected"));
}

#[test]
fn reject_run_names_the_waiting_run() {
    let p = reject_run(&pipeline(), Some("r3")).unwrap();
    assert_eq!((p.key, p.value.as_str()), (ANNOTATION_REJECT_RUN, "r3"));
    assert!(refusal(reject_run(&pipeline(), Some("r2"))).contains("waits for no approval"));
}
