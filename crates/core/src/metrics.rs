//! Metric data: built from a tally as statistic sets per minute and dimension set, session names normalized
//! so the metric space stays bounded, and batched within PutMetricData's limits. Also the Embedded Metric
//! Format rendering for `emf` mode. Pure functions with exact-output tests; adapters only send.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::contract::{Unit, dimension, metric};
use crate::detect::{Notice, NoticeKind};
use crate::scan::SourceCounts;
use crate::tally::{StatisticSet, Tally};
use crate::timestamp::Timestamp;

/// PutMetricData accepts at most this many data per request.
pub const MAX_DATUMS_PER_REQUEST: usize = 1000;
/// ...and a request body of at most 1 MB; batches stay under this estimate with room to spare.
pub const MAX_REQUEST_BYTES: usize = 1_000_000;
pub const MAX_DIMENSIONS_PER_DATUM: usize = 30;
/// Dimension values are 1 to 1,024 characters.
pub const MAX_DIMENSION_VALUE_CHARS: usize = 1024;
/// CloudWatch refuses data more than two weeks old or more than two hours ahead.
pub const MAX_AGE_SECONDS: i64 = 14 * 86_400;
pub const MAX_AHEAD_SECONDS: i64 = 2 * 3600;
/// EMF takes at most 100 values per metric in one document.
pub const MAX_EMF_VALUES: usize = 100;
/// Session series kept per invocation unless configured otherwise.
pub const DEFAULT_MAX_SESSION_SERIES: usize = 50;
/// Where sessions beyond the cap are counted.
pub const OTHER_SESSIONS: &str = "other";
/// SessionName for principals without sessions (IAM users, root).
pub const NO_SESSION: &str = "none";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dimension {
    pub name: &'static str,
    pub value: String,
}

impl Dimension {
    fn new(name: &'static str, value: &str) -> Self {
        let value = if value.is_empty() { "unknown" } else { value };
        Self {
            name,
            value: value.chars().take(MAX_DIMENSION_VALUE_CHARS).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricDatum {
    pub name: &'static str,
    pub unit: Unit,
    pub dimensions: Vec<Dimension>,
    pub timestamp: Timestamp,
    pub stats: StatisticSet,
}

impl MetricDatum {
    /// A generous estimate of this datum's share of a request body.
    pub fn estimated_bytes(&self) -> usize {
        let dims: usize = self
            .dimensions
            .iter()
            .map(|d| d.name.len() + d.value.len() + 48)
            .sum();
        self.name.len() + dims + 160
    }
}

/// Replaces the parts of a role-session name that make every session unique (epoch or millisecond
/// timestamps, UUIDs, long hex ids such as ECS task or instance ids) with `*`, so one job is one series.
pub fn normalize_session(name: &str) -> String {
    let without_uuids = replace_uuids(name);
    let mut out = String::with_capacity(without_uuids.len());
    let mut rest = without_uuids.as_str();
    while !rest.is_empty() {
        let alnum = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        let (token, tail) = if alnum == 0 {
            let len = rest.chars().next().map_or(1, char::len_utf8);
            rest.split_at(len)
        } else {
            rest.split_at(alnum)
        };
        out.push_str(if is_variable(token) { "*" } else { token });
        rest = tail;
    }
    collapse_stars(&out)
}

/// 6+ digits (a timestamp), or 8+ hex characters with a digit among them (an id).
fn is_variable(token: &str) -> bool {
    let digits = token.bytes().filter(u8::is_ascii_digit).count();
    let hex = token.bytes().all(|b| b.is_ascii_hexdigit());
    (digits == token.len() && digits >= 6) || (hex && token.len() >= 8 && digits > 0)
}

const UUID_SHAPE: [usize; 5] = [8, 4, 4, 4, 12];

fn replace_uuids(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if is_uuid_at(&bytes[i..]) {
            out.push('*');
            i += 36;
        } else {
            let len = text[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[i..i + len]);
            i += len;
        }
    }
    out
}

fn is_uuid_at(bytes: &[u8]) -> bool {
    let mut at = 0;
    for (n, len) in UUID_SHAPE.iter().enumerate() {
        if n > 0 {
            if bytes.get(at) != Some(&b'-') {
                return false;
            }
            at += 1;
        }
        match bytes.get(at..at + len) {
            Some(part) if part.iter().all(u8::is_ascii_hexdigit) => at += len,
            _ => return false,
        }
    }
    true
}

/// `*-*-*` → `*`: ids next to ids are one variable part.
fn collapse_stars(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '*' {
            while let Some(&sep) = chars.peek() {
                let mut ahead = chars.clone();
                ahead.next();
                if !sep.is_ascii_alphanumeric() && sep != '*' && ahead.peek() == Some(&'*') {
                    chars.next();
                    chars.next();
                } else if sep == '*' {
                    chars.next();
                } else {
                    break;
                }
            }
        }
    }
    out
}

/// What one invocation saw, as metric inputs.
#[derive(Debug, Clone, Default)]
pub struct MetricInputs<'a> {
    pub tally: Option<&'a Tally>,
    /// Records scanned and malformed, per `Source` value.
    pub sources: Vec<(&'static str, SourceCounts)>,
    pub notices: &'a [Notice],
    pub now: Timestamp,
    pub max_session_series: usize,
}

/// Builds every datum of DESIGN.md's metric contract from one invocation's inputs.
pub fn metric_data(inputs: &MetricInputs<'_>) -> Vec<MetricDatum> {
    let mut data = Vec::new();
    let count = |name, dimensions: Vec<Dimension>, timestamp, n: u64| MetricDatum {
        name,
        unit: Unit::Count,
        dimensions,
        timestamp,
        stats: StatisticSet {
            count: 1,
            sum: n as f64,
            min: n as f64,
            max: n as f64,
        },
    };
    for (source, counts) in &inputs.sources {
        let dims = vec![Dimension::new(dimension::SOURCE, source)];
        data.push(count(
            metric::RECORDS_SCANNED,
            dims.clone(),
            inputs.now,
            counts.records,
        ));
        data.push(count(
            metric::MALFORMED_RECORDS,
            dims,
            inputs.now,
            counts.malformed,
        ));
    }
    if let Some(tally) = inputs.tally {
        expired_token_data(tally, inputs.max_session_series, &mut data, &count);
        for ((minute, principal), stats) in &tally.minutes.credential_age {
            data.push(MetricDatum {
                name: metric::CREDENTIAL_AGE_SECONDS,
                unit: Unit::Seconds,
                dimensions: vec![Dimension::new(dimension::PRINCIPAL, principal)],
                timestamp: *minute,
                stats: *stats,
            });
        }
        for ((minute, code), n) in &tally.minutes.related {
            data.push(count(
                metric::RELATED_CREDENTIAL_ERRORS,
                vec![Dimension::new(dimension::ERROR_CODE, code)],
                *minute,
                *n,
            ));
        }
    }
    let opened: Vec<&Notice> = inputs
        .notices
        .iter()
        .filter(|n| n.kind == NoticeKind::Opened)
        .collect();
    if !opened.is_empty() {
        let minute = inputs.now.minute();
        data.push(count(
            metric::STALE_CREDENTIAL_INCIDENTS,
            vec![],
            minute,
            opened.len() as u64,
        ));
        let mut per_principal: BTreeMap<&str, u64> = BTreeMap::new();
        for notice in opened {
            *per_principal
                .entry(notice.state.observation.facts.principal.as_str())
                .or_default() += 1;
        }
        for (principal, n) in per_principal {
            data.push(count(
                metric::STALE_CREDENTIAL_INCIDENTS,
                vec![Dimension::new(dimension::PRINCIPAL, principal)],
                minute,
                n,
            ));
        }
    }
    data
}

type CountFn<'f> = dyn Fn(&'static str, Vec<Dimension>, Timestamp, u64) -> MetricDatum + 'f;

fn expired_token_data(
    tally: &Tally,
    max_session_series: usize,
    data: &mut Vec<MetricDatum>,
    count: &CountFn<'_>,
) {
    let mut total: BTreeMap<Timestamp, u64> = BTreeMap::new();
    let mut by_account: BTreeMap<(Timestamp, &str), u64> = BTreeMap::new();
    let mut by_principal: BTreeMap<(Timestamp, &str), u64> = BTreeMap::new();
    let mut by_session: BTreeMap<(Timestamp, &str, String), u64> = BTreeMap::new();
    let mut session_totals: HashMap<(&str, String), u64> = HashMap::new();
    for (key, n) in &tally.minutes.expired {
        let session = key
            .session_name
            .as_deref()
            .map_or_else(|| NO_SESSION.to_owned(), normalize_session);
        *session_totals
            .entry((key.principal.as_str(), session))
            .or_default() += n;
    }
    // The busiest series keep their names; the rest share `other` so one invocation cannot explode the metric count.
    let mut ranked: Vec<_> = session_totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let kept: std::collections::HashSet<(&str, String)> = ranked
        .into_iter()
        .take(max_session_series)
        .map(|(k, _)| k)
        .collect();
    for (key, n) in &tally.minutes.expired {
        *total.entry(key.minute).or_default() += n;
        *by_account
            .entry((key.minute, key.account_id.as_deref().unwrap_or("unknown")))
            .or_default() += n;
        *by_principal
            .entry((key.minute, key.principal.as_str()))
            .or_default() += n;
        let session = key
            .session_name
            .as_deref()
            .map_or_else(|| NO_SESSION.to_owned(), normalize_session);
        let series = if kept.contains(&(key.principal.as_str(), session.clone())) {
            session
        } else {
            OTHER_SESSIONS.to_owned()
        };
        *by_session
            .entry((key.minute, key.principal.as_str(), series))
            .or_default() += n;
    }
    for (minute, n) in total {
        data.push(count(metric::EXPIRED_TOKEN_ERRORS, vec![], minute, n));
    }
    for ((minute, account), n) in by_account {
        data.push(count(
            metric::EXPIRED_TOKEN_ERRORS,
            vec![Dimension::new(dimension::ACCOUNT_ID, account)],
            minute,
            n,
        ));
    }
    for ((minute, principal), n) in by_principal {
        data.push(count(
            metric::EXPIRED_TOKEN_ERRORS,
            vec![Dimension::new(dimension::PRINCIPAL, principal)],
            minute,
            n,
        ));
    }
    for ((minute, principal, session), n) in by_session {
        data.push(count(
            metric::EXPIRED_TOKEN_ERRORS,
            vec![
                Dimension::new(dimension::PRINCIPAL, principal),
                Dimension::new(dimension::SESSION_NAME, &session),
            ],
            minute,
            n,
        ));
    }
}

/// Splits data into CloudWatch's accepted window and the rest (too old or too far ahead to be taken).
pub fn within_window(
    data: Vec<MetricDatum>,
    now: Timestamp,
) -> (Vec<MetricDatum>, Vec<MetricDatum>) {
    data.into_iter().partition(|d| {
        let age = now.seconds_since(d.timestamp);
        (-MAX_AHEAD_SECONDS..=MAX_AGE_SECONDS).contains(&age)
    })
}

/// Groups data into requests within PutMetricData's limits, in order.
pub fn batches(data: &[MetricDatum]) -> Vec<&[MetricDatum]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, datum) in data.iter().enumerate() {
        let size = datum.estimated_bytes();
        if i > start && (i - start == MAX_DATUMS_PER_REQUEST || bytes + size > MAX_REQUEST_BYTES) {
            out.push(&data[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < data.len() {
        out.push(&data[start..]);
    }
    out
}

fn unit_name(unit: Unit) -> &'static str {
    match unit {
        Unit::Count => "Count",
        Unit::Seconds => "Seconds",
    }
}

/// Values whose count, sum, minimum and maximum are exactly the statistic set's: EMF carries values, not sets.
pub fn values_of(stats: &StatisticSet) -> Vec<f64> {
    match stats.count {
        0 => Vec::new(),
        1 => vec![stats.sum],
        n => {
            let rest = n - 2;
            let mut values = vec![stats.min, stats.max];
            if rest > 0 {
                let each = (stats.sum - stats.min - stats.max) / rest as f64;
                values.extend(std::iter::repeat_n(each, rest as usize));
            }
            values
        }
    }
}

/// Embedded Metric Format documents (one JSON line each) for the data: one document per timestamp and
/// dimension set, values split so no metric carries more than [`MAX_EMF_VALUES`].
pub fn emf_lines(namespace: &str, data: &[MetricDatum]) -> Vec<String> {
    let mut groups: BTreeMap<(Timestamp, Vec<Dimension>), Vec<&MetricDatum>> = BTreeMap::new();
    for datum in data {
        groups
            .entry((datum.timestamp, datum.dimensions.clone()))
            .or_default()
            .push(datum);
    }
    let mut lines = Vec::new();
    for ((timestamp, dimensions), members) in groups {
        // Counts are published as one summed value; other metrics as their values.
        let mut pending: Vec<(&MetricDatum, Vec<f64>)> = members
            .into_iter()
            .map(|d| {
                let values = if d.unit == Unit::Count {
                    vec![d.stats.sum]
                } else {
                    values_of(&d.stats)
                };
                (d, values)
            })
            .collect();
        while pending.iter().any(|(_, values)| !values.is_empty()) {
            let mut doc = serde_json::Map::new();
            let mut metrics = Vec::new();
            for (datum, values) in &mut pending {
                if values.is_empty() {
                    continue;
                }
                let take: Vec<f64> = values.drain(..values.len().min(MAX_EMF_VALUES)).collect();
                metrics.push(json!({"Name": datum.name, "Unit": unit_name(datum.unit)}));
                let value = if take.len() == 1 {
                    json!(take[0])
                } else {
                    json!(take)
                };
                doc.insert(datum.name.to_owned(), value);
            }
            for d in &dimensions {
                doc.insert(d.name.to_owned(), Value::String(d.value.clone()));
            }
            let names: Vec<&str> = dimensions.iter().map(|d| d.name).collect();
            doc.insert(
                "_aws".to_owned(),
                json!({
                    "Timestamp": timestamp.unix() * 1000,
                    "CloudWatchMetrics": [{"Namespace": namespace, "Dimensions": [names], "Metrics": metrics}],
                }),
            );
            lines.push(Value::Object(doc).to_string());
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_lose_their_unique_parts() {
        for (raw, normalized) in [
            ("nightly-build-1795653000", "nightly-build-*"),
            ("botocore-session-1795652100", "botocore-session-*"),
            ("aws-sdk-java-1795658400000", "aws-sdk-java-*"),
            ("i-0c7c518c673218e63", "i-*"),
            ("i-0abc1234", "i-*"),
            (
                "eks-prod-api-0b1e2f3a-4c5d-6e7f-8a9b-0c1d2e3f4a5b",
                "eks-prod-api-*",
            ),
            (
                "ecs-0b1e2f3a-4c5d-6e7f-8a9b-0c1d2e3f4a5b-1795653000",
                "ecs-*",
            ),
            (
                "GitHubActions-1795653000-attempt-2",
                "GitHubActions-*-attempt-2",
            ),
            ("ecs-task-3f2a1b9c8d7e6f5a4b3c2d1e0f9a8b7c", "ecs-task-*"),
            ("jane.doe@example.com", "jane.doe@example.com"),
            ("terraform-run", "terraform-run"),
            ("deadbeef-cafe", "deadbeef-cafe"),
            ("build-42", "build-42"),
            ("run-2024", "run-2024"),
            ("", ""),
        ] {
            assert_eq!(normalize_session(raw), normalized, "{raw}");
        }
    }

    #[test]
    fn batches_respect_count_and_size() {
        let datum = |value: &str| MetricDatum {
            name: metric::EXPIRED_TOKEN_ERRORS,
            unit: Unit::Count,
            dimensions: vec![Dimension::new(dimension::PRINCIPAL, value)],
            timestamp: Timestamp::from_unix(0),
            stats: StatisticSet::of(1.0),
        };
        let small: Vec<MetricDatum> = (0..2500).map(|i| datum(&i.to_string())).collect();
        let sizes: Vec<usize> = batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        let big: Vec<MetricDatum> = (0..2000).map(|_| datum(&"x".repeat(1024))).collect();
        for batch in batches(&big) {
            let bytes: usize = batch.iter().map(MetricDatum::estimated_bytes).sum();
            assert!(bytes <= MAX_REQUEST_BYTES, "{bytes}");
        }
        assert_eq!(batches(&big).iter().map(|b| b.len()).sum::<usize>(), 2000);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn values_reproduce_the_statistic_set() {
        let mut stats = StatisticSet::of(3600.0);
        for v in [3700.0, 7200.0, 4000.0, 5000.0] {
            stats.add(v);
        }
        let values = values_of(&stats);
        assert_eq!(values.len() as u64, stats.count);
        assert!((values.iter().sum::<f64>() - stats.sum).abs() < 1e-6);
        assert_eq!(values.iter().cloned().fold(f64::MAX, f64::min), stats.min);
        assert_eq!(values.iter().cloned().fold(f64::MIN, f64::max), stats.max);
    }

    #[test]
    fn emf_document_shape() {
        let data = vec![
            MetricDatum {
                name: metric::EXPIRED_TOKEN_ERRORS,
                unit: Unit::Count,
                dimensions: vec![Dimension::new(
                    dimension::PRINCIPAL,
                    "arn:aws:iam::1:role/ci",
                )],
                timestamp: Timestamp::from_unix(1_700_000_040),
                stats: StatisticSet {
                    count: 1,
                    sum: 7.0,
                    min: 7.0,
                    max: 7.0,
                },
            },
            MetricDatum {
                name: metric::CREDENTIAL_AGE_SECONDS,
                unit: Unit::Seconds,
                dimensions: vec![Dimension::new(
                    dimension::PRINCIPAL,
                    "arn:aws:iam::1:role/ci",
                )],
                timestamp: Timestamp::from_unix(1_700_000_040),
                stats: StatisticSet {
                    count: 2,
                    sum: 7300.0,
                    min: 3600.0,
                    max: 3700.0,
                },
            },
        ];
        let lines = emf_lines("TokenWatch", &data);
        assert_eq!(
            lines,
            [
                r#"{"CredentialAgeSeconds":[3600.0,3700.0],"ExpiredTokenErrors":7.0,"Principal":"arn:aws:iam::1:role/ci","_aws":{"CloudWatchMetrics":[{"Dimensions":[["Principal"]],"Metrics":[{"Name":"ExpiredTokenErrors","Unit":"Count"},{"Name":"CredentialAgeSeconds","Unit":"Seconds"}],"Namespace":"TokenWatch"}],"Timestamp":1700000040000}}"#
            ]
        );
    }

    #[test]
    fn emf_splits_long_value_lists() {
        let mut stats = StatisticSet::of(1.0);
        for _ in 0..249 {
            stats.add(2.0);
        }
        let data = vec![MetricDatum {
            name: metric::CREDENTIAL_AGE_SECONDS,
            unit: Unit::Seconds,
            dimensions: vec![],
            timestamp: Timestamp::from_unix(60),
            stats,
        }];
        let lines = emf_lines("TokenWatch", &data);
        assert_eq!(lines.len(), 3);
        let total: usize = lines
            .iter()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("json");
                v["CredentialAgeSeconds"].as_array().map_or(1, Vec::len)
            })
            .sum();
        assert_eq!(total, 250);
    }

    #[test]
    fn old_and_future_data_are_set_aside() {
        let now = Timestamp::from_unix(100 * 86_400);
        let at = |t: i64| MetricDatum {
            name: metric::EXPIRED_TOKEN_ERRORS,
            unit: Unit::Count,
            dimensions: vec![],
            timestamp: Timestamp::from_unix(t),
            stats: StatisticSet::of(1.0),
        };
        let (ok, rejected) = within_window(
            vec![
                at(now.unix()),
                at(now.unix() - MAX_AGE_SECONDS - 1),
                at(now.unix() + MAX_AHEAD_SECONDS + 1),
            ],
            now,
        );
        assert_eq!((ok.len(), rejected.len()), (1, 2));
    }
}
