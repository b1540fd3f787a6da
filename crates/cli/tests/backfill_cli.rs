//! `tokenwatch backfill` as a user runs it, against moto's S3 and CloudWatch: sample trails over several
//! days in the account layout and an organization layout. The report must be exactly what `tokenwatch
//! scan` gives on the same files, `--since`/`--until` must pick exactly their days, and `--publish` must
//! land the counts at their original minutes (and say what was too old for CloudWatch).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use tokenwatch_aws::S3Objects;
use tokenwatch_core::Timestamp;
use tokenwatch_core::sample::{Sample, SampleSpec};
use tokenwatch_testkit::{Service, Stack};

const BUCKET: &str = "org-trail";
const PREFIX: &str = "trail/";
const ACCOUNT_LAYOUT: &str = "AWSLogs/111122223333/CloudTrail/us-east-1/";
const ORG_LAYOUT: &str = "AWSLogs/o-a1b2c3d4e5/222233334444/CloudTrail/eu-west-1/";
const DAY: i64 = 86_400;

fn today() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    now - now.rem_euclid(DAY)
}

/// `YYYY-MM-DD` of the day `days` before today.
fn date(days: i64) -> String {
    Timestamp::from_unix(today() - days * DAY).rfc3339()[..10].to_owned()
}

/// The local folder of one layout's day, as `scan` would be pointed at it.
fn day_dir(root: &Path, layout: &str, days: i64) -> PathBuf {
    root.join(PREFIX)
        .join(layout)
        .join(date(days).replace('-', "/"))
}

struct World {
    stack: Stack,
    local: tempfile::TempDir,
    /// (layout, days ago) of every day written.
    days: Vec<(&'static str, i64)>,
    /// Expired-token failures of the day too old for CloudWatch.
    old_failures: u64,
}

/// Sample trails: the account layout 2, 3 and 4 days ago and 20 days ago; the organization layout 3
/// days ago. Each file goes to S3 and to a local mirror; plus a digest and a stray file S3-side only.
async fn world() -> World {
    let stack = Stack::start().await.expect("stack");
    let s3 = S3Objects::from_config(&stack.sdk_config().await);
    s3.client()
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("bucket");
    let local = tempfile::tempdir().expect("tempdir");
    let days = vec![
        (ACCOUNT_LAYOUT, 2),
        (ACCOUNT_LAYOUT, 3),
        (ACCOUNT_LAYOUT, 4),
        (ORG_LAYOUT, 3),
        (ACCOUNT_LAYOUT, 20),
    ];
    let mut old_failures = 0;
    for (seed, (layout, ago)) in days.iter().enumerate() {
        let sample = Sample::new(&SampleSpec {
            seed: 100 + seed as u64,
            records: 1500,
            start: Timestamp::from_unix(today() - ago * DAY + 6 * 3600),
            file_period: 900,
        });
        if *ago == 20 {
            old_failures = sample.manifest().expired_token_errors;
        }
        for n in 0..sample.file_count() {
            let file = sample.file(n);
            let key = format!("{PREFIX}{}", file.path.replacen(ACCOUNT_LAYOUT, layout, 1));
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            gz.write_all(json!({"Records": file.records}).to_string().as_bytes())
                .expect("gzip");
            let body = gz.finish().expect("gzip");
            let path = local.path().join(&key);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, &body).expect("write");
            s3.client()
                .put_object()
                .bucket(BUCKET)
                .key(&key)
                .body(body.into())
                .send()
                .await
                .expect("put");
        }
    }
    let day = date(3).replace('-', "/");
    for (key, body) in [
        (
            format!(
                "{PREFIX}AWSLogs/111122223333/CloudTrail-Digest/us-east-1/{day}/111122223333_CloudTrail-Digest_us-east-1_trail_us-east-1_20261126T0000Z.json.gz"
            ),
            "not records",
        ),
        (
            format!("{PREFIX}{ACCOUNT_LAYOUT}{day}/README.txt"),
            "not records",
        ),
    ] {
        s3.client()
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .expect("put");
    }
    World {
        stack,
        local,
        days,
        old_failures,
    }
}

/// Runs the binary; the stack's proxies live on this test's runtime, so its thread is handed over while
/// the child runs.
fn tokenwatch(stack: &Stack, args: &[&str]) -> Output {
    tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
            .args(args)
            .env_remove("AWS_PROFILE")
            .envs(stack.env())
            .output()
            .expect("tokenwatch runs")
    })
}

fn json_of(out: &Output) -> Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

/// `scan` over the local copies of the chosen days.
fn scan(world: &World, chosen: &[(&str, i64)]) -> Value {
    let dirs: Vec<String> = chosen
        .iter()
        .map(|(layout, ago)| {
            day_dir(world.local.path(), layout, *ago)
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut args = vec!["scan", "--format", "json", "--no-progress"];
    args.extend(dirs.iter().map(String::as_str));
    json_of(&tokenwatch(&world.stack, &args))
}

/// `backfill` with the given extra arguments; its report, and the report without the backfill's own fields.
fn backfill(world: &World, extra: &[&str]) -> (Value, Value) {
    let url = format!("s3://{BUCKET}/{PREFIX}");
    let mut args = vec![
        "backfill",
        url.as_str(),
        "--format",
        "json",
        "--no-progress",
    ];
    args.extend(extra);
    let full = json_of(&tokenwatch(&world.stack, &args));
    let mut report = full.clone();
    if let Some(map) = report.as_object_mut() {
        map.remove("backfill");
        map.remove("published");
    }
    (full, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_is_what_scan_gives_on_the_same_files() {
    let world = world().await;
    let (since, until) = (date(4), date(2));
    let (full, report) = backfill(&world, &["--since", &since, "--until", &until]);
    let recent: Vec<(&str, i64)> = world
        .days
        .iter()
        .copied()
        .filter(|(_, ago)| *ago <= 4)
        .collect();
    let scanned = scan(&world, &recent);
    assert!(scanned["expired_token_errors"].as_u64() > Some(0));
    assert!(
        scanned["incidents"]
            .as_array()
            .is_some_and(|i| !i.is_empty()),
        "the samples hold incidents"
    );
    assert_eq!(report, scanned);
    let meta = &full["backfill"];
    assert_eq!(meta["accounts"], json!(["111122223333", "222233334444"]));
    assert_eq!(meta["regions"], json!(["eu-west-1", "us-east-1"]));
    assert_eq!(meta["day_folders"], 3);
    assert_eq!(meta["unreadable_objects"], 0);
    let local_files: usize = recent
        .iter()
        .map(|(layout, ago)| {
            std::fs::read_dir(day_dir(world.local.path(), layout, *ago))
                .expect("dir")
                .count()
        })
        .sum();
    assert_eq!(meta["objects"], local_files);
    // AWSLogs/, the organization, each account's Regions, then one listing per Region and day: 2 + 2 + 2 × 3.
    assert_eq!(
        world.stack.calls_to(Service::S3, "ListObjectsV2"),
        10,
        "{:?}",
        world.stack.calls()
    );

    let url = format!("s3://{BUCKET}/{PREFIX}");
    let table = tokenwatch(
        &world.stack,
        &[
            "backfill",
            &url,
            "--since",
            &since,
            "--until",
            &until,
            "--no-progress",
        ],
    );
    assert!(table.status.success(), "{table:?}");
    let text = String::from_utf8_lossy(&table.stdout);
    println!("{text}");
    assert!(text.contains("stale-credential incident"), "{text}");
    assert!(
        text.contains(&format!(
            "Backfill of s3://{BUCKET}/{PREFIX}: 3 days ({since} 00:00:00 UTC to {until} 23:59:59 UTC), 2 accounts, 2 Regions, {local_files} files"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_and_until_select_exactly_their_days() {
    let world = world().await;
    let (_, one_day) = backfill(&world, &["--since", &date(3), "--until", &date(3)]);
    assert_eq!(
        one_day,
        scan(&world, &[(ACCOUNT_LAYOUT, 3), (ORG_LAYOUT, 3)]),
        "both layouts' files of that day, no other"
    );
    let (_, from_two_days_ago) = backfill(&world, &["--since", &date(2)]);
    assert_eq!(from_two_days_ago, scan(&world, &[(ACCOUNT_LAYOUT, 2)]));
    let (_, org_only) = backfill(&world, &["--since", "30d", "--account", "222233334444"]);
    assert_eq!(org_only, scan(&world, &[(ORG_LAYOUT, 3)]));
    let (full, everything) = backfill(&world, &["--since", "30d"]);
    assert_eq!(everything, scan(&world, &world.days));
    assert_eq!(full["backfill"]["day_folders"], 31);
    let (_, nothing) = backfill(&world, &["--since", &date(10), "--until", &date(5)]);
    assert_eq!(nothing["records_scanned"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_replays_the_counts_at_their_minutes_and_names_what_was_too_old() {
    let world = world().await;
    let (full, report) = backfill(
        &world,
        &[
            "--since",
            "30d",
            "--publish",
            "--namespace",
            "TokenWatchBackfill",
        ],
    );
    let published = &full["published"];
    let total = report["expired_token_errors"].as_f64().expect("total");
    assert_eq!(
        published["skipped_expired_token_errors"].as_f64(),
        Some(world.old_failures as f64),
        "{published}"
    );
    assert_eq!(
        published["expired_token_errors"].as_f64(),
        Some(total - world.old_failures as f64)
    );
    assert!(published["skipped_too_old"].as_u64() > Some(0));

    let cloudwatch = aws_sdk_cloudwatch::Client::new(&world.stack.sdk_config().await);
    let sum = |start: i64, end: i64| {
        let cloudwatch = cloudwatch.clone();
        async move {
            let result = cloudwatch
                .get_metric_data()
                .metric_data_queries(
                    MetricDataQuery::builder()
                        .id("errors")
                        .metric_stat(
                            MetricStat::builder()
                                .metric(
                                    Metric::builder()
                                        .namespace("TokenWatchBackfill")
                                        .metric_name("ExpiredTokenErrors")
                                        .dimensions(
                                            Dimension::builder()
                                                .name("AccountId")
                                                .value("111122223333")
                                                .build(),
                                        )
                                        .build(),
                                )
                                .period(3600)
                                .stat("Sum")
                                .build(),
                        )
                        .build(),
                )
                .start_time(DateTime::from_secs(start))
                .end_time(DateTime::from_secs(end))
                .send()
                .await
                .expect("get metric data");
            result.metric_data_results()[0].values().iter().sum::<f64>()
        }
    };
    assert_eq!(
        sum(today() - 5 * DAY, today()).await,
        total - world.old_failures as f64,
        "every recent failure, at its minute"
    );
    assert_eq!(
        sum(today() - 4 * DAY, today() - 3 * DAY).await,
        scan(&world, &[(ACCOUNT_LAYOUT, 4)])["expired_token_errors"]
            .as_f64()
            .expect("day 4"),
        "one day's window holds that day's failures"
    );
    assert_eq!(
        sum(today() - 21 * DAY, today() - 19 * DAY).await,
        0.0,
        "nothing published for the day older than two weeks"
    );
}
