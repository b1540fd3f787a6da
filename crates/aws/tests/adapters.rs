//! The adapters against real parts on loopback: the AWS SDK talking HTTP to moto (CloudWatch through the
//! rpcv2Cbor bridge), with faults injected by the proxy in front.

use std::io::Write;
use std::sync::Arc;

use aws_credential_types::Credentials;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension as CwDimension, Metric, MetricDataQuery, MetricStat};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use flate2::Compression;
use flate2::write::GzEncoder;
use tokenwatch_aws::{
    CloudWatchMetrics, DynamoClaims, DynamoStore, S3Objects, SdkOptions, SnsNotifier,
    dynamodb_client, sdk,
};
use tokenwatch_core::alert;
use tokenwatch_core::contract::{metric, table};
use tokenwatch_core::detect::{
    CredentialState, Detector, IncidentStore, Notice, NoticeKind, Observation, Policy, observe_all,
};
use tokenwatch_core::metrics::{Dimension, MetricDatum};
use tokenwatch_core::ports::{ClaimRequest, EventClaims, MetricsSink, Notifier};
use tokenwatch_core::record::Record;
use tokenwatch_core::tally::StatisticSet;
use tokenwatch_core::{ErrorCodes, Failure, Scanner, Timestamp, Validation};
use tokenwatch_testkit::{Fault, Rule, Service, Stack};
use tokio::io::AsyncReadExt;

const TABLE: &str = "tokenwatch-state";

fn now() -> Timestamp {
    Timestamp::from_unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

async fn create_table(stack: &Stack) -> aws_sdk_dynamodb::Client {
    let client = dynamodb_client(&stack.sdk_config().await);
    client
        .create_table()
        .table_name(TABLE)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(table::PARTITION_KEY)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("def"),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(table::SORT_KEY)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("def"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(table::PARTITION_KEY)
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(table::SORT_KEY)
                .key_type(KeyType::Range)
                .build()
                .expect("key"),
        )
        .send()
        .await
        .expect("create table");
    client
}

fn failure(id: &str, key: &str, at: i64) -> Failure {
    let json = format!(
        r#"{{"eventID":"{id}","eventTime":"{}","errorCode":"ExpiredToken","eventSource":"s3.amazonaws.com","eventName":"GetObject",
        "awsRegion":"us-east-1","sourceIPAddress":"10.1.2.3","userAgent":"aws-cli/2.15",
        "userIdentity":{{"type":"AssumedRole","arn":"arn:aws:sts::111122223333:assumed-role/etl/run-{key}","accountId":"111122223333",
        "accessKeyId":"{key}","sessionContext":{{"sessionIssuer":{{"arn":"arn:aws:iam::111122223333:role/etl"}},
        "attributes":{{"creationDate":"{}"}}}}}}}}"#,
        Timestamp::from_unix(at).rfc3339(),
        Timestamp::from_unix(at - 4000).rfc3339()
    );
    Failure::from_record(
        &Record::from_slice(json.as_bytes()).expect("record"),
        &ErrorCodes::default(),
    )
    .expect("valid")
    .expect("failure")
}

fn observation(key: &str, start: i64) -> Observation {
    let failures: Vec<Failure> = (0..4)
        .map(|i| failure(&format!("{key}-{i}"), key, start + i * 200))
        .collect();
    observe_all(&failures).into_values().next().expect("one")
}

/// The configuration the Lambda and CLI build (our HTTP client, retry policy, timeouts), pointed at the stack.
async fn shipped_config(stack: &Stack) -> aws_config::SdkConfig {
    sdk::loader(&SdkOptions {
        region: Some("us-east-1".into()),
        endpoint_url: Some(stack.endpoint()),
        ..SdkOptions::default()
    })
    .credentials_provider(Credentials::for_tests())
    .load()
    .await
}

#[tokio::test]
async fn the_sdk_client_we_ship_speaks_plain_http_to_a_local_endpoint() {
    let stack = Stack::start().await.expect("stack");
    let config = shipped_config(&stack).await;
    let tables = dynamodb_client(&config)
        .list_tables()
        .send()
        .await
        .expect("list tables");
    assert!(tables.table_names().is_empty());
}

#[tokio::test]
async fn cloudwatch_metrics_arrive_as_statistic_sets() {
    let stack = Stack::start().await.expect("stack");
    let config = stack.sdk_config().await;
    let sink = CloudWatchMetrics::new(tokenwatch_aws::cloudwatch_client(&config), "TokenWatchTest");
    let minute = now().minute().plus_seconds(-120);
    let principal = "arn:aws:iam::111122223333:role/etl";
    let data: Vec<MetricDatum> = (0..1500)
        .map(|i| MetricDatum {
            name: metric::EXPIRED_TOKEN_ERRORS,
            unit: tokenwatch_core::contract::Unit::Count,
            dimensions: vec![Dimension {
                name: "Principal",
                value: if i == 0 {
                    principal.to_owned()
                } else {
                    format!("arn:aws:iam::1:role/r{i}")
                },
            }],
            timestamp: minute,
            stats: StatisticSet {
                count: 1,
                sum: 7.0,
                min: 7.0,
                max: 7.0,
            },
        })
        .collect();
    // One throttle on the way: the SDK retries it.
    stack.add_rule(
        Rule::new(Service::CloudWatch, Fault::Throttle)
            .operation("PutMetricData")
            .times(1),
    );
    sink.publish(&data).await.expect("published");
    assert_eq!(
        stack.calls_to(Service::CloudWatch, "PutMetricData"),
        3,
        "two batches, one retried"
    );

    let client = aws_sdk_cloudwatch::Client::new(&config);
    let result = client
        .get_metric_data()
        .metric_data_queries(
            MetricDataQuery::builder()
                .id("errors")
                .metric_stat(
                    MetricStat::builder()
                        .metric(
                            Metric::builder()
                                .namespace("TokenWatchTest")
                                .metric_name(metric::EXPIRED_TOKEN_ERRORS)
                                .dimensions(
                                    CwDimension::builder()
                                        .name("Principal")
                                        .value(principal)
                                        .build(),
                                )
                                .build(),
                        )
                        .period(60)
                        .stat("Sum")
                        .build(),
                )
                .build(),
        )
        .start_time(DateTime::from_secs(minute.unix() - 600))
        .end_time(DateTime::from_secs(minute.unix() + 600))
        .send()
        .await
        .expect("get metric data");
    let values = result.metric_data_results()[0].values();
    assert_eq!(values, [7.0]);
}

#[tokio::test]
async fn sns_alerts_reach_a_subscribed_queue_with_attributes() {
    let stack = Stack::start().await.expect("stack");
    let config = stack.sdk_config().await;
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
    let queue = sqs
        .create_queue()
        .queue_name("oncall-inbox")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let queue_arn = format!(
        "arn:aws:sqs:us-east-1:{}:oncall-inbox",
        tokenwatch_testkit::ACCOUNT_ID
    );
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&queue_arn)
        .send()
        .await
        .expect("subscribe");

    let (state, _) = CredentialState::first(
        &observation("ASIAALERT", now().unix() - 3000),
        &Policy::default(),
        now(),
    );
    let rendered = alert::render(&Notice {
        kind: NoticeKind::Opened,
        state,
    });
    SnsNotifier::new(sns, &topic)
        .send(&rendered)
        .await
        .expect("published");

    let received = sqs
        .receive_message()
        .queue_url(&queue)
        .wait_time_seconds(5)
        .send()
        .await
        .expect("receive");
    let envelope: serde_json::Value =
        serde_json::from_str(received.messages()[0].body().expect("body")).expect("json");
    assert_eq!(envelope["Subject"], rendered.subject);
    assert_eq!(envelope["MessageAttributes"]["severity"]["Value"], "high");
    assert_eq!(
        envelope["MessageAttributes"]["account_id"]["Value"],
        "111122223333"
    );
    let machine: serde_json::Value =
        serde_json::from_str(envelope["Message"].as_str().expect("message"))
            .expect("machine JSON for SQS");
    assert_eq!(machine["alert"]["access_key_id"], "ASIAALERT");
    assert_eq!(
        machine["alert"]["likely_cause"],
        "assume_role_session_elapsed"
    );
    assert!(
        machine["body"]
            .as_str()
            .is_some_and(|b| b.contains("WHAT TO DO"))
    );
}

#[tokio::test]
async fn incident_state_is_versioned_and_listed_while_active() {
    let stack = Stack::start().await.expect("stack");
    let client = create_table(&stack).await;
    let store = DynamoStore::new(client, TABLE);
    let obs = observation("ASIASTATE", now().unix() - 3000);
    let (state, due) = CredentialState::first(&obs, &Policy::default(), now());
    assert_eq!(due, Some(NoticeKind::Opened));
    assert!(
        store
            .save(&state, None, now().plus_seconds(86_400))
            .await
            .expect("save")
    );
    assert!(
        !store
            .save(&state, None, now())
            .await
            .expect("conflict, not error"),
        "already exists"
    );
    let loaded = store
        .load(&obs.credential)
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(loaded.version, 1);
    assert_eq!(loaded.state, state);
    assert!(
        !store
            .save(&state, Some(7), now())
            .await
            .expect("stale version")
    );
    assert_eq!(store.active().await.expect("active").len(), 1);

    let mut resolved = loaded.state.clone();
    resolved.mark_sent(NoticeKind::Opened, now());
    resolved.sweep(&Policy::default(), now().plus_seconds(7200));
    resolved.mark_sent(NoticeKind::Resolved, now());
    assert!(store.save(&resolved, Some(1), now()).await.expect("save"));
    assert!(
        store.active().await.expect("active").is_empty(),
        "resolved and confirmed: off the active list"
    );
}

#[tokio::test]
async fn racing_invocations_open_an_incident_exactly_once() {
    let stack = Stack::start().await.expect("stack");
    let client = create_table(&stack).await;
    let detector = Arc::new(Detector::new(
        DynamoStore::new(client, TABLE),
        Policy::default(),
    ));
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let detector = Arc::clone(&detector);
        tasks.push(tokio::spawn(async move {
            let mut opened = 0;
            for key in 0..8 {
                let obs = observation(&format!("ASIARACE{key}"), now().unix() - 3000 + worker);
                if let Some(notice) = detector.observe(&obs, now()).await.expect("observe") {
                    opened += usize::from(notice.kind == NoticeKind::Opened);
                }
            }
            opened
        }));
    }
    let mut opened = 0;
    for task in tasks {
        opened += task.await.expect("task");
    }
    assert_eq!(
        opened, 8,
        "one Opened per credential across six racing writers"
    );
    for key in 0..8 {
        let credential = tokenwatch_core::CredentialKey::AccessKey(format!("ASIARACE{key}"));
        let state = detector
            .store()
            .load(&credential)
            .await
            .expect("load")
            .expect("stored");
        assert_eq!(
            state.state.observation.failures, 24,
            "every writer's failures merged"
        );
    }
}

fn requests<'a>(ids: &'a [String], holder: &'a str) -> Vec<ClaimRequest<'a>> {
    ids.iter()
        .map(|event_id| ClaimRequest { event_id, holder })
        .collect()
}

#[tokio::test]
async fn event_claims_count_each_id_once_in_chunks() {
    let stack = Stack::start().await.expect("stack");
    let client = create_table(&stack).await;
    let claims = DynamoClaims::new(client, TABLE, now);
    let first: Vec<String> = (0..150).map(|i| format!("event-{i}")).collect();
    assert!(
        claims
            .claim(&requests(&first, "message-1"))
            .await
            .expect("claim")
            .iter()
            .all(|new| *new)
    );
    let mixed: Vec<String> = (140..260).map(|i| format!("event-{i}")).collect();
    let fresh = claims
        .claim(&requests(&mixed, "message-2"))
        .await
        .expect("claim");
    assert_eq!(
        fresh.iter().filter(|new| !**new).count(),
        10,
        "ids 140..150 are held by another delivery"
    );
    assert!(fresh[10..].iter().all(|new| *new));
    claims.release(&first[..30]).await.expect("release");
    let again = claims
        .claim(&requests(&first[..40], "message-3"))
        .await
        .expect("claim");
    assert_eq!(
        again.iter().filter(|new| **new).count(),
        30,
        "released ids can be claimed again"
    );
}

#[tokio::test]
async fn a_holder_retakes_its_unfinished_claims_until_it_completes_them() {
    let stack = Stack::start().await.expect("stack");
    let client = create_table(&stack).await;
    let claims = DynamoClaims::new(client, TABLE, now);
    let ids: Vec<String> = (0..30).map(|i| format!("event-{i}")).collect();
    assert!(
        claims
            .claim(&requests(&ids, "m1"))
            .await
            .expect("claim")
            .iter()
            .all(|b| *b)
    );
    assert!(
        claims
            .claim(&requests(&ids, "m1"))
            .await
            .expect("claim")
            .iter()
            .all(|b| *b),
        "the holder's retry takes them again"
    );
    assert!(
        claims
            .claim(&requests(&ids, "m2"))
            .await
            .expect("claim")
            .iter()
            .all(|b| !*b),
        "another delivery finds them taken"
    );
    assert!(
        claims
            .claim(&requests(&ids, ""))
            .await
            .expect("claim")
            .iter()
            .all(|b| !*b),
        "and so does a delivery without a holder"
    );
    claims.complete(&ids[..26]).await.expect("complete");
    let after = claims.claim(&requests(&ids, "m1")).await.expect("claim");
    assert_eq!(
        after.iter().filter(|b| **b).count(),
        4,
        "completed claims are final even for their holder (two BatchWriteItem chunks)"
    );
    assert_eq!(stack.calls_to(Service::DynamoDb, "BatchWriteItem"), 2);
}

#[tokio::test]
async fn a_claim_write_whose_answer_is_lost_is_retried_by_the_sdk_and_still_counts() {
    let stack = Stack::start().await.expect("stack");
    create_table(&stack).await;
    let claims = DynamoClaims::new(dynamodb_client(&shipped_config(&stack).await), TABLE, now);
    stack.add_rule(
        Rule::new(Service::DynamoDb, Fault::LoseResponse).operation("TransactWriteItems"),
    );
    let ids: Vec<String> = (0..5).map(|i| format!("event-{i}")).collect();
    let fresh = claims.claim(&requests(&ids, "m1")).await.expect("claim");
    assert_eq!(
        fresh, [true; 5],
        "the retry finds its own claims, not someone else's"
    );
    assert_eq!(stack.calls_to(Service::DynamoDb, "TransactWriteItems"), 2);
}

#[tokio::test]
async fn persistent_throttling_surfaces_as_a_retryable_error() {
    let stack = Stack::start().await.expect("stack");
    create_table(&stack).await;
    let claims = DynamoClaims::new(dynamodb_client(&shipped_config(&stack).await), TABLE, now);
    stack.add_rule(
        Rule::new(Service::DynamoDb, Fault::Throttle)
            .operation("TransactWriteItems")
            .always(),
    );
    let error = claims
        .claim(&[ClaimRequest {
            event_id: "x",
            holder: "m1",
        }])
        .await
        .expect_err("throttled");
    assert!(error.retryable, "{error}");
    assert_eq!(
        stack.calls_to(Service::DynamoDb, "TransactWriteItems"),
        u64::from(sdk::MAX_ATTEMPTS)
    );
}

#[tokio::test]
async fn s3_objects_stream_into_the_scanner() {
    let stack = Stack::start().await.expect("stack");
    let config = stack.sdk_config().await;
    let objects = S3Objects::from_config(&config);
    objects
        .client()
        .create_bucket()
        .bucket("trail")
        .send()
        .await
        .expect("bucket");
    let records: String = (0..5000)
        .map(|i| format!(r#"{{"eventID":"e{i}","eventTime":"2026-11-26T00:00:00Z","eventName":"GetObject"}},"#))
        .collect();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(
        format!(
            r#"{{"Records":[{records}{}]}}"#,
            r#"{"eventID":"last","eventTime":"2026-11-26T00:00:00Z","errorCode":"ExpiredToken"}"#
        )
        .as_bytes(),
    )
    .expect("gzip");
    let body = gz.finish().expect("gzip");
    objects
        .client()
        .put_object()
        .bucket("trail")
        .key("AWSLogs/x.json.gz")
        .body(body.into())
        .send()
        .await
        .expect("put");

    let mut reader = objects
        .open("trail", "AWSLogs/x.json.gz")
        .await
        .expect("open");
    let mut compressed = Vec::new();
    reader.read_to_end(&mut compressed).await.expect("read");
    let scanner = Scanner::new(ErrorCodes::default(), Validation::Full);
    let mut failures = 0;
    let counts = scanner.scan(&compressed[..], |_| failures += 1, |_| {});
    assert_eq!((counts.records, counts.malformed, failures), (5001, 0, 1));
    let missing = objects
        .open("trail", "nope")
        .await
        .err()
        .expect("missing object");
    assert!(!missing.retryable, "{missing}");
}

#[tokio::test]
async fn a_key_history_is_remembered_beside_the_state() {
    use tokenwatch_core::history::{
        Enrichment, HistoryCache, HistoryQuery, Unavailable, summarize,
    };
    let stack = Stack::start().await.expect("stack");
    let store = DynamoStore::new(create_table(&stack).await, TABLE);
    let obs = observation("ASIAHISTORY", now().unix() - 3000);
    assert_eq!(store.get(&obs.credential).await.expect("get"), None);
    let query = HistoryQuery::for_observation(&obs, now()).expect("key");
    let event = format!(
        r#"{{"eventID":"h1","eventTime":"{}","eventSource":"s3.amazonaws.com","eventName":"ListBuckets","userIdentity":{{"accessKeyId":"ASIAHISTORY"}}}}"#,
        Timestamp::from_unix(now().unix() - 3500).rfc3339()
    );
    let found = Enrichment::Found {
        history: summarize(&query, [event.as_str()]),
        looked_up_at: now(),
    };
    store
        .put(&obs.credential, &found, now().plus_seconds(86_400))
        .await
        .expect("put");
    assert_eq!(store.get(&obs.credential).await.expect("get"), Some(found));
    let (state, _) = CredentialState::first(&obs, &Policy::default(), now());
    assert!(
        store
            .save(&state, None, now().plus_seconds(86_400))
            .await
            .expect("the state item is a different item")
    );
    let other = observation("ASIAOTHER", now().unix() - 3000);
    let unavailable = Enrichment::Unavailable {
        reason: Unavailable::Denied,
        detail: "AccessDeniedException".into(),
        looked_up_at: now(),
    };
    store
        .put(&other.credential, &unavailable, now())
        .await
        .expect("put");
    assert_eq!(
        store.get(&other.credential).await.expect("get"),
        Some(unavailable)
    );
}
