//! The delivery pipeline over in-memory ports, including ports that fail: nothing is lost, nothing is paged
//! twice, a redelivery counts nothing twice.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokenwatch_core::alert::Alert;
use tokenwatch_core::contract::metric;
use tokenwatch_core::detect::{
    CredentialState, Detector, IncidentStore, MemoryStore, Policy, Versioned,
};
use tokenwatch_core::history::{self, LookupError};
use tokenwatch_core::identity::CredentialKey;
use tokenwatch_core::metrics::MetricDatum;
use tokenwatch_core::pipeline::{Delivery, Ports, Settings, process, sweep};
use tokenwatch_core::ports::{
    ClaimRequest, EventClaims, FakeError, MemoryClaims, MemoryHistory, MemoryHistoryCache,
    MemoryMetrics, MemoryNotifier, MetricsSink, NoHistory, Notifier,
};
use tokenwatch_core::record::Record;
use tokenwatch_core::{ErrorCodes, Failure, SourceCounts, Timestamp};

const T0: i64 = 1_780_000_000;

fn failure(id: &str, key: &str, at: i64, code: &str) -> Failure {
    let json = format!(
        r#"{{"eventID":"{id}","eventTime":"{}","errorCode":"{code}","eventSource":"s3.amazonaws.com","eventName":"GetObject",
        "userIdentity":{{"type":"AssumedRole","arn":"arn:aws:sts::111122223333:assumed-role/etl/run-{key}","accountId":"111122223333",
        "accessKeyId":"{key}","sessionContext":{{"sessionIssuer":{{"arn":"arn:aws:iam::111122223333:role/etl"}}}}}}}}"#,
        Timestamp::from_unix(at).rfc3339()
    );
    Failure::from_record(
        &Record::from_slice(json.as_bytes()).expect("record"),
        &ErrorCodes::default(),
    )
    .expect("valid")
    .expect("failure")
}

/// Three expired-token failures over ten minutes from one key (origin 0), one from another key (origin 1).
fn delivery() -> Delivery {
    Delivery {
        failures: vec![
            (failure("a1", "ASIAONE", T0, "ExpiredToken"), 0),
            (failure("a2", "ASIAONE", T0 + 300, "ExpiredToken"), 0),
            (failure("a3", "ASIAONE", T0 + 600, "ExpiredToken"), 0),
            (failure("b1", "ASIATWO", T0 + 60, "ExpiredToken"), 1),
            (failure("r1", "ASIATWO", T0 + 61, "InvalidClientTokenId"), 1),
        ],
        holders: holders(),
        sources: vec![
            (
                0,
                "s3",
                SourceCounts {
                    records: 100,
                    malformed: 0,
                },
            ),
            (
                1,
                "s3",
                SourceCounts {
                    records: 50,
                    malformed: 1,
                },
            ),
        ],
    }
}

/// Each origin's claims held by its SQS message id.
fn holders() -> BTreeMap<usize, String> {
    BTreeMap::from([(0, "m0".to_owned()), (1, "m1".to_owned())])
}

/// The part of [`delivery`] from origin 0 (ASIAONE's message), as its redelivery carries it.
fn only_origin_zero() -> Delivery {
    Delivery {
        failures: delivery()
            .failures
            .into_iter()
            .filter(|(_, o)| *o == 0)
            .collect(),
        holders: holders(),
        sources: vec![(
            0,
            "s3",
            SourceCounts {
                records: 100,
                malformed: 0,
            },
        )],
    }
}

fn settings() -> Settings {
    Settings {
        now: Timestamp::from_unix(T0 + 700),
        max_session_series: 50,
        history_deadline: Instant::now() + Duration::from_secs(60),
    }
}

fn sum_of(published: &[Vec<MetricDatum>], name: &str, dimensions: usize) -> f64 {
    published
        .iter()
        .flatten()
        .filter(|d| d.name == name && d.dimensions.len() == dimensions)
        .map(|d| d.stats.sum)
        .sum()
}

#[test]
fn a_delivery_counts_detects_and_pages_once_even_when_redelivered() {
    let (metrics, notifier, claims) = (
        MemoryMetrics::default(),
        MemoryNotifier::default(),
        MemoryClaims::default(),
    );
    let detector = Detector::new(MemoryStore::new(), Policy::default());
    let ports = Ports {
        metrics: &metrics,
        notifier: &notifier,
        detector: &detector,
        claims: &claims,
        history: &NoHistory,
        history_cache: &MemoryHistoryCache::default(),
    };

    let first = pollster::block_on(process(&ports, delivery(), settings()));
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    assert!(first.failed_origins.is_empty());
    assert_eq!((first.counted, first.opened, first.alerts_sent), (5, 1, 1));

    let again = pollster::block_on(process(&ports, delivery(), settings()));
    assert_eq!(
        (
            again.counted,
            again.duplicates,
            again.opened,
            again.alerts_sent
        ),
        (0, 5, 0, 0)
    );

    let published = metrics.published.lock().expect("lock");
    assert_eq!(
        sum_of(&published, metric::EXPIRED_TOKEN_ERRORS, 0),
        4.0,
        "each event counted once"
    );
    assert_eq!(
        sum_of(&published, metric::RELATED_CREDENTIAL_ERRORS, 1),
        1.0
    );
    assert_eq!(
        sum_of(&published, metric::STALE_CREDENTIAL_INCIDENTS, 0),
        1.0
    );
    assert_eq!(
        sum_of(&published, metric::RECORDS_SCANNED, 1),
        300.0,
        "records are scanned twice, honestly"
    );
    assert_eq!(sum_of(&published, metric::MALFORMED_RECORDS, 1), 2.0);
    let sent = notifier.sent.lock().expect("lock");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].payload.access_key_id.as_deref(), Some("ASIAONE"));
}

#[test]
fn duplicates_inside_one_delivery_count_once() {
    let (metrics, notifier, claims) = (
        MemoryMetrics::default(),
        MemoryNotifier::default(),
        MemoryClaims::default(),
    );
    let detector = Detector::new(MemoryStore::new(), Policy::default());
    let ports = Ports {
        metrics: &metrics,
        notifier: &notifier,
        detector: &detector,
        claims: &claims,
        history: &NoHistory,
        history_cache: &MemoryHistoryCache::default(),
    };
    let mut twice = delivery();
    let copy = twice.failures.clone();
    twice.failures.extend(copy);
    let outcome = pollster::block_on(process(&ports, twice, settings()));
    assert_eq!((outcome.counted, outcome.duplicates), (5, 5));
    assert_eq!(
        sum_of(
            &metrics.published.lock().expect("lock"),
            metric::EXPIRED_TOKEN_ERRORS,
            0
        ),
        4.0
    );
}

/// A metrics sink that fails its first `failures` calls.
#[derive(Default)]
struct FlakyMetrics {
    inner: MemoryMetrics,
    failures: AtomicUsize,
}

impl MetricsSink for FlakyMetrics {
    type Error = FakeError;

    async fn publish(&self, data: &[MetricDatum]) -> Result<(), FakeError> {
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(FakeError);
        }
        self.inner.publish(data).await
    }
}

#[test]
fn a_metrics_failure_gives_the_claims_back_so_the_retry_counts_everything() {
    let metrics = FlakyMetrics {
        failures: AtomicUsize::new(1),
        ..FlakyMetrics::default()
    };
    let (notifier, claims) = (MemoryNotifier::default(), MemoryClaims::default());
    let detector = Detector::new(MemoryStore::new(), Policy::default());
    let ports = Ports {
        metrics: &metrics,
        notifier: &notifier,
        detector: &detector,
        claims: &claims,
        history: &NoHistory,
        history_cache: &MemoryHistoryCache::default(),
    };

    let failed = pollster::block_on(process(&ports, delivery(), settings()));
    assert_eq!(
        failed.failed_origins.into_iter().collect::<Vec<_>>(),
        [0, 1]
    );
    assert!(
        claims.claimed.lock().expect("lock").is_empty(),
        "claims given back"
    );
    assert!(
        detector.store().snapshot().is_empty(),
        "no state before metrics are safe"
    );

    let retried = pollster::block_on(process(&ports, delivery(), settings()));
    assert!(retried.failed_origins.is_empty(), "{:?}", retried.errors);
    assert_eq!((retried.counted, retried.opened), (5, 1));
    assert_eq!(
        sum_of(
            &metrics.inner.published.lock().expect("lock"),
            metric::EXPIRED_TOKEN_ERRORS,
            0
        ),
        4.0
    );
}

/// A store that refuses writes for one access key.
struct BrokenFor {
    inner: MemoryStore,
    key: &'static str,
    broken: Mutex<bool>,
}

#[derive(Debug, thiserror::Error)]
#[error("table unavailable")]
struct Unavailable;

impl IncidentStore for BrokenFor {
    type Error = Unavailable;

    async fn load(&self, credential: &CredentialKey) -> Result<Option<Versioned>, Unavailable> {
        self.inner.load(credential).await.map_err(|_| Unavailable)
    }

    async fn save(
        &self,
        state: &CredentialState,
        expected: Option<u64>,
        expires_at: Timestamp,
    ) -> Result<bool, Unavailable> {
        if *self.broken.lock().map_err(|_| Unavailable)?
            && state.observation.access_key_id() == Some(self.key)
        {
            return Err(Unavailable);
        }
        self.inner
            .save(state, expected, expires_at)
            .await
            .map_err(|_| Unavailable)
    }

    async fn active(&self) -> Result<Vec<Versioned>, Unavailable> {
        self.inner.active().await.map_err(|_| Unavailable)
    }
}

#[test]
fn a_state_failure_fails_only_that_credentials_origins_and_the_retry_detects_it() {
    let (metrics, notifier, claims) = (
        MemoryMetrics::default(),
        MemoryNotifier::default(),
        MemoryClaims::default(),
    );
    let store = BrokenFor {
        inner: MemoryStore::new(),
        key: "ASIAONE",
        broken: Mutex::new(true),
    };
    let detector = Detector::new(store, Policy::default());
    let ports = Ports {
        metrics: &metrics,
        notifier: &notifier,
        detector: &detector,
        claims: &claims,
        history: &NoHistory,
        history_cache: &MemoryHistoryCache::default(),
    };

    let first = pollster::block_on(process(&ports, delivery(), settings()));
    assert_eq!(first.failed_origins.into_iter().collect::<Vec<_>>(), [0]);
    assert_eq!(first.opened, 0);
    let claimed = claims.claimed.lock().expect("lock").clone();
    assert_eq!(
        claimed.into_iter().collect::<Vec<_>>(),
        [("b1".to_owned(), None), ("r1".to_owned(), None)],
        "ASIAONE's claims given back, ASIATWO's completed"
    );

    *detector.store().broken.lock().expect("lock") = false;
    let retry = pollster::block_on(process(&ports, only_origin_zero(), settings()));
    assert!(retry.failed_origins.is_empty());
    assert_eq!((retry.counted, retry.opened, retry.alerts_sent), (3, 1, 1));
}

/// A notifier that is down until told otherwise.
#[derive(Default)]
struct DownNotifier {
    up: Mutex<bool>,
    inner: MemoryNotifier,
}

impl Notifier for DownNotifier {
    type Error = FakeError;

    async fn send(&self, alert: &Alert) -> Result<(), FakeError> {
        if !*self.up.lock().map_err(|_| FakeError)? {
            return Err(FakeError);
        }
        self.inner.send(alert).await
    }
}

#[test]
fn an_alert_that_cannot_be_sent_is_sent_by_the_sweep_once() {
    let (metrics, claims) = (MemoryMetrics::default(), MemoryClaims::default());
    let notifier = DownNotifier::default();
    let detector = Detector::new(MemoryStore::new(), Policy::default());
    let ports = Ports {
        metrics: &metrics,
        notifier: &notifier,
        detector: &detector,
        claims: &claims,
        history: &NoHistory,
        history_cache: &MemoryHistoryCache::default(),
    };

    let first = pollster::block_on(process(&ports, delivery(), settings()));
    assert_eq!(
        (first.opened, first.alerts_sent, first.alerts_pending),
        (1, 0, 1)
    );
    assert!(
        first.failed_origins.is_empty(),
        "the counts are safe; the alert is pending"
    );

    let still_down = pollster::block_on(sweep(&ports, Timestamp::from_unix(T0 + 760)));
    assert_eq!((still_down.alerts_sent, still_down.alerts_pending), (0, 1));
    *notifier.up.lock().expect("lock") = true;
    let next = pollster::block_on(sweep(&ports, Timestamp::from_unix(T0 + 800)));
    assert_eq!(
        next.alerts_sent, 1,
        "the sender gave up, so the next sweep need not wait out the grace period"
    );
    let again = pollster::block_on(sweep(&ports, Timestamp::from_unix(T0 + 1100)));
    assert_eq!(again.alerts_sent, 0);
    assert_eq!(notifier.inner.sent.lock().expect("lock").len(), 1);

    // Quiet for half an hour after the last failure: resolved, once.
    let resolved = pollster::block_on(sweep(&ports, Timestamp::from_unix(T0 + 600 + 1800)));
    assert_eq!(resolved.alerts_sent, 1);
    let sent = notifier.inner.sent.lock().expect("lock");
    assert!(
        sent[1].subject.starts_with("[tokenwatch] Resolved: "),
        "{}",
        sent[1].subject
    );
}

/// Claims that always fail.
struct NoClaims;

impl EventClaims for NoClaims {
    type Error = FakeError;

    async fn claim(&self, _: &[ClaimRequest<'_>]) -> Result<Vec<bool>, FakeError> {
        Err(FakeError)
    }

    async fn complete(&self, _: &[String]) -> Result<(), FakeError> {
        Err(FakeError)
    }

    async fn release(&self, _: &[String]) -> Result<(), FakeError> {
        Err(FakeError)
    }
}

/// Claims in memory whose writes land but whose answers can be lost, and whose releases can fail: what a
/// DynamoDB outage starting mid-invocation looks like from the pipeline.
#[derive(Default)]
struct FlakyClaims {
    inner: MemoryClaims,
    lose_next_claim_answer: Mutex<bool>,
    releases_fail: Mutex<bool>,
}

impl EventClaims for FlakyClaims {
    type Error = FakeError;

    async fn claim(&self, requests: &[ClaimRequest<'_>]) -> Result<Vec<bool>, FakeError> {
        let fresh = self.inner.claim(requests).await?;
        let mut lose = self.lose_next_claim_answer.lock().map_err(|_| FakeError)?;
        if std::mem::take(&mut *lose) {
            return Err(FakeError);
        }
        Ok(fresh)
    }

    async fn complete(&self, event_ids: &[String]) -> Result<(), FakeError> {
        self.inner.complete(event_ids).await
    }

    async fn release(&self, event_ids: &[String]) -> Result<(), FakeError> {
        if *self.releases_fail.lock().map_err(|_| FakeError)? {
            return Err(FakeError);
        }
        self.inner.release(event_ids).await
    }
}

#[test]
fn a_claim_whose_answer_was_lost_is_taken_again_by_the_retry_and_counted_once() {
    let (metrics, notifier) = (MemoryMetrics::default(), MemoryNotifier::default());
    let claims = FlakyClaims {
        lose_next_claim_answer: Mutex::new(true),
        ..FlakyClaims::default()
    };
    let detector = Detector::new(MemoryStore::new(), Policy::default());
    let ports = Ports {
        metrics: &metrics,
        notifier: &notifier,
        detector: &detector,
        claims: &claims,
        history: &NoHistory,
        history_cache: &MemoryHistoryCache::default(),
    };

    let first = pollster::block_on(process(&ports, delivery(), settings()));
    assert_eq!(first.failed_origins.len(), 2, "{:?}", first.errors);
    assert_eq!(first.counted, 0);
    let retry = pollster::block_on(process(&ports, delivery(), settings()));
    assert!(retry.errors.is_empty(), "{:?}", retry.errors);
    assert_eq!((retry.counted, retry.duplicates, retry.opened), (5, 0, 1));
    let published = metrics.published.lock().expect("lock");
    assert_eq!(sum_of(&published, metric::EXPIRED_TOKEN_ERRORS, 0), 4.0);
    assert_eq!(notifier.sent.lock().expect("lock").len(), 1);
}

#[test]
fn claims_that_could_not_be_given_back_are_retaken_by_the_retry_and_by_nobody_else() {
    let (metrics, notifier) = (MemoryMetrics::default(), MemoryNotifier::default());
    let claims = FlakyClaims {
        releases_fail: Mutex::new(true),
        ..FlakyClaims::default()
    };
    let store = BrokenFor {
        inner: MemoryStore::new(),
        key: "ASIAONE",
        broken: Mutex::new(true),
    };
    let detector = Detector::new(store, Policy::default());
    let ports = Ports {
        metrics: &metrics,
        notifier: &notifier,
        detector: &detector,
        claims: &claims,
        history: &NoHistory,
        history_cache: &MemoryHistoryCache::default(),
    };

    let first = pollster::block_on(process(&ports, delivery(), settings()));
    assert_eq!(first.failed_origins.into_iter().collect::<Vec<_>>(), [0]);
    assert!(
        first
            .errors
            .iter()
            .any(|e| e.starts_with("releasing 3 event ids")),
        "{:?}",
        first.errors
    );

    // The same records in another delivery (S3 announcing the object twice) find them held.
    let mut other = only_origin_zero();
    other.holders = BTreeMap::from([(0, "another-message".to_owned())]);
    *detector.store().broken.lock().expect("lock") = false;
    let duplicate = pollster::block_on(process(&ports, other, settings()));
    assert_eq!((duplicate.counted, duplicate.duplicates), (0, 3));

    // The failed message's own redelivery counts and detects them.
    let retry = pollster::block_on(process(&ports, only_origin_zero(), settings()));
    assert!(retry.failed_origins.is_empty(), "{:?}", retry.errors);
    assert_eq!((retry.counted, retry.opened, retry.alerts_sent), (3, 1, 1));
    let stored = detector
        .store()
        .inner
        .snapshot()
        .into_iter()
        .find(|s| s.observation.access_key_id() == Some("ASIAONE"))
        .expect("stored");
    assert_eq!(stored.observation.failures, 3);

    // Once completed, not even the same message counts them again.
    let again = pollster::block_on(process(&ports, only_origin_zero(), settings()));
    assert_eq!((again.counted, again.duplicates), (0, 3));
}

#[test]
fn when_claims_fail_nothing_is_counted_and_the_failures_are_retried() {
    let (metrics, notifier) = (MemoryMetrics::default(), MemoryNotifier::default());
    let detector = Detector::new(MemoryStore::new(), Policy::default());
    let ports = Ports {
        metrics: &metrics,
        notifier: &notifier,
        detector: &detector,
        claims: &NoClaims,
        history: &NoHistory,
        history_cache: &MemoryHistoryCache::default(),
    };
    let mut d = delivery();
    d.sources.push((
        2,
        "s3",
        SourceCounts {
            records: 7,
            malformed: 0,
        },
    ));
    let outcome = pollster::block_on(process(&ports, d, settings()));
    assert_eq!(
        outcome.failed_origins.into_iter().collect::<Vec<_>>(),
        [0, 1]
    );
    let published = metrics.published.lock().expect("lock");
    assert_eq!(sum_of(&published, metric::EXPIRED_TOKEN_ERRORS, 0), 0.0);
    assert_eq!(
        sum_of(&published, metric::RECORDS_SCANNED, 1),
        7.0,
        "the origin without failures is done"
    );
}

/// ASIAONE's CloudTrail history: minted and used an hour before the failures, last worked just before.
fn history_of_one() -> MemoryHistory {
    let history = MemoryHistory::default();
    let event = |id: &str, at: i64, name: &str, error: Option<&str>| {
        let error = error.map_or(String::new(), |e| format!(r#","errorCode":"{e}""#));
        format!(
            r#"{{"eventID":"{id}","eventTime":"{}","eventSource":"sts.amazonaws.com","eventName":"{name}","userIdentity":{{"accessKeyId":"ASIAONE"}}{error}}}"#,
            Timestamp::from_unix(at).rfc3339()
        )
    };
    history.add("ASIAONE", event("h1", T0 - 3000, "GetCallerIdentity", None));
    history.add("ASIAONE", event("h2", T0 - 100, "GetCallerIdentity", None));
    history.add(
        "ASIAONE",
        event("h3", T0 + 5, "GetCallerIdentity", Some("ExpiredToken")),
    );
    history
}

#[test]
fn an_opened_incident_is_enriched_once_and_every_later_alert_reuses_it() {
    let (metrics, notifier, claims) = (
        MemoryMetrics::default(),
        MemoryNotifier::default(),
        MemoryClaims::default(),
    );
    let (history, cache) = (history_of_one(), MemoryHistoryCache::default());
    let detector = Detector::new(MemoryStore::new(), Policy::default());
    let ports = Ports {
        metrics: &metrics,
        notifier: &notifier,
        detector: &detector,
        claims: &claims,
        history: &history,
        history_cache: &cache,
    };
    let opened = pollster::block_on(process(&ports, delivery(), settings()));
    assert!(opened.errors.is_empty(), "{:?}", opened.errors);
    assert_eq!(
        (
            opened.alerts_sent,
            opened.histories_looked_up,
            opened.histories_unavailable
        ),
        (1, 1, 0),
        "ASIATWO has one failure: no incident, no lookup"
    );
    let first = notifier.sent.lock().expect("lock")[0].clone();
    let h = first.payload.history.as_ref().expect("history");
    assert_eq!(h.status, "found");
    assert_eq!(h.first_used, Some(Timestamp::from_unix(T0 - 3000)));
    assert_eq!(h.last_worked, Some(Timestamp::from_unix(T0 - 100)));
    assert!(
        first.body.contains("has failed 3 times since."),
        "{}",
        first.body
    );

    // An hour later the key still fails: an update, with the remembered history.
    let later = T0 + 700 + 3600;
    let more = Delivery {
        failures: vec![(failure("a4", "ASIAONE", later - 60, "ExpiredToken"), 0)],
        holders: holders(),
        sources: Vec::new(),
    };
    let update = pollster::block_on(process(
        &ports,
        more,
        Settings {
            now: Timestamp::from_unix(later),
            ..settings()
        },
    ));
    assert_eq!((update.alerts_sent, update.histories_looked_up), (1, 0));
    // Quiet for half an hour: resolved by the sweep, again without a lookup.
    let resolved = pollster::block_on(sweep(&ports, Timestamp::from_unix(later + 1800)));
    assert_eq!((resolved.alerts_sent, resolved.histories_looked_up), (1, 0));
    assert_eq!(history.lookups(), 1, "looked up once per incident");
    let sent = notifier.sent.lock().expect("lock");
    assert_eq!(sent.len(), 3);
    for alert in sent.iter() {
        assert_eq!(
            alert.payload.history, first.payload.history,
            "{}",
            alert.subject
        );
    }
}

#[test]
fn a_lookup_that_fails_still_pages_and_says_why() {
    for (reason, says) in [
        (history::Unavailable::Throttled, "throttled"),
        (history::Unavailable::Denied, "cloudtrail:LookupEvents"),
        (history::Unavailable::TimedOut, "time budget"),
    ] {
        let (metrics, notifier, claims) = (
            MemoryMetrics::default(),
            MemoryNotifier::default(),
            MemoryClaims::default(),
        );
        let (history, cache) = (history_of_one(), MemoryHistoryCache::default());
        *history.failure.lock().expect("lock") = Some(LookupError::new(reason, "as tested"));
        let detector = Detector::new(MemoryStore::new(), Policy::default());
        let ports = Ports {
            metrics: &metrics,
            notifier: &notifier,
            detector: &detector,
            claims: &claims,
            history: &history,
            history_cache: &cache,
        };
        let outcome = pollster::block_on(process(&ports, delivery(), settings()));
        assert!(outcome.failed_origins.is_empty());
        assert_eq!((outcome.alerts_sent, outcome.histories_unavailable), (1, 1));
        let sent = notifier.sent.lock().expect("lock");
        let h = sent[0].payload.history.as_ref().expect("history section");
        assert_eq!(
            (h.status, h.unavailable_reason),
            ("unavailable", Some(reason.id()))
        );
        assert!(
            sent[0].body.contains("Unavailable:") && sent[0].body.contains(says),
            "{}",
            sent[0].body
        );
    }
}

#[test]
fn a_spent_budget_means_no_lookup_wait() {
    let (metrics, notifier, claims) = (
        MemoryMetrics::default(),
        MemoryNotifier::default(),
        MemoryClaims::default(),
    );
    let (history, cache) = (history_of_one(), MemoryHistoryCache::default());
    let detector = Detector::new(MemoryStore::new(), Policy::default());
    let ports = Ports {
        metrics: &metrics,
        notifier: &notifier,
        detector: &detector,
        claims: &claims,
        history: &history,
        history_cache: &cache,
    };
    let spent = Settings {
        history_deadline: Instant::now(),
        ..settings()
    };
    let outcome = pollster::block_on(process(&ports, delivery(), spent));
    assert_eq!((outcome.alerts_sent, outcome.histories_unavailable), (1, 1));
    let sent = notifier.sent.lock().expect("lock");
    assert_eq!(
        sent[0]
            .payload
            .history
            .as_ref()
            .map(|h| h.unavailable_reason),
        Some(Some("timed_out"))
    );
}

#[test]
fn an_alert_the_sweep_resends_carries_the_history_looked_up_when_it_opened() {
    let (metrics, claims) = (MemoryMetrics::default(), MemoryClaims::default());
    let notifier = DownNotifier::default();
    let (history, cache) = (history_of_one(), MemoryHistoryCache::default());
    let detector = Detector::new(MemoryStore::new(), Policy::default());
    let ports = Ports {
        metrics: &metrics,
        notifier: &notifier,
        detector: &detector,
        claims: &claims,
        history: &history,
        history_cache: &cache,
    };
    let first = pollster::block_on(process(&ports, delivery(), settings()));
    assert_eq!((first.alerts_pending, first.histories_looked_up), (1, 1));
    *notifier.up.lock().expect("lock") = true;
    let resent = pollster::block_on(sweep(&ports, Timestamp::from_unix(T0 + 700 + 300)));
    assert_eq!((resent.alerts_sent, resent.histories_looked_up), (1, 0));
    assert_eq!(history.lookups(), 1);
    let sent = notifier.inner.sent.lock().expect("lock");
    assert_eq!(
        sent[0].payload.history.as_ref().map(|h| h.status),
        Some("found")
    );
}

#[test]
fn turned_off_lookups_leave_no_trace_in_the_alert() {
    let (metrics, notifier, claims) = (
        MemoryMetrics::default(),
        MemoryNotifier::default(),
        MemoryClaims::default(),
    );
    let detector = Detector::new(MemoryStore::new(), Policy::default());
    let ports = Ports {
        metrics: &metrics,
        notifier: &notifier,
        detector: &detector,
        claims: &claims,
        history: &NoHistory,
        history_cache: &MemoryHistoryCache::default(),
    };
    let outcome = pollster::block_on(process(&ports, delivery(), settings()));
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.histories_looked_up, 0);
    let sent = notifier.sent.lock().expect("lock");
    assert_eq!(sent[0].payload.history, None);
    assert!(!sent[0].body.contains("KEY HISTORY"));
}
