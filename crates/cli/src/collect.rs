//! The one place a scan's results come together, whatever reads the sources (files on all cores, S3
//! objects streamed in parallel): failures tallied once per `eventID`, observations for detection,
//! problems on stderr (a few per source, then a count), a progress bar when it takes a while.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokenwatch_core::detect::{Observations, observe_into};
use tokenwatch_core::{Failure, Problem, SourceCounts, Tally};

use crate::ScanOutcome;

/// The progress bar appears only when a scan takes longer than this.
const PROGRESS_DELAY: Duration = Duration::from_secs(1);
/// Problems printed per source before the rest are only counted.
const PROBLEMS_SHOWN_PER_SOURCE: usize = 10;
/// Failures in flight between the readers and the collector.
pub const CHANNEL_DEPTH: usize = 4096;

/// What a reader tells the collector about source number `usize`.
#[derive(Debug)]
pub enum Message {
    Failure(Box<Failure>),
    Problem(usize, Problem),
    Done(SourceCounts),
}

/// A progress bar of bytes read, hidden until the collector shows it.
pub fn progress_bar(total_bytes: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{binary_bytes}}/{{binary_total_bytes}} {{binary_bytes_per_sec}} eta {{eta}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// Receives until every sender is gone, then returns the outcome. `name` names source `n` in warnings.
pub fn collect(
    rx: &Receiver<Message>,
    sources: usize,
    name: impl Fn(usize) -> String,
    bar: &ProgressBar,
    show_progress: bool,
    warn: impl Fn(&str),
) -> ScanOutcome {
    let started = Instant::now();
    let mut tally = Tally::new();
    let mut observations = Observations::new();
    let mut problems_by_source: HashMap<usize, usize> = HashMap::new();
    let mut problems = 0u64;
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
                    let line = format!("tokenwatch: warning: {}: {problem}", name(index));
                    bar.suspend(|| warn(&line));
                }
            }
        }
    }
    bar.finish_and_clear();
    let mut hidden: Vec<_> = problems_by_source
        .into_iter()
        .filter(|(_, n)| *n > PROBLEMS_SHOWN_PER_SOURCE)
        .collect();
    hidden.sort();
    for (index, n) in hidden {
        warn(&format!(
            "tokenwatch: warning: {}: {} more problems not shown",
            name(index),
            n - PROBLEMS_SHOWN_PER_SOURCE
        ));
    }
    ScanOutcome {
        tally,
        observations,
        elapsed: started.elapsed(),
        sources,
        problems,
    }
}

/// Advances the progress bar by the bytes read (compressed, as they come off the disk or the network).
pub struct Counted<'a, R> {
    pub inner: R,
    pub bar: &'a ProgressBar,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}
