//! The whole pipeline on loopback: resources created from infra/template.yaml in moto, the real
//! `tokenwatch-lambda` binary under `cargo lambda watch`, each delivery shape driven the way AWS drives it,
//! and what a user looks at read back: metrics, alerts, incident state.

use anyhow::Result;
use serde_json::{Value, json};
use tokenwatch_core::contract;
use tokenwatch_core::contract::metric;
use tokenwatch_core::sample::{DEFAULT_FILE_PERIOD_SECONDS, Sample, SampleSpec};
use tokenwatch_e2e::infra::{Deployment, Template};
use tokenwatch_e2e::lambda::{Invocation, LocalLambda, function_binary, workspace_root};
use tokenwatch_e2e::plumbing::{
    drain_ingest, events_through_rule, logs_event, metric_sum, recent_sample_start,
    scheduled_event, trail_file,
};
use tokenwatch_testkit::Stack;

/// Six hours of sample traffic ending an hour ago: recent enough for CloudWatch, quiet long enough to resolve.
fn sample(seed: u64, records: u64) -> Sample {
    Sample::new(&SampleSpec {
        seed,
        records,
        start: recent_sample_start(),
        file_period: DEFAULT_FILE_PERIOD_SECONDS,
    })
}

struct Setup {
    stack: Stack,
    config: aws_config::SdkConfig,
    template: Template,
    deployment: Deployment,
    lambda: LocalLambda,
}

async fn setup(name: &str, parameters: &[(&str, &str)]) -> Result<Setup> {
    let stack = Stack::start().await?;
    let config = stack.sdk_config().await;
    let template = Template::load(&workspace_root().join("infra/template.yaml"))?;
    let deployment = Deployment::create(&config, &template, name, parameters).await?;
    let mut env = stack.env();
    env.extend(deployment.function_env());
    let lambda = LocalLambda::start(&env).await?;
    Ok(Setup {
        stack,
        config,
        template,
        deployment,
        lambda,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_files_through_sqs_to_metrics_alerts_and_state() -> Result<()> {
    let mut s = setup("s3flow", &[("Source", "s3")]).await?;
    let sample = sample(21, 4000);
    for n in 0..sample.file_count() {
        let file = sample.file(n);
        s.deployment
            .upload(&file.path, trail_file(&file.records)?.0)
            .await?;
    }
    let mapping = s.template.event_source_mapping()?;
    let stats = drain_ingest(&mut s.lambda, &s.deployment, mapping.batch_size).await?;
    assert_eq!(
        stats.messages,
        sample.file_count() as u64,
        "one notification per file"
    );
    assert_eq!(stats.failed, 0, "{:?}", s.lambda.output.lines());

    let manifest = sample.manifest();
    let ns = contract::DEFAULT_NAMESPACE;
    assert_eq!(
        metric_sum(
            &s.config,
            ns,
            metric::EXPIRED_TOKEN_ERRORS,
            &[("AccountId", "111122223333")]
        )
        .await?,
        manifest.expired_token_errors as f64
    );
    for scenario in &manifest.scenarios {
        assert_eq!(
            metric_sum(
                &s.config,
                ns,
                metric::EXPIRED_TOKEN_ERRORS,
                &[("Principal", &scenario.principal)]
            )
            .await?,
            scenario.failures as f64,
            "{}",
            scenario.name
        );
    }
    assert_eq!(
        metric_sum(&s.config, ns, metric::RECORDS_SCANNED, &[("Source", "s3")]).await?,
        (manifest.records + manifest.duplicate_records) as f64
    );
    let alerts = s.deployment.alerts().await?;
    let mut paged: Vec<String> = alerts
        .iter()
        .filter_map(|a| a["alert"]["access_key_id"].as_str().map(str::to_owned))
        .collect();
    paged.sort();
    let mut expected: Vec<String> = manifest
        .scenarios
        .iter()
        .filter(|x| x.caching)
        .map(|x| x.access_key_id.clone())
        .collect();
    expected.sort();
    assert_eq!(
        paged, expected,
        "one alert per caching process, none for the SDK that refreshes"
    );
    for alert in &alerts {
        let scenario = manifest
            .scenarios
            .iter()
            .find(|x| Some(x.access_key_id.as_str()) == alert["alert"]["access_key_id"].as_str());
        assert_eq!(
            alert["alert"]["likely_cause"].as_str(),
            scenario.map(|x| x.likely_cause.as_str())
        );
    }

    // The same files delivered again (S3 and SQS are at-least-once): no new counts, nobody paged twice.
    for n in 0..3 {
        let file = sample.file(n);
        s.deployment
            .upload(&file.path, trail_file(&file.records)?.0)
            .await?;
    }
    drain_ingest(&mut s.lambda, &s.deployment, mapping.batch_size).await?;
    assert_eq!(
        metric_sum(
            &s.config,
            ns,
            metric::EXPIRED_TOKEN_ERRORS,
            &[("AccountId", "111122223333")]
        )
        .await?,
        manifest.expired_token_errors as f64
    );
    assert!(s.deployment.alerts().await?.is_empty());

    // The schedule: every incident's last failure is over half an hour old, so each resolves, once.
    s.lambda.invoke(&scheduled_event()).await?.ok()?;
    let resolved = s.deployment.alerts().await?;
    assert_eq!(resolved.len(), expected.len());
    assert!(resolved.iter().all(|a| a["alert"]["kind"] == "resolved"));
    s.lambda.invoke(&scheduled_event()).await?.ok()?;
    assert!(s.deployment.alerts().await?.is_empty());
    drop(s.stack);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_events_filtered_by_the_rule_and_a_logs_subscription() -> Result<()> {
    let mut s = setup("ebflow", &[]).await?;
    let sample = sample(22, 200);
    let records: Vec<Value> = (0..sample.file_count())
        .flat_map(|n| sample.file(n).records)
        .collect();
    let pattern = s.template.event_pattern()?;
    let events = events_through_rule(&pattern, &records);
    let manifest = sample.manifest();
    let related: u64 = manifest.related_errors.values().sum();
    assert_eq!(
        events.len() as u64,
        manifest.expired_token_errors + manifest.duplicate_records + related,
        "the rule passes expired-token and related errors, nothing else"
    );
    // The SSO user's session and the instance-profile cache: one invocation per event, as EventBridge does.
    let chosen: Vec<&tokenwatch_core::sample::ScenarioSummary> = manifest
        .scenarios
        .iter()
        .filter(|x| x.name == "sso-session-lapsed" || x.name == "get-session-token-window")
        .collect();
    let delivered: Vec<&Value> = events
        .iter()
        .filter(|e| {
            chosen
                .iter()
                .any(|x| e["detail"]["userIdentity"]["accessKeyId"] == x.access_key_id.as_str())
        })
        .collect();
    for event in &delivered {
        s.lambda.invoke(event).await?.ok()?;
    }
    let ns = contract::DEFAULT_NAMESPACE;
    assert_eq!(
        metric_sum(
            &s.config,
            ns,
            metric::RECORDS_SCANNED,
            &[("Source", "eventbridge")]
        )
        .await?,
        delivered.len() as f64
    );
    let expected: u64 = chosen.iter().map(|x| x.failures).sum();
    assert_eq!(
        metric_sum(
            &s.config,
            ns,
            metric::EXPIRED_TOKEN_ERRORS,
            &[("AccountId", "111122223333")]
        )
        .await?,
        expected as f64,
        "duplicate deliveries among them counted once"
    );
    assert_eq!(s.deployment.alerts().await?.len(), chosen.len());

    // A CloudWatch Logs subscription delivering the same failures again counts nothing twice.
    let failures: Vec<Value> = delivered
        .iter()
        .take(40)
        .map(|e| e["detail"].clone())
        .collect();
    let logs = logs_event("aws-cloudtrail-logs", &failures)?;
    s.lambda.invoke(&logs).await?.ok()?;
    assert_eq!(
        metric_sum(
            &s.config,
            ns,
            metric::RECORDS_SCANNED,
            &[("Source", "cloudwatch_logs")]
        )
        .await?,
        failures.len() as f64
    );
    assert_eq!(
        metric_sum(
            &s.config,
            ns,
            metric::EXPIRED_TOKEN_ERRORS,
            &[("AccountId", "111122223333")]
        )
        .await?,
        expected as f64
    );

    // A payload of no known shape is logged and counted, not silently dropped.
    assert_eq!(
        s.lambda.invoke(&json!({"surprise": true})).await?,
        Invocation::Ok(json!({}))
    );
    assert_eq!(
        metric_sum(
            &s.config,
            ns,
            metric::MALFORMED_RECORDS,
            &[("Source", "unrecognized")]
        )
        .await?,
        1.0
    );
    assert!(
        s.lambda
            .output
            .lines()
            .iter()
            .any(|l| l.contains("payload of no known shape"))
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_setting_fails_the_cold_start_naming_the_variable() -> Result<()> {
    let output = tokio::process::Command::new(function_binary()?)
        .env_clear()
        .env(
            "TOKENWATCH_ALERT_TOPIC_ARN",
            "arn:aws:sns:us-east-1:111122223333:oncall",
        )
        .env("TOKENWATCH_STATE_TABLE", "state")
        .env("TOKENWATCH_MIN_FAILURES", "many")
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .output()
        .await?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("TOKENWATCH_MIN_FAILURES") && l.contains("must be a whole number")),
        "{stderr}"
    );
    Ok(())
}
