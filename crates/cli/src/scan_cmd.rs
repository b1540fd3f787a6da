//! `tokenwatch scan`: all cores on the files, one collector for the counts, problems on stderr as they
//! come, a progress bar when it takes a while.

use std::fs::File;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Result, bail};
use indicatif::ProgressBar;
use rayon::prelude::*;
use tokenwatch_core::alert::{self, Alert};
use tokenwatch_core::detect::{CredentialState, Notice, NoticeKind, Observations, Policy};
use tokenwatch_core::report::IncidentReport;
use tokenwatch_core::{Problem, ScanReport, Scanner, SourceCounts, Tally};

use crate::collect::{CHANNEL_DEPTH, Counted, Message, collect, progress_bar};
use crate::sources::{self, Source};
use crate::{Format, ReportArgs, ScanArgs, table};

/// What a scan produced.
#[derive(Debug)]
pub struct ScanOutcome {
    pub tally: Tally,
    /// Expired-token failures per credential, for detection.
    pub observations: Observations,
    pub elapsed: Duration,
    pub sources: usize,
    pub problems: u64,
}

pub fn run(args: &ScanArgs) -> Result<ExitCode> {
    let scanner = args.report.scanner()?;
    let (sources, unusable) = sources::collect(&args.paths);
    for problem in &unusable {
        eprintln!("tokenwatch: error: {problem}");
    }
    if sources.is_empty() {
        bail!("nothing to scan in {}", display_paths(&args.paths));
    }
    let outcome = scan_sources(&sources, &scanner, args.report.progress(), |line| {
        eprintln!("{line}")
    });
    print_report(&args.report, &outcome, &Extra::default())?;
    Ok(if unusable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What a command adds to the scan report: JSON fields, and lines after the table.
#[derive(Debug, Default)]
pub struct Extra {
    pub json: Vec<(&'static str, serde_json::Value)>,
    pub table: String,
}

/// Prints the scan report (and alerts, if asked for) in the chosen format, with the command's extras.
pub fn print_report(args: &ReportArgs, outcome: &ScanOutcome, extra: &Extra) -> Result<()> {
    let policy = args.policy();
    let report = ScanReport::new(
        &outcome.tally,
        IncidentReport::all(&outcome.observations, &policy),
    );
    let alerts = if args.alerts {
        alerts(&outcome.observations, &policy)
    } else {
        Vec::new()
    };
    let mut out = io::stdout().lock();
    match args.format {
        Format::Json => {
            let mut json = serde_json::to_value(&report)?;
            if args.alerts {
                json["alerts"] = alerts
                    .iter()
                    .map(|a| {
                        serde_json::json!({"subject": a.subject, "body": a.body, "payload": a.payload, "attributes": a.attributes})
                    })
                    .collect();
            }
            for (key, value) in &extra.json {
                json[*key] = value.clone();
            }
            serde_json::to_writer_pretty(&mut out, &json)?;
            writeln!(out)?;
        }
        Format::Table => {
            out.write_all(table::render(&report, outcome, &policy).as_bytes())?;
            out.write_all(extra.table.as_bytes())?;
            for (i, alert) in alerts.iter().enumerate() {
                writeln!(
                    out,
                    "\n=== Alert {} of {} ===\nSubject: {}\n\n{}",
                    i + 1,
                    alerts.len(),
                    alert.subject,
                    alert.body
                )?;
            }
        }
    }
    Ok(())
}

/// The "opened" alert of each incident, as on-call would have received it, with the scan's final figures.
fn alerts(observations: &Observations, policy: &Policy) -> Vec<Alert> {
    let mut incidents: Vec<_> = observations.values().filter(|o| o.meets(policy)).collect();
    incidents.sort_by(|a, b| {
        b.failures
            .cmp(&a.failures)
            .then_with(|| a.credential.cmp(&b.credential))
    });
    incidents
        .into_iter()
        .map(|observation| {
            let (state, _) = CredentialState::first(observation, policy, observation.last_failure);
            alert::render(&Notice {
                kind: NoticeKind::Opened,
                state,
            })
        })
        .collect()
}

fn display_paths(paths: &[std::path::PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Scans every source on all cores and tallies the failures in one place. `warn` receives one line per
/// problem (a few per source, then a count).
pub fn scan_sources(
    sources: &[Source],
    scanner: &Scanner,
    show_progress: bool,
    warn: impl Fn(&str) + Send,
) -> ScanOutcome {
    let total: u64 = sources.iter().map(Source::size).sum();
    let bar = progress_bar(total, "scanning");
    let (tx, rx) = mpsc::sync_channel::<Message>(CHANNEL_DEPTH);
    std::thread::scope(|scope| {
        let bar_for_workers = bar.clone();
        scope.spawn(move || {
            sources
                .par_iter()
                .enumerate()
                .for_each_with(tx, |tx, (index, source)| {
                    scan_one(scanner, index, source, &bar_for_workers, tx);
                });
        });
        collect(
            &rx,
            sources.len(),
            |index| sources[index].name(),
            &bar,
            show_progress,
            warn,
        )
    })
}

fn scan_one(
    scanner: &Scanner,
    index: usize,
    source: &Source,
    bar: &ProgressBar,
    tx: &mut mpsc::SyncSender<Message>,
) {
    // A closed channel means the collector is gone; there is no one left to tell.
    let send = |tx: &mpsc::SyncSender<Message>, message| {
        let _ = tx.send(message);
    };
    let counts = match source {
        Source::Stdin => scanner.scan(
            io::stdin().lock(),
            |f| send(tx, Message::Failure(Box::new(f))),
            |p| send(tx, Message::Problem(index, p)),
        ),
        Source::File { path, .. } => match File::open(path) {
            Ok(file) => scanner.scan(
                Counted { inner: file, bar },
                |f| send(tx, Message::Failure(Box::new(f))),
                |p| send(tx, Message::Problem(index, p)),
            ),
            Err(e) => {
                send(
                    tx,
                    Message::Problem(
                        index,
                        Problem::Input(tokenwatch_core::decode::DecodeError::Io {
                            offset: 0,
                            source: e,
                        }),
                    ),
                );
                SourceCounts {
                    records: 1,
                    malformed: 1,
                }
            }
        },
    };
    send(tx, Message::Done(counts));
}
