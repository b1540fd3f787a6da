//! The real `aws-sdk-cloudwatch` (RPC v2 CBOR) against moto through the bridge.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, DimensionFilter, Metric, MetricDataQuery, MetricDatum,
    MetricStat, StandardUnit, StateValue, Statistic, StatisticSet,
};
use tokenwatch_testkit::{CloudWatchBridge, Moto};

const NAMESPACE: &str = "TokenWatchTest";
const PRINCIPAL: &str =
    "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_X_0123";

/// The configuration the brief asks for: defaults, the bridge as endpoint, fake static
/// credentials, us-east-1, a plain-HTTP client.
async fn client(bridge: &CloudWatchBridge) -> Client {
    let config: SdkConfig = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(bridge.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .load()
        .await;
    Client::new(&config)
}

async fn start() -> (Moto, CloudWatchBridge, Client) {
    let moto = Moto::start().await.unwrap();
    let bridge = CloudWatchBridge::start(&moto.endpoint()).await.unwrap();
    let client = client(&bridge).await;
    (moto, bridge, client)
}

/// The start of a whole minute a few minutes ago (inside moto's query windows, like real data).
fn minute_ago(minutes: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now - now % 60 - 60 * minutes
}

fn principal_dimension() -> Dimension {
    Dimension::builder()
        .name("Principal")
        .value(PRINCIPAL)
        .build()
}

fn query(id: &str, metric_name: &str, dimensions: Vec<Dimension>, stat: &str) -> MetricDataQuery {
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace(NAMESPACE)
                        .metric_name(metric_name)
                        .set_dimensions(Some(dimensions))
                        .build(),
                )
                .period(60)
                .stat(stat)
                .build(),
        )
        .build()
}

#[tokio::test]
async fn statistic_sets_with_dimensions_round_trip_through_get_metric_data_and_list_metrics() {
    let (_moto, _bridge, cw) = start().await;
    let minute = minute_ago(3);

    cw.put_metric_data()
        .namespace(NAMESPACE)
        .metric_data(
            MetricDatum::builder()
                .metric_name("ExpiredTokenErrors")
                .dimensions(principal_dimension())
                .timestamp(DateTime::from_secs(minute))
                .statistic_values(
                    StatisticSet::builder()
                        .sample_count(3.0)
                        .sum(7.0)
                        .minimum(1.0)
                        .maximum(4.0)
                        .build(),
                )
                .unit(StandardUnit::Count)
                .build(),
        )
        .metric_data(
            MetricDatum::builder()
                .metric_name("CredentialAgeSeconds")
                .dimensions(principal_dimension())
                .timestamp(DateTime::from_secs_f64(minute as f64 + 12.5))
                .value(3600.25)
                .unit(StandardUnit::Seconds)
                .build(),
        )
        .send()
        .await
        .unwrap();

    let output = cw
        .get_metric_data()
        .start_time(DateTime::from_secs(minute - 600))
        .end_time(DateTime::from_secs(minute + 600))
        .metric_data_queries(query(
            "sum",
            "ExpiredTokenErrors",
            vec![principal_dimension()],
            "Sum",
        ))
        .metric_data_queries(query(
            "max",
            "ExpiredTokenErrors",
            vec![principal_dimension()],
            "Maximum",
        ))
        .metric_data_queries(query(
            "n",
            "ExpiredTokenErrors",
            vec![principal_dimension()],
            "SampleCount",
        ))
        .metric_data_queries(query(
            "age",
            "CredentialAgeSeconds",
            vec![principal_dimension()],
            "Average",
        ))
        .send()
        .await
        .unwrap();
    let results = output.metric_data_results();
    let by_id = |id: &str| results.iter().find(|r| r.id() == Some(id)).unwrap();
    assert_eq!(by_id("sum").values(), [7.0]);
    assert_eq!(by_id("sum").timestamps(), [DateTime::from_secs(minute)]);
    assert_eq!(by_id("max").values(), [4.0]);
    assert_eq!(by_id("n").values(), [3.0]);
    assert_eq!(by_id("age").values(), [3600.25]);

    let listed = cw.list_metrics().namespace(NAMESPACE).send().await.unwrap();
    let mut names: Vec<(&str, Vec<(&str, &str)>)> = listed
        .metrics()
        .iter()
        .map(|m| {
            let dims = m
                .dimensions()
                .iter()
                .map(|d| (d.name().unwrap(), d.value().unwrap()))
                .collect();
            (m.metric_name().unwrap(), dims)
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("CredentialAgeSeconds", vec![("Principal", PRINCIPAL)]),
            ("ExpiredTokenErrors", vec![("Principal", PRINCIPAL)]),
        ]
    );

    let filtered = cw
        .list_metrics()
        .namespace(NAMESPACE)
        .metric_name("ExpiredTokenErrors")
        .dimensions(
            DimensionFilter::builder()
                .name("Principal")
                .value(PRINCIPAL)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(filtered.metrics().len(), 1);
}

#[tokio::test]
async fn get_metric_statistics_returns_tagged_timestamps_and_doubles() {
    let (_moto, _bridge, cw) = start().await;
    let minute = minute_ago(4);
    for (offset, value) in [(0, 2.0), (10, 5.0)] {
        cw.put_metric_data()
            .namespace(NAMESPACE)
            .metric_data(
                MetricDatum::builder()
                    .metric_name("RecordsScanned")
                    .dimensions(Dimension::builder().name("Source").value("s3").build())
                    .timestamp(DateTime::from_secs(minute + offset))
                    .value(value)
                    .unit(StandardUnit::Count)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    let output = cw
        .get_metric_statistics()
        .namespace(NAMESPACE)
        .metric_name("RecordsScanned")
        .dimensions(Dimension::builder().name("Source").value("s3").build())
        .start_time(DateTime::from_secs(minute - 120))
        .end_time(DateTime::from_secs(minute + 120))
        .period(60)
        .statistics(Statistic::Sum)
        .statistics(Statistic::SampleCount)
        .statistics(Statistic::Maximum)
        .send()
        .await
        .unwrap();
    assert_eq!(output.label(), Some("RecordsScanned"));
    let points = output.datapoints();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].timestamp(), Some(&DateTime::from_secs(minute)));
    assert_eq!(points[0].sum(), Some(7.0));
    assert_eq!(points[0].sample_count(), Some(2.0));
    assert_eq!(points[0].maximum(), Some(5.0));
}

/// More than 10 KiB of metric data: the SDK gzips the request body (`Content-Encoding: gzip`,
/// CloudWatch's request compression), which the bridge must inflate.
#[tokio::test]
async fn large_compressed_put_metric_data_is_accepted() {
    let (_moto, _bridge, cw) = start().await;
    let minute = minute_ago(2);
    let data: Vec<MetricDatum> = (0..400)
        .map(|i| {
            MetricDatum::builder()
                .metric_name("ExpiredTokenErrors")
                .dimensions(
                    Dimension::builder()
                        .name("Principal")
                        .value(format!("{PRINCIPAL}-{i:04}"))
                        .build(),
                )
                .dimensions(
                    Dimension::builder()
                        .name("SessionName")
                        .value(format!("session-{i}"))
                        .build(),
                )
                .timestamp(DateTime::from_secs(minute))
                .value(f64::from(i))
                .unit(StandardUnit::Count)
                .build()
        })
        .collect();
    cw.put_metric_data()
        .namespace(NAMESPACE)
        .set_metric_data(Some(data))
        .send()
        .await
        .unwrap();

    let mut count = 0;
    let mut next_token = None;
    loop {
        let page = cw
            .list_metrics()
            .namespace(NAMESPACE)
            .set_next_token(next_token)
            .send()
            .await
            .unwrap();
        count += page.metrics().len();
        next_token = page.next_token().map(str::to_owned);
        if next_token.is_none() {
            break;
        }
    }
    assert_eq!(count, 400);
}

#[tokio::test]
async fn service_errors_keep_their_query_compatible_code_and_message() {
    let (_moto, _bridge, cw) = start().await;
    // A query with neither MetricStat nor Expression: moto answers 400 ValidationError.
    let minute = minute_ago(1);
    let err = cw
        .get_metric_data()
        .start_time(DateTime::from_secs(minute - 60))
        .end_time(DateTime::from_secs(minute))
        .metric_data_queries(MetricDataQuery::builder().id("broken").build())
        .send()
        .await
        .unwrap_err();
    let service_error = err.into_service_error();
    let meta = aws_sdk_cloudwatch::error::ProvideErrorMetadata::meta(&service_error);
    assert_eq!(meta.code(), Some("ValidationError"));
    assert!(
        meta.message().unwrap().contains("MetricStat is required"),
        "{meta:?}"
    );
}

#[tokio::test]
async fn alarms_round_trip_with_timestamps_and_thresholds() {
    let (_moto, _bridge, cw) = start().await;
    cw.put_metric_alarm()
        .alarm_name("stale-credentials")
        .namespace(NAMESPACE)
        .metric_name("StaleCredentialIncidents")
        .statistic(Statistic::Sum)
        .period(300)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
        .send()
        .await
        .unwrap();
    let alarms = cw
        .describe_alarms()
        .alarm_names("stale-credentials")
        .send()
        .await
        .unwrap();
    let alarm = &alarms.metric_alarms()[0];
    assert_eq!(alarm.alarm_name(), Some("stale-credentials"));
    assert_eq!(alarm.threshold(), Some(1.0));
    assert_eq!(alarm.period(), Some(300));
    // moto evaluates the alarm at once (no data: OK); either way the enum came through.
    assert!(matches!(
        alarm.state_value(),
        Some(StateValue::Ok | StateValue::InsufficientData)
    ));
    let updated = alarm.state_updated_timestamp().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (updated.secs() - now).abs() < 300,
        "state updated at {updated}"
    );
}
