//! The scan report for people: principals by errors, their sessions under them, aligned columns.

use std::fmt::Write;

use tokenwatch_core::ScanReport;
use tokenwatch_core::detect::Policy;
use tokenwatch_core::timestamp::human_duration;

use crate::ScanOutcome;

/// Keys listed per session before the rest are only counted.
const KEYS_SHOWN: usize = 2;

pub fn render(report: &ScanReport, outcome: &ScanOutcome, policy: &Policy) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Scanned {} records from {} source{} in {:.2} s: {} malformed, {} duplicate deliveries skipped.",
        thousands(report.records_scanned),
        outcome.sources,
        if outcome.sources == 1 { "" } else { "s" },
        outcome.elapsed.as_secs_f64(),
        thousands(report.malformed_records),
        thousands(report.duplicate_events),
    );
    out.push('\n');
    out.push_str(&render_body(report));
    out.push_str(&render_incidents(report, policy));
    out
}

/// The incidents: one line each, what on-call would be paged for.
pub fn render_incidents(report: &ScanReport, policy: &Policy) -> String {
    let mut out = String::new();
    let rule = format!(
        "at least {} failures of one credential over at least {}",
        policy.min_failures,
        human_duration(policy.min_span_seconds)
    );
    if report.incidents.is_empty() {
        let _ = writeln!(out, "\nNo stale-credential incidents ({rule}).");
        return out;
    }
    let _ = writeln!(
        out,
        "\n{} stale-credential incident{} ({rule}); --alerts prints what on-call receives:\n",
        report.incidents.len(),
        plural(report.incidents.len() as u64)
    );
    let mut rows = vec![[
        "ACCESS KEY".to_owned(),
        "FAILURES".to_owned(),
        "FOR".to_owned(),
        "AGE".to_owned(),
        "LIKELY CAUSE".to_owned(),
        "PRINCIPAL / SESSION".to_owned(),
    ]];
    for incident in &report.incidents {
        let name = incident
            .principal
            .rsplit(['/', ':'])
            .next()
            .unwrap_or(&incident.principal);
        rows.push([
            incident
                .access_key_id
                .clone()
                .unwrap_or_else(|| "(none)".to_owned()),
            thousands(incident.failures),
            human_duration(incident.last_failure.seconds_since(incident.first_failure)),
            incident
                .credential_age_seconds
                .map(human_duration)
                .unwrap_or_default(),
            incident.likely_cause.clone(),
            match &incident.session_name {
                Some(session) => format!("{name} / {session}"),
                None => name.to_owned(),
            },
        ]);
    }
    out.push_str(&aligned(&rows));
    out
}

/// Everything after the summary line; no timings, so it can be compared exactly.
pub fn render_body(report: &ScanReport) -> String {
    let mut out = String::new();
    if report.expired_token_errors == 0 {
        out.push_str("No expired-token errors.\n");
    } else {
        let _ = writeln!(
            out,
            "{} expired-token error{} from {} principal{}.\n",
            thousands(report.expired_token_errors),
            plural(report.expired_token_errors),
            report.principals.len(),
            plural(report.principals.len() as u64),
        );
        let mut rows = vec![[
            "PRINCIPAL / SESSION".to_owned(),
            "ERRORS".to_owned(),
            "FIRST ERROR (UTC)".to_owned(),
            "LAST ERROR (UTC)".to_owned(),
            "MAX AGE".to_owned(),
            "ACCESS KEYS".to_owned(),
        ]];
        for principal in &report.principals {
            rows.push([
                principal.principal.clone(),
                thousands(principal.expired_token_errors),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            for session in &principal.sessions {
                let keys = &session.access_key_ids;
                let mut shown = keys
                    .iter()
                    .take(KEYS_SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ");
                if keys.len() > KEYS_SHOWN {
                    let _ = write!(shown, " +{}", keys.len() - KEYS_SHOWN);
                }
                rows.push([
                    format!(
                        "  {}",
                        session.session_name.as_deref().unwrap_or("(no session)")
                    ),
                    thousands(session.expired_token_errors),
                    short_time(&session.first_error.rfc3339()),
                    short_time(&session.last_error.rfc3339()),
                    session
                        .max_credential_age_seconds
                        .map(human_duration)
                        .unwrap_or_default(),
                    shown,
                ]);
            }
        }
        out.push_str(&aligned(&rows));
    }
    let related: Vec<String> = report
        .related_errors
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(code, n)| format!("{code} {}", thousands(*n)))
        .collect();
    if !related.is_empty() {
        let _ = writeln!(
            out,
            "\nRelated credential errors (not expiry; RequestExpired is usually clock skew): {}",
            related.join(", ")
        );
    }
    out
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn short_time(rfc3339: &str) -> String {
    rfc3339
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_owned()
}

/// Left-aligned text columns, right-aligned numbers (column 1), two spaces between.
fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            if i == 1 {
                let _ = write!(line, "{cell:>width$}");
            } else {
                let _ = write!(line, "{cell:<width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenwatch_core::report::{PrincipalReport, SessionReport};
    use tokenwatch_core::{Tally, Timestamp};

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn table_layout() {
        let mut report = ScanReport::new(&Tally::new(), Vec::new());
        report.expired_token_errors = 12;
        report.related_errors.insert("RequestExpired", 2);
        let t = |s| Timestamp::parse(s).expect("time");
        report.principals = vec![PrincipalReport {
            principal: "arn:aws:iam::111122223333:role/ci/build-bot".into(),
            account_id: Some("111122223333".into()),
            expired_token_errors: 12,
            sessions: vec![
                SessionReport {
                    session_name: Some("nightly-build-1".into()),
                    expired_token_errors: 11,
                    access_key_ids: vec!["ASIA1".into(), "ASIA2".into(), "ASIA3".into()],
                    first_error: t("2024-05-01T10:00:00Z"),
                    last_error: t("2024-05-01T11:00:00Z"),
                    max_credential_age_seconds: Some(7260),
                },
                SessionReport {
                    session_name: None,
                    expired_token_errors: 1,
                    access_key_ids: vec![],
                    first_error: t("2024-05-01T10:00:00Z"),
                    last_error: t("2024-05-01T10:00:00Z"),
                    max_credential_age_seconds: None,
                },
            ],
        }];
        let expected = "\
12 expired-token errors from 1 principal.

PRINCIPAL / SESSION                          ERRORS  FIRST ERROR (UTC)    LAST ERROR (UTC)     MAX AGE  ACCESS KEYS
arn:aws:iam::111122223333:role/ci/build-bot      12
  nightly-build-1                                11  2024-05-01 10:00:00  2024-05-01 11:00:00  2h 01m   ASIA1 ASIA2 +1
  (no session)                                    1  2024-05-01 10:00:00  2024-05-01 10:00:00

Related credential errors (not expiry; RequestExpired is usually clock skew): RequestExpired 2
";
        assert_eq!(render_body(&report), expected);
    }
}
