//! The outside world as the domain sees it: small traits the AWS adapters implement, with in-memory fakes
//! beside them for tests and the CLI. ([`crate::detect::IncidentStore`] is the fifth port.)

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;

use crate::alert::Alert;
use crate::metrics::MetricDatum;

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

/// Remembers which `eventID`s were counted, across invocations, so a redelivered record counts once.
pub trait EventClaims {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Claims each id; returns, in order, whether it was new (claimed now) or already claimed before.
    fn claim(
        &self,
        event_ids: &[String],
    ) -> impl Future<Output = Result<Vec<bool>, Self::Error>> + Send;

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

#[derive(Debug, Default)]
pub struct MemoryClaims {
    pub claimed: Mutex<BTreeSet<String>>,
}

impl EventClaims for MemoryClaims {
    type Error = FakeError;

    async fn claim(&self, event_ids: &[String]) -> Result<Vec<bool>, FakeError> {
        let mut claimed = self.claimed.lock().map_err(|_| FakeError)?;
        Ok(event_ids
            .iter()
            .map(|id| claimed.insert(id.clone()))
            .collect())
    }

    async fn release(&self, event_ids: &[String]) -> Result<(), FakeError> {
        let mut claimed = self.claimed.lock().map_err(|_| FakeError)?;
        for id in event_ids {
            claimed.remove(id);
        }
        Ok(())
    }
}
