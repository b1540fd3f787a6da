//! `tokenwatch scan`: all cores on the files, one collector for the counts, problems on stderr as they
//! come, a progress bar when it takes a while.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::process::ExitCode;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use tokenwatch_core::alert::{self, Alert};
use tokenwatch_core::detect::{
    CredentialState, Notice, NoticeKind, Observations, Policy, observe_into,
};
use tokenwatch_core::report::IncidentReport;
use tokenwatch_core::{
    ErrorCodes, Failure, Problem, ScanReport, Scanner, SourceCounts, Tally, Validation,
};

use crate::sources::{self, Source};
use crate::{Format, ScanArgs, table};

/// The progress bar appears only when a scan takes longer than this.
const PROGRESS_DELAY: Duration = Duration::from_secs(1);
/// Problems printed per source before the rest are only counted.
const PROBLEMS_SHOWN_PER_SOURCE: usize = 10;
/// Failures in flight between the scanning threads and the collector.
const CHANNEL_DEPTH: usize = 4096;

enum Message {
    Failure(Box<Failure>),
    Problem(usize, Problem),
    Done(SourceCounts),
}

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
    let codes = ErrorCodes::parse_list(&args.error_codes)
        .with_context(|| format!("--error-codes names no code: {:?}", args.error_codes))?;
    let validation = if args.validate_all {
        Validation::Full
    } else {
        Validation::Structure
    };
    let scanner = Scanner::new(codes, validation);
    let (sources, unusable) = sources::collect(&args.paths);
    for problem in &unusable {
        eprintln!("tokenwatch: error: {problem}");
    }
    if sources.is_empty() {
        bail!("nothing to scan in {}", display_paths(&args.paths));
    }
    let progress = !args.no_progress && io::stderr().is_terminal();
    let outcome = scan_sources(&sources, &scanner, progress, |line| eprintln!("{line}"));
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
            serde_json::to_writer_pretty(&mut out, &json)?;
            writeln!(out)?;
        }
        Format::Table => {
            out.write_all(table::render(&report, &outcome, &policy).as_bytes())?;
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
    Ok(if unusable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
    let started = Instant::now();
    let total: u64 = sources.iter().map(Source::size).sum();
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} scanning [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let (tx, rx) = mpsc::sync_channel::<Message>(CHANNEL_DEPTH);
    let mut tally = Tally::new();
    let mut observations = Observations::new();
    let mut problems_by_source: HashMap<usize, usize> = HashMap::new();
    let mut problems = 0u64;
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
        let mut visible = false;
        loop {
            let message = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    if show_progress && !visible && started.elapsed() >= PROGRESS_DELAY {
                        bar.set_draw_target(ProgressDrawTarget::stderr());
                        visible = true;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            match message {
                Message::Failure(failure) => {
                    if tally.add(&failure) {
                        observe_into(&mut observations, &failure);
                    }
                }
                Message::Done(counts) => tally.add_counts(counts),
                Message::Problem(index, problem) => {
                    problems += 1;
                    let shown = problems_by_source.entry(index).or_default();
                    *shown += 1;
                    if *shown <= PROBLEMS_SHOWN_PER_SOURCE {
                        let line =
                            format!("tokenwatch: warning: {}: {problem}", sources[index].name());
                        bar.suspend(|| warn(&line));
                    }
                }
            }
        }
    });
    bar.finish_and_clear();
    let mut hidden: Vec<_> = problems_by_source
        .into_iter()
        .filter(|(_, n)| *n > PROBLEMS_SHOWN_PER_SOURCE)
        .collect();
    hidden.sort();
    for (index, n) in hidden {
        warn(&format!(
            "tokenwatch: warning: {}: {} more problems not shown",
            sources[index].name(),
            n - PROBLEMS_SHOWN_PER_SOURCE
        ));
    }
    ScanOutcome {
        tally,
        observations,
        elapsed: started.elapsed(),
        sources: sources.len(),
        problems,
    }
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

/// Advances the progress bar by the bytes read from disk.
struct Counted<'a, R> {
    inner: R,
    bar: &'a ProgressBar,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}
