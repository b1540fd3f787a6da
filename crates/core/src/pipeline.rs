//! What one delivery does to the outside world, in an order that loses nothing and pages once:
//!
//! 1. claim the failures' `eventID`s on behalf of their delivery (a record another delivery claimed is
//!    skipped; the same delivery's retry takes its own unfinished claims again, so neither a lost answer to
//!    the claim write nor claims that could not be given back lose anything);
//! 2. publish the counts; if that fails, give the claims back and fail the delivery, so a retry counts again;
//! 3. merge each credential's failures into its incident state; if that fails for a credential, give its
//!    claims back and fail the deliveries it came from (a retry may count its metrics twice, but detection
//!    sees every failure once); then complete the claims of everything counted and stored, so not even
//!    a retry of the same delivery counts them again;
//! 4. publish incidents opened, send the alerts due and confirm them; an alert that cannot be sent stays
//!    pending in the state, marked as given up, and the next scheduled sweep sends it (one whose sender
//!    died without a word waits out a grace period first, in case it was sent after all). Before an
//!    incident's first alert, the key's CloudTrail history is looked up (within the invocation's time
//!    budget) and remembered beside its state; a lookup that is slow, throttled or denied never holds the
//!    alert back: it goes out saying the history is unavailable, and why. Re-notifications and the sweep
//!    use what was remembered and never look up again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

use crate::alert;
use crate::detect::{Detector, IncidentStore, Notice, NoticeKind, Observations, observe_into};
use crate::history::{
    CredentialHistory, Enrichment, HISTORY_TTL_SECONDS, HistoryCache, HistoryQuery, Unavailable,
};
use crate::identity::CredentialKey;
use crate::metrics::{MetricInputs, metric_data, within_window};
use crate::ports::{ClaimRequest, EventClaims, MetricsSink, Notifier};
use crate::scan::{Failure, FailureKind, SourceCounts};
use crate::tally::Tally;
use crate::timestamp::Timestamp;

/// The outside world a delivery needs.
#[derive(Debug)]
pub struct Ports<'a, M, N, S, C, H, K> {
    pub metrics: &'a M,
    pub notifier: &'a N,
    pub detector: &'a Detector<S>,
    pub claims: &'a C,
    /// CloudTrail's event history, for enriching a newly opened incident.
    pub history: &'a H,
    /// Where a lookup is remembered beside the incident state.
    pub history_cache: &'a K,
}

/// Where failures came from within an invocation (an SQS message, or the whole event), so a failure to
/// process them fails just that origin.
pub type Origin = usize;

/// What an invocation read.
#[derive(Debug, Default)]
pub struct Delivery {
    pub failures: Vec<(Failure, Origin)>,
    /// Who holds each origin's claims: a name the origin's retries repeat (see [`ClaimRequest`]).
    pub holders: BTreeMap<Origin, String>,
    /// Records scanned and malformed, per origin and `Source` value.
    pub sources: Vec<(Origin, &'static str, SourceCounts)>,
}

/// What happened, for the invocation's log line and response.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub failed_origins: BTreeSet<Origin>,
    pub records: u64,
    pub malformed: u64,
    pub counted: u64,
    pub duplicates: u64,
    pub metric_data: usize,
    pub metrics_outside_window: usize,
    pub opened: usize,
    pub alerts_sent: usize,
    pub alerts_pending: usize,
    /// Histories of newly opened incidents looked up, and how many of those lookups gave nothing.
    pub histories_looked_up: usize,
    pub histories_unavailable: usize,
    /// One line per problem, for the logs.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub now: Timestamp,
    pub max_session_series: usize,
    /// History lookups stop here: the invocation's time budget for them.
    pub history_deadline: Instant,
}

pub async fn process<M, N, S, C, H, K>(
    ports: &Ports<'_, M, N, S, C, H, K>,
    delivery: Delivery,
    settings: Settings,
) -> Outcome
where
    M: MetricsSink,
    N: Notifier,
    S: IncidentStore,
    C: EventClaims,
    H: CredentialHistory,
    K: HistoryCache,
{
    let mut outcome = Outcome {
        records: delivery.sources.iter().map(|(_, _, c)| c.records).sum(),
        malformed: delivery.sources.iter().map(|(_, _, c)| c.malformed).sum(),
        ..Outcome::default()
    };
    let failures = unique_events(delivery.failures, &mut outcome);

    // 1. Claims.
    let requests: Vec<ClaimRequest<'_>> = failures
        .iter()
        .filter_map(|(f, origin)| {
            f.event_id.as_deref().map(|event_id| ClaimRequest {
                event_id,
                holder: delivery.holders.get(origin).map_or("", String::as_str),
            })
        })
        .collect();
    let fresh: HashSet<String> = match ports.claims.claim(&requests).await {
        Ok(new) => requests
            .iter()
            .zip(new)
            .filter(|(_, new)| *new)
            .map(|(r, _)| r.event_id.to_owned())
            .collect(),
        Err(e) => {
            outcome.errors.push(format!("claiming event ids: {e}"));
            outcome
                .failed_origins
                .extend(failures.iter().map(|(_, origin)| *origin));
            let failed = outcome.failed_origins.clone();
            publish_sources(ports, &delivery.sources, &failed, settings, &mut outcome).await;
            return outcome;
        }
    };
    let (new, seen): (Vec<_>, Vec<_>) = failures
        .into_iter()
        .partition(|(f, _)| f.event_id.as_ref().is_none_or(|id| fresh.contains(id)));
    outcome.duplicates += seen.len() as u64;
    let claimed: Vec<String> = new.iter().filter_map(|(f, _)| f.event_id.clone()).collect();

    // 2. Counts.
    let mut tally = Tally::new();
    let mut observations = Observations::new();
    let mut origins_of: BTreeMap<CredentialKey, (BTreeSet<Origin>, Vec<String>)> = BTreeMap::new();
    for (failure, origin) in &new {
        tally.add(failure);
        observe_into(&mut observations, failure);
        if failure.kind == FailureKind::ExpiredToken {
            let entry = origins_of
                .entry(failure.identity.credential_key())
                .or_default();
            entry.0.insert(*origin);
            entry.1.extend(failure.event_id.clone());
        }
    }
    outcome.counted = new.len() as u64;
    let sources = live_sources(&delivery.sources, &BTreeSet::new());
    let data = metric_data(&MetricInputs {
        tally: Some(&tally),
        sources,
        notices: &[],
        now: settings.now,
        max_session_series: settings.max_session_series,
    });
    if let Err(e) = publish(ports.metrics, data, settings.now, &mut outcome).await {
        outcome.errors.push(format!("publishing metrics: {e}"));
        give_back(ports.claims, &claimed, &mut outcome).await;
        outcome
            .failed_origins
            .extend(new.iter().map(|(_, origin)| *origin));
        return outcome;
    }

    // 3. Incident state.
    let mut notices: Vec<Notice> = Vec::new();
    let mut given_back: HashSet<&String> = HashSet::new();
    for (credential, observation) in &observations {
        match ports.detector.observe(observation, settings.now).await {
            Ok(notice) => notices.extend(notice),
            Err(e) => {
                outcome
                    .errors
                    .push(format!("updating incident state of {credential}: {e}"));
                if let Some((origins, ids)) = origins_of.get(credential) {
                    give_back(ports.claims, ids, &mut outcome).await;
                    given_back.extend(ids);
                    outcome.failed_origins.extend(origins.iter().copied());
                }
            }
        }
    }
    let done: Vec<String> = claimed
        .iter()
        .filter(|id| !given_back.contains(id))
        .cloned()
        .collect();
    if !done.is_empty()
        && let Err(e) = ports.claims.complete(&done).await
    {
        // Counted and stored: only a retry of this same delivery could count them again.
        outcome.errors.push(format!(
            "completing {} event claims (a retry of this delivery would count them again): {e}",
            done.len()
        ));
    }

    // 4. Incidents opened, alerts.
    let opened: Vec<Notice> = notices
        .iter()
        .filter(|n| n.kind == NoticeKind::Opened)
        .cloned()
        .collect();
    outcome.opened = opened.len();
    if !opened.is_empty() {
        let data = metric_data(&MetricInputs {
            tally: None,
            sources: Vec::new(),
            notices: &opened,
            now: settings.now,
            max_session_series: settings.max_session_series,
        });
        if let Err(e) = publish(ports.metrics, data, settings.now, &mut outcome).await {
            outcome
                .errors
                .push(format!("publishing incident metrics: {e}"));
        }
    }
    deliver(
        ports,
        &notices,
        settings.now,
        Some(settings.history_deadline),
        &mut outcome,
    )
    .await;
    outcome
}

/// The scheduled sweep: resolve quiet incidents, re-send unconfirmed alerts, send updates due.
/// It never looks a history up: alerts carry what the invocation that opened the incident remembered.
pub async fn sweep<M, N, S, C, H, K>(ports: &Ports<'_, M, N, S, C, H, K>, now: Timestamp) -> Outcome
where
    M: MetricsSink,
    N: Notifier,
    S: IncidentStore,
    C: EventClaims,
    H: CredentialHistory,
    K: HistoryCache,
{
    let mut outcome = Outcome::default();
    match ports.detector.sweep(now).await {
        Ok(notices) => deliver(ports, &notices, now, None, &mut outcome).await,
        Err(e) => outcome.errors.push(format!("sweeping incidents: {e}")),
    }
    outcome
}

/// Keeps the first of each `eventID` within the delivery.
fn unique_events(
    failures: Vec<(Failure, Origin)>,
    outcome: &mut Outcome,
) -> Vec<(Failure, Origin)> {
    let mut seen = HashSet::new();
    let before = failures.len();
    let unique: Vec<_> = failures
        .into_iter()
        .filter(|(f, _)| f.event_id.as_ref().is_none_or(|id| seen.insert(id.clone())))
        .collect();
    outcome.duplicates += (before - unique.len()) as u64;
    unique
}

fn live_sources(
    sources: &[(Origin, &'static str, SourceCounts)],
    failed: &BTreeSet<Origin>,
) -> Vec<(&'static str, SourceCounts)> {
    let mut by_source: BTreeMap<&'static str, SourceCounts> = BTreeMap::new();
    for (origin, source, counts) in sources {
        if failed.contains(origin) {
            continue;
        }
        let total = by_source.entry(source).or_default();
        total.records += counts.records;
        total.malformed += counts.malformed;
    }
    by_source.into_iter().collect()
}

async fn publish_sources<M, N, S, C, H, K>(
    ports: &Ports<'_, M, N, S, C, H, K>,
    sources: &[(Origin, &'static str, SourceCounts)],
    failed: &BTreeSet<Origin>,
    settings: Settings,
    outcome: &mut Outcome,
) where
    M: MetricsSink,
{
    let data = metric_data(&MetricInputs {
        tally: None,
        sources: live_sources(sources, failed),
        notices: &[],
        now: settings.now,
        max_session_series: settings.max_session_series,
    });
    if let Err(e) = publish(ports.metrics, data, settings.now, outcome).await {
        outcome
            .errors
            .push(format!("publishing record counts: {e}"));
    }
}

async fn publish<M: MetricsSink>(
    metrics: &M,
    data: Vec<crate::metrics::MetricDatum>,
    now: Timestamp,
    outcome: &mut Outcome,
) -> Result<(), M::Error> {
    let (data, outside) = within_window(data, now);
    outcome.metrics_outside_window += outside.len();
    if data.is_empty() {
        return Ok(());
    }
    metrics.publish(&data).await?;
    outcome.metric_data += data.len();
    Ok(())
}

async fn give_back<C: EventClaims>(claims: &C, ids: &[String], outcome: &mut Outcome) {
    if ids.is_empty() {
        return;
    }
    if let Err(e) = claims.release(ids).await {
        outcome.errors.push(format!(
            "releasing {} event ids after a failure (this delivery's retry still counts them; another delivery of the same records skips them): {e}",
            ids.len()
        ));
    }
}

/// Sends each notice's alert. `lookup_until` allows history lookups for newly opened incidents until then;
/// `None` (the sweep) uses only remembered ones.
async fn deliver<M, N, S, C, H, K>(
    ports: &Ports<'_, M, N, S, C, H, K>,
    notices: &[Notice],
    now: Timestamp,
    lookup_until: Option<Instant>,
    outcome: &mut Outcome,
) where
    N: Notifier,
    S: IncidentStore,
    H: CredentialHistory,
    K: HistoryCache,
{
    for notice in notices {
        let history = enrichment(ports, notice, now, lookup_until, outcome).await;
        let rendered = alert::render_with(notice, history.as_ref());
        match ports.notifier.send(&rendered).await {
            Ok(()) => {
                outcome.alerts_sent += 1;
                if let Err(e) = ports.detector.mark_sent(notice, now).await {
                    outcome.errors.push(format!(
                        "confirming the {:?} alert for {} (the sweep may send it again): {e}",
                        notice.kind, notice.state.observation.credential
                    ));
                }
            }
            Err(e) => {
                outcome.alerts_pending += 1;
                outcome.errors.push(format!(
                    "sending the {:?} alert for {} (pending; the next sweep sends it): {e}",
                    notice.kind, notice.state.observation.credential
                ));
                if let Err(e) = ports.detector.mark_unsent(notice).await {
                    outcome.errors.push(format!(
                        "recording the unsent {:?} alert for {} (the sweep sends it after {} s): {e}",
                        notice.kind,
                        notice.state.observation.credential,
                        crate::detect::PENDING_GRACE_SECONDS
                    ));
                }
            }
        }
    }
}

/// The key history an alert carries: remembered, or (for a newly opened incident, within the budget)
/// looked up now and remembered. Problems end up in the outcome's errors, never in the way of the alert.
async fn enrichment<M, N, S, C, H, K>(
    ports: &Ports<'_, M, N, S, C, H, K>,
    notice: &Notice,
    now: Timestamp,
    lookup_until: Option<Instant>,
    outcome: &mut Outcome,
) -> Option<Enrichment>
where
    H: CredentialHistory,
    K: HistoryCache,
{
    let observation = &notice.state.observation;
    let credential = &observation.credential;
    let remembered = match ports.history_cache.get(credential).await {
        Ok(remembered) => remembered,
        Err(e) => {
            outcome.errors.push(format!(
                "reading the remembered history of {credential}: {e}"
            ));
            None
        }
    };
    let Some(deadline) = lookup_until else {
        return remembered;
    };
    if notice.kind != NoticeKind::Opened || remembered.as_ref().is_some_and(Enrichment::is_found) {
        return remembered;
    }
    let Some(query) = HistoryQuery::for_observation(observation, now) else {
        return Some(Enrichment::Unavailable {
            reason: Unavailable::NoAccessKey,
            detail: "the credential is known by principal and session only".to_owned(),
            looked_up_at: now,
        });
    };
    let result = ports.history.lookup(&query, deadline).await;
    if result
        .as_ref()
        .is_err_and(|e| e.reason == Unavailable::Disabled)
    {
        // Turned off on purpose: the alert has no history section at all.
        return remembered;
    }
    outcome.histories_looked_up += 1;
    if let Err(e) = &result {
        outcome.histories_unavailable += 1;
        outcome.errors.push(format!(
            "looking up the history of {credential} (the alert says it is unavailable): {e}"
        ));
    }
    let found = Enrichment::of(result, now);
    if let Err(e) = ports
        .history_cache
        .put(credential, &found, now.plus_seconds(HISTORY_TTL_SECONDS))
        .await
    {
        outcome.errors.push(format!(
            "remembering the history of {credential} (updates will go without it): {e}"
        ));
    }
    Some(found)
}
