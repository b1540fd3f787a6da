//! `--since` and `--until`: a duration back from now (`7d`), a UTC date, or an RFC 3339 time.

use tokenwatch_core::Timestamp;

const SECONDS_PER_DAY: i64 = 86_400;

/// A point in time as given on the command line, resolved against the clock when the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This many seconds before now.
    Ago(i64),
    At(Timestamp),
}

impl When {
    pub fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            Self::Ago(seconds) => now.plus_seconds(-seconds),
            Self::At(at) => at,
        }
    }
}

/// `90s`, `45m`, `36h`, `7d`, `2w`.
fn duration(text: &str) -> Option<i64> {
    let unit = text.chars().last()?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => SECONDS_PER_DAY,
        'w' => 7 * SECONDS_PER_DAY,
        _ => return None,
    };
    let n: i64 = text[..text.len() - 1].parse().ok().filter(|n| *n >= 0)?;
    n.checked_mul(scale)
}

/// `2026-11-20` → its first second.
fn date(text: &str) -> Option<Timestamp> {
    (text.len() == 10)
        .then(|| Timestamp::parse(&format!("{text}T00:00:00Z")))
        .flatten()
}

fn parse(text: &str, day_end: bool) -> Result<When, String> {
    let text = text.trim();
    if let Some(seconds) = duration(text) {
        return Ok(When::Ago(seconds));
    }
    if let Some(start) = date(text) {
        return Ok(When::At(if day_end {
            start.plus_seconds(SECONDS_PER_DAY - 1)
        } else {
            start
        }));
    }
    Timestamp::parse(text).map(When::At).ok_or_else(|| {
        format!("{text:?} is neither a duration (7d, 36h, 90m), a date (2026-11-20) nor an RFC 3339 time")
    })
}

/// A date means the start of that day.
pub fn parse_since(text: &str) -> Result<When, String> {
    parse(text, false)
}

/// A date means the end of that day.
pub fn parse_until(text: &str) -> Result<When, String> {
    parse(text, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let now = Timestamp::parse("2026-11-27T12:00:00Z").expect("time");
        let at = |w: Result<When, String>| w.expect("parses").resolve(now).rfc3339();
        assert_eq!(at(parse_since("7d")), "2026-11-20T12:00:00Z");
        assert_eq!(at(parse_since("36h")), "2026-11-26T00:00:00Z");
        assert_eq!(at(parse_since("2w")), "2026-11-13T12:00:00Z");
        assert_eq!(at(parse_since("90m")), "2026-11-27T10:30:00Z");
        assert_eq!(at(parse_since("2026-11-20")), "2026-11-20T00:00:00Z");
        assert_eq!(at(parse_until("2026-11-20")), "2026-11-20T23:59:59Z");
        assert_eq!(
            at(parse_until("2026-11-20T06:30:00Z")),
            "2026-11-20T06:30:00Z"
        );
        for bad in ["", "7", "d", "-3d", "yesterday", "2026-13-01"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
