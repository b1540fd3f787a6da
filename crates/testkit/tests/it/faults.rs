//! Each fault kind observed through real SDK clients against moto, through the fault proxy.

use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use tokenwatch_testkit::{ACCOUNT_ID, Fault, FaultProxy, Moto, Rule, Service, sdk_config_for};

use crate::quick_retries;

struct Env {
    _moto: Moto,
    proxy: FaultProxy,
    config: SdkConfig,
}

async fn env() -> Env {
    let moto = Moto::start().await.unwrap();
    let proxy = FaultProxy::start(&moto.endpoint()).await.unwrap();
    let config = quick_retries(sdk_config_for(&proxy.endpoint(), &proxy.endpoint()).await);
    Env {
        _moto: moto,
        proxy,
        config,
    }
}

const TABLE: &str = "incidents";

/// An S3 client (path-style, as against any custom endpoint) and an empty bucket.
async fn s3_with_bucket(env: &Env, bucket: &str) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&env.config)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    s3
}

async fn dynamodb_with_table(env: &Env) -> aws_sdk_dynamodb::Client {
    let client = aws_sdk_dynamodb::Client::new(&env.config);
    client
        .create_table()
        .table_name(TABLE)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    client
}

async fn put(
    client: &aws_sdk_dynamodb::Client,
    pk: &str,
) -> Result<(), SdkError<aws_sdk_dynamodb::operation::put_item::PutItemError>> {
    client
        .put_item()
        .table_name(TABLE)
        .item("pk", AttributeValue::S(pk.to_owned()))
        .send()
        .await
        .map(drop)
}

async fn exists(client: &aws_sdk_dynamodb::Client, pk: &str) -> bool {
    client
        .get_item()
        .table_name(TABLE)
        .key("pk", AttributeValue::S(pk.to_owned()))
        .send()
        .await
        .unwrap()
        .item()
        .is_some()
}

#[tokio::test]
async fn calls_are_counted_per_service_and_operation() {
    let env = env().await;
    let dynamodb = dynamodb_with_table(&env).await;
    put(&dynamodb, "a").await.unwrap();
    put(&dynamodb, "b").await.unwrap();
    assert!(exists(&dynamodb, "a").await);
    let calls = env.proxy.calls();
    let expected: Vec<((String, String), u64)> = vec![
        (("dynamodb".into(), "CreateTable".into()), 1),
        (("dynamodb".into(), "GetItem".into()), 1),
        (("dynamodb".into(), "PutItem".into()), 2),
    ];
    assert_eq!(calls.into_iter().collect::<Vec<_>>(), expected);
    assert_eq!(env.proxy.total_calls(), 4);
    assert_eq!(env.proxy.faults_injected(), 0);
}

#[tokio::test]
async fn a_throttle_is_retried_by_the_sdk_and_succeeds() {
    let env = env().await;
    let dynamodb = dynamodb_with_table(&env).await;
    env.proxy.add_rule(
        Rule::new(Service::DynamoDb, Fault::Throttle)
            .operation("PutItem")
            .times(2),
    );
    put(&dynamodb, "k").await.unwrap();
    assert_eq!(env.proxy.calls_to(Service::DynamoDb, "PutItem"), 3);
    assert_eq!(env.proxy.faults_injected(), 2);
    assert!(exists(&dynamodb, "k").await);
}

#[tokio::test]
async fn skip_lets_the_first_matching_calls_through() {
    let env = env().await;
    let dynamodb = dynamodb_with_table(&env).await;
    env.proxy.add_rule(
        Rule::new(Service::DynamoDb, Fault::ServerError(500))
            .operation("PutItem")
            .skip(1)
            .always(),
    );
    put(&dynamodb, "first").await.unwrap();
    let err = put(&dynamodb, "second").await.unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 500);
    assert!(err.into_service_error().is_internal_server_error());
    assert_eq!(env.proxy.calls_to(Service::DynamoDb, "PutItem"), 1 + 3);
    // Other operations are untouched.
    assert!(exists(&dynamodb, "first").await);
}

#[tokio::test]
async fn throttling_beyond_the_retry_budget_fails_with_the_throttling_error() {
    let env = env().await;
    let dynamodb = dynamodb_with_table(&env).await;
    env.proxy.add_rule(
        Rule::new(Service::DynamoDb, Fault::Throttle)
            .operation("PutItem")
            .times(10),
    );
    let err = put(&dynamodb, "k").await.unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);
    let service_error = err.into_service_error();
    assert!(
        service_error.is_provisioned_throughput_exceeded_exception(),
        "{service_error:?}"
    );
    // Three attempts (the standard retry policy) were made, all throttled.
    assert_eq!(env.proxy.calls_to(Service::DynamoDb, "PutItem"), 3);
    assert_eq!(env.proxy.faults_injected(), 3);
    assert!(!exists(&dynamodb, "k").await);
}

#[tokio::test]
async fn a_server_error_is_retried_and_a_persistent_one_surfaces_with_its_status() {
    let env = env().await;
    let dynamodb = dynamodb_with_table(&env).await;
    env.proxy
        .add_rule(Rule::new(Service::DynamoDb, Fault::ServerError(503)).operation("PutItem"));
    put(&dynamodb, "once").await.unwrap();
    assert_eq!(env.proxy.calls_to(Service::DynamoDb, "PutItem"), 2);

    env.proxy.clear_rules();
    env.proxy.add_rule(
        Rule::new(Service::DynamoDb, Fault::ServerError(503))
            .operation("PutItem")
            .always(),
    );
    let err = put(&dynamodb, "always").await.unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
    assert_eq!(env.proxy.calls_to(Service::DynamoDb, "PutItem"), 2 + 3);
}

#[tokio::test]
async fn a_reset_surfaces_as_an_io_dispatch_failure_after_retries() {
    let env = env().await;
    let dynamodb = dynamodb_with_table(&env).await;
    // Once: the SDK retries the reset connection and succeeds.
    env.proxy
        .add_rule(Rule::new(Service::DynamoDb, Fault::Reset).operation("PutItem"));
    put(&dynamodb, "once").await.unwrap();
    assert_eq!(env.proxy.calls_to(Service::DynamoDb, "PutItem"), 2);

    // Always: every attempt is reset and the error is an I/O dispatch failure.
    env.proxy.add_rule(
        Rule::new(Service::DynamoDb, Fault::Reset)
            .operation("GetItem")
            .always(),
    );
    let err = dynamodb
        .get_item()
        .table_name(TABLE)
        .key("pk", AttributeValue::S("once".into()))
        .send()
        .await
        .unwrap_err();
    match &err {
        SdkError::DispatchFailure(failure) => assert!(failure.is_io(), "{failure:?}"),
        other => panic!("expected a dispatch failure, got {other:?}"),
    }
    assert_eq!(env.proxy.calls_to(Service::DynamoDb, "GetItem"), 3);
}

#[tokio::test]
async fn a_delay_holds_the_request_then_forwards_it() {
    let env = env().await;
    let dynamodb = dynamodb_with_table(&env).await;
    let delay = Duration::from_millis(300);
    env.proxy
        .add_rule(Rule::new(Service::DynamoDb, Fault::Delay(delay)).operation("PutItem"));
    let started = Instant::now();
    put(&dynamodb, "late").await.unwrap();
    assert!(started.elapsed() >= delay, "took {:?}", started.elapsed());
    assert_eq!(env.proxy.calls_to(Service::DynamoDb, "PutItem"), 1);
    assert!(exists(&dynamodb, "late").await);

    // Longer than the client's attempt timeout: the SDK gives up with a timeout.
    env.proxy.add_rule(
        Rule::new(Service::DynamoDb, Fault::Delay(Duration::from_secs(30)))
            .operation("PutItem")
            .always(),
    );
    let impatient = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&env.config)
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_millis(200))
                    .build(),
            )
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build(),
    );
    let err = put(&impatient, "never").await.unwrap_err();
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
}

#[tokio::test]
async fn sqs_throttle_is_retried_without_duplicating_the_message() {
    let env = env().await;
    let sqs = aws_sdk_sqs::Client::new(&env.config);
    let queue_url = sqs
        .create_queue()
        .queue_name("deliveries")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    env.proxy
        .add_rule(Rule::new(Service::Sqs, Fault::Throttle).operation("SendMessage"));
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(env.proxy.calls_to(Service::Sqs, "SendMessage"), 2);
    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let bodies: Vec<&str> = received
        .messages()
        .iter()
        .filter_map(|m| m.body())
        .collect();
    assert_eq!(bodies, ["hello"]);

    env.proxy.add_rule(
        Rule::new(Service::Sqs, Fault::Throttle)
            .operation("SendMessage")
            .always(),
    );
    let err = sqs
        .send_message()
        .queue_url(&queue_url)
        .message_body("no")
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_request_throttled());
    assert_eq!(env.proxy.calls_to(Service::Sqs, "SendMessage"), 2 + 3);
}

#[tokio::test]
async fn sns_query_protocol_throttle_is_retried_and_classified() {
    let env = env().await;
    let sns = aws_sdk_sns::Client::new(&env.config);
    let topic = sns
        .create_topic()
        .name("oncall")
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_owned();
    assert_eq!(topic, format!("arn:aws:sns:us-east-1:{ACCOUNT_ID}:oncall"));
    env.proxy
        .add_rule(Rule::new(Service::Sns, Fault::Throttle).operation("Publish"));
    sns.publish()
        .topic_arn(&topic)
        .message("page")
        .send()
        .await
        .unwrap();
    assert_eq!(env.proxy.calls_to(Service::Sns, "Publish"), 2);

    env.proxy.add_rule(
        Rule::new(Service::Sns, Fault::Throttle)
            .operation("Publish")
            .always(),
    );
    let err = sns
        .publish()
        .topic_arn(&topic)
        .message("page")
        .send()
        .await
        .unwrap_err();
    let service_error = err.into_service_error();
    assert_eq!(
        aws_sdk_sns::error::ProvideErrorMetadata::code(&service_error),
        Some("Throttling")
    );
    assert_eq!(env.proxy.calls_to(Service::Sns, "Publish"), 2 + 3);
    assert_eq!(env.proxy.calls_to(Service::Sns, "CreateTopic"), 1);
}

#[tokio::test]
async fn s3_slow_down_is_retried_and_operations_are_named_from_the_path() {
    let env = env().await;
    let s3 = s3_with_bucket(&env, "trail").await;
    env.proxy
        .add_rule(Rule::new(Service::S3, Fault::Throttle).operation("PutObject"));
    s3.put_object()
        .bucket("trail")
        .key("AWSLogs/111122223333/CloudTrail/us-east-1/2026/01/01/file.json.gz")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"{\"Records\":[]}",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(env.proxy.calls_to(Service::S3, "PutObject"), 2);

    let key = "AWSLogs/111122223333/CloudTrail/us-east-1/2026/01/01/file.json.gz";
    let body = s3
        .get_object()
        .bucket("trail")
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    assert_eq!(body.into_bytes().as_ref(), b"{\"Records\":[]}");
    let listed = s3
        .list_objects_v2()
        .bucket("trail")
        .prefix("AWSLogs/")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(1));

    env.proxy.add_rule(
        Rule::new(Service::S3, Fault::Throttle)
            .operation("GetObject")
            .always(),
    );
    let err = s3
        .get_object()
        .bucket("trail")
        .key(key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
    assert_eq!(
        aws_sdk_s3::error::ProvideErrorMetadata::code(&err.into_service_error()),
        Some("SlowDown")
    );
    // HEAD errors carry no body; the status alone must do.
    env.proxy.add_rule(
        Rule::new(Service::S3, Fault::Throttle)
            .operation("HeadObject")
            .always(),
    );
    let err = s3
        .head_object()
        .bucket("trail")
        .key(key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);

    let calls = env.proxy.calls();
    let s3_calls: Vec<(&str, u64)> = calls
        .iter()
        .filter(|((service, _), _)| service == "s3")
        .map(|((_, op), n)| (op.as_str(), *n))
        .collect();
    assert_eq!(
        s3_calls,
        [
            ("CreateBucket", 1),
            ("GetObject", 1 + 3),
            ("HeadObject", 3),
            ("ListObjectsV2", 1),
            ("PutObject", 2)
        ]
    );
}

/// The S3 endpoint rules address a bucket path-style when the endpoint host is an IP literal, so a
/// child process configured only by `AWS_ENDPOINT_URL=http://127.0.0.1:PORT` works without
/// `force_path_style` (a host name such as `localhost` would not).
#[tokio::test]
async fn s3_on_an_ip_endpoint_is_path_style_without_configuration() {
    let env = env().await;
    let s3 = aws_sdk_s3::Client::new(&env.config);
    s3.create_bucket().bucket("plain").send().await.unwrap();
    s3.put_object()
        .bucket("plain")
        .key("a/b.json")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let head = s3
        .head_object()
        .bucket("plain")
        .key("a/b.json")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(1));
    let s3_ops: Vec<String> = env.proxy.calls().into_keys().map(|(_, op)| op).collect();
    assert_eq!(s3_ops, ["CreateBucket", "HeadObject", "PutObject"]);
}

/// A client that gives up on an attempt after 200 ms and does not retry, to see one fault at a time.
fn impatient(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(config)
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_millis(200))
                    .build(),
            )
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build(),
    )
}

#[tokio::test]
async fn a_hang_ends_in_the_clients_timeout_and_never_reaches_the_service() {
    let env = env().await;
    let dynamodb = dynamodb_with_table(&env).await;
    env.proxy
        .add_rule(Rule::new(Service::DynamoDb, Fault::Hang).operation("PutItem"));
    let err = put(&impatient(&env.config), "lost").await.unwrap_err();
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
    assert!(!exists(&dynamodb, "lost").await);

    // With retries, the next attempt goes through.
    env.proxy
        .add_rule(Rule::new(Service::DynamoDb, Fault::Hang).operation("PutItem"));
    let patient = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&env.config)
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_millis(200))
                    .build(),
            )
            .build(),
    );
    put(&patient, "second").await.unwrap();
    assert!(exists(&dynamodb, "second").await);
    assert_eq!(env.proxy.calls_to(Service::DynamoDb, "PutItem"), 3);
}

#[tokio::test]
async fn a_lost_response_means_the_service_acted_but_the_client_saw_an_error() {
    let env = env().await;
    let dynamodb = dynamodb_with_table(&env).await;
    env.proxy
        .add_rule(Rule::new(Service::DynamoDb, Fault::LoseResponse).operation("PutItem"));
    let err = put(&impatient(&env.config), "acted").await.unwrap_err();
    match &err {
        SdkError::DispatchFailure(failure) => assert!(failure.is_io(), "{failure:?}"),
        other => panic!("expected a dispatch failure, got {other:?}"),
    }
    assert!(exists(&dynamodb, "acted").await, "the service acted on it");

    // A conditional write whose answer is lost: the SDK's retry finds its own write and fails the
    // condition, which is why claims must not be conditional writes retried blindly.
    env.proxy
        .add_rule(Rule::new(Service::DynamoDb, Fault::LoseResponse).operation("PutItem"));
    let err = dynamodb
        .put_item()
        .table_name(TABLE)
        .item("pk", AttributeValue::S("conditional".into()))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_conditional_check_failed_exception()),
        "{err:?}"
    );
    assert_eq!(env.proxy.calls_to(Service::DynamoDb, "PutItem"), 3);
}

#[tokio::test]
async fn a_denial_is_not_retried_and_names_access_denied() {
    let env = env().await;
    let s3 = s3_with_bucket(&env, "trail").await;
    env.proxy
        .add_rule(Rule::new(Service::S3, Fault::Deny).operation("GetObject"));
    let err = s3
        .get_object()
        .bucket("trail")
        .key("file.json.gz")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 403);
    assert_eq!(
        aws_sdk_s3::error::ProvideErrorMetadata::code(&err),
        Some("AccessDenied")
    );
    assert_eq!(
        env.proxy.calls_to(Service::S3, "GetObject"),
        1,
        "not retried"
    );

    let dynamodb = dynamodb_with_table(&env).await;
    env.proxy
        .add_rule(Rule::new(Service::DynamoDb, Fault::Deny).operation("PutItem"));
    let err = put(&dynamodb, "denied").await.unwrap_err();
    assert_eq!(
        aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&err),
        Some("AccessDeniedException")
    );
}
