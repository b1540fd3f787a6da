//! Where a trail keeps its log files in S3, for reading back a period of them without listing the bucket:
//!
//! ```text
//! PREFIX/AWSLogs/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/ACCOUNT_CloudTrail_REGION_YYYYMMDDTHHMMZ_RANDOM.json.gz
//! PREFIX/AWSLogs/o-ORGID/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/...          (organization trails)
//! ```
//!
//! Digest files live under `CloudTrail-Digest/` and Insights under `CloudTrail-Insight/`, beside
//! `CloudTrail/`; neither holds records to count. The date path is the UTC date the file was delivered.

use crate::timestamp::Timestamp;

const SECONDS_PER_DAY: i64 = 86_400;
pub const LOGS_FOLDER: &str = "AWSLogs/";
pub const CLOUDTRAIL_FOLDER: &str = "CloudTrail/";
const LOG_SUFFIXES: [&str; 2] = [".json.gz", ".json"];

/// `s3://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// The key prefix, empty or ending in `/`.
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("{0:?} is not an s3:// URL (s3://BUCKET or s3://BUCKET/PREFIX)")]
    NotS3(String),
    #[error("{0:?} names no bucket")]
    NoBucket(String),
}

impl S3Location {
    pub fn parse(url: &str) -> Result<Self, LocationError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| LocationError::NotS3(url.to_owned()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(LocationError::NoBucket(url.to_owned()));
        }
        let prefix = prefix.trim_matches('/');
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }

    /// The `AWSLogs/` folder: under the prefix, or the prefix itself when it already ends there.
    pub fn logs_root(&self) -> String {
        if self.prefix.ends_with(LOGS_FOLDER) {
            self.prefix.clone()
        } else {
            format!("{}{LOGS_FOLDER}", self.prefix)
        }
    }
}

/// A folder directly under `AWSLogs/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogsFolder {
    /// A 12-digit account id.
    Account(String),
    /// An organization id (`o-` and 10 to 32 lowercase letters or digits): accounts are under it.
    Organization(String),
    Other(String),
}

impl LogsFolder {
    /// Classifies the last segment of a listed folder (`.../AWSLogs/111122223333/`).
    pub fn of(folder: &str) -> Self {
        let name = folder
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        if name.len() == 12 && name.bytes().all(|b| b.is_ascii_digit()) {
            Self::Account(name)
        } else if name.strip_prefix("o-").is_some_and(|id| {
            (10..=32).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }) {
            Self::Organization(name)
        } else {
            Self::Other(name)
        }
    }
}

/// The UTC day folders (`YYYY/MM/DD/`) of every day that `since..=until` touches, oldest first.
pub fn day_folders(since: Timestamp, until: Timestamp) -> Vec<String> {
    let first = since.unix() - since.unix().rem_euclid(SECONDS_PER_DAY);
    let mut days = Vec::new();
    let mut day = first;
    while day <= until.unix() {
        let date = Timestamp::from_unix(day).rfc3339();
        if let (Some(y), Some(m), Some(d)) = (date.get(..4), date.get(5..7), date.get(8..10)) {
            days.push(format!("{y}/{m}/{d}/"));
        }
        day += SECONDS_PER_DAY;
    }
    days
}

/// Whether a key is a log file of records (not a digest, not some other file).
pub fn is_log_file(key: &str) -> bool {
    !key.contains(crate::envelope::DIGEST_MARKER) && LOG_SUFFIXES.iter().any(|s| key.ends_with(s))
}

/// The delivery time CloudTrail writes into a log file's name (`_YYYYMMDDTHHMMZ_`), if it has one.
pub fn delivery_time(key: &str) -> Option<Timestamp> {
    let name = key.rsplit('/').next()?;
    name.split('_').find_map(|part| {
        let b = part.as_bytes();
        if b.len() != 14 || b[8] != b'T' || b[13] != b'Z' {
            return None;
        }
        let digits = |r: std::ops::Range<usize>| {
            part.get(r)
                .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
        };
        let text = format!(
            "{}-{}-{}T{}:{}:00Z",
            digits(0..4)?,
            digits(4..6)?,
            digits(6..8)?,
            digits(9..11)?,
            digits(11..13)?
        );
        Timestamp::parse(&text)
    })
}

/// Whether a listed log file belongs to the period: by the delivery time in its name, or (without one)
/// by the day folder it was listed from, which the caller already chose.
pub fn delivered_within(key: &str, since: Timestamp, until: Timestamp) -> bool {
    delivery_time(key).is_none_or(|at| at.minute() >= since.minute() && at <= until)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Timestamp {
        Timestamp::parse(text).expect("time")
    }

    #[test]
    fn locations() {
        let l = S3Location::parse("s3://trail-bucket/team/logs/").expect("url");
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("trail-bucket", "team/logs/")
        );
        assert_eq!(l.logs_root(), "team/logs/AWSLogs/");
        assert_eq!(
            S3Location::parse("s3://b").expect("url").logs_root(),
            "AWSLogs/"
        );
        assert_eq!(
            S3Location::parse("s3://b/AWSLogs")
                .expect("url")
                .logs_root(),
            "AWSLogs/"
        );
        assert!(matches!(
            S3Location::parse("https://b"),
            Err(LocationError::NotS3(_))
        ));
        assert!(matches!(
            S3Location::parse("s3:///x"),
            Err(LocationError::NoBucket(_))
        ));
    }

    #[test]
    fn folders_under_awslogs() {
        assert_eq!(
            LogsFolder::of("p/AWSLogs/111122223333/"),
            LogsFolder::Account("111122223333".into())
        );
        assert_eq!(
            LogsFolder::of("AWSLogs/o-a1b2c3d4e5/"),
            LogsFolder::Organization("o-a1b2c3d4e5".into())
        );
        assert_eq!(
            LogsFolder::of("AWSLogs/o-SHORT/"),
            LogsFolder::Other("o-SHORT".into())
        );
        assert_eq!(
            LogsFolder::of("AWSLogs/1234/"),
            LogsFolder::Other("1234".into())
        );
    }

    #[test]
    fn days_touched_by_a_period() {
        assert_eq!(
            day_folders(t("2026-02-27T23:00:00Z"), t("2026-03-01T00:00:00Z")),
            ["2026/02/27/", "2026/02/28/", "2026/03/01/"]
        );
        assert_eq!(
            day_folders(t("2026-11-26T10:00:00Z"), t("2026-11-26T11:00:00Z")),
            ["2026/11/26/"]
        );
        assert!(day_folders(t("2026-11-27T00:00:00Z"), t("2026-11-26T00:00:00Z")).is_empty());
    }

    #[test]
    fn file_names() {
        let key = "AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/26/111122223333_CloudTrail_us-east-1_20261126T0105Z_AbCdEf0123456789.json.gz";
        assert_eq!(delivery_time(key), Some(t("2026-11-26T01:05:00Z")));
        assert!(is_log_file(key));
        assert!(!is_log_file(
            "AWSLogs/1/CloudTrail-Digest/us-east-1/2026/11/26/1_CloudTrail-Digest_us-east-1_x_20261126T0105Z.json.gz"
        ));
        assert!(!is_log_file(
            "AWSLogs/1/CloudTrail/us-east-1/2026/11/26/notes.txt"
        ));
        assert_eq!(delivery_time("AWSLogs/x/y.json.gz"), None);
        assert!(delivered_within(
            key,
            t("2026-11-26T01:05:30Z"),
            t("2026-11-26T02:00:00Z")
        ));
        assert!(!delivered_within(
            key,
            t("2026-11-26T01:06:00Z"),
            t("2026-11-26T02:00:00Z")
        ));
        assert!(!delivered_within(
            key,
            t("2026-11-25T00:00:00Z"),
            t("2026-11-26T01:04:59Z")
        ));
        assert!(delivered_within(
            "AWSLogs/x/y.json.gz",
            t("2030-01-01T00:00:00Z"),
            t("2030-01-02T00:00:00Z")
        ));
    }
}
