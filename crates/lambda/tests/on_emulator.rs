//! The handler with its real AWS adapters against moto on loopback: each delivery shape, partial batch
//! failure, redelivery, racing invocations, throttling, and EMF output. Metrics are read back with
//! GetMetricData, alerts through an SQS subscription of the topic, state from the table.

use std::io::Write;
use std::sync::{Arc, Mutex};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use tokenwatch_aws::{
    CloudWatchMetrics, DynamoClaims, DynamoStore, EmfMetrics, S3Objects, SnsNotifier,
};
use tokenwatch_core::contract::{metric, table};
use tokenwatch_core::detect::{Detector, Policy};
use tokenwatch_core::ports::{MetricsSink, NoHistory};
use tokenwatch_core::sample::{
    DEFAULT_FILE_PERIOD_SECONDS, Manifest, SAMPLE_SPAN_SECONDS, Sample, SampleSpec,
};
use tokenwatch_core::{ErrorCodes, Scanner, Timestamp, Validation};
use tokenwatch_lambda::{Handler, InvocationContext, ObjectSource};
use tokenwatch_testkit::{ACCOUNT_ID, Fault, Rule, Service, Stack};

const TABLE: &str = "tokenwatch-state";
const BUCKET: &str = "trail-logs";
const NAMESPACE: &str = "TokenWatch";

fn now() -> Timestamp {
    Timestamp::from_unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

/// A stack with the table, topic (with an SQS inbox subscribed) and bucket a deployment has.
struct World {
    stack: Stack,
    config: aws_config::SdkConfig,
    inbox: String,
    topic: String,
}

impl World {
    async fn start() -> World {
        let stack = Stack::start().await.expect("stack");
        let config = stack.sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let def = |name| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("def")
        };
        let key = |name, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .expect("key")
        };
        dynamodb
            .create_table()
            .table_name(TABLE)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(def(table::PARTITION_KEY))
            .attribute_definitions(def(table::SORT_KEY))
            .key_schema(key(table::PARTITION_KEY, KeyType::Hash))
            .key_schema(key(table::SORT_KEY, KeyType::Range))
            .send()
            .await
            .expect("table");
        let sns = aws_sdk_sns::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        let topic = sns
            .create_topic()
            .name("oncall")
            .send()
            .await
            .expect("topic")
            .topic_arn
            .expect("arn");
        let inbox = sqs
            .create_queue()
            .queue_name("oncall-inbox")
            .send()
            .await
            .expect("queue")
            .queue_url
            .expect("url");
        sns.subscribe()
            .topic_arn(&topic)
            .protocol("sqs")
            .endpoint(format!("arn:aws:sqs:us-east-1:{ACCOUNT_ID}:oncall-inbox"))
            .send()
            .await
            .expect("subscribe");
        S3Objects::from_config(&config)
            .client()
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("bucket");
        World {
            stack,
            config,
            inbox,
            topic,
        }
    }

    fn handler_with<M: MetricsSink>(
        &self,
        metrics: M,
    ) -> Handler<M, SnsNotifier, DynamoStore, DynamoClaims, S3Objects, NoHistory, DynamoStore> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&self.config);
        Handler {
            scanner: Arc::new(Scanner::new(ErrorCodes::default(), Validation::Structure)),
            metrics,
            notifier: SnsNotifier::new(aws_sdk_sns::Client::new(&self.config), &self.topic),
            detector: Detector::new(DynamoStore::new(dynamodb.clone(), TABLE), Policy::default()),
            claims: DynamoClaims::new(dynamodb.clone(), TABLE, now),
            objects: S3Objects::from_config(&self.config),
            history: NoHistory,
            history_cache: DynamoStore::new(dynamodb, TABLE),
            history_budget: std::time::Duration::from_secs(10),
            max_session_series: 50,
            clock: now,
        }
    }

    fn handler(
        &self,
    ) -> Handler<
        CloudWatchMetrics,
        SnsNotifier,
        DynamoStore,
        DynamoClaims,
        S3Objects,
        NoHistory,
        DynamoStore,
    > {
        self.handler_with(CloudWatchMetrics::new(
            aws_sdk_cloudwatch::Client::new(&self.config),
            NAMESPACE,
        ))
    }

    /// Writes the sample's files to the bucket and returns one SQS message per file, as the event source
    /// mapping delivers them (every other one wrapped in an SNS notification).
    async fn upload(&self, sample: &Sample) -> Vec<Value> {
        let s3 = S3Objects::from_config(&self.config);
        let mut messages = Vec::new();
        for n in 0..sample.file_count() {
            let file = sample.file(n);
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            gz.write_all(json!({"Records": file.records}).to_string().as_bytes())
                .expect("gzip");
            let body = gz.finish().expect("gzip");
            s3.client()
                .put_object()
                .bucket(BUCKET)
                .key(&file.path)
                .body(body.into())
                .send()
                .await
                .expect("put");
            let notification = json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": BUCKET}, "object": {"key": file.path.replace(' ', "+")}}}]});
            let body = if n % 2 == 0 {
                notification.to_string()
            } else {
                json!({"Type": "Notification", "Message": notification.to_string()}).to_string()
            };
            messages.push(
                json!({"messageId": format!("msg-{n}"), "body": body, "eventSource": "aws:sqs"}),
            );
        }
        messages
    }

    async fn alerts(&self) -> Vec<Value> {
        let sqs = aws_sdk_sqs::Client::new(&self.config);
        let mut alerts = Vec::new();
        loop {
            let received = sqs
                .receive_message()
                .queue_url(&self.inbox)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive");
            if received.messages().is_empty() {
                return alerts;
            }
            for message in received.messages() {
                let envelope: Value =
                    serde_json::from_str(message.body().unwrap_or_default()).expect("envelope");
                alerts.push(
                    serde_json::from_str(envelope["Message"].as_str().unwrap_or_default())
                        .expect("alert JSON"),
                );
                sqs.delete_message()
                    .queue_url(&self.inbox)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete");
            }
        }
    }

    /// The sum of a metric over the last day, for one dimension set (moto sums every set when none is given).
    async fn metric_sum(&self, name: &str, dimensions: &[(&str, &str)]) -> f64 {
        let client = aws_sdk_cloudwatch::Client::new(&self.config);
        let mut metric = Metric::builder().namespace(NAMESPACE).metric_name(name);
        for (k, v) in dimensions {
            metric = metric.dimensions(Dimension::builder().name(*k).value(*v).build());
        }
        let result = client
            .get_metric_data()
            .metric_data_queries(
                MetricDataQuery::builder()
                    .id("m")
                    .metric_stat(
                        MetricStat::builder()
                            .metric(metric.build())
                            .period(60)
                            .stat("Sum")
                            .build(),
                    )
                    .build(),
            )
            .start_time(DateTime::from_secs(now().unix() - 86_400))
            .end_time(DateTime::from_secs(now().unix() + 600))
            .send()
            .await
            .expect("get metric data");
        result
            .metric_data_results()
            .iter()
            .flat_map(|r| r.values())
            .sum()
    }
}

fn recent_sample(seed: u64, records: u64) -> Sample {
    let start = now().unix() - SAMPLE_SPAN_SECONDS - 3600;
    Sample::new(&SampleSpec {
        seed,
        records,
        start: Timestamp::from_unix(start - start.rem_euclid(3600)),
        file_period: DEFAULT_FILE_PERIOD_SECONDS,
    })
}

fn principal_total(manifest: &Manifest, scenario: &str) -> (String, f64) {
    let s = manifest
        .scenarios
        .iter()
        .find(|s| s.name == scenario)
        .expect("scenario");
    (s.principal.clone(), s.failures as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_deliveries_count_detect_and_page_once_even_when_redelivered() {
    let world = World::start().await;
    let sample = recent_sample(11, 3000);
    let messages = world.upload(&sample).await;
    let handler = world.handler();
    let response = handler
        .handle_payload(json!({"Records": messages}), &InvocationContext::default())
        .await
        .expect("handled");
    assert_eq!(response, json!({"batchItemFailures": []}));

    let manifest = sample.manifest();
    assert_eq!(
        world
            .metric_sum(
                metric::EXPIRED_TOKEN_ERRORS,
                &[("AccountId", "111122223333")]
            )
            .await,
        manifest.expired_token_errors as f64
    );
    let (principal, failures) = principal_total(manifest, "build-job-assume-role");
    assert_eq!(
        world
            .metric_sum(metric::EXPIRED_TOKEN_ERRORS, &[("Principal", &principal)])
            .await,
        failures
    );
    assert_eq!(
        world
            .metric_sum(
                metric::EXPIRED_TOKEN_ERRORS,
                &[
                    ("Principal", &principal),
                    ("SessionName", "nightly-build-*")
                ]
            )
            .await,
        failures,
        "session names are normalized in dimensions"
    );
    let records = manifest.records + manifest.duplicate_records;
    assert_eq!(
        world
            .metric_sum(metric::RECORDS_SCANNED, &[("Source", "s3")])
            .await,
        records as f64
    );
    // (moto sums every dimension set when none is given, so read incidents per principal.)
    let mut incidents = 0.0;
    for scenario in manifest.scenarios.iter().filter(|s| s.caching) {
        incidents += world
            .metric_sum(
                metric::STALE_CREDENTIAL_INCIDENTS,
                &[("Principal", &scenario.principal)],
            )
            .await;
    }
    assert_eq!(incidents, manifest.caching_scenarios.len() as f64);

    let alerts = world.alerts().await;
    assert_eq!(alerts.len(), manifest.caching_scenarios.len());
    let mut keys: Vec<&str> = alerts
        .iter()
        .filter_map(|a| a["alert"]["access_key_id"].as_str())
        .collect();
    keys.sort_unstable();
    let mut expected: Vec<&str> = manifest
        .scenarios
        .iter()
        .filter(|s| s.caching)
        .map(|s| s.access_key_id.as_str())
        .collect();
    expected.sort_unstable();
    assert_eq!(keys, expected);

    // The same messages again, as SQS does after a visibility timeout: nothing counts twice, nobody is paged twice.
    let again = handler
        .handle_payload(json!({"Records": messages}), &InvocationContext::default())
        .await
        .expect("handled");
    assert_eq!(again, json!({"batchItemFailures": []}));
    assert_eq!(
        world
            .metric_sum(
                metric::EXPIRED_TOKEN_ERRORS,
                &[("AccountId", "111122223333")]
            )
            .await,
        manifest.expired_token_errors as f64
    );
    assert!(world.alerts().await.is_empty());

    let state = DynamoStore::new(aws_sdk_dynamodb::Client::new(&world.config), TABLE);
    let build = manifest
        .scenarios
        .iter()
        .find(|s| s.name == "build-job-assume-role")
        .expect("scenario");
    let stored = tokenwatch_core::detect::IncidentStore::load(
        &state,
        &tokenwatch_core::CredentialKey::AccessKey(build.access_key_id.clone()),
    )
    .await
    .expect("load")
    .expect("state stored");
    assert!(stored.state.is_open());
    assert_eq!(stored.state.observation.failures, build.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unreadable_object_fails_only_its_message_and_its_retry_counts_once() {
    let world = World::start().await;
    let sample = recent_sample(12, 500);
    let messages = world.upload(&sample).await;
    let handler = world.handler();
    // The third GetObject keeps resetting the connection, past the SDK's retries.
    world.stack.add_rule(
        Rule::new(Service::S3, Fault::Reset)
            .operation("GetObject")
            .skip(2)
            .times(tokenwatch_aws::sdk::MAX_ATTEMPTS as usize),
    );
    let response = handler
        .handle_payload(json!({"Records": messages}), &InvocationContext::default())
        .await
        .expect("handled");
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": "msg-2"}]})
    );
    world.stack.clear_rules();
    let retry = handler
        .handle_payload(
            json!({"Records": [messages[2].clone()]}),
            &InvocationContext::default(),
        )
        .await
        .expect("handled");
    assert_eq!(retry, json!({"batchItemFailures": []}));
    let manifest = sample.manifest();
    assert_eq!(
        world
            .metric_sum(
                metric::EXPIRED_TOKEN_ERRORS,
                &[("AccountId", "111122223333")]
            )
            .await,
        manifest.expired_token_errors as f64
    );
    assert_eq!(world.alerts().await.len(), manifest.caching_scenarios.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_and_logs_deliveries_and_racing_invocations() {
    let world = World::start().await;
    let handler = Arc::new(world.handler());
    let start = now().unix() - 3600;
    // Six EventBridge events of one credential, over ten minutes, delivered by two concurrent invocations each.
    let events: Vec<Value> = (0..6)
        .map(|i| {
            json!({"detail-type": "AWS API Call via CloudTrail", "source": "aws.s3", "detail": {
                "eventID": format!("race-{i}"), "eventTime": Timestamp::from_unix(start + i * 120).rfc3339(),
                "errorCode": "ExpiredToken", "eventSource": "s3.amazonaws.com", "eventName": "ListBuckets",
                "recipientAccountId": "111122223333",
                "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::111122223333:assumed-role/deploy/ci-1",
                    "accountId": "111122223333", "accessKeyId": "ASIARACING",
                    "sessionContext": {"sessionIssuer": {"arn": "arn:aws:iam::111122223333:role/deploy"}}}}})
        })
        .collect();
    let mut tasks = Vec::new();
    for copy in 0..2 {
        for event in events.iter().cloned() {
            let handler = Arc::clone(&handler);
            tasks.push(tokio::spawn(async move {
                let _ = copy;
                handler
                    .handle_payload(event, &InvocationContext::default())
                    .await
                    .map_err(|e| e.to_string())
            }));
        }
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), Ok(json!({})));
    }
    assert_eq!(
        world
            .metric_sum(
                metric::EXPIRED_TOKEN_ERRORS,
                &[("Principal", "arn:aws:iam::111122223333:role/deploy")]
            )
            .await,
        6.0
    );
    let alerts = world.alerts().await;
    assert_eq!(alerts.len(), 1, "exactly one opened alert: {alerts:?}");
    assert_eq!(alerts[0]["alert"]["kind"], "opened");

    let logs_fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/fixtures/events/cloudwatch-logs.json");
    let logs: Value =
        serde_json::from_slice(&std::fs::read(logs_fixture).expect("fixture")).expect("json");
    assert_eq!(
        handler
            .handle_payload(logs, &InvocationContext::default())
            .await
            .expect("handled"),
        json!({})
    );
    assert_eq!(
        world
            .metric_sum(metric::RECORDS_SCANNED, &[("Source", "cloudwatch_logs")])
            .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_state_writes_fail_the_delivery_and_the_retry_counts_once() {
    let world = World::start().await;
    let handler = world.handler();
    let start = now().unix() - 3600;
    let records: Vec<Value> = (0..4)
        .map(|i| json!({"eventID": format!("t-{i}"), "eventTime": Timestamp::from_unix(start + i * 200).rfc3339(),
            "errorCode": "ExpiredToken", "userIdentity": {"type": "AssumedRole", "accessKeyId": "ASIATHROTTLED",
            "arn": "arn:aws:sts::111122223333:assumed-role/etl/nightly", "accountId": "111122223333"}}))
        .collect();
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(json!({"Records": records}).to_string().as_bytes())
        .expect("gzip");
    let body = gz.finish().expect("gzip");
    S3Objects::from_config(&world.config)
        .client()
        .put_object()
        .bucket(BUCKET)
        .key("AWSLogs/t.json.gz")
        .body(body.into())
        .send()
        .await
        .expect("put");
    let message = json!({"messageId": "only", "eventSource": "aws:sqs",
        "body": json!({"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": BUCKET}, "object": {"key": "AWSLogs/t.json.gz"}}}]}).to_string()});

    // CloudWatch throttles once (retried inside the call); the state table refuses every read.
    world.stack.add_rule(
        Rule::new(Service::CloudWatch, Fault::Throttle)
            .operation("PutMetricData")
            .times(1),
    );
    world.stack.add_rule(
        Rule::new(Service::DynamoDb, Fault::Throttle)
            .operation("GetItem")
            .always(),
    );
    let failed = handler
        .handle_payload(
            json!({"Records": [message.clone()]}),
            &InvocationContext::default(),
        )
        .await
        .expect("handled");
    assert_eq!(
        failed,
        json!({"batchItemFailures": [{"itemIdentifier": "only"}]})
    );
    assert!(world.alerts().await.is_empty());

    world.stack.clear_rules();
    let retried = handler
        .handle_payload(json!({"Records": [message]}), &InvocationContext::default())
        .await
        .expect("handled");
    assert_eq!(retried, json!({"batchItemFailures": []}));
    assert_eq!(world.alerts().await.len(), 1, "detected on the retry");
    // Metrics were published on the first try and again on the retry: the documented cost of a state-store outage.
    assert_eq!(
        world
            .metric_sum(
                metric::EXPIRED_TOKEN_ERRORS,
                &[("Principal", "arn:aws:iam::111122223333:role/etl")]
            )
            .await,
        8.0
    );
}

/// A shared buffer standing in for stdout.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emf_mode_writes_metrics_as_log_lines_and_calls_no_metrics_api() {
    let world = World::start().await;
    let out = Captured::default();
    let handler = world.handler_with(EmfMetrics::new(NAMESPACE, out.clone()));
    let sample = recent_sample(13, 300);
    let messages = world.upload(&sample).await;
    handler
        .handle_payload(json!({"Records": messages}), &InvocationContext::default())
        .await
        .expect("handled");
    assert_eq!(
        world.stack.calls_to(Service::CloudWatch, "PutMetricData"),
        0
    );
    let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
    let mut expired = 0.0;
    for line in text.lines() {
        let doc: Value = serde_json::from_str(line).expect("each line is one JSON document");
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        let dims = &doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0];
        if dims == &json!(["AccountId"]) {
            expired += doc["ExpiredTokenErrors"].as_f64().unwrap_or(0.0);
        }
    }
    assert_eq!(expired, sample.manifest().expired_token_errors as f64);
    let _ = ObjectSource::open(
        &S3Objects::from_config(&world.config),
        BUCKET,
        "AWSLogs/none",
    )
    .await
    .err();
}
