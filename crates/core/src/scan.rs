//! Scanning one source: split it into records, skip the ones that cannot matter, decode the rest, and
//! hand each counted failure and each problem to the caller.

use std::io::Read;

use memchr::memmem;

use crate::classify::{Classification, ErrorCodes};
use crate::decode::{DecodeError, RawRecord, RecordStream, decompressed};
use crate::identity::Identity;
use crate::record::{Record, Str, text};
use crate::timestamp::Timestamp;

/// Only records holding this key can be failures; the rest are counted without being decoded.
const ERROR_CODE_KEY: &[u8] = b"\"errorCode\"";

/// Whether a failure is an expired-token error or a related credential error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    ExpiredToken,
    Related(&'static str),
}

/// One counted failure: everything later stages need from its record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub event_id: Option<String>,
    pub time: Timestamp,
    pub kind: FailureKind,
    /// The code as the record wrote it (`ExpiredToken`, `Client.RequestExpired`, ...).
    pub error_code: String,
    pub identity: Identity,
    pub event_source: Option<String>,
    pub event_name: Option<String>,
    pub region: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub recipient_account_id: Option<String>,
}

impl Failure {
    /// Builds the failure a decoded record stands for, if it is one.
    pub fn from_record(
        record: &Record<'_>,
        codes: &ErrorCodes,
    ) -> Result<Option<Self>, RecordProblem> {
        let error_code = text(&record.error_code);
        let kind = match codes.classify(error_code) {
            Classification::ExpiredToken => FailureKind::ExpiredToken,
            Classification::Related(code) => FailureKind::Related(code),
            Classification::Other => return Ok(None),
        };
        let time = text(&record.event_time)
            .or_else(|| text(&record.export_timestamp))
            .ok_or(RecordProblem::MissingTime)?;
        let time = Timestamp::parse(time).ok_or(RecordProblem::BadTime)?;
        let owned = |field: &Option<Str<'_>>| text(field).map(str::to_owned);
        Ok(Some(Self {
            event_id: owned(&record.event_id),
            time,
            kind,
            error_code: error_code.unwrap_or_default().to_owned(),
            identity: Identity::from_record(record),
            event_source: owned(&record.event_source),
            event_name: owned(&record.event_name),
            region: owned(&record.aws_region),
            source_ip: owned(&record.source_ip_address),
            user_agent: owned(&record.user_agent),
            recipient_account_id: owned(&record.recipient_account_id),
        }))
    }

    pub fn credential_age_seconds(&self) -> Option<i64> {
        self.identity.credential_age_at(self.time)
    }

    pub fn account_id(&self) -> Option<&str> {
        self.identity
            .account_id
            .as_deref()
            .or(self.recipient_account_id.as_deref())
    }
}

/// Why a record that could be a failure was not counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordProblem {
    #[error("not a valid CloudTrail record: {0}")]
    Invalid(String),
    #[error("a credential error without eventTime")]
    MissingTime,
    #[error("eventTime is not an RFC 3339 time")]
    BadTime,
}

/// A problem found while scanning, with where it was.
#[derive(Debug)]
pub enum Problem {
    /// The input itself (framing, decompression, I/O).
    Input(DecodeError),
    /// One record.
    Record {
        index: u64,
        offset: u64,
        problem: RecordProblem,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Input(e) => e.fmt(f),
            Self::Record {
                index,
                offset,
                problem,
            } => write!(f, "record #{index} at byte {offset}: {problem}"),
        }
    }
}

/// What scanning one source produced besides the failures. Every malformed record (or unreadable
/// remainder of a source) is also a record scanned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceCounts {
    pub records: u64,
    pub malformed: u64,
}

/// How thoroughly to check records that cannot be failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Validation {
    /// Only their structure (the fast path: they are not decoded at all).
    #[default]
    Structure,
    /// Decode every record fully, so any malformed record is counted.
    Full,
}

/// Reusable scanning setup: the codes that count, and the key search compiled once.
#[derive(Debug)]
pub struct Scanner {
    codes: ErrorCodes,
    validation: Validation,
    error_key: memmem::Finder<'static>,
}

impl Scanner {
    pub fn new(codes: ErrorCodes, validation: Validation) -> Self {
        Self {
            codes,
            validation,
            error_key: memmem::Finder::new(ERROR_CODE_KEY),
        }
    }

    pub fn codes(&self) -> &ErrorCodes {
        &self.codes
    }

    /// Scans a stream (plain or gzipped), calling `on_failure` for each failure and `on_problem` for each
    /// problem, and returns the counts. A fatal input problem ends the scan of this stream; the records
    /// before it still count.
    pub fn scan<R: Read>(
        &self,
        reader: R,
        mut on_failure: impl FnMut(Failure),
        mut on_problem: impl FnMut(Problem),
    ) -> SourceCounts {
        let mut counts = SourceCounts::default();
        let reader = match decompressed(reader) {
            Ok(r) => r,
            Err(source) => {
                counts.records += 1;
                counts.malformed += 1;
                on_problem(Problem::Input(DecodeError::Io { offset: 0, source }));
                return counts;
            }
        };
        let mut stream = RecordStream::new(reader);
        while let Some(item) = stream.next_record() {
            match item {
                Ok(raw) => {
                    counts.records += 1;
                    match self.examine(raw) {
                        Ok(Some(failure)) => on_failure(failure),
                        Ok(None) => {}
                        Err(problem) => {
                            counts.malformed += 1;
                            on_problem(Problem::Record {
                                index: raw.index,
                                offset: raw.offset,
                                problem,
                            });
                        }
                    }
                }
                Err(error) => {
                    // What could not be read is still a record seen, so malformed never exceeds scanned.
                    counts.records += 1;
                    counts.malformed += 1;
                    on_problem(Problem::Input(error));
                }
            }
        }
        counts
    }

    /// Decodes one record when it could be a failure (or when validating fully).
    pub fn examine(&self, raw: RawRecord<'_>) -> Result<Option<Failure>, RecordProblem> {
        let candidate = self.error_key.find(raw.bytes).is_some();
        if !candidate && self.validation == Validation::Structure {
            return Ok(None);
        }
        let record =
            Record::from_slice(raw.bytes).map_err(|e| RecordProblem::Invalid(e.to_string()))?;
        if !candidate {
            return Ok(None);
        }
        Failure::from_record(&record, &self.codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(input: &str, validation: Validation) -> (Vec<Failure>, Vec<String>, SourceCounts) {
        let scanner = Scanner::new(ErrorCodes::default(), validation);
        let (mut failures, mut problems) = (Vec::new(), Vec::new());
        let counts = scanner.scan(
            input.as_bytes(),
            |f| failures.push(f),
            |p| problems.push(p.to_string()),
        );
        (failures, problems, counts)
    }

    const EXPIRED: &str = r#"{"eventID":"e1","eventTime":"2024-05-01T10:01:02Z","errorCode":"ExpiredToken","eventName":"GetObject",
        "userIdentity":{"type":"AssumedRole","arn":"arn:aws:sts::1:assumed-role/r/s","accessKeyId":"ASIA1"}}"#;

    #[test]
    fn counts_failures_and_skips_the_rest() {
        let input = format!(
            r#"{{"Records":[{EXPIRED},{{"eventID":"e2","eventTime":"2024-05-01T10:01:03Z","eventName":"ListBuckets"}},
            {{"eventID":"e3","eventTime":"2024-05-01T10:01:04Z","errorCode":"RequestExpired"}},
            {{"eventID":"e4","eventTime":"2024-05-01T10:01:05Z","errorCode":"AccessDenied","errorMessage":"ExpiredToken"}}]}}"#
        );
        let (failures, problems, counts) = scan(&input, Validation::Structure);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            counts,
            SourceCounts {
                records: 4,
                malformed: 0
            }
        );
        assert_eq!(failures.len(), 2);
        assert_eq!(failures[0].kind, FailureKind::ExpiredToken);
        assert_eq!(failures[0].identity.principal, "arn:aws:iam::1:role/r");
        assert_eq!(failures[1].kind, FailureKind::Related("RequestExpired"));
    }

    #[test]
    fn decoys_never_count() {
        let decoys = r#"[
          {"eventID":"d1","eventTime":"2024-05-01T10:00:00Z","requestParameters":{"errorCode":"ExpiredToken","note":"ExpiredToken"}},
          {"eventID":"d2","eventTime":"2024-05-01T10:00:00Z","errorCode":"AccessDenied","errorMessage":"ExpiredToken: The security token included in the request is expired"},
          {"eventID":"d3","eventTime":"2024-05-01T10:00:00Z","responseElements":{"x":{"errorCode":"ExpiredTokenException"}}},
          {"eventID":"d4","eventTime":"2024-05-01T10:00:00Z","userAgent":"\"errorCode\":\"ExpiredToken\""},
          {"eventID":"d5","eventTime":"2024-05-01T10:00:00Z","errorCode":"ExpiredTokenButNotReally"}
        ]"#;
        let (failures, problems, counts) = scan(decoys, Validation::Structure);
        assert!(failures.is_empty(), "{failures:?}");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(counts.records, 5);
    }

    #[test]
    fn malformed_candidates_are_reported_with_their_position() {
        let input = r#"[{"errorCode":5},{"errorCode":"ExpiredToken"},{"errorCode":"ExpiredToken","eventTime":"noon"}]"#;
        let (failures, problems, counts) = scan(input, Validation::Structure);
        assert!(failures.is_empty());
        assert_eq!(
            counts,
            SourceCounts {
                records: 3,
                malformed: 3
            }
        );
        assert!(
            problems[0].starts_with("record #1 at byte 1: not a valid CloudTrail record"),
            "{}",
            problems[0]
        );
        assert_eq!(
            problems[1],
            "record #2 at byte 17: a credential error without eventTime"
        );
        assert!(
            problems[2].contains("not an RFC 3339 time"),
            "{}",
            problems[2]
        );
    }

    #[test]
    fn full_validation_also_catches_records_that_cannot_be_failures() {
        let input = r#"[{"eventTime":7},{"eventTime":"2024-05-01T10:00:00Z"}]"#;
        assert_eq!(scan(input, Validation::Structure).2.malformed, 0);
        let (_, problems, counts) = scan(input, Validation::Full);
        assert_eq!(
            counts,
            SourceCounts {
                records: 2,
                malformed: 1
            }
        );
        assert!(problems[0].starts_with("record #1"), "{problems:?}");
    }

    #[test]
    fn logstash_exports_use_their_timestamp() {
        let input =
            r#"{"@timestamp":"2020-09-14T00:44:23.000Z","errorCode":"ExpiredToken","eventID":"x"}"#;
        let (failures, _, _) = scan(input, Validation::Structure);
        assert_eq!(failures[0].time.rfc3339(), "2020-09-14T00:44:23Z");
    }
}
