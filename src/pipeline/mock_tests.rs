//! Pipeline controller tests against a mock API server: the order and number of requests
//! matter.
use super::data_source::DataSource;
use super::reconcile::Context;
use super::testing::sample;
use crate::api::{ModelPipeline, ModelPipelineStatus};
use crate::caches::{Children, ModelDeployments};
use crate::mock_api::reconcile;
use crate::mock_api::{self, Sent, store, writes};
use k8s_openapi::api::batch::v1::Job;
use kube::{Client, Resource};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn context(client: Client, jobs: Vec<Job>) -> Arc<Context> {
    Arc::new(Context {
        shared: mock_api::shared(client.clone(), "modelship-pipeline"),
        jobs: Children::from_objects(jobs),
        pods: Children::from_objects(vec![]),
        deployments: Children::from_objects(vec![]),
        services: Children::from_objects(vec![]),
        configmaps: store(vec![]),
        data_source: DataSource::new(client),
        model_deployments: ModelDeployments::from_objects(vec![]),
    })
}

fn mock_client(p: &ModelPipeline) -> (Client, Arc<Mutex<Vec<Sent>>>) {
    mock_api::client(serde_json::to_value(p).unwrap(), |_, _| None)
}

async fn run(
    p: &ModelPipeline,
    ctx: Arc<Context>,
) -> crate::Result<kube::runtime::controller::Action> {
    tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(p.clone()), ctx))
        .await
        .expect("reconcile finished")
}

/// The Jobs the operator created, as the API server holds them: with a uid.
fn created_jobs(sent: &[Sent]) -> Vec<Job> {
    sent.iter()
        .filter(|s| s.method == "POST" && s.uri.contains("/jobs"))
        .enumerate()
        .map(|(i, s)| {
            let mut job: Job = serde_json::from_value(s.body.clone()).unwrap();
            job.metadata.uid = Some(format!("job-uid-{i}"));
            job
        })
        .collect()
}

fn last_status(sent: &[Sent]) -> ModelPipelineStatus {
    let s = sent
        .iter()
        .rev()
        .find(|s| s.uri.contains("/status"))
        .expect("a status write");
    serde_json::from_value(s.body["status"].clone()).unwrap()
}

#[tokio::test]
async fn a_new_pipeline_writes_its_status_before_its_first_job_and_nothing_once_converged() {
    let mut p = sample();
    let (client, log) = mock_client(&p);
    run(&p, context(client, vec![])).await.unwrap();
    let sent = log.lock().unwrap().clone();
    let order = writes(&sent);
    assert_eq!(
        order.first().map(String::as_str),
        Some("PATCH /apis/modelship.io/v1alpha1/namespaces/models/modelpipelines/fraud/status"),
        "the decision is committed first: {order:?}"
    );
    let jobs = created_jobs(&sent);
    assert_eq!(jobs.len(), 1, "one Job for the first stage: {order:?}");
    let job = &jobs[0];
    assert!(
        job.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == p.meta().uid.as_ref() && o.controller == Some(true)),
        "the Job is owned by the pipeline"
    );
    let status_patch = &sent
        .iter()
        .find(|s| s.uri.contains("/status"))
        .unwrap()
        .body;
    assert_eq!(
        status_patch["metadata"]["resourceVersion"], "200",
        "the status write is conditional on what was read"
    );

    // The Job exists and runs: woken again (its own status write, a resync, the Job's
    // event), the pipeline costs not a single request.
    p.status = Some(last_status(&sent));
    p.metadata.resource_version = Some("300".into());
    let (client, log) = mock_client(&p);
    run(&p, context(client, jobs)).await.unwrap();
    let sent = log.lock().unwrap().clone();
    assert!(
        sent.is_empty(),
        "a converged pipeline must not be written to: {:?}",
        writes(&sent)
    );
}

#[tokio::test]
async fn a_status_conflict_stops_the_pass_before_any_job_is_created() {
    let p = sample();
    let (client, log) = mock_api::client(serde_json::to_value(&p).unwrap(), |method, path| {
        (method == "PATCH" && path.ends_with("/status")).then(|| {
            let message = "the object has been modified; please apply your changes to the latest version and try again";
            (409, mock_api::failure(409, "Conflict", message))
        })
    });
    let result = run(&p, context(client, vec![])).await;
    assert!(result.is_err(), "a conflict is retried on fresh data");
    let sent = log.lock().unwrap().clone();
    assert_eq!(
        writes(&sent),
        vec!["PATCH /apis/modelship.io/v1alpha1/namespaces/models/modelpipelines/fraud/status"],
        "nothing moves on a decision that was not committed"
    );
}

#[tokio::test]
async fn a_job_the_api_server_refuses_fails_the_run_with_its_reason() {
    let p = sample();
    let (client, log) = mock_api::client(serde_json::to_value(&p).unwrap(), |method, path| {
        (method == "POST" && path.ends_with("/jobs")).then(|| {
            let message = "Job.batch \"fraud-r1-train\" is invalid: spec.template.spec.containers[0].image: Required value";
            (422, mock_api::failure(422, "Invalid", message))
        })
    });
    run(&p, context(client, vec![])).await.unwrap();
    let sent = log.lock().unwrap().clone();
    let jobs = sent
        .iter()
        .filter(|s| s.method == "POST" && s.uri.contains("/jobs"))
        .count();
    assert_eq!(jobs, 1, "one attempt: {:?}", writes(&sent));
    let status = last_status(&sent);
    let run = &status.runs[0];
    assert_eq!(run.phase, crate::api::RunPhase::Failed, "{run:?}");
    let message = run.message.clone().unwrap_or_default();
    assert!(message.contains("Required value"), "{message}");
}

#[tokio::test]
async fn a_job_the_tenants_rbac_refuses_fails_the_run_naming_the_service_account() {
    let mut p = sample();
    p.spec.service_account_name = Some("trainer".into());
    let (client, connect, log) = mock_api::client_and_connect(
        serde_json::to_value(&p).unwrap(),
        |method, path| {
            (method == "POST" && path.ends_with("/jobs")).then(|| {
                let message = "jobs.batch is forbidden: User \"system:serviceaccount:models:trainer\" cannot create resource \"jobs\" in API group \"batch\" in the namespace \"models\"";
                (403, mock_api::failure(403, "Forbidden", message))
            })
        },
    );
    let ctx = Arc::new(Context {
        shared: mock_api::shared(client.clone(), "modelship-pipeline").impersonating(connect),
        jobs: Children::from_objects(vec![]),
        pods: Children::from_objects(vec![]),
        deployments: Children::from_objects(vec![]),
        services: Children::from_objects(vec![]),
        configmaps: store(vec![]),
        data_source: DataSource::new(client),
        model_deployments: ModelDeployments::from_objects(vec![]),
    });
    run(&p, ctx).await.unwrap();
    let sent = log.lock().unwrap().clone();
    let jobs: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.method == "POST" && s.uri.contains("/jobs"))
        .collect();
    assert_eq!(jobs.len(), 1, "one attempt: {:?}", writes(&sent));
    assert_eq!(
        jobs[0].impersonate.as_deref(),
        Some("system:serviceaccount:models:trainer")
    );
    let status = last_status(&sent);
    let run = &status.runs[0];
    assert_eq!(run.phase, crate::api::RunPhase::Failed, "{run:?}");
    let message = run.message.clone().unwrap_or_default();
    assert!(
        message.contains("ServiceAccount models/trainer may not create jobs.batch in models"),
        "{message}"
    );
}
