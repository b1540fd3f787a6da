//! The alert on-call receives: a short subject, a plain-text body for a person at 3 a.m., a JSON form for
//! machines, and message attributes for subscription filters. Strings from records are attacker-controlled
//! (anyone can send a request with any user agent), so every one is cleaned and capped before it is shown.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::detect::{CredentialState, Notice, NoticeKind, Phase};
use crate::history::Enrichment;
use crate::timestamp::{Timestamp, human_duration};

/// SNS subjects must be under 100 characters.
pub const MAX_SUBJECT_CHARS: usize = 99;
pub const ATTRIBUTE_SEVERITY: &str = "severity";
pub const ATTRIBUTE_PRINCIPAL: &str = "principal";
pub const ATTRIBUTE_ACCOUNT: &str = "account_id";
/// Region for console links when the records name none.
const DEFAULT_REGION: &str = "us-east-1";

const MAX_ARN_CHARS: usize = 256;
const MAX_SESSION_CHARS: usize = 128;
const MAX_KEY_CHARS: usize = 40;
const MAX_AGENT_CHARS: usize = 200;
const MAX_SHORT_CHARS: usize = 64;
const MAX_CALL_CHARS: usize = 100;
const SAMPLES_SHOWN: usize = 5;

/// Strips what could forge lines or hide text (control characters, the line and paragraph separators,
/// bidirectional formatting characters, zero-width characters) and caps the length, marking a cut with `…`.
pub fn clean(text: &str, max_chars: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if is_unsafe(c) { '\u{fffd}' } else { c })
        .collect();
    if out.chars().count() > max_chars {
        out = out.chars().take(max_chars.saturating_sub(1)).collect();
        out.push('…');
    }
    out
}

fn is_unsafe(c: char) -> bool {
    // U+2028/U+2029 break lines in mail clients, chat apps and JSON-in-JS; U+061C is the one bidirectional
    // mark outside the U+200x/U+202x/U+206x blocks.
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// SNS subjects take printable ASCII only.
fn ascii_subject(text: &str) -> String {
    let ascii: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if ascii.len() > MAX_SUBJECT_CHARS {
        format!("{}...", &ascii[..MAX_SUBJECT_CHARS - 3])
    } else {
        ascii
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    High,
    Info,
}

/// The machine-readable alert (the JSON form, and what subscription filters see).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AlertPayload {
    pub kind: NoticeKind,
    pub severity: Severity,
    pub principal: String,
    pub session_name: Option<String>,
    pub access_key_id: Option<String>,
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub failures: u64,
    pub first_failure: Timestamp,
    pub last_failure: Timestamp,
    pub credential_created: Option<Timestamp>,
    pub credential_age_seconds: Option<i64>,
    pub likely_cause: &'static str,
    pub cause_summary: &'static str,
    pub usual_lifetime: &'static str,
    pub runbook: Vec<&'static str>,
    pub source_ips: Vec<String>,
    pub user_agents: Vec<String>,
    pub calls: Vec<String>,
    pub console_url: Option<String>,
    pub lookup_command: Option<String>,
    /// The key's CloudTrail history, when it was looked up (or why it could not be).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryPayload>,
}

/// The key's history as the alert carries it, strings cleaned.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HistoryPayload {
    /// `found` or `unavailable`.
    pub status: &'static str,
    pub first_used: Option<Timestamp>,
    pub first_call: Option<String>,
    pub last_worked: Option<Timestamp>,
    pub last_call: Option<String>,
    /// Services the key called, most first, with their event counts.
    pub services: Vec<String>,
    pub events_read: Option<u64>,
    pub window_start: Option<Timestamp>,
    pub window_end: Option<Timestamp>,
    /// Why the history was not read to its start.
    pub incomplete: Option<String>,
    /// Why there is no history (`throttled`, `denied`, `timed_out`, ...).
    pub unavailable_reason: Option<&'static str>,
    pub detail: Option<String>,
}

/// An alert ready for SNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub subject: String,
    pub body: String,
    pub payload: AlertPayload,
    pub attributes: BTreeMap<&'static str, String>,
}

impl Alert {
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(&self.payload).unwrap_or_default()
    }
}

/// The alert without the key's history (it was not looked up: the CLI, tests).
pub fn render(notice: &Notice) -> Alert {
    render_with(notice, None)
}

/// The alert with what the lookup of the key's history gave, if one was made.
pub fn render_with(notice: &Notice, history: Option<&Enrichment>) -> Alert {
    let mut payload = payload(notice.kind, &notice.state);
    payload.history = history.map(history_payload);
    let subject = subject(&payload);
    let body = body(&payload, &notice.state);
    let attributes = BTreeMap::from([
        (
            ATTRIBUTE_SEVERITY,
            match payload.severity {
                Severity::High => "high",
                Severity::Info => "info",
            }
            .to_owned(),
        ),
        (ATTRIBUTE_PRINCIPAL, payload.principal.clone()),
        (
            ATTRIBUTE_ACCOUNT,
            payload
                .account_id
                .clone()
                .unwrap_or_else(|| "unknown".to_owned()),
        ),
    ]);
    Alert {
        subject,
        body,
        payload,
        attributes,
    }
}

fn payload(kind: NoticeKind, state: &CredentialState) -> AlertPayload {
    let o = &state.observation;
    let cause = o.likely_cause();
    let key = o.access_key_id().map(|k| clean(k, MAX_KEY_CHARS));
    let region = o.region.as_deref().map(|r| clean(r, MAX_SHORT_CHARS));
    let link_region = region
        .as_deref()
        .filter(|r| r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .unwrap_or(DEFAULT_REGION);
    let safe_key = key
        .as_deref()
        .filter(|k| k.bytes().all(|b| b.is_ascii_alphanumeric()));
    AlertPayload {
        kind,
        severity: if kind == NoticeKind::Resolved {
            Severity::Info
        } else {
            Severity::High
        },
        principal: clean(&o.facts.principal, MAX_ARN_CHARS),
        session_name: o.facts.session_name.as_deref().map(|s| clean(s, MAX_SESSION_CHARS)),
        access_key_id: key.clone(),
        account_id: o.account_id.as_deref().map(|a| clean(a, MAX_SHORT_CHARS)),
        region: region.clone(),
        failures: o.failures,
        first_failure: o.first_failure,
        last_failure: o.last_failure,
        credential_created: o.credential_created,
        credential_age_seconds: o.credential_age_seconds(),
        likely_cause: cause.id(),
        cause_summary: cause.summary(),
        usual_lifetime: cause.usual_lifetime(),
        runbook: cause.runbook().to_vec(),
        source_ips: sample(&o.source_ips, MAX_SHORT_CHARS),
        user_agents: sample(&o.user_agents, MAX_AGENT_CHARS),
        calls: o
            .calls
            .by_count()
            .into_iter()
            .take(SAMPLES_SHOWN)
            .map(|(call, n)| format!("{} ({n})", clean(call, MAX_CALL_CHARS)))
            .collect(),
        console_url: safe_key.map(|k| {
            format!(
                "https://{link_region}.console.aws.amazon.com/cloudtrailv2/home?region={link_region}#/events?AccessKeyId={k}"
            )
        }),
        lookup_command: safe_key.map(|k| {
            format!(
                "aws cloudtrail lookup-events --region {link_region} --lookup-attributes AttributeKey=AccessKeyId,AttributeValue={k}"
            )
        }),
        history: None,
    }
}

fn history_payload(enrichment: &Enrichment) -> HistoryPayload {
    match enrichment {
        Enrichment::Found { history: h, .. } => HistoryPayload {
            status: "found",
            first_used: h.first_used.as_ref().map(|c| c.at),
            first_call: h
                .first_used
                .as_ref()
                .map(|c| clean(&c.call, MAX_CALL_CHARS)),
            last_worked: h.last_worked.as_ref().map(|c| c.at),
            last_call: h
                .last_worked
                .as_ref()
                .map(|c| clean(&c.call, MAX_CALL_CHARS)),
            services: h
                .services_by_count()
                .into_iter()
                .take(SAMPLES_SHOWN)
                .map(|(s, n)| format!("{} ({n})", clean(s, MAX_SHORT_CHARS)))
                .collect(),
            events_read: Some(h.events),
            window_start: Some(h.window_start),
            window_end: Some(h.window_end),
            incomplete: h.incomplete.as_deref().map(|w| clean(w, MAX_AGENT_CHARS)),
            unavailable_reason: None,
            detail: None,
        },
        Enrichment::Unavailable { reason, detail, .. } => HistoryPayload {
            status: "unavailable",
            first_used: None,
            first_call: None,
            last_worked: None,
            last_call: None,
            services: Vec::new(),
            events_read: None,
            window_start: None,
            window_end: None,
            incomplete: None,
            unavailable_reason: Some(reason.id()),
            detail: Some(format!(
                "{}: {}",
                reason.explain(),
                clean(detail, MAX_AGENT_CHARS)
            )),
        },
    }
}

/// `09:02` on the reference day, `2026-11-25 23:10` on another (all UTC).
fn clock_time(at: Timestamp, reference: Timestamp) -> String {
    let (text, reference) = (at.human(), reference.human());
    let minute = text.get(..16).unwrap_or(&text);
    if text.get(..10) == reference.get(..10) {
        minute.get(11..).unwrap_or(minute).to_owned()
    } else {
        minute.to_owned()
    }
}

fn history_section(out: &mut String, p: &AlertPayload, h: &HistoryPayload) {
    let _ = writeln!(
        out,
        "\nKEY HISTORY (CloudTrail event history: management events made with this key)"
    );
    if let Some(detail) = &h.detail {
        let _ = writeln!(out, "  Unavailable:    {detail}.");
        let _ = writeln!(
            out,
            "  The alert goes out without it; the command under LOOK FURTHER shows the same history."
        );
        return;
    }
    let reference = p.last_failure;
    let mut short = Vec::new();
    if let Some(first) = h.first_used {
        let prefix = if h.incomplete.is_some() {
            "in use since at least"
        } else {
            "first used at"
        };
        short.push(format!("{prefix} {}", clock_time(first, reference)));
    }
    match h.last_worked {
        Some(last) => short.push(format!("last worked at {}", clock_time(last, reference))),
        None if h.events_read.unwrap_or(0) > 0 => {
            short.push("no call in the history read worked".to_owned());
        }
        None => {}
    }
    let times = if p.failures == 1 { "time" } else { "times" };
    if h.last_worked.is_some_and(|last| last <= p.first_failure) {
        short.push(format!("has failed {} {times} since", p.failures));
    } else {
        short.push(format!("has failed {} {times}", p.failures));
    }
    if h.events_read == Some(0) {
        let _ = writeln!(
            out,
            "  No event made with this key is in the event history from {} to {}. Data events (such as S3 object calls) are not kept there, and the history is per account and Region: a key of another account is not found from this one.",
            h.window_start.map(Timestamp::human).unwrap_or_default(),
            h.window_end.map(Timestamp::human).unwrap_or_default()
        );
        return;
    }
    let _ = writeln!(out, "  In short:       {}.", short.join(", "));
    if let (Some(at), Some(call)) = (h.first_used, &h.first_call) {
        let _ = writeln!(out, "  First used:     {}  {call}", at.human());
    }
    match (h.last_worked, &h.last_call) {
        (Some(at), Some(call)) => {
            let _ = writeln!(out, "  Last worked:    {}  {call}", at.human());
        }
        _ => {
            let _ = writeln!(
                out,
                "  Last worked:    (no successful call in the history read)"
            );
        }
    }
    let _ = writeln!(out, "  Services:       {}", list_or_none(&h.services));
    let _ = writeln!(
        out,
        "  Read:           {} events from {} to {}",
        h.events_read.unwrap_or(0),
        h.window_start.map(Timestamp::human).unwrap_or_default(),
        h.window_end.map(Timestamp::human).unwrap_or_default()
    );
    if let Some(why) = &h.incomplete {
        let _ = writeln!(
            out,
            "  Incomplete:     {why}; the earliest events were not read."
        );
    }
}

fn sample(values: &crate::detect::Sample, max_chars: usize) -> Vec<String> {
    values
        .values()
        .into_iter()
        .take(SAMPLES_SHOWN)
        .map(|v| clean(&v, max_chars))
        .collect()
}

/// The role or user name and the session, in at most `room` ASCII characters. The session (often a
/// person or a job) is worth more than the rest of a long role name, so the role is shortened first.
fn who(payload: &AlertPayload, room: usize) -> String {
    let name = ascii_subject(
        payload
            .principal
            .rsplit(['/', ':'])
            .next()
            .unwrap_or(&payload.principal),
    );
    let Some(session) = payload.session_name.as_deref().map(ascii_subject) else {
        return shorten(&name, room);
    };
    let session_room = room.saturating_sub(name.len().min(MIN_ROLE_CHARS) + 1);
    let session = shorten(&session, session_room);
    let name = shorten(&name, room.saturating_sub(session.len() + 1));
    format!("{name}/{session}")
}

/// Role names keep at least this many characters when a subject is shortened.
const MIN_ROLE_CHARS: usize = 16;

fn shorten(text: &str, room: usize) -> String {
    if text.len() <= room {
        text.to_owned()
    } else {
        format!("{}...", &text[..room.saturating_sub(3)])
    }
}

fn subject(payload: &AlertPayload) -> String {
    let account = payload.account_id.as_deref().unwrap_or("unknown account");
    let (prefix, suffix) = match payload.kind {
        NoticeKind::Opened => (
            "[tokenwatch] Stale credentials: ",
            format!(", {} failures ({account})", payload.failures),
        ),
        NoticeKind::Update => (
            "[tokenwatch] Still failing: ",
            format!(", {} failures ({account})", payload.failures),
        ),
        NoticeKind::Resolved => ("[tokenwatch] Resolved: ", format!(" ({account})")),
    };
    // Shorten who it is, not what happened or where.
    let room = MAX_SUBJECT_CHARS.saturating_sub(prefix.len() + suffix.len());
    ascii_subject(&format!("{prefix}{}{suffix}", who(payload, room)))
}

fn body(p: &AlertPayload, state: &CredentialState) -> String {
    let mut out = String::new();
    let span = human_duration(p.last_failure.seconds_since(p.first_failure));
    let headline = match p.kind {
        NoticeKind::Opened => {
            "A process keeps signing AWS calls with credentials that have expired. It will keep failing until it gets fresh ones.".to_owned()
        }
        NoticeKind::Update => "The process is still signing with the expired credentials (updated figures below).".to_owned(),
        NoticeKind::Resolved => {
            let opened = match state.phase {
                Phase::Resolved { opened_at, .. } | Phase::Open { opened_at } => format!(" (opened {})", opened_at.human()),
                Phase::Watching => String::new(),
            };
            format!("Resolved{opened}: no expired-token failure since {}.", p.last_failure.human())
        }
    };
    let _ = writeln!(out, "{headline}\n");

    let _ = writeln!(out, "WHO");
    let _ = writeln!(out, "  Principal:      {}", p.principal);
    let _ = writeln!(
        out,
        "  Session:        {}",
        p.session_name.as_deref().unwrap_or("(none)")
    );
    let _ = writeln!(
        out,
        "  Access key id:  {}",
        p.access_key_id.as_deref().unwrap_or("(not recorded)")
    );
    let _ = writeln!(
        out,
        "  Account:        {}",
        p.account_id.as_deref().unwrap_or("(unknown)")
    );
    if let Some(region) = &p.region {
        let _ = writeln!(out, "  Region:         {region}");
    }

    let _ = writeln!(out, "\nHOW BAD");
    let _ = writeln!(
        out,
        "  Failures:       {} expired-token errors over {span}",
        p.failures
    );
    let _ = writeln!(out, "  First failure:  {}", p.first_failure.human());
    let _ = writeln!(out, "  Last failure:   {}", p.last_failure.human());
    match p.credential_created {
        Some(created) => {
            let _ = writeln!(out, "  Minted:         {}", created.human());
            let _ = writeln!(
                out,
                "  Credential age: {} at the first failure, {} at the last",
                human_duration(p.first_failure.seconds_since(created)),
                human_duration(p.last_failure.seconds_since(created))
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  Credential age: unknown (the records carry no session creation date)"
            );
        }
    }

    if let Some(history) = &p.history {
        history_section(&mut out, p, history);
    }

    let _ = writeln!(out, "\nFROM WHERE");
    let _ = writeln!(out, "  Source IPs:     {}", list_or_none(&p.source_ips));
    let agents = if p.user_agents.is_empty() {
        vec!["(not recorded)".to_owned()]
    } else {
        p.user_agents.clone()
    };
    for (i, agent) in agents.iter().enumerate() {
        let label = if i == 0 { "User agents:" } else { "" };
        let _ = writeln!(out, "  {label:<15} {agent}");
    }
    let _ = writeln!(out, "  Calls failing:  {}", list_or_none(&p.calls));

    let _ = writeln!(out, "\nLIKELY CAUSE: {}", p.likely_cause);
    let _ = writeln!(out, "  {}", p.cause_summary);
    let _ = writeln!(out, "  {}", p.usual_lifetime);

    if p.kind != NoticeKind::Resolved {
        let _ = writeln!(out, "\nWHAT TO DO");
        for (i, step) in p.runbook.iter().enumerate() {
            let _ = writeln!(out, "  {}. {step}", i + 1);
        }
    }

    let _ = writeln!(out, "\nLOOK FURTHER");
    match (&p.console_url, &p.lookup_command) {
        (Some(url), Some(command)) => {
            let _ = writeln!(out, "  CloudTrail (this access key): {url}");
            let _ = writeln!(out, "  Same from a shell: {command}");
        }
        _ => {
            let _ = writeln!(
                out,
                "  CloudTrail event history, filtered by the principal above."
            );
        }
    }
    out
}

fn list_or_none(values: &[String]) -> String {
    if values.is_empty() {
        "(not recorded)".to_owned()
    } else {
        values.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_strips_forgery_and_caps() {
        assert_eq!(
            clean("aws-cli/2.0\r\nSubject: fake", 100),
            "aws-cli/2.0\u{fffd}\u{fffd}Subject: fake"
        );
        assert_eq!(clean("evil\u{202e}txt.exe", 100), "evil\u{fffd}txt.exe");
        assert_eq!(clean("zero\u{200b}width", 100), "zero\u{fffd}width");
        assert_eq!(
            clean("line\u{2028}para\u{2029}mark\u{61c}", 100),
            "line\u{fffd}para\u{fffd}mark\u{fffd}"
        );
        assert_eq!(clean("abcdef", 4), "abc…");
        assert_eq!(clean("ünïcödé stays", 100), "ünïcödé stays");
    }

    #[test]
    fn subjects_are_ascii_and_short() {
        let s = ascii_subject(&format!("[tokenwatch] {}", "é".repeat(300)));
        assert!(s.len() < 100);
        assert!(s.is_ascii());
        assert!(s.ends_with("..."));
    }
}
