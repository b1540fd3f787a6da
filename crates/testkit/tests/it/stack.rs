//! The whole stack: in-process clients through `sdk_config`, a child process through `env`.

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{MetricDatum, StandardUnit};
use tokenwatch_testkit::{Fault, Rule, Service, Stack, locate_moto_server};

use crate::quick_retries;

fn datum(name: &str) -> MetricDatum {
    MetricDatum::builder()
        .metric_name(name)
        .timestamp(DateTime::from(std::time::SystemTime::now()))
        .value(1.0)
        .unit(StandardUnit::Count)
        .build()
}

#[tokio::test]
async fn sdk_config_sends_cloudwatch_through_the_bridge_and_the_rest_to_moto() {
    let stack = Stack::start().await.unwrap();
    let config = stack.sdk_config().await;
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&config);
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let sns = aws_sdk_sns::Client::new(&config);

    cloudwatch
        .put_metric_data()
        .namespace("TokenWatch")
        .metric_data(datum("RecordsScanned"))
        .send()
        .await
        .unwrap();
    let tables = dynamodb.list_tables().send().await.unwrap();
    assert!(tables.table_names().is_empty());
    sns.create_topic().name("oncall").send().await.unwrap();

    let pairs =
        |calls: std::collections::BTreeMap<(String, String), u64>| -> Vec<(String, String, u64)> {
            calls.into_iter().map(|((s, o), n)| (s, o, n)).collect()
        };
    assert_eq!(
        pairs(stack.cloudwatch_proxy().calls()),
        [("cloudwatch".into(), "PutMetricData".into(), 1)]
    );
    assert_eq!(
        pairs(stack.proxy().calls()),
        [
            ("dynamodb".into(), "ListTables".into(), 1),
            ("sns".into(), "CreateTopic".into(), 1)
        ]
    );
    assert_eq!(stack.total_calls(), 3);

    // What went through the bridge is in moto.
    let listed = cloudwatch
        .list_metrics()
        .namespace("TokenWatch")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.metrics()[0].metric_name(), Some("RecordsScanned"));

    stack.reset().await.unwrap();
    assert_eq!(stack.total_calls(), 0);
    let listed = cloudwatch
        .list_metrics()
        .namespace("TokenWatch")
        .send()
        .await
        .unwrap();
    assert!(listed.metrics().is_empty());
}

#[tokio::test]
async fn cloudwatch_faults_are_shaped_as_rpc_v2_cbor_errors() {
    let stack = Stack::start().await.unwrap();
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&quick_retries(stack.sdk_config().await));

    stack.add_rule(Rule::new(Service::CloudWatch, Fault::Throttle).operation("PutMetricData"));
    cloudwatch
        .put_metric_data()
        .namespace("TokenWatch")
        .metric_data(datum("ExpiredTokenErrors"))
        .send()
        .await
        .unwrap();
    assert_eq!(stack.calls_to(Service::CloudWatch, "PutMetricData"), 2);

    stack.add_rule(
        Rule::new(Service::CloudWatch, Fault::Throttle)
            .operation("PutMetricData")
            .always(),
    );
    let err = cloudwatch
        .put_metric_data()
        .namespace("TokenWatch")
        .metric_data(datum("ExpiredTokenErrors"))
        .send()
        .await
        .unwrap_err();
    let service_error = err.into_service_error();
    assert_eq!(
        aws_sdk_cloudwatch::error::ProvideErrorMetadata::code(&service_error),
        Some("Throttling")
    );
    assert_eq!(stack.calls_to(Service::CloudWatch, "PutMetricData"), 2 + 3);

    stack.clear_rules();
    stack.add_rule(Rule::new(Service::CloudWatch, Fault::ServerError(500)).always());
    let err = cloudwatch.list_metrics().send().await.unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 500);
    assert_eq!(
        aws_sdk_cloudwatch::error::ProvideErrorMetadata::code(&err.into_service_error()),
        Some("InternalServiceError")
    );
    assert_eq!(stack.calls_to(Service::CloudWatch, "ListMetrics"), 3);
}

#[tokio::test]
async fn env_lets_a_child_process_reach_the_same_stack() {
    let stack = Stack::start().await.unwrap();
    let env = stack.env();
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_CLOUDWATCH",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_EC2_METADATA_DISABLED"
        ]
    );
    assert_eq!(env[0].1, stack.endpoint());
    assert_eq!(env[1].1, stack.cloudwatch_endpoint());

    // Another SDK entirely (boto3, from moto's venv) configured by nothing but `env()`. It speaks
    // awsJson 1.0 to CloudWatch, which the bridge passes through to moto untouched.
    let python = locate_moto_server().unwrap().with_file_name("python3");
    let script = r#"
import boto3
cw = boto3.client("cloudwatch")
cw.put_metric_data(Namespace="TokenWatchChild", MetricData=[{"MetricName": "FromChild", "Value": 2.5, "Unit": "Count"}])
print(cw.list_metrics(Namespace="TokenWatchChild")["Metrics"][0]["MetricName"])
print(len(boto3.client("dynamodb").list_tables()["TableNames"]))
"#;
    let output = tokio::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .env_clear()
        .envs(env)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "FromChild\n0\n");
    assert_eq!(stack.calls_to(Service::CloudWatch, "PutMetricData"), 1);
    assert_eq!(stack.calls_to(Service::CloudWatch, "ListMetrics"), 1);
    assert_eq!(stack.calls_to(Service::DynamoDb, "ListTables"), 1);
}
