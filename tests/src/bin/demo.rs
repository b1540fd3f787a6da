//! `make demo`: the whole pipeline on this machine, no AWS account. Local AWS (moto), resources from
//! infra/template.yaml, the real Lambda binary under cargo lambda's runtime emulator, sample CloudTrail logs
//! delivered the ways AWS delivers them, then what a user looks at: metrics, alerts, where to go next.

use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::Value;
use tokenwatch_core::contract::{self, metric};
use tokenwatch_core::sample::{DEFAULT_FILE_PERIOD_SECONDS, Sample, SampleSpec};
use tokenwatch_e2e::infra::{Deployment, Template};
use tokenwatch_e2e::lambda::{LocalLambda, workspace_root};
use tokenwatch_e2e::plumbing::{
    drain_ingest, events_through_rule, metric_sum, recent_sample_start, scheduled_event,
    sessions_table, trail_file,
};
use tokenwatch_testkit::Stack;

const BACKGROUND_RECORDS: u64 = 20_000;

fn step(text: &str) {
    println!("\n==> {text}");
}

#[tokio::main]
async fn main() -> Result<()> {
    tokio::select! {
        result = demo() => result,
        _ = tokio::signal::ctrl_c() => {
            // Returning drops the emulators and the function, which stops them.
            eprintln!("\ninterrupted: stopping the local emulators");
            Ok(())
        }
    }
}

async fn demo() -> Result<()> {
    let started = Instant::now();
    step("Starting local AWS on 127.0.0.1 (moto, with a CloudWatch protocol bridge)");
    let stack = Stack::start()
        .await
        .context("starting moto: run `make tools` first")?;
    let config = stack.sdk_config().await;
    println!("    moto at {}", stack.moto().endpoint());

    step(
        "Creating what infra/template.yaml deploys (Source=s3): state table, on-call topic, ingest queue with its DLQ, trail bucket notifications",
    );
    let template = Template::load(&workspace_root().join("infra/template.yaml"))?;
    let deployment = Deployment::create(&config, &template, "demo", &[("Source", "s3")]).await?;
    println!(
        "    table {}, topic {}",
        deployment.table_name(),
        deployment.topic_arn()
    );

    step(
        "Starting the real tokenwatch-lambda binary under `cargo lambda watch` (128 MB, env from the template)",
    );
    let mut env = stack.env();
    env.extend(deployment.function_env());
    let mut lambda = LocalLambda::start(&env).await?;

    step(&format!(
        "Writing six hours of sample CloudTrail logs ({BACKGROUND_RECORDS} background records and the guide's failure scenarios) to the trail bucket"
    ));
    let sample = Sample::new(&SampleSpec {
        seed: 7,
        records: BACKGROUND_RECORDS,
        start: recent_sample_start(),
        file_period: DEFAULT_FILE_PERIOD_SECONDS,
    });
    let mut records_for_eventbridge = Vec::new();
    for n in 0..sample.file_count() {
        let file = sample.file(n);
        deployment
            .upload(&file.path, trail_file(&file.records)?.0)
            .await?;
        records_for_eventbridge.extend(
            file.records
                .into_iter()
                .filter(|r| r.get("errorCode").is_some()),
        );
    }
    for scenario in &sample.manifest().scenarios {
        println!("    {:<26} {}", scenario.name, scenario.description);
    }

    step(
        "Delivering the S3 notifications from SQS to the function, as the event source mapping does",
    );
    let batch = template.event_source_mapping()?.batch_size;
    let stats = drain_ingest(&mut lambda, &deployment, batch).await?;
    println!(
        "    {} messages in {} invocations, {} reported failed",
        stats.messages, stats.invocations, stats.failed
    );

    step(
        "Sending EventBridge events that pass the template's rule (the same failures again: counted once)",
    );
    let mut events = events_through_rule(&template.event_pattern()?, &records_for_eventbridge);
    events.truncate(25);
    for event in &events {
        lambda.invoke(event).await?.ok()?;
    }
    println!(
        "    {} events delivered (the rule passes credential errors only; most failed calls are AccessDenied)",
        events.len()
    );

    let ns = contract::DEFAULT_NAMESPACE;
    step("Metrics in local CloudWatch: expired-token errors per principal and session (last 24 h)");
    print!("{}", sessions_table(&config, ns).await?);
    let total = metric_sum(
        &config,
        ns,
        metric::EXPIRED_TOKEN_ERRORS,
        &[("AccountId", "111122223333")],
    )
    .await?;
    let scanned = metric_sum(&config, ns, metric::RECORDS_SCANNED, &[("Source", "s3")]).await?;
    println!("    total {total} expired-token errors in {scanned} records scanned from S3");

    step("Alerts as on-call receives them (SNS topic -> subscribed queue)");
    print_alerts(&deployment.alerts().await?);

    step("The scheduled sweep: incidents quiet for 30 minutes resolve");
    lambda.invoke(&scheduled_event()).await?.ok()?;
    for alert in deployment.alerts().await? {
        println!("    {}", alert["subject"].as_str().unwrap_or_default());
    }

    step("Where to look next");
    println!(
        "    tokenwatch scan ./AWSLogs --alerts      the same analysis on your own CloudTrail files"
    );
    println!(
        "    make build && make deploy                deploy (see docs/DEPLOY.md), then open the TokenWatch dashboard"
    );
    println!(
        "    docs/DEPLOY.md, README.md                delivery options, parameters, metrics and alert reference"
    );
    println!(
        "\nDone in {:.0} s; the local emulators are stopped.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_alerts(alerts: &[Value]) {
    if alerts.is_empty() {
        println!("    (none)");
    }
    for (i, alert) in alerts.iter().enumerate() {
        println!("\n----- alert {} of {} -----", i + 1, alerts.len());
        println!(
            "Subject: {}\n",
            alert["subject"].as_str().unwrap_or_default()
        );
        print!("{}", alert["body"].as_str().unwrap_or_default());
    }
}
