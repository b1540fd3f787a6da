//! The scan report of DESIGN.md's CLI contract (`tokenwatch scan --format json`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::detect::{Observation, Observations, Policy};
use crate::tally::Tally;
use crate::timestamp::Timestamp;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScanReport {
    pub records_scanned: u64,
    pub malformed_records: u64,
    pub expired_token_errors: u64,
    /// Records skipped because their `eventID` was already counted.
    pub duplicate_events: u64,
    pub principals: Vec<PrincipalReport>,
    pub incidents: Vec<IncidentReport>,
    pub related_errors: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PrincipalReport {
    pub principal: String,
    pub account_id: Option<String>,
    pub expired_token_errors: u64,
    pub sessions: Vec<SessionReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionReport {
    pub session_name: Option<String>,
    pub expired_token_errors: u64,
    pub access_key_ids: Vec<String>,
    pub first_error: Timestamp,
    pub last_error: Timestamp,
    pub max_credential_age_seconds: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IncidentReport {
    pub access_key_id: Option<String>,
    pub principal: String,
    pub account_id: Option<String>,
    pub session_name: Option<String>,
    pub failures: u64,
    pub first_failure: Timestamp,
    pub last_failure: Timestamp,
    pub credential_age_seconds: Option<i64>,
    pub likely_cause: String,
    /// `open`, or `resolved` when the scan's latest failure came `quiet` seconds or more after this one's last.
    pub status: &'static str,
    pub source_ips: Vec<String>,
    pub user_agents: Vec<String>,
    pub services: Vec<String>,
}

impl IncidentReport {
    pub fn new(observation: &Observation, status: &'static str) -> Self {
        Self {
            access_key_id: observation.access_key_id().map(str::to_owned),
            principal: observation.facts.principal.clone(),
            account_id: observation.account_id.clone(),
            session_name: observation.facts.session_name.clone(),
            failures: observation.failures,
            first_failure: observation.first_failure,
            last_failure: observation.last_failure,
            credential_age_seconds: observation.credential_age_seconds(),
            likely_cause: observation.likely_cause().id().to_owned(),
            status,
            source_ips: observation.source_ips.values(),
            user_agents: observation.user_agents.values(),
            services: observation.calls.values(),
        }
    }

    /// The incidents among the observations, most failures first.
    pub fn all(observations: &Observations, policy: &Policy) -> Vec<Self> {
        let latest = observations.values().map(|o| o.last_failure).max();
        let mut incidents: Vec<Self> = observations
            .values()
            .filter(|o| o.meets(policy))
            .map(|o| {
                let quiet =
                    latest.is_some_and(|l| l.seconds_since(o.last_failure) >= policy.quiet_seconds);
                Self::new(o, if quiet { "resolved" } else { "open" })
            })
            .collect();
        incidents.sort_by(|a, b| {
            b.failures
                .cmp(&a.failures)
                .then_with(|| a.first_failure.cmp(&b.first_failure))
                .then_with(|| a.access_key_id.cmp(&b.access_key_id))
        });
        incidents
    }
}

impl ScanReport {
    pub fn new(tally: &Tally, incidents: Vec<IncidentReport>) -> Self {
        let principals = tally
            .principals_by_errors()
            .into_iter()
            .map(|(principal, p)| PrincipalReport {
                principal: principal.clone(),
                account_id: p.account_id.clone(),
                expired_token_errors: p.expired,
                sessions: p
                    .sessions_by_errors()
                    .into_iter()
                    .map(|(name, s)| SessionReport {
                        session_name: name.clone(),
                        expired_token_errors: s.expired,
                        access_key_ids: s.access_key_ids.iter().cloned().collect(),
                        first_error: s.first,
                        last_error: s.last,
                        max_credential_age_seconds: s.max_credential_age,
                    })
                    .collect(),
            })
            .collect();
        Self {
            records_scanned: tally.records_scanned,
            malformed_records: tally.malformed_records,
            expired_token_errors: tally.expired,
            duplicate_events: tally.duplicates,
            principals,
            incidents,
            related_errors: tally.related_by_code(),
        }
    }
}
