//! Event times as whole Unix seconds: CloudTrail records times to the second, and seconds make minute
//! buckets, spans and ages plain integer arithmetic.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time, in whole seconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix(seconds: i64) -> Self {
        Self(seconds)
    }

    pub const fn unix(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (`2023-07-10T12:11:15Z`, with optional fractional seconds or offset).
    pub fn parse(text: &str) -> Option<Self> {
        OffsetDateTime::parse(text.trim(), &Rfc3339)
            .ok()
            .map(|t| Self(t.unix_timestamp()))
    }

    /// The start of the minute holding this instant: metrics are timestamped by minute.
    pub const fn minute(self) -> Self {
        Self(self.0 - self.0.rem_euclid(60))
    }

    pub const fn seconds_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    pub const fn plus_seconds(self, seconds: i64) -> Self {
        Self(self.0.saturating_add(seconds))
    }

    /// RFC 3339 in UTC, e.g. `2023-07-10T12:11:15Z`.
    pub fn rfc3339(self) -> String {
        match OffsetDateTime::from_unix_timestamp(self.0) {
            Ok(t) => t.format(&Rfc3339).unwrap_or_else(|_| self.0.to_string()),
            Err(_) => self.0.to_string(),
        }
    }

    /// `2023-07-10 12:11:15 UTC`: for tables and alerts read by people.
    pub fn human(self) -> String {
        let text = self.rfc3339();
        match text.split_once('T') {
            Some((date, rest)) => format!("{date} {} UTC", rest.trim_end_matches('Z')),
            None => text,
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| D::Error::custom(format!("not an RFC 3339 time: {text}")))
    }
}

/// A duration in seconds written for people: `1h 02m`, `45m 10s`, `12s`.
pub fn human_duration(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{sign}{d}d {h:02}h")
    } else if h > 0 {
        format!("{sign}{h}h {m:02}m")
    } else if m > 0 {
        format!("{sign}{m}m {sec:02}s")
    } else {
        format!("{sign}{sec}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cloudtrail_times() {
        let t = Timestamp::parse("2023-07-10T12:11:15Z").expect("valid");
        assert_eq!(t.unix(), 1_688_991_075);
        assert_eq!(t.rfc3339(), "2023-07-10T12:11:15Z");
        assert_eq!(t.minute().rfc3339(), "2023-07-10T12:11:00Z");
        let frac = Timestamp::parse("2020-09-14T00:44:23.000Z").expect("valid");
        assert_eq!(frac.rfc3339(), "2020-09-14T00:44:23Z");
        assert_eq!(Timestamp::parse("yesterday"), None);
        assert_eq!(Timestamp::parse(""), None);
    }

    #[test]
    fn minute_rounds_down_before_the_epoch_too() {
        assert_eq!(Timestamp::from_unix(-1).minute().unix(), -60);
        assert_eq!(Timestamp::from_unix(119).minute().unix(), 60);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(12), "12s");
        assert_eq!(human_duration(2710), "45m 10s");
        assert_eq!(human_duration(3720), "1h 02m");
        assert_eq!(human_duration(90_000), "1d 01h");
        assert_eq!(human_duration(-30), "-30s");
    }

    #[test]
    fn human_form_is_utc_labelled() {
        assert_eq!(
            Timestamp::from_unix(1_688_991_075).human(),
            "2023-07-10 12:11:15 UTC"
        );
    }
}
