//! The checks behind the fuzz targets in `fuzz/`. Each takes the fuzzer's bytes, hands them to a decoder
//! that reads outside input, and asserts what that decoder promises beyond not panicking; a broken promise
//! panics, which libFuzzer reports as a crash. They live in this crate rather than in `fuzz/` so
//! `tests/fuzz_regressions.rs` replays every saved input through the very same code on stable Rust, with
//! plain `cargo test`.
//!
//! Only what the code guarantees is asserted: each assertion names the promise it holds the code to.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

use crate::alert::{self, Alert};
use crate::decode::{DecodeError, RecordStream, decompressed};
use crate::detect::{Detector, MemoryStore, Policy};
use crate::envelope::{self, Event, LogsPayload, Notification, S3Object};
use crate::metrics::{self, MAX_DIMENSION_VALUE_CHARS};
use crate::pipeline::{self, Delivery, Ports, Settings};
use crate::ports::{
    MemoryClaims, MemoryHistory, MemoryHistoryCache, MemoryMetrics, MemoryNotifier,
};
use crate::scan::{Failure, FailureKind, Problem};
use crate::{ErrorCodes, Scanner, SourceCounts, Timestamp, Validation, classify, trail};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A target's check: panics when the input breaks a promise.
pub type Check = fn(&[u8]);

/// Every target, by the name of its directory in `fuzz/fuzz_targets/` and `tests/fuzz_regressions/`.
pub const TARGETS: [(&str, Check); 7] = [
    ("event", event),
    ("logs", logs),
    ("notification", notification),
    ("records", records),
    ("scan", scan),
    ("gzip_records", gzip_records),
    ("gzip_raw", gzip_raw),
];

/// Runs the named target's check, as its fuzz target does.
pub fn check(target: &str, data: &[u8]) {
    let (_, run) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target named {target}"));
    run(data);
}

/// A Lambda payload, as JSON: recognized, then handled as the function handles each shape.
pub fn event(data: &[u8]) {
    let Ok(payload) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    handle_event(payload);
}

fn handle_event(payload: Value) {
    let records = payload
        .get("Records")
        .and_then(Value::as_array)
        .map(Vec::len);
    match envelope::parse_event(payload) {
        Event::CloudTrail { record } => {
            // The Lambda re-serializes `detail` and scans it: one object is one record, whatever it holds.
            assert!(
                record.is_object(),
                "a CloudTrail event's record is its detail object"
            );
            let bytes = serde_json::to_vec(&record).expect("a Value serializes");
            for validation in [Validation::Structure, Validation::Full] {
                let result = scan_reader(&bytes[..], validation);
                assert_eq!(result.counts.records, 1, "one detail object, one record");
                assert!(
                    result.problems.iter().all(|p| !p.starts_with("input:")),
                    "serde_json's own output always splits: {:?}",
                    result.problems
                );
                check_scan_result(&result);
            }
        }
        Event::Logs { data } => {
            if let Ok(payload) = envelope::decode_logs(&data) {
                scan_log_events(&payload);
            }
        }
        Event::Sqs { messages } => {
            assert_eq!(Some(messages.len()), records, "one SQS message per record");
            for message in &messages {
                check_notification(&message.body);
            }
        }
        Event::S3 { objects } => {
            assert_eq!(Some(objects.len()), records, "one S3 object per record");
            objects.iter().for_each(check_object);
        }
        Event::Scheduled | Event::Unrecognized { .. } => {}
    }
}

/// The fuzzer's bytes are the inflated CloudWatch Logs payload; they are gzipped and base64-encoded here,
/// as CloudWatch Logs does, so the fuzzer works on the JSON inside rather than on the layers around it.
pub fn logs(data: &[u8]) {
    let wrapped = STANDARD.encode(gzip(data));
    let payload = json!({"awslogs": {"data": wrapped}});
    let Event::Logs { data: carried } = envelope::parse_event(payload) else {
        panic!("an awslogs.data string is a CloudWatch Logs event");
    };
    assert_eq!(carried, wrapped, "awslogs.data is carried unchanged");
    let decoded = envelope::decode_logs(&carried);
    let direct = serde_json::from_slice::<LogsPayload>(data);
    match (&decoded, &direct) {
        (Ok(decoded), Ok(direct)) => {
            assert_eq!(logs_summary(decoded), logs_summary(direct));
            scan_log_events(decoded);
        }
        (Err(envelope::EnvelopeError::Shape { .. }), Err(_)) => {}
        _ => panic!(
            "base64 and gzip layers changed the verdict: {:?} vs {:?}",
            decoded.as_ref().err(),
            direct.as_ref().err()
        ),
    }
    // The same bytes taken as `awslogs.data` itself explore the base64 and gzip errors.
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(payload) = envelope::decode_logs(text)
    {
        scan_log_events(&payload);
    }
}

fn logs_summary(payload: &LogsPayload) -> (String, String, Vec<(String, String)>) {
    (
        payload.message_type.clone(),
        payload.log_group.clone(),
        payload
            .log_events
            .iter()
            .map(|e| (e.id.clone(), e.message.clone()))
            .collect(),
    )
}

fn scan_log_events(payload: &LogsPayload) {
    for event in &payload.log_events {
        check_scan_result(&scan_reader(
            event.message.as_bytes(),
            Validation::Structure,
        ));
    }
}

/// An SQS message body: an S3 notification, wrapped in SNS or not, or an EventBridge `Object Created`.
pub fn notification(data: &[u8]) {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    check_notification(body);
    let decoded = envelope::url_decode(body);
    if !body.contains(['%', '+']) {
        assert_eq!(decoded, body, "nothing to decode, nothing changed");
    }
    assert_eq!(
        envelope::url_decode(&url_encode(body)),
        body,
        "URL decoding undoes URL encoding"
    );
}

fn check_notification(body: &str) {
    let direct = envelope::notification(body);
    // SNS delivers the same body as the string `Message` of its own envelope.
    let wrapped = json!({"Type": "Notification", "Message": body}).to_string();
    assert_eq!(
        envelope::notification(&wrapped),
        direct,
        "an SNS-wrapped body reads as the body itself"
    );
    if let Ok(Notification::Objects(objects)) = &direct {
        objects.iter().for_each(check_object);
    }
}

fn check_object(object: &S3Object) {
    let _ = object.is_digest();
    let _ = trail::is_log_file(&object.key);
    if let Some(at) = trail::delivery_time(&object.key) {
        assert_eq!(
            at,
            at.minute(),
            "delivery times in file names are whole minutes"
        );
    }
}

/// What S3 notifications do to a key: `+` for space, `%XX` for every byte that is not plain.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b' ' => "+".to_owned(),
            b if b.is_ascii_alphanumeric() || b"-_./".contains(&b) => char::from(b).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The record splitter over the raw bytes: the records it returns are the input's own bytes, it ends,
/// and neither how the reads split the input nor whitespace before it changes what it finds.
pub fn records(data: &[u8]) {
    let whole = items(data);
    check_items(data, &whole);
    let chunked = items(Chunked::new(data));
    assert_eq!(whole, chunked, "reads split differently, different records");
    if !data.starts_with(b"\xef\xbb\xbf") {
        const PREFIX: &[u8] = b" \n\t\r ";
        let prefixed: Vec<u8> = PREFIX.iter().chain(data).copied().collect();
        let shifted: Vec<Item> = whole
            .iter()
            .cloned()
            .map(|item| item.shifted(PREFIX.len() as u64))
            .collect();
        assert_eq!(
            items(&prefixed[..]),
            shifted,
            "leading whitespace only moves offsets"
        );
    }
}

/// One scanned source, both validations: consistent counts, the same failures, a pipeline run over them.
pub fn scan(data: &[u8]) {
    let structure = scan_reader(data, Validation::Structure);
    let full = scan_reader(data, Validation::Full);
    check_scan_result(&structure);
    check_scan_result(&full);
    assert_eq!(
        structure.counts.records, full.counts.records,
        "validation never changes the splitting"
    );
    assert!(
        structure.counts.malformed <= full.counts.malformed,
        "full validation finds at least what structure validation finds"
    );
    assert_eq!(
        structure.failures, full.failures,
        "records that can be failures are decoded the same way by both validations"
    );
    assert_eq!(
        scan_reader(Chunked::new(data), Validation::Structure),
        structure,
        "reads split differently, different scan"
    );
    run_pipeline(data, &structure);
}

/// The fuzzer's bytes, gzipped here (one member, two members, cut short): the stream inflates to exactly
/// the plain bytes' records, and a cut stream loses only the records after the cut.
pub fn gzip_records(data: &[u8]) {
    let plain = items(data);
    check_items(data, &plain);
    let h = fnv(data);
    let one = gzip(data);
    assert_eq!(items_inflated(&one), plain, "one gzip member");
    let cut = (h % (data.len() as u64 + 1)) as usize;
    let mut two = gzip(&data[..cut]);
    two.extend(gzip(&data[cut..]));
    assert_eq!(
        items_inflated(&two),
        plain,
        "two gzip members, split at {cut}"
    );
    let short = &one[..((h >> 32) % one.len() as u64) as usize];
    let got = records_only(&items_inflated(short));
    let all = records_only(&plain);
    assert!(
        got.len() <= all.len() && got[..] == all[..got.len()],
        "a gzip stream cut at {} of {} gave records the whole one has not",
        short.len(),
        one.len()
    );
    // The scanner inflates once: plain bytes that themselves start like gzip are inflated, gzipped ones
    // are not inflated twice.
    if !data.starts_with(&GZIP_MAGIC) {
        assert_eq!(
            scan_reader(&one[..], Validation::Full),
            scan_reader(data, Validation::Full),
            "a gzipped source scans as the plain one"
        );
    }
}

/// Raw bytes as a possibly gzipped source: truncated or corrupt gzip is an input error after the records
/// that did inflate, never a panic, and those records are what the inflated bytes hold.
pub fn gzip_raw(data: &[u8]) {
    let got = items_inflated(data);
    let mut inflated = Vec::new();
    let complete = if data.starts_with(&GZIP_MAGIC) {
        MultiGzDecoder::new(data).read_to_end(&mut inflated).is_ok()
    } else {
        inflated.extend_from_slice(data);
        true
    };
    check_items(&inflated, &got);
    let expected = items(&inflated[..]);
    if complete {
        assert_eq!(got, expected, "what inflates is what is split");
    } else {
        let (got, expected) = (records_only(&got), records_only(&expected));
        assert!(
            got.len() <= expected.len() && got[..] == expected[..got.len()],
            "records past a gzip error"
        );
    }
    check_scan_result(&scan_reader(data, Validation::Structure));
}

/// One item of a record stream, owned, comparable and offset-aware.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Record {
        index: u64,
        offset: u64,
        bytes: Vec<u8>,
    },
    Problem {
        kind: &'static str,
        reason: &'static str,
        offset: u64,
        index: Option<u64>,
        fatal: bool,
    },
}

impl Item {
    fn of_error(e: &DecodeError) -> Self {
        let (kind, reason, offset) = match e {
            DecodeError::Io { offset, .. } => ("io", "", *offset),
            DecodeError::NotJson { offset } => ("not_json", "", *offset),
            DecodeError::Syntax { offset, reason } => ("syntax", *reason, *offset),
            DecodeError::BadLine { offset, reason } => ("bad_line", *reason, *offset),
            DecodeError::Truncated { offset } => ("truncated", "", *offset),
            DecodeError::TooLarge { offset, .. } => ("too_large", "", *offset),
            DecodeError::NotAnObject { offset, .. } => ("not_an_object", "", *offset),
        };
        Self::Problem {
            kind,
            reason,
            offset,
            index: e.record_index(),
            fatal: e.is_fatal(),
        }
    }

    fn shifted(self, by: u64) -> Self {
        match self {
            Self::Record {
                index,
                offset,
                bytes,
            } => Self::Record {
                index,
                offset: offset + by,
                bytes,
            },
            Self::Problem {
                kind,
                reason,
                offset,
                index,
                fatal,
            } => Self::Problem {
                kind,
                reason,
                offset: offset + by,
                index,
                fatal,
            },
        }
    }
}

/// Every item of a stream over `reader`, failing if it does not end: each item consumes input, so more
/// items than bytes means a loop.
fn items(reader: impl Read) -> Vec<Item> {
    items_bounded(reader, None)
}

fn items_bounded(reader: impl Read, limit: Option<usize>) -> Vec<Item> {
    let mut stream = RecordStream::new(reader);
    let mut out = Vec::new();
    while let Some(item) = stream.next_record() {
        out.push(match item {
            Ok(raw) => Item::Record {
                index: raw.index,
                offset: raw.offset,
                bytes: raw.bytes.to_vec(),
            },
            Err(e) => Item::of_error(&e),
        });
        if let Some(limit) = limit {
            assert!(
                out.len() <= limit,
                "more than {limit} items: the stream does not end"
            );
        }
    }
    out
}

/// The stream over possibly gzipped bytes, through the same wrapper the scanner uses. A gzip member
/// inflates to at most ~1032 times its size; anything past that bound of items is a loop.
fn items_inflated(data: &[u8]) -> Vec<Item> {
    let reader = decompressed(data).expect("reading from memory does not fail");
    items_bounded(reader, Some(data.len().saturating_mul(1100) + 2))
}

fn records_only(items: &[Item]) -> Vec<Item> {
    items
        .iter()
        .filter(|i| matches!(i, Item::Record { .. }))
        .cloned()
        .collect()
}

/// What holds for the items of a stream over `data`: records are the input's own bytes at their offset,
/// in order; problems point inside the input; nothing follows a fatal problem; it ended.
fn check_items(data: &[u8], items: &[Item]) {
    assert!(
        items.len() <= data.len() + 1,
        "{} items from {} bytes: every item consumes input",
        items.len(),
        data.len()
    );
    let mut last_index = 0;
    for (n, item) in items.iter().enumerate() {
        match item {
            Item::Record {
                index,
                offset,
                bytes,
            } => {
                let at = usize::try_from(*offset).expect("offset fits");
                assert_eq!(
                    data.get(at..at + bytes.len()),
                    Some(&bytes[..]),
                    "record #{index} is not the input's bytes at its offset {offset}"
                );
                assert!(
                    bytes.first() == Some(&b'{') && bytes.last() == Some(&b'}'),
                    "a record is an object"
                );
                assert!(*index > last_index, "record numbers increase");
                last_index = *index;
            }
            Item::Problem {
                kind,
                offset,
                index,
                fatal,
                ..
            } => {
                assert!(
                    *offset <= data.len() as u64,
                    "{kind} problem at byte {offset} of a {}-byte input",
                    data.len()
                );
                if let Some(index) = index {
                    assert!(*index > last_index, "record numbers increase");
                    last_index = *index;
                }
                assert!(
                    !fatal || n + 1 == items.len(),
                    "a fatal {kind} problem is the last item"
                );
            }
        }
    }
}

/// A scan's result, owned and comparable.
#[derive(Debug, PartialEq, Eq)]
struct ScanResult {
    counts: SourceCounts,
    failures: Vec<Failure>,
    /// `input: ...` for problems of the input, `record: ...` for problems of one record.
    problems: Vec<String>,
}

fn scan_reader(reader: impl Read, validation: Validation) -> ScanResult {
    let scanner = Scanner::new(ErrorCodes::default(), validation);
    let (mut failures, mut problems) = (Vec::new(), Vec::new());
    let counts = scanner.scan(
        reader,
        |f| failures.push(f),
        |p| {
            problems.push(match &p {
                Problem::Input(_) => format!("input: {p}"),
                Problem::Record { .. } => format!("record: {p}"),
            })
        },
    );
    ScanResult {
        counts,
        failures,
        problems,
    }
}

/// Each record gives at most one failure or one problem; each input problem is a record scanned and
/// malformed; a failure is what its error code says it is.
fn check_scan_result(result: &ScanResult) {
    let ScanResult {
        counts, failures, ..
    } = result;
    assert_eq!(
        result.problems.len() as u64,
        counts.malformed,
        "every problem is one malformed record"
    );
    assert!(
        failures.len() as u64 + counts.malformed <= counts.records,
        "{} failures and {} malformed of {} records",
        failures.len(),
        counts.malformed,
        counts.records
    );
    let codes = ErrorCodes::default();
    for failure in failures {
        let expected = match codes.classify(Some(&failure.error_code)) {
            classify::Classification::ExpiredToken => FailureKind::ExpiredToken,
            classify::Classification::Related(code) => FailureKind::Related(code),
            classify::Classification::Other => panic!("{} is not a failure", failure.error_code),
        };
        assert_eq!(failure.kind, expected, "the error code decides the kind");
        let identity = &failure.identity;
        let _ = (identity.credential_key(), identity.role_name());
        let _ = (failure.credential_age_seconds(), failure.account_id());
        let _ = (failure.time.human(), failure.time.minute());
        if let Some(session) = &identity.session_name {
            let normalized = metrics::normalize_session(session);
            assert!(
                normalized.len() <= session.len(),
                "normalizing never lengthens a session name"
            );
        }
    }
}

/// The failures through the delivery pipeline over in-memory ports (which never fail), with a policy
/// that opens an incident on the first failure, then the sweep that resolves them all: every string
/// from the input reaches the metrics and the alerts.
fn run_pipeline(data: &[u8], result: &ScanResult) {
    let failures = &result.failures;
    let metrics_port = MemoryMetrics::default();
    let notifier = MemoryNotifier::default();
    let claims = MemoryClaims::default();
    let history = MemoryHistory::default();
    let cache = MemoryHistoryCache::default();
    // The input's own records stand in for each key's CloudTrail history.
    let keys: BTreeSet<&str> = failures
        .iter()
        .filter_map(|f| f.identity.access_key_id.as_deref())
        .take(4)
        .collect();
    let texts = record_texts(data, 32);
    for key in &keys {
        for text in &texts {
            history.add(key, text.clone());
        }
    }
    let policy = Policy {
        min_failures: 1,
        min_span_seconds: 0,
        ..Policy::default()
    };
    let detector = Detector::new(MemoryStore::new(), policy);
    let ports = Ports {
        metrics: &metrics_port,
        notifier: &notifier,
        detector: &detector,
        claims: &claims,
        history: &history,
        history_cache: &cache,
    };
    let now = failures
        .iter()
        .map(|f| f.time)
        .max()
        .unwrap_or_else(|| Timestamp::from_unix(1_780_000_000));
    let settings = Settings {
        now,
        max_session_series: 4,
        history_deadline: Instant::now() + Duration::from_secs(3600),
    };
    let delivery = Delivery {
        failures: failures.iter().cloned().map(|f| (f, 0)).collect(),
        holders: BTreeMap::from([(0, "fuzz".to_owned())]),
        sources: vec![(0, "s3", result.counts)],
    };
    let outcome = block_on(pipeline::process(&ports, delivery, settings));
    assert!(
        outcome.errors.is_empty() && outcome.failed_origins.is_empty(),
        "in-memory ports never fail: {:?}",
        outcome.errors
    );
    assert_eq!(outcome.records, result.counts.records);
    assert_eq!(outcome.malformed, result.counts.malformed);
    assert_eq!(
        outcome.counted + outcome.duplicates,
        failures.len() as u64,
        "each failure is counted or a duplicate"
    );
    let swept = block_on(pipeline::sweep(
        &ports,
        now.plus_seconds(policy.quiet_seconds + 1),
    ));
    assert!(swept.errors.is_empty(), "{:?}", swept.errors);
    for alert in notifier.sent.lock().expect("not poisoned").iter() {
        check_alert(alert);
    }
    for batch in metrics_port.published.lock().expect("not poisoned").iter() {
        for datum in batch {
            for dimension in &datum.dimensions {
                let chars = dimension.value.chars().count();
                assert!(
                    (1..=MAX_DIMENSION_VALUE_CHARS).contains(&chars),
                    "dimension {} has {chars} characters",
                    dimension.name
                );
            }
        }
    }
}

fn record_texts(data: &[u8], max: usize) -> Vec<String> {
    records_only(&items(data))
        .into_iter()
        .take(max)
        .filter_map(|item| match item {
            Item::Record { bytes, .. } => String::from_utf8(bytes).ok(),
            Item::Problem { .. } => None,
        })
        .collect()
}

/// What the alert module promises about attacker-controlled text: subjects SNS accepts, and nothing in
/// the body or the attributes that could forge a line or hide text.
fn check_alert(alert: &Alert) {
    assert!(
        alert.subject.chars().count() <= alert::MAX_SUBJECT_CHARS,
        "subject too long: {:?}",
        alert.subject
    );
    assert!(
        alert
            .subject
            .chars()
            .all(|c| c.is_ascii_graphic() || c == ' '),
        "subject not printable ASCII: {:?}",
        alert.subject
    );
    for line in alert.body.lines() {
        assert!(
            !line.chars().any(forges_or_hides),
            "unsafe character in the body line {line:?}"
        );
    }
    for (name, value) in &alert.attributes {
        assert!(
            !value.chars().any(forges_or_hides),
            "unsafe character in attribute {name}: {value:?}"
        );
    }
    let json: Value = serde_json::from_str(&alert.json()).expect("the JSON form is JSON");
    assert!(json.is_object());
}

/// What the alert module promises to strip, written out from Unicode rather than taken from its code:
/// control characters, the bidirectional formatting characters (UAX #9), zero-width characters, and the
/// line and paragraph separators that many renderers break lines at.
fn forges_or_hides(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// Polls a future that never waits (every port here is in memory) to its end.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
    panic!("a pipeline over in-memory ports kept waiting")
}

/// A reader that hands its bytes out in small pieces of sizes derived from the bytes themselves, as a
/// socket or a decompressor might, so the split points move as the fuzzer mutates the input.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: [usize; 4],
    turn: usize,
}

impl<'a> Chunked<'a> {
    fn new(data: &'a [u8]) -> Self {
        let h = fnv(data);
        // Small sizes put split points everywhere; larger ones keep a run from being all refills.
        let part = |i: u32, modulo: u64| 1 + ((h >> (i * 16)) % modulo) as usize;
        let sizes = [part(0, 61), part(1, 1021), part(2, 61), part(3, 1021)];
        Self {
            data,
            sizes,
            turn: 0,
        }
    }
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.sizes[self.turn % self.sizes.len()];
        self.turn += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// FNV-1a: a stable hash, so a saved input replays with the same split points.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
