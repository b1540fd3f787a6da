//! `tokenwatch backfill s3://BUCKET/PREFIX --since 7d`: finds the trail's log files for the period by their
//! date folders (one listing per account, Region and day; never the whole bucket), streams them through
//! the scanner in parallel into the same collector as `tokenwatch scan`, prints the same report, and with
//! `--publish` replays the counts as CloudWatch metrics at their original minutes.

use std::collections::BTreeSet;
use std::io;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt, stream};
use indicatif::ProgressBar;
use serde_json::json;
use tokenwatch_aws::{
    CloudWatchMetrics, ObjectInfo, S3Objects, SdkOptions, cloudwatch_client, sdk_config,
};
use tokenwatch_core::contract::metric;
use tokenwatch_core::decode::DecodeError;
use tokenwatch_core::metrics::{MetricDatum, MetricInputs, batches, metric_data, within_window};
use tokenwatch_core::ports::MetricsSink;
use tokenwatch_core::trail::{
    CLOUDTRAIL_FOLDER, LogsFolder, S3Location, day_folders, delivered_within, is_log_file,
};
use tokenwatch_core::{Problem, Scanner, SourceCounts, Tally, Timestamp};
use tokio_util::io::SyncIoBridge;

use crate::collect::{CHANNEL_DEPTH, Counted, Message, collect, progress_bar};
use crate::scan_cmd::{Extra, print_report};
use crate::table::thousands;
use crate::{BackfillArgs, ScanOutcome};

/// Objects read at once unless `--concurrency` says otherwise: S3 reads wait on the network more than
/// they use a core.
pub const DEFAULT_CONCURRENCY: u16 = 16;
/// Folder listings in flight at once.
const LISTING_CONCURRENCY: usize = 16;
/// Data within this much of CloudWatch's two-week limit are skipped too: they could age past it before
/// their request lands.
const PUBLISH_MARGIN_SECONDS: i64 = 3600;
/// CloudWatch namespaces are 1 to 255 characters and may not start with `AWS/`.
const MAX_NAMESPACE_CHARS: usize = 255;

pub fn run(args: &BackfillArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(backfill(args))
}

fn system_now() -> Timestamp {
    Timestamp::from_unix(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

async fn backfill(args: &BackfillArgs) -> Result<ExitCode> {
    let location = S3Location::parse(&args.location)?;
    let now = system_now();
    let since = args.since.resolve(now);
    let until = args.until.map_or(now, |u| u.resolve(now));
    if since > until {
        bail!(
            "--since ({}) is after --until ({})",
            since.human(),
            until.human()
        );
    }
    if args.publish
        && (args.namespace.is_empty()
            || args.namespace.chars().count() > MAX_NAMESPACE_CHARS
            || args.namespace.starts_with("AWS/"))
    {
        bail!(
            "--namespace {:?} must be 1 to 255 characters and not start with AWS/",
            args.namespace
        );
    }
    let scanner = Arc::new(args.report.scanner()?);
    let sdk = sdk_config(&SdkOptions {
        region: args.aws.region.clone(),
        profile: args.aws.profile.clone(),
        endpoint_url: args.aws.endpoint_url.clone(),
        ..SdkOptions::default()
    })
    .await;
    let s3 = S3Objects::from_config(&sdk);

    let listing = list_period(&s3, &location, since, until, args)
        .await
        .with_context(|| format!("listing the trail's files under {}", args.location))?;
    if listing.objects.is_empty() {
        eprintln!(
            "tokenwatch: warning: no log files under s3://{}/{} delivered from {} to {} ({} day folders in {} Region folders listed)",
            location.bucket,
            location.logs_root(),
            since.human(),
            until.human(),
            listing.days,
            listing.regions.len()
        );
    }
    let (outcome, unreadable) = scan_objects(
        &s3,
        &location.bucket,
        &listing.objects,
        scanner,
        args.report.progress(),
        usize::from(args.concurrency),
    )
    .await;
    let bytes: u64 = listing.objects.iter().map(|o| o.size).sum();
    let seconds = outcome.elapsed.as_secs_f64().max(1e-9);
    let mut extra = Extra::default();
    extra.json.push((
        "backfill",
        json!({
            "bucket": location.bucket,
            "prefix": location.prefix,
            "since": since,
            "until": until,
            "day_folders": listing.days,
            "accounts": listing.accounts,
            "regions": listing.regions,
            "objects": listing.objects.len(),
            "bytes": bytes,
            "unreadable_objects": unreadable,
            "seconds": outcome.elapsed.as_secs_f64(),
        }),
    ));
    extra.table = format!(
        "\nBackfill of s3://{}/{}: {} day{} ({} to {}), {} account{}, {} Region{}, {} file{} ({:.1} MB compressed) in {:.2} s ({} records/s).\n",
        location.bucket,
        location.prefix,
        listing.days,
        plural(listing.days),
        since.human(),
        until.human(),
        listing.accounts.len(),
        plural(listing.accounts.len()),
        listing.regions.len(),
        plural(listing.regions.len()),
        thousands(listing.objects.len() as u64),
        plural(listing.objects.len()),
        bytes as f64 / 1e6,
        seconds,
        thousands((outcome.tally.records_scanned as f64 / seconds) as u64),
    );
    if unreadable > 0 {
        extra.table.push_str(&format!(
            "{unreadable} file{} could not be read (see the warnings above); their records are not in the report.\n",
            plural(unreadable)
        ));
    }
    if args.publish {
        let published = publish(&sdk, args, &outcome.tally, system_now()).await?;
        extra.table.push_str(&published.describe(&args.namespace));
        extra
            .json
            .push(("published", published.json(&args.namespace)));
    }
    print_report(&args.report, &outcome, &extra)?;
    Ok(if unreadable == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The period's log files, and what was walked to find them.
#[derive(Debug, Default)]
struct Listing {
    objects: Vec<ObjectInfo>,
    days: usize,
    accounts: BTreeSet<String>,
    regions: BTreeSet<String>,
}

/// The last segment of a folder (`.../us-east-1/` → `us-east-1`).
fn folder_name(folder: &str) -> &str {
    folder
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

/// Walks `AWSLogs/` (accounts, organizations' accounts, Regions) one level at a time, then lists each
/// Region's day folders of the period.
async fn list_period(
    s3: &S3Objects,
    location: &S3Location,
    since: Timestamp,
    until: Timestamp,
    args: &BackfillArgs,
) -> Result<Listing> {
    let bucket = location.bucket.as_str();
    let mut account_folders = Vec::new();
    for folder in s3.list_folders(bucket, &location.logs_root()).await? {
        match LogsFolder::of(&folder) {
            LogsFolder::Account(account) => account_folders.push((account, folder)),
            LogsFolder::Organization(_) => {
                for inner in s3.list_folders(bucket, &folder).await? {
                    if let LogsFolder::Account(account) = LogsFolder::of(&inner) {
                        account_folders.push((account, inner));
                    }
                }
            }
            LogsFolder::Other(_) => {}
        }
    }
    account_folders
        .retain(|(account, _)| args.accounts.is_empty() || args.accounts.contains(account));
    let mut listing = Listing {
        accounts: account_folders.iter().map(|(a, _)| a.clone()).collect(),
        ..Listing::default()
    };
    let region_folders: Vec<String> = stream::iter(account_folders)
        .map(|(_, folder)| async move {
            s3.list_folders(bucket, &format!("{folder}{CLOUDTRAIL_FOLDER}"))
                .await
        })
        .buffer_unordered(LISTING_CONCURRENCY)
        .try_collect::<Vec<Vec<String>>>()
        .await?
        .into_iter()
        .flatten()
        .filter(|f| {
            args.trail_regions.is_empty() || args.trail_regions.iter().any(|r| r == folder_name(f))
        })
        .collect();
    listing.regions = region_folders
        .iter()
        .map(|f| folder_name(f).to_owned())
        .collect();
    let days = day_folders(since, until);
    listing.days = days.len();
    let day_prefixes: Vec<String> = region_folders
        .iter()
        .flat_map(|region| days.iter().map(move |day| format!("{region}{day}")))
        .collect();
    let mut objects: Vec<ObjectInfo> = stream::iter(day_prefixes)
        .map(|prefix| async move { s3.list_objects(bucket, &prefix).await })
        .buffer_unordered(LISTING_CONCURRENCY)
        .try_collect::<Vec<Vec<ObjectInfo>>>()
        .await?
        .into_iter()
        .flatten()
        .filter(|o| is_log_file(&o.key) && delivered_within(&o.key, since, until))
        .collect();
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    objects.dedup_by(|a, b| a.key == b.key);
    listing.objects = objects;
    Ok(listing)
}

/// A message for the collector, sent from a blocking thread (the channel is bounded).
async fn send_later(tx: &SyncSender<Message>, message: Message) {
    let tx = tx.clone();
    // A closed channel means the collector is gone; there is no one left to tell.
    let _ = tokio::task::spawn_blocking(move || tx.send(message)).await;
}

/// Streams every object through the scanner, `concurrency` at a time, into one collector. Returns the
/// outcome and how many objects could not be read.
async fn scan_objects(
    s3: &S3Objects,
    bucket: &str,
    objects: &[ObjectInfo],
    scanner: Arc<Scanner>,
    show_progress: bool,
    concurrency: usize,
) -> (ScanOutcome, usize) {
    let total: u64 = objects.iter().map(|o| o.size).sum();
    let bar = progress_bar(total, "backfilling");
    bar.set_message(format!("0/{} files", objects.len()));
    let (tx, rx) = mpsc::sync_channel::<Message>(CHANNEL_DEPTH);
    let names: Vec<String> = objects
        .iter()
        .map(|o| format!("s3://{bucket}/{}", o.key))
        .collect();
    let collector = {
        let bar = bar.clone();
        std::thread::spawn(move || {
            collect(
                &rx,
                names.len(),
                |i| names[i].clone(),
                &bar,
                show_progress,
                |line| eprintln!("{line}"),
            )
        })
    };
    let unreadable = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    stream::iter(objects.iter().enumerate())
        .for_each_concurrent(concurrency, |(index, object)| {
            let (tx, bar, scanner) = (tx.clone(), bar.clone(), Arc::clone(&scanner));
            let (unreadable, done) = (&unreadable, &done);
            async move {
                let read = scan_object(s3, bucket, object, index, scanner, &bar, &tx).await;
                if !read {
                    unreadable.fetch_add(1, Ordering::Relaxed);
                }
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                bar.set_message(format!("{finished}/{} files", objects.len()));
            }
        })
        .await;
    drop(tx);
    let outcome = tokio::task::spawn_blocking(move || collector.join())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| ScanOutcome {
            tally: Tally::new(),
            observations: Default::default(),
            elapsed: Duration::ZERO,
            sources: objects.len(),
            problems: 0,
        });
    (outcome, unreadable.load(Ordering::Relaxed))
}

/// Streams one object: network → gunzip → record splitter → collector. Returns false when it could not
/// be opened (counted, like an unopenable file in `scan`, as one malformed record).
async fn scan_object(
    s3: &S3Objects,
    bucket: &str,
    object: &ObjectInfo,
    index: usize,
    scanner: Arc<Scanner>,
    bar: &ProgressBar,
    tx: &SyncSender<Message>,
) -> bool {
    let reader = match s3.open(bucket, &object.key).await {
        Ok(reader) => reader,
        Err(e) => {
            let error = io::Error::other(e.to_string());
            send_later(
                tx,
                Message::Problem(
                    index,
                    Problem::Input(DecodeError::Io {
                        offset: 0,
                        source: error,
                    }),
                ),
            )
            .await;
            send_later(
                tx,
                Message::Done(SourceCounts {
                    records: 1,
                    malformed: 1,
                }),
            )
            .await;
            return false;
        }
    };
    let (tx, bar) = (tx.clone(), bar.clone());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let bridge = SyncIoBridge::new_with_handle(reader, runtime);
        let counts = scanner.scan(
            Counted {
                inner: bridge,
                bar: &bar,
            },
            |f| {
                let _ = tx.send(Message::Failure(Box::new(f)));
            },
            |p| {
                let _ = tx.send(Message::Problem(index, p));
            },
        );
        let _ = tx.send(Message::Done(counts));
    })
    .await
    .is_ok()
}

/// What `--publish` sent and what it had to leave out.
#[derive(Debug, Default)]
struct Published {
    data: usize,
    requests: usize,
    expired_token_errors: f64,
    skipped: usize,
    skipped_expired_token_errors: f64,
    skipped_from: Option<Timestamp>,
    skipped_to: Option<Timestamp>,
}

/// The total `ExpiredTokenErrors` in data (the series without dimensions holds every failure once).
fn total_expired(data: &[MetricDatum]) -> f64 {
    data.iter()
        .filter(|d| d.name == metric::EXPIRED_TOKEN_ERRORS && d.dimensions.is_empty())
        .map(|d| d.stats.sum)
        .sum()
}

impl Published {
    fn describe(&self, namespace: &str) -> String {
        let mut out = format!(
            "Published {} metric data to CloudWatch namespace {namespace} in {} request{} ({} ExpiredTokenErrors at their original minutes).\n",
            thousands(self.data as u64),
            self.requests,
            plural(self.requests),
            thousands(self.expired_token_errors as u64),
        );
        if self.skipped > 0 {
            out.push_str(&format!(
                "Skipped {} metric data older than CloudWatch accepts (two weeks): {} ExpiredTokenErrors from {} to {}.\n",
                thousands(self.skipped as u64),
                thousands(self.skipped_expired_token_errors as u64),
                self.skipped_from.map(Timestamp::human).unwrap_or_default(),
                self.skipped_to.map(Timestamp::human).unwrap_or_default(),
            ));
        }
        out
    }

    fn json(&self, namespace: &str) -> serde_json::Value {
        json!({
            "namespace": namespace,
            "metric_data": self.data,
            "requests": self.requests,
            "expired_token_errors": self.expired_token_errors,
            "skipped_too_old": self.skipped,
            "skipped_expired_token_errors": self.skipped_expired_token_errors,
            "skipped_from": self.skipped_from,
            "skipped_to": self.skipped_to,
        })
    }
}

/// The tally's metric data (ExpiredTokenErrors, CredentialAgeSeconds, RelatedCredentialErrors) at their
/// original minutes, within CloudWatch's window; the rest are counted as skipped.
async fn publish(
    sdk: &aws_config::SdkConfig,
    args: &BackfillArgs,
    tally: &Tally,
    now: Timestamp,
) -> Result<Published> {
    let data = metric_data(&MetricInputs {
        tally: Some(tally),
        sources: Vec::new(),
        notices: &[],
        now,
        max_session_series: args.max_session_series.max(1),
    });
    let (accepted, skipped) = within_window(data, now.plus_seconds(PUBLISH_MARGIN_SECONDS));
    let sink = CloudWatchMetrics::new(cloudwatch_client(sdk), &args.namespace);
    sink.publish(&accepted).await.with_context(|| {
        format!(
            "publishing to CloudWatch namespace {} (requests before the failed one went through; a rerun replays them again)",
            args.namespace
        )
    })?;
    Ok(Published {
        data: accepted.len(),
        requests: batches(&accepted).len(),
        expired_token_errors: total_expired(&accepted),
        skipped: skipped.len(),
        skipped_expired_token_errors: total_expired(&skipped),
        skipped_from: skipped.iter().map(|d| d.timestamp).min(),
        skipped_to: skipped.iter().map(|d| d.timestamp).max(),
    })
}
