//! The handler over in-memory ports: every delivery shape, partial batch failure, redelivery.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use tokenwatch_aws::AwsError;
use tokenwatch_core::contract::metric;
use tokenwatch_core::detect::{Detector, MemoryStore, Policy};
use tokenwatch_core::ports::{
    MemoryClaims, MemoryHistory, MemoryHistoryCache, MemoryMetrics, MemoryNotifier,
};
use tokenwatch_core::sample::{DEFAULT_FILE_PERIOD_SECONDS, Sample, SampleSpec};
use tokenwatch_core::{ErrorCodes, Scanner, Timestamp, Validation};
use tokenwatch_lambda::objects::ObjectReader;
use tokenwatch_lambda::{Handler, InvocationContext, ObjectSource};

/// S3 as a map; keys marked `flaky` fail like a dropped connection.
#[derive(Default)]
struct MemoryObjects {
    objects: HashMap<(String, String), Vec<u8>>,
    flaky: Vec<String>,
}

impl ObjectSource for MemoryObjects {
    async fn open(&self, bucket: &str, key: &str) -> Result<ObjectReader, AwsError> {
        if self.flaky.iter().any(|k| k == key) {
            return Err(AwsError {
                operation: "s3:GetObject",
                message: "connection reset".into(),
                retryable: true,
            });
        }
        match self.objects.get(&(bucket.to_owned(), key.to_owned())) {
            Some(bytes) => Ok(Box::new(std::io::Cursor::new(bytes.clone()))),
            None => Err(AwsError {
                operation: "s3:GetObject",
                message: "NoSuchKey".into(),
                retryable: false,
            }),
        }
    }
}

type TestHandler = Handler<
    MemoryMetrics,
    MemoryNotifier,
    MemoryStore,
    MemoryClaims,
    MemoryObjects,
    MemoryHistory,
    MemoryHistoryCache,
>;

fn clock() -> Timestamp {
    Timestamp::parse("2026-11-26T06:10:00Z").expect("time")
}

fn handler(objects: MemoryObjects) -> TestHandler {
    Handler {
        scanner: Arc::new(Scanner::new(ErrorCodes::default(), Validation::Structure)),
        metrics: MemoryMetrics::default(),
        notifier: MemoryNotifier::default(),
        detector: Detector::new(MemoryStore::new(), Policy::default()),
        claims: MemoryClaims::default(),
        objects,
        history: MemoryHistory::default(),
        history_cache: MemoryHistoryCache::default(),
        history_budget: std::time::Duration::from_secs(10),
        max_session_series: 50,
        clock,
    }
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/fixtures/events")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json")
}

fn total(h: &TestHandler, name: &str, dimensions: usize) -> f64 {
    h.metrics
        .published
        .lock()
        .expect("lock")
        .iter()
        .flatten()
        .filter(|d| d.name == name && d.dimensions.len() == dimensions)
        .map(|d| d.stats.sum)
        .sum()
}

fn run(h: &TestHandler, payload: Value) -> Result<Value, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(h.handle_payload(payload, &InvocationContext::default()))
        .map_err(|e| e.to_string())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

#[test]
fn eventbridge_event_counts_once_even_when_delivered_twice() {
    let h = handler(MemoryObjects::default());
    assert_eq!(
        run(&h, fixture("eventbridge-cloudtrail.json")),
        Ok(json!({}))
    );
    assert_eq!(
        run(&h, fixture("eventbridge-cloudtrail.json")),
        Ok(json!({}))
    );
    assert_eq!(total(&h, metric::EXPIRED_TOKEN_ERRORS, 0), 1.0);
    assert_eq!(total(&h, metric::RECORDS_SCANNED, 1), 2.0);
}

#[test]
fn logs_subscription_counts_its_failures() {
    let h = handler(MemoryObjects::default());
    assert_eq!(run(&h, fixture("cloudwatch-logs.json")), Ok(json!({})));
    assert_eq!(total(&h, metric::EXPIRED_TOKEN_ERRORS, 0), 2.0);
    assert_eq!(total(&h, metric::RECORDS_SCANNED, 1), 3.0);
    assert_eq!(
        run(&h, fixture("cloudwatch-logs-control.json")),
        Ok(json!({}))
    );
}

#[test]
fn sqs_batch_reports_only_the_failed_messages() {
    let sample = Sample::new(&SampleSpec {
        seed: 3,
        records: 2000,
        start: Timestamp::parse("2026-11-26T00:00:00Z").expect("time"),
        file_period: DEFAULT_FILE_PERIOD_SECONDS,
    });
    let mut objects = MemoryObjects::default();
    let mut messages = Vec::new();
    let mut expected_records = 0;
    for n in 0..sample.file_count() {
        let file = sample.file(n);
        expected_records += file.records.len() as u64;
        let body = gzip(json!({"Records": file.records}).to_string().as_bytes());
        objects
            .objects
            .insert(("trail".to_owned(), file.path.clone()), body);
        let notification = json!({"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "trail"}, "object": {"key": file.path}}}]});
        messages.push(json!({"messageId": format!("m{n}"), "body": notification.to_string(), "eventSource": "aws:sqs"}));
    }
    // One object whose read fails like a dropped connection, one that does not exist, one body that is not a notification.
    objects.flaky.push(sample.file(5).path);
    messages.push(json!({"messageId": "missing", "eventSource": "aws:sqs",
        "body": json!({"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "trail"}, "object": {"key": "AWSLogs/gone.json.gz"}}}]}).to_string()}));
    messages.push(json!({"messageId": "junk", "body": "not json", "eventSource": "aws:sqs"}));
    let h = handler(objects);
    // CloudTrail's event history holds every call made with the scenarios' keys.
    for n in 0..sample.file_count() {
        for record in sample.file(n).records {
            if let Some(key) = record["userIdentity"]["accessKeyId"].as_str() {
                h.history.add(key, record.to_string());
            }
        }
    }
    let response = run(&h, json!({"Records": messages})).expect("handled");
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": "m5"}]})
    );
    let manifest = sample.manifest();
    let flaky_failures = sample
        .file(5)
        .records
        .iter()
        .filter(|r| r["errorCode"] == "ExpiredToken")
        .count() as f64;
    assert_eq!(
        total(&h, metric::EXPIRED_TOKEN_ERRORS, 0),
        manifest.expired_token_errors as f64 - flaky_failures
    );
    let scanned_without_flaky = (expected_records - sample.file(5).records.len() as u64) as f64;
    assert_eq!(
        total(&h, metric::RECORDS_SCANNED, 1),
        scanned_without_flaky + 2.0,
        "+ the missing object and the junk body"
    );
    assert_eq!(total(&h, metric::MALFORMED_RECORDS, 1), 2.0);
    let alerts = h.notifier.sent.lock().expect("lock");
    assert_eq!(
        alerts.len(),
        manifest.caching_scenarios.len(),
        "one alert per caching scenario"
    );
    assert_eq!(h.history.lookups(), alerts.len(), "one lookup per incident");
    for alert in alerts.iter() {
        let history = alert.payload.history.as_ref().expect("history");
        assert_eq!(history.status, "found", "{}", alert.subject);
        let worked = history
            .last_worked
            .expect("the key worked before it expired");
        assert!(worked < alert.payload.first_failure, "{}", alert.body);
        assert!(alert.body.contains("last worked at"), "{}", alert.body);
    }
}

#[test]
fn scheduled_sweep_and_unrecognized_payloads() {
    let h = handler(MemoryObjects::default());
    assert_eq!(run(&h, fixture("scheduled.json")), Ok(json!({})));
    assert_eq!(run(&h, json!({"what": "is this"})), Ok(json!({})));
    assert_eq!(
        total(&h, metric::MALFORMED_RECORDS, 1),
        1.0,
        "counted, never silently dropped"
    );
}
