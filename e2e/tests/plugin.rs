//! `kubectl modelship` end to end: the built plugin binary, run as a person or a CI job would
//! run it, against the local control plane and the operator (a local process under the chart's
//! ServiceAccount). The ModelDeployment's pods are KWOK's and its one analysis metric is a
//! constant PromQL expression that always passes, so a version waits for approval, is promoted
//! or bakes exactly where the test puts it, without traffic; the pipeline's stage pods are
//! KWOK's too, finishing with the results their annotations carry.
use std::process::Stdio;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use modelship::api::{DeploymentPhase, ModelDeployment, ModelPipeline};
use modelship_e2e::operator::{self, Operator};
use modelship_e2e::{TestNamespace, client, kubectl_modelship, test_namespace, wait_for};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStdout;

const TIMEOUT: Duration = Duration::from_secs(90);
const NAME: &str = "churn";

/// What one run of the plugin did.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `kubectl modelship ARGS -n NS` to the end.
async fn plugin(ns: &str, args: &[&str]) -> Ran {
    let mut cmd = kubectl_modelship();
    cmd.args(args).args(["-n", ns]);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("kubectl modelship {args:?} ran for more than 120 s"))
        .expect("running kubectl-modelship");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the plugin and asserts it exited 0; its stdout.
async fn ok(ns: &str, args: &[&str]) -> String {
    let ran = plugin(ns, args).await;
    assert_eq!(ran.code, 0, "kubectl modelship {args:?}: {ran}");
    ran.stdout
}

/// Runs an annotation command that must refuse: exit 1, `why` in the message, nothing written.
async fn refused(ns: &str, args: &[&str], why: &str) {
    let ran = plugin(ns, args).await;
    assert_eq!(ran.code, 1, "kubectl modelship {args:?}: {ran}");
    assert!(ran.stderr.contains(why), "expected {why:?}: {ran}");
    assert!(ran.stdout.is_empty(), "a refusal writes nothing: {ran}");
}

/// A namespace and the operator for it.
async fn world(prefix: &str) -> (kube::Client, TestNamespace, Operator) {
    let client = client().await;
    let ns = test_namespace(&client, prefix).await;
    let operator = operator::start(ns.name()).await;
    (client, ns, operator)
}

/// A ModelDeployment with manual promotion whose shadows pass their analysis a few seconds
/// after their (KWOK) pods are ready: one metric, `vector(0)` at most 1, no minimum of
/// requests (nothing sends any).
fn model_deployment(version: &str) -> ModelDeployment {
    let spec = json!({
        "model": {"version": version, "artifact": format!("s3://models/churn/{version}/")},
        "replicas": 1,
        "template": {"spec": {"containers": [{"name": "server", "image": "model-server:e2e", "ports": [{"containerPort": 8080}]}]}},
        "shadow": {"minDuration": "2s", "minRequests": 0, "promotion": "Manual"},
        "analysis": {"interval": "1s", "window": "10s", "bakeTime": "2s",
                     "metrics": [{"name": "errors", "query": "vector(0)", "max": 1.0}]},
    });
    ModelDeployment::new(NAME, serde_json::from_value(spec).expect("a valid spec"))
}

async fn set_spec(mds: &Api<ModelDeployment>, spec: Value) {
    mds.patch(
        NAME,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": spec })),
    )
    .await
    .expect("changing the spec");
}

fn set_version(version: &str) -> Value {
    json!({"model": {"version": version, "artifact": format!("s3://models/churn/{version}/")}})
}

/// Waits until the ModelDeployment satisfies `ok`; returns it.
async fn wait_md(
    mds: &Api<ModelDeployment>,
    what: &str,
    ok: impl Fn(&ModelDeployment) -> bool,
) -> ModelDeployment {
    wait_for(what, TIMEOUT, || async {
        let md = mds.get(NAME).await?;
        Ok(ok(&md).then_some(md))
    })
    .await
}

fn phase(md: &ModelDeployment) -> Option<DeploymentPhase> {
    md.status.as_ref().and_then(|s| s.phase)
}

fn candidate(md: &ModelDeployment) -> Option<&str> {
    md.status
        .as_ref()
        .and_then(|s| s.candidate.as_ref())
        .map(|c| c.version.as_str())
}

fn stable(md: &ModelDeployment) -> Option<&str> {
    md.status
        .as_ref()
        .and_then(|s| s.stable.as_ref())
        .map(|c| c.version.as_str())
}

/// Shadowing `version`, which passed its analysis and waits for a person.
async fn wait_awaiting_approval(mds: &Api<ModelDeployment>, version: &str) -> ModelDeployment {
    wait_md(mds, &format!("{version} to wait for approval"), |md| {
        phase(md) == Some(DeploymentPhase::Shadowing)
            && candidate(md) == Some(version)
            && md
                .status
                .as_ref()
                .and_then(|s| s.condition("Progressing"))
                .is_some_and(|c| c.reason == "AwaitingApproval")
    })
    .await
}

fn annotation(md: &ModelDeployment, key: &str) -> Option<String> {
    md.metadata.annotations.as_ref()?.get(key).cloned()
}

/// The life of a version driven only through the plugin: `get deployment` (tree and JSON),
/// `approve`, `promote`, `abort` in a bake and in a shadow, `retry`, `history` and `status`
/// with each of its exit codes.
#[tokio::test]
async fn deployment_commands_drive_a_version_and_status_gates_on_it() {
    let (client, ns, operator) = world("plugin-md").await;
    let n = ns.name().to_string();
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), &n);
    mds.create(&PostParams::default(), &model_deployment("churn-v1"))
        .await
        .expect("creating the ModelDeployment");

    // The first version: status waits for it and exits 0.
    let ran = plugin(&n, &["status", NAME, "--timeout", "60s"]).await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(ran.stdout.trim(), "churn is stable on churn-v1", "{ran}");

    let tree = ok(&n, &["get", "deployment", NAME]).await;
    assert!(
        tree.starts_with(&format!("ModelDeployment {n}/churn  Stable")),
        "{tree}"
    );
    for line in [
        "Track stable  churn-v1",
        "Deployment churn-stable  1/1 ready",
        "Router",
        "Deployment churn-router",
    ] {
        assert!(tree.contains(line), "no {line:?} in\n{tree}");
    }
    assert!(!tree.contains('\x1b'), "no colours on a pipe:\n{tree}");
    let data: Value =
        serde_json::from_str(&ok(&n, &["get", "md", NAME, "-o", "json"]).await).expect("JSON");
    assert_eq!(data["deployment"]["metadata"]["name"], NAME, "{data:#}");
    assert_eq!(data["deployment"]["status"]["phase"], "Stable");
    let workloads: Vec<&str> = data["workloads"]
        .as_array()
        .expect("workloads")
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert!(workloads.contains(&"churn-stable"), "{workloads:?}");

    let missing = plugin(&n, &["get", "deployment", "nothing"]).await;
    assert_eq!(missing.code, 1, "{missing}");
    assert!(
        missing
            .stderr
            .contains(&format!("ModelDeployment {n}/nothing not found")),
        "{missing}"
    );
    // Nothing to approve, promote, abort or retry while only stable runs.
    refused(&n, &["approve", NAME, "churn-v2"], "churn has no candidate").await;
    refused(&n, &["promote", NAME], "churn has no candidate").await;
    refused(&n, &["abort", NAME], "churn has no candidate").await;

    // churn-v2 passes its shadow and waits; the tree shows the shadow and the analysis.
    set_spec(&mds, set_version("churn-v2")).await;
    wait_awaiting_approval(&mds, "churn-v2").await;
    let tree = ok(&n, &["get", "deployment", NAME]).await;
    for line in [
        "Shadowing",
        "Track shadow  churn-v2",
        "Deployment churn-shadow",
        "Analysis (shadow vs stable)  Pass",
        "errors",
        "waiting for approval: kubectl modelship promote churn",
    ] {
        assert!(tree.contains(line), "no {line:?} in\n{tree}");
    }
    // A CI job gating on the version times out while it waits for a person.
    let ran = plugin(&n, &["status", NAME, "--timeout", "2s"]).await;
    assert_eq!(ran.code, 5, "{ran}");
    assert!(
        ran.stdout.starts_with("churn did not settle within 2s"),
        "{ran}"
    );
    // An approval names what was reviewed.
    refused(
        &n,
        &["approve", NAME, "churn-v9"],
        "churn-v9 is not the candidate of churn: the candidate is churn-v2",
    )
    .await;
    assert_eq!(
        annotation(&mds.get(NAME).await.unwrap(), "modelship.io/approve"),
        None
    );
    let out = ok(&n, &["approve", NAME, "churn-v2"]).await;
    assert!(
        out.starts_with("annotated modelship.io/approve=churn-v2"),
        "{out}"
    );
    assert_eq!(
        annotation(&mds.get(NAME).await.unwrap(), "modelship.io/approve").as_deref(),
        Some("churn-v2")
    );
    // The operator acts on it: promoted, baked, stable; status follows it to the end.
    let ran = plugin(&n, &["status", NAME, "--timeout", "60s"]).await;
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(ran.stdout.trim(), "churn is stable on churn-v2", "{ran}");

    // churn-v3, with a long bake: `promote` approves whatever candidate waits, then
    // `abort` during the bake rolls it back, and status says so with its own code.
    set_spec(
        &mds,
        json!({"model": set_version("churn-v3")["model"], "analysis": {"bakeTime": "1h"}}),
    )
    .await;
    wait_awaiting_approval(&mds, "churn-v3").await;
    let out = ok(&n, &["promote", NAME]).await;
    assert!(
        out.starts_with("annotated modelship.io/approve=churn-v3"),
        "{out}"
    );
    wait_md(&mds, "churn-v3 to bake", |md| {
        phase(md) == Some(DeploymentPhase::Baking) && stable(md) == Some("churn-v3")
    })
    .await;
    let out = ok(&n, &["abort", NAME]).await;
    assert!(
        out.starts_with("annotated modelship.io/abort=churn-v3: churn-v3 is rolled back"),
        "{out}"
    );
    let ran = plugin(&n, &["status", NAME, "--timeout", "60s"]).await;
    assert_eq!(ran.code, 4, "rolled back: {ran}");
    assert!(ran.stdout.contains("churn-v3 was aborted"), "{ran}");
    let md = mds.get(NAME).await.unwrap();
    assert_eq!(
        (phase(&md), stable(&md)),
        (Some(DeploymentPhase::RolledBack), Some("churn-v2"))
    );

    // churn-v4: aborted in shadow (Rejected, exit 3), then retried.
    set_spec(&mds, set_version("churn-v4")).await;
    wait_md(&mds, "churn-v4 to shadow", |md| {
        phase(md) == Some(DeploymentPhase::Shadowing) && candidate(md) == Some("churn-v4")
    })
    .await;
    refused(&n, &["retry", NAME], "churn-v4 is Shadowing, not rejected").await;
    refused(
        &n,
        &["abort", NAME, "churn-v3"],
        "churn-v3 is not the candidate of churn: the candidate is churn-v4",
    )
    .await;
    let out = ok(&n, &["abort", NAME, "churn-v4"]).await;
    assert!(
        out.contains("the shadow of churn-v4 stops; production is not touched"),
        "{out}"
    );
    let ran = plugin(&n, &["status", NAME, "--timeout", "60s"]).await;
    assert_eq!(ran.code, 3, "rejected: {ran}");
    assert!(ran.stdout.contains("churn-v4 was aborted"), "{ran}");
    assert_eq!(
        phase(&mds.get(NAME).await.unwrap()),
        Some(DeploymentPhase::Rejected)
    );
    refused(&n, &["abort", NAME], "churn-v4 already ended Rejected").await;

    // The history holds each outcome, newest first.
    let history = ok(&n, &["history", NAME]).await;
    let order: Vec<usize> = [
        "├─ churn-v4  Aborted",
        "churn-v3  Aborted",
        "churn-v2  Promoted",
    ]
    .iter()
    .map(|s| {
        history
            .find(s)
            .unwrap_or_else(|| panic!("no {s:?} in\n{history}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{history}");
    let data: Value = serde_json::from_str(&ok(&n, &["history", NAME, "-o", "json"]).await)
        .expect("JSON history");
    let versions: Vec<&str> = data
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|h| h["version"].as_str())
        .collect();
    assert_eq!(
        versions[..3],
        ["churn-v4", "churn-v3", "churn-v2"],
        "{data:#}"
    );

    // A reader that stops early (`| head`) ends the output quietly, without an error.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let closed = kubectl_modelship()
        .args(["history", NAME, "-n", &n])
        .stdout(writer)
        .output()
        .await
        .expect("running kubectl-modelship");
    assert!(
        closed.status.success() && closed.stderr.is_empty(),
        "history into a closed pipe: {:?} {}",
        closed.status,
        String::from_utf8_lossy(&closed.stderr)
    );

    let out = ok(&n, &["retry", NAME]).await;
    assert!(
        out.starts_with("annotated modelship.io/retry=churn-v4: churn-v4 is shadowed again"),
        "{out}"
    );
    wait_md(&mds, "churn-v4 to shadow again", |md| {
        phase(md) == Some(DeploymentPhase::Shadowing) && candidate(md) == Some("churn-v4")
    })
    .await;
    drop(operator);
    ns.delete().await;
}

/// `get deployment --watch` on a pipe: the first tree, then each changed tree after a blank
/// line, without colours or screen clearing; a new version shows up in a later frame.
#[tokio::test]
async fn get_deployment_watch_prints_a_new_frame_when_the_object_changes() {
    let (client, ns, operator) = world("plugin-watch").await;
    let n = ns.name().to_string();
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), &n);
    mds.create(&PostParams::default(), &model_deployment("churn-v1"))
        .await
        .expect("creating the ModelDeployment");
    wait_md(&mds, "churn-v1 stable", |md| {
        phase(md) == Some(DeploymentPhase::Stable)
    })
    .await;

    let mut child = kubectl_modelship()
        .args(["get", "deployment", NAME, "--watch", "-n", &n])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting kubectl modelship get deployment --watch");
    let mut watch = Watch {
        lines: BufReader::new(child.stdout.take().expect("stdout")).lines(),
        output: Vec::new(),
        header: format!("ModelDeployment {n}/churn  "),
    };
    let header = watch.header.clone();
    let first = watch
        .until("the first frame", |f| {
            f.first()
                .is_some_and(|f| f.iter().any(|l| l.contains("Deployment churn-stable")))
        })
        .await;
    assert!(
        first[0][0].starts_with(&format!("{header}Stable")),
        "{first:?}"
    );

    set_spec(&mds, set_version("churn-v2")).await;
    let frames = watch
        .until("a frame with churn-v2's shadow", |f| {
            f.iter()
                .skip(1)
                .any(|f| f.iter().any(|l| l.contains("Track shadow  churn-v2")))
        })
        .await;
    child.kill().await.expect("stopping the watch");

    let shadow = frames
        .iter()
        .find(|f| f.iter().any(|l| l.contains("Track shadow  churn-v2")))
        .unwrap();
    assert!(
        shadow[0].starts_with(&format!("{header}Shadowing")),
        "{shadow:?}"
    );
    assert!(!frames[0].iter().any(|l| l.contains("Track shadow")));
    // On a pipe, frames follow each other after one blank line; nothing clears the screen.
    let output = &watch.output;
    let text = output.join("\n");
    assert!(!text.contains('\x1b'), "{text}");
    for (i, line) in output.iter().enumerate().skip(1) {
        if line.starts_with(&header) {
            assert_eq!(
                output[i - 1],
                "",
                "no blank line before frame at line {i}:\n{text}"
            );
        }
    }
    for pair in frames.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "an unchanged frame was printed again:\n{text}"
        );
    }
    drop(operator);
    ns.delete().await;
}

/// The output of a running `get deployment --watch`, read line by line.
struct Watch {
    lines: Lines<BufReader<ChildStdout>>,
    output: Vec<String>,
    /// The first line of each frame starts so.
    header: String,
}

impl Watch {
    /// Reads until `done` holds for the frames so far; returns them.
    async fn until(
        &mut self,
        what: &str,
        done: impl Fn(&[Vec<String>]) -> bool,
    ) -> Vec<Vec<String>> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let frames = frames(&self.output, &self.header);
            if done(&frames) {
                return frames;
            }
            let so_far = || self.output.join("\n");
            let line = match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Err(_) => panic!(
                    "{what}: nothing more within {TIMEOUT:?}; so far:\n{}",
                    so_far()
                ),
                Ok(line) => line.expect("reading the watch's output"),
            };
            match line {
                Some(line) => self.output.push(line),
                None => panic!("{what}: the watch ended; so far:\n{}", so_far()),
            }
        }
    }
}

/// Splits the watch's output into frames: each starts at the tree's first line.
fn frames(output: &[String], header: &str) -> Vec<Vec<String>> {
    let mut frames: Vec<Vec<String>> = Vec::new();
    for line in output {
        if line.starts_with(header) {
            frames.push(Vec::new());
        }
        if let Some(frame) = frames.last_mut()
            && !line.is_empty()
        {
            frame.push(line.clone());
        }
    }
    frames
}

/// A stage whose (KWOK) pod succeeds, reporting `result` as its termination message.
fn reporting(result: Value) -> Value {
    json!({"template": {
        "metadata": {"annotations": {"kwok.modelship.io/message": result.to_string()}},
        "spec": {"containers": [{"name": "main", "image": "registry.invalid/modelship-stage:e2e"}]},
    }})
}

/// A pipeline that trains and evaluates, with one gate, and waits for a person to approve.
fn pipeline() -> ModelPipeline {
    let spec = json!({
        "model": {"name": "fraud", "artifactBase": "s3://models/fraud"},
        "source": {"repository": "https://git.example/fraud.git", "revision": "f4c9a2e17b"},
        "data": {"uri": "s3://data/fraud", "version": "2026-11-26"},
        "stages": {
            "train": reporting(json!({"schemaVersion": 1, "metrics": {"loss": 0.12},
                "artifact": {"sha256": "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"},
                "datasetDigest": "sha256:5e1f"})),
            "evaluate": reporting(json!({"schemaVersion": 1, "metrics": {"f1": 0.91},
                "artifact": {"sha256": "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"}})),
        },
        "gates": [{"metric": "f1", "direction": "HigherIsBetter", "min": 0.5}],
        "approval": "Manual",
    });
    ModelPipeline::new(
        "fraud",
        serde_json::from_value(spec).expect("a valid pipeline"),
    )
}

/// The pipeline's status as JSON, once `ok` holds for it.
async fn wait_pipeline(
    pipelines: &Api<ModelPipeline>,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, TIMEOUT, || async {
        let status = serde_json::to_value(pipelines.get("fraud").await?.status)?;
        Ok(ok(&status).then_some(status))
    })
    .await
}

fn run_phase<'a>(status: &'a Value, run: &str) -> Option<&'a str> {
    status["runs"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == run)?["phase"]
        .as_str()
}

/// `get pipeline`, `approve-run`, `reject-run`, `run` and `history --pipeline`, each acted on
/// by the operator, and the refusals of runs that wait for nothing.
#[tokio::test]
async fn pipeline_commands_request_approve_and_reject_runs() {
    let (client, ns, operator) = world("plugin-mp").await;
    let n = ns.name().to_string();
    let pipelines: Api<ModelPipeline> = Api::namespaced(client.clone(), &n);
    pipelines
        .create(&PostParams::default(), &pipeline())
        .await
        .expect("creating the ModelPipeline");
    wait_pipeline(&pipelines, "r1 to wait for approval", |s| {
        run_phase(s, "r1") == Some("WaitingApproval")
    })
    .await;

    let tree = ok(&n, &["get", "pipeline", "fraud"]).await;
    assert!(
        tree.starts_with(&format!("ModelPipeline {n}/fraud  WaitingApproval")),
        "{tree}"
    );
    for line in [
        "Run r1  WaitingApproval",
        "train     Succeeded",
        "evaluate  Succeeded",
        "f1      Evaluate  0.91",
        "approve-run fraud r1",
    ] {
        assert!(tree.contains(line), "no {line:?} in\n{tree}");
    }
    let data: Value =
        serde_json::from_str(&ok(&n, &["get", "mp", "fraud", "-o", "json"]).await).expect("JSON");
    assert_eq!(data["metadata"]["name"], "fraud", "{data:#}");
    assert_eq!(data["status"]["runs"][0]["name"], "r1", "{data:#}");

    refused(&n, &["reject-run", "fraud", "r9"], "fraud has no run r9").await;
    let out = ok(&n, &["approve-run", "fraud"]).await;
    assert!(
        out.starts_with("annotated modelship.io/approve-run=r1"),
        "{out}"
    );
    let status = wait_pipeline(&pipelines, "r1 to succeed", |s| {
        run_phase(s, "r1") == Some("Succeeded")
    })
    .await;
    assert_eq!(status["latestApproved"]["run"], "r1", "{status:#}");
    // Nothing waits any more.
    refused(
        &n,
        &["approve-run", "fraud"],
        "no run of fraud waits for approval",
    )
    .await;
    refused(
        &n,
        &["reject-run", "fraud"],
        "no run of fraud waits for approval",
    )
    .await;
    refused(
        &n,
        &["approve-run", "fraud", "r1"],
        "run r1 is Succeeded, it waits for no approval",
    )
    .await;

    // A requested run starts even with unchanged code and data; it waits, and is rejected.
    let out = ok(&n, &["run", "fraud", "--token", "again-1"]).await;
    assert!(
        out.starts_with("annotated modelship.io/run=again-1: run r2 starts"),
        "{out}"
    );
    let status = wait_pipeline(&pipelines, "r2 to wait for approval", |s| {
        run_phase(s, "r2") == Some("WaitingApproval")
    })
    .await;
    assert_eq!(status["runCount"], 2, "{status:#}");
    refused(
        &n,
        &["run", "fraud", "--token", "again-1"],
        "the run request again-1 was already acted on",
    )
    .await;
    let out = ok(&n, &["reject-run", "fraud"]).await;
    assert!(
        out.starts_with("annotated modelship.io/reject-run=r2"),
        "{out}"
    );
    let status = wait_pipeline(&pipelines, "r2 to be rejected", |s| {
        run_phase(s, "r2") == Some("Rejected")
    })
    .await;
    assert_eq!(status["latestApproved"]["run"], "r1", "{status:#}");

    let history = ok(&n, &["history", "fraud", "--pipeline"]).await;
    for line in ["Run r2  Rejected", "Run r1  Succeeded"] {
        assert!(history.contains(line), "no {line:?} in\n{history}");
    }
    let runs: Value =
        serde_json::from_str(&ok(&n, &["history", "fraud", "--pipeline", "-o", "json"]).await)
            .expect("JSON runs");
    let names: Vec<&str> = runs
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{runs:#}");
    assert!(names.contains(&"r1") && names.contains(&"r2"), "{names:?}");
    drop(operator);
    ns.delete().await;
}
