//! Enrichment: what CloudTrail's event history (`LookupEvents`) says about an incident's access key. When
//! it was first used, when it last worked, what it called. The two ports are [`CredentialHistory`] (the
//! lookup, rate-limited and bounded by the adapter) and [`HistoryCache`] (the result kept beside the
//! incident state, so re-notifications and the sweep never look it up again). The summary of the events
//! is a pure function here; adapters only fetch pages.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::detect::Observation;
use crate::identity::CredentialKey;
use crate::record::{Record, text};
use crate::timestamp::Timestamp;

/// `LookupEvents` accepts at most this many requests per second, per account and Region.
pub const LOOKUP_EVENTS_PER_SECOND: u32 = 2;
/// ...returns at most this many events per page...
pub const LOOKUP_EVENTS_PAGE_SIZE: i32 = 50;
/// ...and reaches back this far.
pub const EVENT_HISTORY_SECONDS: i64 = 90 * 86_400;
/// Pages read per lookup at most: a credential busier than this is summarized from its latest events.
pub const MAX_LOOKUP_PAGES: usize = 20;
/// The longest a temporary credential lives (GetSessionToken, 36 hours): without a known creation date,
/// the history is read from this long before the first failure.
pub const MAX_TEMPORARY_CREDENTIAL_SECONDS: i64 = 36 * 3600;
/// Read a little before the credential's recorded creation date (clocks, rounding).
const CREATED_SLACK_SECONDS: i64 = 300;
/// Distinct services remembered per key.
pub const SERVICES_KEPT: usize = 16;
/// How long a cached lookup is kept (longer than any incident state lives without new failures).
pub const HISTORY_TTL_SECONDS: i64 = 30 * 86_400;

/// What to look up: one access key, over a time window, in the Region its calls were made in (event
/// history is kept per account and Region; `None`: the adapter's own Region).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub access_key_id: String,
    pub region: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
}

impl HistoryQuery {
    /// The lookup for an incident's credential: from its creation (or as far back as a temporary
    /// credential can live) to now, within the event history's 90 days. `None` without an access key.
    pub fn for_observation(observation: &Observation, now: Timestamp) -> Option<Self> {
        let key = observation.access_key_id()?;
        let from = observation.credential_created.map_or_else(
            || {
                observation
                    .first_failure
                    .plus_seconds(-MAX_TEMPORARY_CREDENTIAL_SECONDS)
            },
            |created| created.plus_seconds(-CREATED_SLACK_SECONDS),
        );
        let end = now.max(observation.last_failure);
        let start = from.max(end.plus_seconds(-EVENT_HISTORY_SECONDS));
        // Region names are short lowercase words with dashes; anything else is not sent anywhere.
        let region = observation.region.clone().filter(|r| {
            !r.is_empty()
                && r.len() <= 32
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
        Some(Self {
            access_key_id: key.to_owned(),
            region,
            start,
            end,
        })
    }
}

/// One call made with the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub at: Timestamp,
    /// `eventSource eventName`.
    pub call: String,
}

/// What the event history says about one access key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHistory {
    pub access_key_id: String,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    /// Distinct events read.
    pub events: u64,
    /// The earliest event read (the first use, when the history was read to its start).
    pub first_used: Option<Call>,
    /// The latest event without an `errorCode`.
    pub last_worked: Option<Call>,
    /// Events with an `errorCode` after `last_worked` (all of them when nothing worked).
    pub failed_since: u64,
    /// `eventSource` → events, for the services the key called.
    pub services: BTreeMap<String, u64>,
    /// Events whose `CloudTrailEvent` did not decode, or were made with another key.
    pub skipped: u64,
    /// Why the history was not read to its start (page cap, time budget, throttling), if it was not.
    pub incomplete: Option<String>,
}

impl KeyHistory {
    /// Services, most called first.
    pub fn services_by_count(&self) -> Vec<(&str, u64)> {
        let mut services: Vec<_> = self
            .services
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect();
        services.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        services
    }
}

/// Accumulates `LookupEvents` pages into a [`KeyHistory`]: feed each event's `CloudTrailEvent` string
/// (the JSON record) in any order; events seen twice (overlapping pages) count once.
#[derive(Debug)]
pub struct HistoryBuilder {
    history: KeyHistory,
    seen: HashSet<String>,
    /// Every event's time and whether it failed, to count failures after the last success at the end.
    outcomes: Vec<(Timestamp, bool)>,
}

impl HistoryBuilder {
    pub fn new(query: &HistoryQuery) -> Self {
        Self {
            history: KeyHistory {
                access_key_id: query.access_key_id.clone(),
                window_start: query.start,
                window_end: query.end,
                events: 0,
                first_used: None,
                last_worked: None,
                failed_since: 0,
                services: BTreeMap::new(),
                skipped: 0,
                incomplete: None,
            },
            seen: HashSet::new(),
            outcomes: Vec::new(),
        }
    }

    /// Adds one event from its `CloudTrailEvent` JSON.
    pub fn add(&mut self, cloud_trail_event: &str) {
        let Ok(record) = Record::from_slice(cloud_trail_event.as_bytes()) else {
            self.history.skipped += 1;
            return;
        };
        let Some(at) = text(&record.event_time).and_then(Timestamp::parse) else {
            self.history.skipped += 1;
            return;
        };
        let key = record
            .user_identity
            .as_ref()
            .and_then(|u| text(&u.access_key_id));
        if key.is_some_and(|k| k != self.history.access_key_id) {
            self.history.skipped += 1;
            return;
        }
        if let Some(id) = text(&record.event_id)
            && !self.seen.insert(id.to_owned())
        {
            return;
        }
        let source = text(&record.event_source).unwrap_or("unknown");
        let call = match text(&record.event_name) {
            Some(name) => format!("{source} {name}"),
            None => source.to_owned(),
        };
        let failed = text(&record.error_code).is_some();
        let h = &mut self.history;
        h.events += 1;
        if h.services.contains_key(source) || h.services.len() < SERVICES_KEPT {
            *h.services.entry(source.to_owned()).or_default() += 1;
        }
        if h.first_used.as_ref().is_none_or(|first| at < first.at) {
            h.first_used = Some(Call {
                at,
                call: call.clone(),
            });
        }
        if !failed && h.last_worked.as_ref().is_none_or(|last| at > last.at) {
            h.last_worked = Some(Call { at, call });
        }
        self.outcomes.push((at, failed));
    }

    /// Marks the history as not read to its start, and why.
    pub fn incomplete(&mut self, why: impl Into<String>) {
        self.history.incomplete = Some(why.into());
    }

    pub fn events(&self) -> u64 {
        self.history.events
    }

    pub fn finish(mut self) -> KeyHistory {
        let since = self.history.last_worked.as_ref().map(|c| c.at);
        self.history.failed_since = self
            .outcomes
            .iter()
            .filter(|(at, failed)| *failed && since.is_none_or(|s| *at > s))
            .count() as u64;
        self.history
    }
}

/// Summarizes the events of a lookup (each event's `CloudTrailEvent` string), read to the window's start.
pub fn summarize<'e>(
    query: &HistoryQuery,
    cloud_trail_events: impl IntoIterator<Item = &'e str>,
) -> KeyHistory {
    let mut builder = HistoryBuilder::new(query);
    for event in cloud_trail_events {
        builder.add(event);
    }
    builder.finish()
}

/// Why a lookup gave nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unavailable {
    /// The incident's credential has no access key id to look up.
    NoAccessKey,
    /// Lookups are turned off.
    Disabled,
    /// `LookupEvents` kept answering ThrottlingException (its 2 requests per second are shared by the account).
    Throttled,
    /// The function's role may not call `cloudtrail:LookupEvents`.
    Denied,
    /// The invocation's time budget for lookups ran out.
    TimedOut,
    /// Anything else (network, service error).
    Failed,
}

impl Unavailable {
    pub fn id(self) -> &'static str {
        match self {
            Self::NoAccessKey => "no_access_key",
            Self::Disabled => "disabled",
            Self::Throttled => "throttled",
            Self::Denied => "denied",
            Self::TimedOut => "timed_out",
            Self::Failed => "failed",
        }
    }

    /// The reason for a person.
    pub fn explain(self) -> &'static str {
        match self {
            Self::NoAccessKey => "the records name no access key id to look up",
            Self::Disabled => "history lookups are turned off in this deployment",
            Self::Throttled => {
                "CloudTrail LookupEvents was throttled (2 requests per second per account and Region, shared with every other caller)"
            }
            Self::Denied => {
                "tokenwatch may not call cloudtrail:LookupEvents (access denied to the function's role)"
            }
            Self::TimedOut => "the lookup did not finish within this invocation's time budget",
            Self::Failed => "CloudTrail LookupEvents failed",
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// A lookup that failed, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct LookupError {
    pub reason: Unavailable,
    pub message: String,
}

impl LookupError {
    pub fn new(reason: Unavailable, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// What the alert says about the key's history: found, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Enrichment {
    Found {
        history: KeyHistory,
        looked_up_at: Timestamp,
    },
    Unavailable {
        reason: Unavailable,
        detail: String,
        looked_up_at: Timestamp,
    },
}

impl Enrichment {
    pub fn of(result: Result<KeyHistory, LookupError>, now: Timestamp) -> Self {
        match result {
            Ok(history) => Self::Found {
                history,
                looked_up_at: now,
            },
            Err(e) => Self::Unavailable {
                reason: e.reason,
                detail: e.message,
                looked_up_at: now,
            },
        }
    }

    pub fn is_found(&self) -> bool {
        matches!(self, Self::Found { .. })
    }
}

/// The port for `LookupEvents`. Implementations share one rate limiter per account and Region, read at
/// most [`MAX_LOOKUP_PAGES`] pages, and stop at `deadline`: with some pages read they return a history
/// marked incomplete; with none, an error.
pub trait CredentialHistory {
    fn lookup(
        &self,
        query: &HistoryQuery,
        deadline: Instant,
    ) -> impl Future<Output = Result<KeyHistory, LookupError>> + Send;
}

/// The port for remembering a lookup beside the credential's incident state.
pub trait HistoryCache {
    type Error: std::error::Error + Send + Sync + 'static;

    fn get(
        &self,
        credential: &CredentialKey,
    ) -> impl Future<Output = Result<Option<Enrichment>, Self::Error>> + Send;

    fn put(
        &self,
        credential: &CredentialKey,
        enrichment: &Enrichment,
        expires_at: Timestamp,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> HistoryQuery {
        HistoryQuery {
            access_key_id: "ASIAKEY".into(),
            region: None,
            start: Timestamp::parse("2026-11-26T00:00:00Z").expect("time"),
            end: Timestamp::parse("2026-11-26T12:00:00Z").expect("time"),
        }
    }

    fn event(id: &str, at: &str, name: &str, error: Option<&str>) -> String {
        let error = error.map_or(String::new(), |e| format!(r#","errorCode":"{e}""#));
        format!(
            r#"{{"eventID":"{id}","eventTime":"{at}","eventSource":"s3.amazonaws.com","eventName":"{name}","userIdentity":{{"accessKeyId":"ASIAKEY"}}{error}}}"#
        )
    }

    #[test]
    fn first_use_last_success_and_failures_since() {
        let events = [
            event(
                "3",
                "2026-11-26T10:05:00Z",
                "GetObject",
                Some("ExpiredToken"),
            ),
            event("2", "2026-11-26T10:01:00Z", "ListBuckets", None),
            event("1", "2026-11-26T09:02:00Z", "HeadBucket", None),
            event(
                "0",
                "2026-11-26T09:30:00Z",
                "PutObject",
                Some("AccessDenied"),
            ),
            event(
                "4",
                "2026-11-26T10:06:00Z",
                "GetObject",
                Some("ExpiredToken"),
            ),
            event(
                "4",
                "2026-11-26T10:06:00Z",
                "GetObject",
                Some("ExpiredToken"),
            ),
        ];
        let h = summarize(&query(), events.iter().map(String::as_str));
        assert_eq!(h.events, 5, "the repeated event counts once");
        let first = h.first_used.expect("first");
        assert_eq!(first.at.rfc3339(), "2026-11-26T09:02:00Z");
        assert_eq!(first.call, "s3.amazonaws.com HeadBucket");
        assert_eq!(
            h.last_worked.expect("last").at.rfc3339(),
            "2026-11-26T10:01:00Z"
        );
        assert_eq!(
            h.failed_since, 2,
            "the AccessDenied before the success does not count"
        );
        assert_eq!(h.services["s3.amazonaws.com"], 5);
        assert_eq!(h.incomplete, None);
    }

    #[test]
    fn other_keys_and_junk_are_skipped() {
        let other = r#"{"eventID":"x","eventTime":"2026-11-26T10:00:00Z","userIdentity":{"accessKeyId":"ASIAOTHER"}}"#;
        let h = summarize(&query(), [other, "not json", r#"{"eventID":"y"}"#]);
        assert_eq!((h.events, h.skipped), (0, 3));
        assert_eq!(h.first_used, None);
        assert_eq!(h.last_worked, None);
    }
}
