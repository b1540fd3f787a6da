//! `make bench` (Lambda part): the release `tokenwatch-lambda` binary measured the way it runs in AWS:
//! cold start (process start to its first poll of a stub runtime API); peak RSS processing one 50 MB
//! (decompressed) log file from S3 at 128 MB of configured memory; time per 1,000 records end to end against
//! the emulator (S3, SQS, the function, CloudWatch, SNS, DynamoDB); AWS API calls per 1,000 records, counted
//! by the fault proxy. Prints numbers; asserts nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokenwatch_core::sample::{SAMPLE_SPAN_SECONDS, Sample, SampleSpec};
use tokenwatch_e2e::infra::{Deployment, Template};
use tokenwatch_e2e::lambda::{LocalLambda, function_binary, workspace_root};
use tokenwatch_e2e::plumbing::{drain_ingest, recent_sample_start, trail_file};
use tokenwatch_testkit::Stack;
use tokio::sync::mpsc;

const COLD_STARTS: usize = 15;
const LARGE_FILE_RECORDS: u64 = 36_000;
const THROUGHPUT_RECORDS: u64 = 50_000;

#[tokio::main]
async fn main() -> Result<()> {
    let binary = function_binary()?;
    let size = std::fs::metadata(&binary)?.len();
    println!(
        "binary: {} ({:.1} MB)",
        binary.display(),
        size as f64 / 1_048_576.0
    );
    let cold = cold_starts().await?;
    println!(
        "cold start (process start to first runtime API poll), {COLD_STARTS} runs: median {:.1} ms, max {:.1} ms",
        cold[cold.len() / 2].as_secs_f64() * 1000.0,
        cold[cold.len() - 1].as_secs_f64() * 1000.0
    );
    end_to_end().await
}

/// Starts the binary against a stub runtime API that only notes the first poll.
async fn cold_starts() -> Result<Vec<Duration>> {
    let mut times = Vec::new();
    for _ in 0..COLD_STARTS {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let (tx, mut rx) = mpsc::channel::<Instant>(1);
        let server = tokio::spawn(async move {
            if let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                let service = service_fn(move |_request: hyper::Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.try_send(Instant::now());
                        // Never answer: the function stays parked on its poll, as between invocations.
                        std::future::pending::<()>().await;
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(bytes::Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
        let started = Instant::now();
        let mut child = tokio::process::Command::new(function_binary()?)
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "tokenwatch")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env(
                "TOKENWATCH_ALERT_TOPIC_ARN",
                "arn:aws:sns:us-east-1:111122223333:oncall",
            )
            .env("TOKENWATCH_STATE_TABLE", "state")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let polled = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await?
            .context("no poll")?;
        times.push(polled - started);
        child.kill().await?;
        server.abort();
    }
    times.sort();
    Ok(times)
}

fn recent_sample(records: u64, file_period: i64) -> Sample {
    Sample::new(&SampleSpec {
        seed: 5,
        records,
        start: recent_sample_start(),
        file_period,
    })
}

async fn end_to_end() -> Result<()> {
    let template = Template::load(&workspace_root().join("infra/template.yaml"))?;
    let batch = template.event_source_mapping()?.batch_size;

    // One large file, a fresh function process: its peak RSS is what processing the file cost.
    {
        let stack = Stack::start().await?;
        let deployment = Deployment::create(
            &stack.sdk_config().await,
            &template,
            "benchlarge",
            &[("Source", "s3")],
        )
        .await?;
        let mut env = stack.env();
        env.extend(deployment.function_env());
        let mut lambda = LocalLambda::start(&env).await?;
        let sample = recent_sample(LARGE_FILE_RECORDS, SAMPLE_SPAN_SECONDS);
        let file = sample.file(0);
        let (body, decompressed) = trail_file(&file.records)?;
        deployment.upload(&file.path, body).await?;
        let before = lambda.peak_rss_kb().unwrap_or(0);
        let started = Instant::now();
        drain_ingest(&mut lambda, &deployment, batch).await?;
        let elapsed = started.elapsed();
        let after = lambda.peak_rss_kb().unwrap_or(0);
        println!(
            "one {:.0} MB (decompressed) file, {} records: {:.2} s, peak RSS {:.1} MB (idle {:.1} MB)",
            decompressed as f64 / 1e6,
            file.records.len(),
            elapsed.as_secs_f64(),
            after as f64 / 1024.0,
            before as f64 / 1024.0
        );
    }

    // Many five-minute files, as a trail delivers them.
    let stack = Stack::start().await?;
    let deployment = Deployment::create(
        &stack.sdk_config().await,
        &template,
        "benchmany",
        &[("Source", "s3")],
    )
    .await?;
    let mut env = stack.env();
    env.extend(deployment.function_env());
    let mut lambda = LocalLambda::start(&env).await?;
    let sample = recent_sample(THROUGHPUT_RECORDS, 300);
    let mut records = 0u64;
    for n in 0..sample.file_count() {
        let file = sample.file(n);
        records += file.records.len() as u64;
        deployment
            .upload(&file.path, trail_file(&file.records)?.0)
            .await?;
    }
    let before = stack.calls();
    let started = Instant::now();
    let stats = drain_ingest(&mut lambda, &deployment, batch).await?;
    let elapsed = started.elapsed();
    // Calls made during delivery: the function's, and the event source mapping's SQS receives and deletes.
    let calls = stack.calls_since(&before);
    let function_calls: u64 = calls.values().sum();
    println!(
        "{records} records in {} files, {} invocations: {:.2} s end to end, {:.1} ms per 1,000 records",
        stats.messages,
        stats.invocations,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / (records as f64 / 1000.0)
    );
    let failures = sample.manifest().expired_token_errors;
    println!(
        "AWS API calls during delivery: {function_calls} ({:.2} per 1,000 records, {:.1} per 1,000 expired-token events)",
        function_calls as f64 / (records as f64 / 1000.0),
        function_calls as f64 / (failures as f64 / 1000.0)
    );
    for ((service, operation), n) in calls {
        println!("    {service:<10} {operation:<22} {n}");
    }
    Ok(())
}
