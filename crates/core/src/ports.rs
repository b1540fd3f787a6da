//! The outside world as the domain sees it: small traits the AWS adapters implement, with in-memory fakes
//! beside them for tests and the CLI. ([`crate::detect::IncidentStore`] is another port, and
//! [`crate::history`] has the two for a key's CloudTrail history; their fakes are here.)

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::alert::Alert;
use crate::history::{
    CredentialHistory, Enrichment, HistoryBuilder, HistoryCache, HistoryQuery, KeyHistory,
    LookupError, Unavailable,
};
use crate::identity::CredentialKey;
use crate::metrics::MetricDatum;
use crate::record::{Record, text};
use crate::timestamp::Timestamp;

/// Where metric data goes (CloudWatch PutMetricData, or EMF lines on stdout).
pub trait MetricsSink {
    type Error: std::error::Error + Send + Sync + 'static;

    fn publish(&self, data: &[MetricDatum])
    -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Where alerts go (the SNS on-call topic).
pub trait Notifier {
    type Error: std::error::Error + Send + Sync + 'static;

    fn send(&self, alert: &Alert) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// One `eventID` to claim, on behalf of the delivery that carries it.
///
/// The holder names the delivery in a way its retries repeat (an SQS message id, the invocation's request
/// id, which Lambda keeps when it retries an asynchronous event): a retry may take its own unfinished claims
/// again, anyone else finds them taken. An empty holder holds nothing: its claims are final at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimRequest<'a> {
    pub event_id: &'a str,
    pub holder: &'a str,
}

/// Remembers which `eventID`s were counted, across invocations, so a redelivered record counts once.
///
/// A claim is held until it is completed or released. Holding it lets the delivery that made it (and its
/// retries) claim it again: a claim write whose answer was lost, or a failed delivery whose claims could not
/// be given back, is then retried instead of skipped. Completing it makes it final for everyone.
pub trait EventClaims {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Claims each id; returns, in order, whether it is the caller's to count (new, or still held by the
    /// same holder) or was claimed by another delivery or completed before.
    fn claim(
        &self,
        requests: &[ClaimRequest<'_>],
    ) -> impl Future<Output = Result<Vec<bool>, Self::Error>> + Send;

    /// Makes claims final: no delivery, not even the holder's retry, counts these events again.
    fn complete(
        &self,
        event_ids: &[String],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Gives claims back, so a retried delivery counts these events again.
    fn release(&self, event_ids: &[String])
    -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// The fakes cannot fail; their lock is only poisoned by a panic elsewhere.
#[derive(Debug, thiserror::Error)]
#[error("in-memory fake is unusable after a panic")]
pub struct FakeError;

/// Records what was published.
#[derive(Debug, Default)]
pub struct MemoryMetrics {
    pub published: Mutex<Vec<Vec<MetricDatum>>>,
}

impl MetricsSink for MemoryMetrics {
    type Error = FakeError;

    async fn publish(&self, data: &[MetricDatum]) -> Result<(), FakeError> {
        self.published
            .lock()
            .map_err(|_| FakeError)?
            .push(data.to_vec());
        Ok(())
    }
}

/// Records what was sent.
#[derive(Debug, Default)]
pub struct MemoryNotifier {
    pub sent: Mutex<Vec<Alert>>,
}

impl Notifier for MemoryNotifier {
    type Error = FakeError;

    async fn send(&self, alert: &Alert) -> Result<(), FakeError> {
        self.sent.lock().map_err(|_| FakeError)?.push(alert.clone());
        Ok(())
    }
}

/// Claims in memory: each id with its holder while held, `None` once completed.
#[derive(Debug, Default)]
pub struct MemoryClaims {
    pub claimed: Mutex<BTreeMap<String, Option<String>>>,
}

impl EventClaims for MemoryClaims {
    type Error = FakeError;

    async fn claim(&self, requests: &[ClaimRequest<'_>]) -> Result<Vec<bool>, FakeError> {
        let mut claimed = self.claimed.lock().map_err(|_| FakeError)?;
        Ok(requests
            .iter()
            .map(|r| match claimed.get(r.event_id) {
                None => {
                    let holder = Some(r.holder.to_owned()).filter(|h| !h.is_empty());
                    claimed.insert(r.event_id.to_owned(), holder);
                    true
                }
                Some(holder) => !r.holder.is_empty() && holder.as_deref() == Some(r.holder),
            })
            .collect())
    }

    async fn complete(&self, event_ids: &[String]) -> Result<(), FakeError> {
        let mut claimed = self.claimed.lock().map_err(|_| FakeError)?;
        for id in event_ids {
            claimed.insert(id.clone(), None);
        }
        Ok(())
    }

    async fn release(&self, event_ids: &[String]) -> Result<(), FakeError> {
        let mut claimed = self.claimed.lock().map_err(|_| FakeError)?;
        for id in event_ids {
            claimed.remove(id);
        }
        Ok(())
    }
}

/// CloudTrail's event history in memory: `CloudTrailEvent` JSON strings per access key, summarized by the
/// same pure function as the real adapter's pages. `failure` makes every lookup fail that way.
#[derive(Debug, Default)]
pub struct MemoryHistory {
    pub events: Mutex<BTreeMap<String, Vec<String>>>,
    pub failure: Mutex<Option<LookupError>>,
    /// Lookups made, failed ones included.
    pub lookups: AtomicUsize,
}

impl MemoryHistory {
    pub fn add(&self, access_key_id: &str, cloud_trail_event: impl Into<String>) {
        if let Ok(mut events) = self.events.lock() {
            events
                .entry(access_key_id.to_owned())
                .or_default()
                .push(cloud_trail_event.into());
        }
    }

    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

impl CredentialHistory for MemoryHistory {
    async fn lookup(
        &self,
        query: &HistoryQuery,
        deadline: Instant,
    ) -> Result<KeyHistory, LookupError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let poisoned = || LookupError::new(Unavailable::Failed, FakeError.to_string());
        if let Some(failure) = self.failure.lock().map_err(|_| poisoned())?.clone() {
            return Err(failure);
        }
        if Instant::now() >= deadline {
            return Err(LookupError::new(
                Unavailable::TimedOut,
                "the deadline had passed",
            ));
        }
        let events = self.events.lock().map_err(|_| poisoned())?;
        let mut builder = HistoryBuilder::new(query);
        for event in events.get(&query.access_key_id).into_iter().flatten() {
            let at = Record::from_slice(event.as_bytes())
                .ok()
                .and_then(|r| text(&r.event_time).and_then(Timestamp::parse));
            if at.is_none_or(|at| (query.start..=query.end).contains(&at)) {
                builder.add(event);
            }
        }
        Ok(builder.finish())
    }
}

/// No lookups: for deployments that turn them off, and for tools that never page anyone.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHistory;

impl CredentialHistory for NoHistory {
    async fn lookup(&self, _: &HistoryQuery, _: Instant) -> Result<KeyHistory, LookupError> {
        Err(LookupError::new(
            Unavailable::Disabled,
            "history lookups are turned off",
        ))
    }
}

/// Cached lookups in memory.
#[derive(Debug, Default)]
pub struct MemoryHistoryCache {
    pub entries: Mutex<BTreeMap<CredentialKey, (Enrichment, Timestamp)>>,
}

impl HistoryCache for MemoryHistoryCache {
    type Error = FakeError;

    async fn get(&self, credential: &CredentialKey) -> Result<Option<Enrichment>, FakeError> {
        Ok(self
            .entries
            .lock()
            .map_err(|_| FakeError)?
            .get(credential)
            .map(|(e, _)| e.clone()))
    }

    async fn put(
        &self,
        credential: &CredentialKey,
        enrichment: &Enrichment,
        expires_at: Timestamp,
    ) -> Result<(), FakeError> {
        self.entries
            .lock()
            .map_err(|_| FakeError)?
            .insert(credential.clone(), (enrichment.clone(), expires_at));
        Ok(())
    }
}
