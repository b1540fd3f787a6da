//! Aggregation: failures counted once per `eventID`, per principal, per session and per minute.
//! Every operation is commutative, so the result does not depend on the order records arrive in.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::classify::RELATED_CODES;
use crate::scan::{Failure, FailureKind, SourceCounts};
use crate::timestamp::Timestamp;

/// Expired-token failures of one role session (or of a principal without sessions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTally {
    pub expired: u64,
    pub access_key_ids: BTreeSet<String>,
    pub first: Timestamp,
    pub last: Timestamp,
    pub max_credential_age: Option<i64>,
}

impl SessionTally {
    fn new(at: Timestamp) -> Self {
        Self {
            expired: 0,
            access_key_ids: BTreeSet::new(),
            first: at,
            last: at,
            max_credential_age: None,
        }
    }

    fn add(&mut self, failure: &Failure) {
        self.expired += 1;
        if let Some(key) = &failure.identity.access_key_id {
            self.access_key_ids.insert(key.clone());
        }
        self.first = self.first.min(failure.time);
        self.last = self.last.max(failure.time);
        if let Some(age) = failure.credential_age_seconds() {
            self.max_credential_age = Some(self.max_credential_age.map_or(age, |m| m.max(age)));
        }
    }
}

/// Expired-token failures of one principal, with its sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrincipalTally {
    pub account_id: Option<String>,
    pub expired: u64,
    pub sessions: HashMap<Option<String>, SessionTally>,
}

/// A CloudWatch statistic set: what `PutMetricData` accepts instead of every value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatisticSet {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl StatisticSet {
    pub fn of(value: f64) -> Self {
        Self {
            count: 1,
            sum: value,
            min: value,
            max: value,
        }
    }

    pub fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }
}

/// The finest grain the metrics are built from: one minute of `eventTime`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MinuteKey {
    pub minute: Timestamp,
    pub account_id: Option<String>,
    pub principal: String,
    pub session_name: Option<String>,
}

/// Per-minute aggregates, ready to become metric data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MinuteSeries {
    pub expired: BTreeMap<MinuteKey, u64>,
    /// Credential age at failure, per minute and principal.
    pub credential_age: BTreeMap<(Timestamp, String), StatisticSet>,
    /// Related credential errors, per minute and code.
    pub related: BTreeMap<(Timestamp, &'static str), u64>,
}

/// Everything counted so far.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub records_scanned: u64,
    pub malformed_records: u64,
    /// Records whose `eventID` had already been counted (CloudTrail delivers at least once).
    pub duplicates: u64,
    pub expired: u64,
    pub principals: HashMap<String, PrincipalTally>,
    pub related: BTreeMap<&'static str, u64>,
    pub minutes: MinuteSeries,
    seen: HashSet<String>,
}

impl Tally {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_counts(&mut self, counts: SourceCounts) {
        self.records_scanned += counts.records;
        self.malformed_records += counts.malformed;
    }

    /// Counts one failure unless its `eventID` was counted before. Returns whether it counted.
    pub fn add(&mut self, failure: &Failure) -> bool {
        if let Some(id) = &failure.event_id {
            if self.seen.contains(id) {
                self.duplicates += 1;
                return false;
            }
            self.seen.insert(id.clone());
        }
        let minute = failure.time.minute();
        match failure.kind {
            FailureKind::ExpiredToken => self.add_expired(failure, minute),
            FailureKind::Related(code) => {
                *self.related.entry(code).or_default() += 1;
                *self.minutes.related.entry((minute, code)).or_default() += 1;
            }
        }
        true
    }

    fn add_expired(&mut self, failure: &Failure, minute: Timestamp) {
        let id = &failure.identity;
        self.expired += 1;
        let principal = self.principals.entry(id.principal.clone()).or_default();
        principal.expired += 1;
        if principal.account_id.is_none() {
            principal.account_id = failure.account_id().map(str::to_owned);
        }
        principal
            .sessions
            .entry(id.session_name.clone())
            .or_insert_with(|| SessionTally::new(failure.time))
            .add(failure);
        let key = MinuteKey {
            minute,
            account_id: failure.account_id().map(str::to_owned),
            principal: id.principal.clone(),
            session_name: id.session_name.clone(),
        };
        *self.minutes.expired.entry(key).or_default() += 1;
        if let Some(age) = failure.credential_age_seconds() {
            let age = age as f64;
            self.minutes
                .credential_age
                .entry((minute, id.principal.clone()))
                .and_modify(|s| s.add(age))
                .or_insert_with(|| StatisticSet::of(age));
        }
    }

    /// Related-error counts for every related code, zero included, so readers see what was looked for.
    pub fn related_by_code(&self) -> BTreeMap<&'static str, u64> {
        RELATED_CODES
            .iter()
            .map(|code| (*code, self.related.get(code).copied().unwrap_or(0)))
            .collect()
    }

    /// Principals by expired-token errors, most first (ties by name, so output is stable).
    pub fn principals_by_errors(&self) -> Vec<(&String, &PrincipalTally)> {
        let mut principals: Vec<_> = self.principals.iter().collect();
        principals.sort_by(|a, b| b.1.expired.cmp(&a.1.expired).then_with(|| a.0.cmp(b.0)));
        principals
    }
}

impl PrincipalTally {
    /// Sessions by expired-token errors, most first.
    pub fn sessions_by_errors(&self) -> Vec<(&Option<String>, &SessionTally)> {
        let mut sessions: Vec<_> = self.sessions.iter().collect();
        sessions.sort_by(|a, b| b.1.expired.cmp(&a.1.expired).then_with(|| a.0.cmp(b.0)));
        sessions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::ErrorCodes;
    use crate::record::Record;

    fn failure(event_id: &str, time: &str, session: &str, key: &str, code: &str) -> Failure {
        let json = format!(
            r#"{{"eventID":"{event_id}","eventTime":"{time}","errorCode":"{code}","recipientAccountId":"111122223333",
            "userIdentity":{{"type":"AssumedRole","arn":"arn:aws:sts::111122223333:assumed-role/ci/{session}","accessKeyId":"{key}",
            "accountId":"111122223333","sessionContext":{{"attributes":{{"creationDate":"2024-05-01T09:00:00Z"}}}}}}}}"#
        );
        let record = Record::from_slice(json.as_bytes()).expect("record");
        Failure::from_record(&record, &ErrorCodes::default())
            .expect("valid")
            .expect("a failure")
    }

    #[test]
    fn duplicates_count_once() {
        let mut tally = Tally::new();
        let f = failure(
            "e1",
            "2024-05-01T10:00:10Z",
            "build-1",
            "ASIA1",
            "ExpiredToken",
        );
        assert!(tally.add(&f));
        assert!(!tally.add(&f));
        assert!(!tally.add(&f));
        assert_eq!(tally.expired, 1);
        assert_eq!(tally.duplicates, 2);
        assert_eq!(tally.minutes.expired.values().sum::<u64>(), 1);
    }

    #[test]
    fn per_principal_session_and_minute() {
        let mut tally = Tally::new();
        for f in [
            failure(
                "e1",
                "2024-05-01T10:00:10Z",
                "build-1",
                "ASIA1",
                "ExpiredToken",
            ),
            failure(
                "e2",
                "2024-05-01T10:00:50Z",
                "build-1",
                "ASIA1",
                "ExpiredToken",
            ),
            failure(
                "e3",
                "2024-05-01T10:07:00Z",
                "build-1",
                "ASIA2",
                "ExpiredTokenException",
            ),
            failure(
                "e4",
                "2024-05-01T10:01:00Z",
                "build-2",
                "ASIA3",
                "ExpiredToken",
            ),
            failure(
                "e5",
                "2024-05-01T10:01:00Z",
                "build-2",
                "ASIA3",
                "InvalidClientTokenId",
            ),
        ] {
            tally.add(&f);
        }
        assert_eq!(tally.expired, 4);
        let ci = &tally.principals["arn:aws:iam::111122223333:role/ci"];
        assert_eq!(ci.expired, 4);
        assert_eq!(ci.account_id.as_deref(), Some("111122223333"));
        let b1 = &ci.sessions[&Some("build-1".to_owned())];
        assert_eq!(b1.expired, 3);
        assert_eq!(
            b1.access_key_ids.iter().collect::<Vec<_>>(),
            ["ASIA1", "ASIA2"]
        );
        assert_eq!(b1.first.rfc3339(), "2024-05-01T10:00:10Z");
        assert_eq!(b1.last.rfc3339(), "2024-05-01T10:07:00Z");
        assert_eq!(b1.max_credential_age, Some(4020));
        assert_eq!(ci.sessions_by_errors()[0].0.as_deref(), Some("build-1"));
        assert_eq!(tally.related_by_code()["InvalidClientTokenId"], 1);
        assert_eq!(tally.related_by_code()["RequestExpired"], 0);
        let minutes: Vec<(String, Option<String>, u64)> = tally
            .minutes
            .expired
            .iter()
            .map(|(k, v)| (k.minute.rfc3339(), k.session_name.clone(), *v))
            .collect();
        assert_eq!(
            minutes,
            [
                ("2024-05-01T10:00:00Z".into(), Some("build-1".into()), 2),
                ("2024-05-01T10:01:00Z".into(), Some("build-2".into()), 1),
                ("2024-05-01T10:07:00Z".into(), Some("build-1".into()), 1),
            ]
        );
        let age = tally.minutes.credential_age[&(
            Timestamp::parse("2024-05-01T10:00:00Z").expect("t"),
            "arn:aws:iam::111122223333:role/ci".to_owned(),
        )];
        assert_eq!(
            (age.count, age.min, age.max, age.sum),
            (2, 3610.0, 3650.0, 7260.0)
        );
    }
}
