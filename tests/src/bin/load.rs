//! `make load`: an organization trail's worth of traffic through the release `tokenwatch-lambda` on the
//! emulator. Six hours of trail as 200 S3 files holding about a million background records and 100,000
//! expired-token events (the six sample scenarios, repeated for a few hundred credentials), delivered by
//! S3 -> SQS to several function instances draining the queue in parallel, as Lambda scales out.
//! Prints throughput, each instance's peak memory, the AWS API calls per 1,000 events (the cost drivers)
//! and whether every event was counted once and every incident paged once. Numbers, not a test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tokenwatch_core::contract::{self, metric};
use tokenwatch_core::sample::{SAMPLE_SPAN_SECONDS, Sample, SampleSpec};
use tokenwatch_e2e::infra::{Deployment, Template};
use tokenwatch_e2e::lambda::{LocalLambda, workspace_root};
use tokenwatch_e2e::plumbing::{
    MappingStats, mapping_pass, metric_sum, recent_sample_start, scheduled_event, trail_file,
};
use tokenwatch_testkit::Stack;

/// Env overrides: `LOAD_FILES`, `LOAD_EVENTS`, `LOAD_RECORDS`, `LOAD_INSTANCES`.
const FILES: usize = 200;
const EXPIRED_EVENTS: u64 = 100_000;
const BACKGROUND_RECORDS: u64 = 1_000_000;
const INSTANCES: usize = 4;
const ACCOUNT: &str = "111122223333";
/// Redeliveries of handed-back messages before giving up (the template's redrive policy allows 5 receives).
const MAX_ROUNDS: usize = 5;
/// How often the run says how far it got: the full run takes tens of minutes.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// The function's warnings and errors across instances, by message, with one example's fields: why
/// messages were handed back, without reading thousands of log lines.
fn print_warnings(lambdas: &[LocalLambda]) {
    let mut by_message: BTreeMap<(String, String), (usize, String)> = BTreeMap::new();
    for line in lambdas.iter().flat_map(|l| l.output.lines()) {
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let level = entry["level"].as_str().unwrap_or_default();
        if level != "WARN" && level != "ERROR" {
            continue;
        }
        let message = entry["message"].as_str().unwrap_or_default().to_owned();
        let seen = by_message
            .entry((level.to_owned(), message))
            .or_insert_with(|| (0, line.clone()));
        seen.0 += 1;
    }
    if by_message.is_empty() {
        println!("the function logged no warnings or errors");
    }
    for ((level, message), (count, example)) in &by_message {
        println!("{level} x{count}: {message}\n    e.g. {example}");
    }
}

/// How far the run got: objects read (each file once, unless handed back) and calls made.
fn print_progress(calls: &BTreeMap<(String, String), u64>, started: Instant) {
    let read = calls
        .get(&("s3".to_owned(), "GetObject".to_owned()))
        .copied()
        .unwrap_or(0);
    eprintln!(
        "{:.0} s: {read} objects read, {} AWS calls so far",
        started.elapsed().as_secs_f64(),
        calls.values().sum::<u64>()
    );
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The traffic: many samples (each its own six credentials, from its own seed) over the same six hours,
/// merged file by file.
struct Traffic {
    samples: Vec<Sample>,
    files: usize,
    expired: u64,
    incidents: usize,
}

impl Traffic {
    fn plan(files: usize, expired: u64, background: u64) -> Traffic {
        let start = recent_sample_start();
        let spec = |seed: u64, records: u64| SampleSpec {
            seed,
            records,
            start,
            file_period: SAMPLE_SPAN_SECONDS / files as i64,
        };
        let per_sample = Sample::new(&spec(1, 0))
            .manifest()
            .expired_token_errors
            .max(1);
        let count = expired.div_ceil(per_sample);
        let samples: Vec<Sample> = (0..count)
            .map(|seed| Sample::new(&spec(seed + 1, background / count)))
            .collect();
        let expired = samples
            .iter()
            .map(|s| s.manifest().expired_token_errors)
            .sum();
        let incidents = samples
            .iter()
            .map(|s| s.manifest().scenarios.iter().filter(|x| x.caching).count())
            .sum();
        Traffic {
            files: samples.iter().map(Sample::file_count).min().unwrap_or(0),
            samples,
            expired,
            incidents,
        }
    }

    /// File `n`: every sample's file `n`, gzipped, with its record count and decompressed size.
    fn file(&self, n: usize) -> Result<(String, Vec<u8>, usize, usize)> {
        let mut records: Vec<Value> = Vec::new();
        let mut path = String::new();
        for sample in &self.samples {
            let file = sample.file(n);
            path = file.path;
            records.extend(file.records);
        }
        let (body, size) = trail_file(&records)?;
        Ok((path, body, records.len(), size))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let files = setting("LOAD_FILES", FILES as u64) as usize;
    let instances = setting("LOAD_INSTANCES", INSTANCES as u64).max(1) as usize;
    let generating = Instant::now();
    let traffic = Traffic::plan(
        files,
        setting("LOAD_EVENTS", EXPIRED_EVENTS),
        setting("LOAD_RECORDS", BACKGROUND_RECORDS),
    );
    println!(
        "traffic: {} credentials' scenarios, {} expired-token events, {} incidents to page, {} files",
        traffic.samples.len() * 6,
        traffic.expired,
        traffic.incidents,
        traffic.files
    );

    let stack = Stack::start().await?;
    let config = stack.sdk_config().await;
    let template = Template::load(&workspace_root().join("infra/template.yaml"))?;
    let deployment = Deployment::create(
        &config,
        &template,
        "load",
        &[
            ("Source", "s3"),
            // moto answers LookupEvents with HTTP 500; lookups would only measure its retries.
            ("EnrichmentBudgetSeconds", "0"),
        ],
    )
    .await?;
    let (mut records, mut bytes, mut compressed) = (0usize, 0usize, 0usize);
    for n in 0..traffic.files {
        let (path, body, count, size) = traffic.file(n)?;
        records += count;
        bytes += size;
        compressed += body.len();
        deployment.upload(&path, body).await?;
        if (n + 1) % 50 == 0 {
            eprintln!("uploaded {} of {} files", n + 1, traffic.files);
        }
    }
    println!(
        "uploaded {records} records, {:.0} MB decompressed ({:.0} MB gzipped), in {:.1} s",
        bytes as f64 / 1e6,
        compressed as f64 / 1e6,
        generating.elapsed().as_secs_f64()
    );

    let mut env = stack.env();
    env.extend(deployment.function_env());
    let mut lambdas: Vec<LocalLambda> = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..instances {
        let mut lambda = LocalLambda::start(&env).await?;
        // One sweep on the empty state table first: read right after the start, the memory is the
        // process's before it has even initialised; after one invocation it is the warm, idle instance's.
        lambda.invoke(&scheduled_event()).await?.ok()?;
        idle.push(lambda.peak_rss_kb().unwrap_or(0));
        lambdas.push(lambda);
    }
    let batch = template.event_source_mapping()?.batch_size;
    let before = stack.calls();
    let started = Instant::now();
    let mut total = MappingStats::default();
    let mut peaks = vec![0u64; lambdas.len()];
    let mut rounds = 0;
    loop {
        rounds += 1;
        // Each instance drains the same queue, as concurrent Lambda instances polled by the mapping do.
        let mut tasks = tokio::task::JoinSet::new();
        for (i, mut lambda) in lambdas.drain(..).enumerate() {
            let deployment = deployment.clone();
            tasks.spawn(async move {
                let pass = mapping_pass(&mut lambda, &deployment, batch).await;
                let peak = lambda.peak_rss_kb().unwrap_or(0);
                (i, pass, peak, lambda)
            });
        }
        let mut handed_back = Vec::new();
        let mut back = Vec::new();
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.tick().await;
        loop {
            let joined = tokio::select! {
                joined = tasks.join_next() => joined,
                _ = progress.tick() => {
                    print_progress(&stack.calls_since(&before), started);
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            let (i, pass, peak, lambda) = joined.context("a draining task panicked")?;
            let (stats, failed) = pass?;
            total.invocations += stats.invocations;
            total.messages += stats.messages;
            total.failed += stats.failed;
            peaks[i] = peaks[i].max(peak);
            handed_back.extend(failed);
            back.push((i, lambda));
        }
        back.sort_by_key(|(i, _)| *i);
        lambdas = back.into_iter().map(|(_, l)| l).collect();
        if handed_back.is_empty() || rounds == MAX_ROUNDS {
            break;
        }
        eprintln!(
            "round {rounds}: {} messages handed back; redelivering them",
            handed_back.len()
        );
        deployment.release_ingest(&handed_back).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = stack.calls_since(&before);

    let counted = metric_sum(
        &config,
        contract::DEFAULT_NAMESPACE,
        metric::EXPIRED_TOKEN_ERRORS,
        &[("AccountId", ACCOUNT)],
    )
    .await?;
    let paged = deployment
        .alerts()
        .await?
        .iter()
        .filter(|a| a["alert"]["kind"] == "opened")
        .count();

    println!(
        "{} instances, {} invocations, {} messages ({} handed back): {elapsed:.1} s, {:.0} records/s, {:.0} expired-token events/s",
        instances,
        total.invocations,
        total.messages,
        total.failed,
        records as f64 / elapsed,
        traffic.expired as f64 / elapsed
    );
    println!(
        "    delivery rounds (first pass plus redeliveries of handed-back messages): {rounds}"
    );
    for (i, (peak, idle)) in peaks.iter().zip(&idle).enumerate() {
        println!(
            "    instance {i}: peak RSS {:.1} MB (idle {:.1} MB) at {} MB configured",
            *peak as f64 / 1024.0,
            *idle as f64 / 1024.0,
            tokenwatch_e2e::lambda::MEMORY_MB
        );
    }
    let all: u64 = calls.values().sum();
    let sqs: u64 = calls
        .iter()
        .filter(|((service, _), _)| service == "sqs")
        .map(|(_, n)| n)
        .sum();
    let per_thousand = |n: u64| n as f64 / (traffic.expired as f64 / 1000.0);
    println!(
        "AWS API calls by the function: {} ({:.1} per 1,000 expired-token events; the mapping's SQS calls, {sqs}, apart)",
        all - sqs,
        per_thousand(all - sqs)
    );
    let time = stack.upstream_time();
    for ((service, operation), n) in &calls {
        let spent = time
            .get(&(service.clone(), operation.clone()))
            .map_or(0.0, |d| d.as_secs_f64());
        println!(
            "    {service:<10} {operation:<28} {n:>7}  {:>7.2} per 1,000 events  (emulator: {:.1} ms each)",
            per_thousand(*n),
            spent * 1000.0 / *n as f64
        );
    }
    println!(
        "counted {counted} of {} expired-token events; paged {paged} of {} incidents",
        traffic.expired, traffic.incidents
    );
    let whole = counted == traffic.expired as f64 && paged == traffic.incidents;
    print_warnings(&lambdas);
    ensure!(whole, "the load run lost or doubled something");
    Ok(())
}
