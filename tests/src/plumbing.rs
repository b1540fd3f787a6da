//! What AWS does between the parts, done by hand on loopback: the SQS event source mapping, the EventBridge
//! rule (filtered by the template's pattern), the CloudWatch Logs subscription, the schedule; and reading
//! back what a user looks at (metrics per principal and session, alerts).

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use aws_sdk_sqs::types::Message;
use base64::Engine;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use tokenwatch_core::Timestamp;
use tokenwatch_core::contract::{dimension, metric};
use tokenwatch_core::sample::SAMPLE_SPAN_SECONDS;

use crate::infra::{Deployment, pattern_matches};
use crate::lambda::LocalLambda;

/// What one pass of the event source mapping did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MappingStats {
    pub invocations: u64,
    pub messages: u64,
    /// Messages the function reported in `batchItemFailures` (left on the queue for redelivery).
    pub failed: u64,
}

/// Delivers everything on the ingest queue to the function in batches, as Lambda's SQS event source
/// mapping does with `ReportBatchItemFailures`: successes are deleted, failures stay for redelivery.
pub async fn drain_ingest(
    lambda: &mut LocalLambda,
    deployment: &Deployment,
    batch_size: usize,
) -> Result<MappingStats> {
    mapping_pass(lambda, deployment, batch_size)
        .await
        .map(|(stats, _)| stats)
}

/// [`drain_ingest`], also returning the messages the function handed back: they stay invisible for the
/// queue's visibility timeout, which [`Deployment::release_ingest`] cuts short.
pub async fn mapping_pass(
    lambda: &mut LocalLambda,
    deployment: &Deployment,
    batch_size: usize,
) -> Result<(MappingStats, Vec<Message>)> {
    let mut stats = MappingStats::default();
    let mut handed_back = Vec::new();
    loop {
        let messages = deployment.receive_ingest(batch_size).await?;
        if messages.is_empty() {
            return Ok((stats, handed_back));
        }
        let event = deployment.sqs_event(&messages);
        let response = lambda.invoke(&event).await?.ok()?;
        let failed: Vec<String> = response["batchItemFailures"]
            .as_array()
            .context("an SQS response without batchItemFailures")?
            .iter()
            .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
            .collect();
        stats.invocations += 1;
        stats.messages += messages.len() as u64;
        stats.failed += failed.len() as u64;
        deployment.delete_ingest(&messages, &failed).await?;
        handed_back.extend(
            messages
                .into_iter()
                .filter(|m| failed.iter().any(|f| Some(f.as_str()) == m.message_id())),
        );
    }
}

/// The EventBridge event CloudTrail emits for one record.
pub fn eventbridge_event(record: &Value) -> Value {
    let service = record["eventSource"]
        .as_str()
        .unwrap_or("unknown.amazonaws.com")
        .trim_end_matches(".amazonaws.com");
    json!({
        "version": "0",
        "id": format!("eb-{}", record["eventID"].as_str().unwrap_or("none")),
        "detail-type": "AWS API Call via CloudTrail",
        "source": format!("aws.{service}"),
        "account": record["recipientAccountId"],
        "time": record["eventTime"],
        "region": record["awsRegion"],
        "resources": [],
        "detail": record,
    })
}

/// The records of `records` the template's EventBridge rule lets through, as events.
pub fn events_through_rule(pattern: &Value, records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .map(eventbridge_event)
        .filter(|e| pattern_matches(pattern, e))
        .collect()
}

/// A CloudWatch Logs subscription delivery of `records` (base64 of gzip of the JSON payload).
pub fn logs_event(log_group: &str, records: &[Value]) -> Result<Value> {
    let payload = json!({
        "messageType": "DATA_MESSAGE",
        "owner": "111122223333",
        "logGroup": log_group,
        "logStream": "111122223333_CloudTrail_us-east-1",
        "subscriptionFilters": ["tokenwatch"],
        "logEvents": records.iter().enumerate().map(|(i, r)| json!({
            "id": format!("{i:056}"),
            "timestamp": Timestamp::parse(r["eventTime"].as_str().unwrap_or_default()).map_or(0, |t| t.unix() * 1000),
            "message": r.to_string(),
        })).collect::<Vec<_>>(),
    });
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(payload.to_string().as_bytes())?;
    let data = base64::engine::general_purpose::STANDARD.encode(gz.finish()?);
    Ok(json!({"awslogs": {"data": data}}))
}

/// Where a sample's six hours start so that they end an hour ago, on the hour: recent enough for
/// CloudWatch to take the counts, quiet long enough for every incident to resolve on the schedule.
pub fn recent_sample_start() -> Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let start = now - SAMPLE_SPAN_SECONDS - 3600;
    Timestamp::from_unix(start - start.rem_euclid(3600))
}

/// `{"Records": records}` gzipped, as a trail log file, with its decompressed size.
pub fn trail_file(records: &[Value]) -> Result<(Vec<u8>, usize)> {
    let text = json!({ "Records": records }).to_string();
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(text.as_bytes())?;
    Ok((gz.finish()?, text.len()))
}

/// The schedule's event.
pub fn scheduled_event() -> Value {
    json!({"version": "0", "id": "sweep", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}})
}

/// One metric series, summed over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub dimensions: BTreeMap<String, String>,
    pub sum: f64,
}

/// Every series of `name` in `namespace` over the last `hours`, with its sum (ListMetrics, then GetMetricData
/// per series with its full dimension set).
pub async fn read_series(
    config: &aws_config::SdkConfig,
    namespace: &str,
    name: &str,
    hours: i64,
) -> Result<Vec<Series>> {
    let client = aws_sdk_cloudwatch::Client::new(config);
    let listed = client
        .list_metrics()
        .namespace(namespace)
        .metric_name(name)
        .send()
        .await?;
    let mut out: Vec<Series> = Vec::new();
    for m in listed.metrics() {
        let dimensions: BTreeMap<String, String> = m
            .dimensions()
            .iter()
            .map(|d| {
                (
                    d.name().unwrap_or_default().to_owned(),
                    d.value().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        if out.iter().any(|s| s.dimensions == dimensions) {
            continue;
        }
        let sum = sum_over(&client, namespace, name, &dimensions, hours).await?;
        out.push(Series { dimensions, sum });
    }
    out.sort_by(|a, b| {
        b.sum
            .total_cmp(&a.sum)
            .then_with(|| a.dimensions.cmp(&b.dimensions))
    });
    Ok(out)
}

/// The sum of `name` over the last day for exactly this dimension set. (moto adds up every dimension set
/// of a metric when a query names none, so the `[]` set cannot be read back on its own.)
pub async fn metric_sum(
    config: &aws_config::SdkConfig,
    namespace: &str,
    name: &str,
    dimensions: &[(&str, &str)],
) -> Result<f64> {
    let dimensions: BTreeMap<String, String> = dimensions
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let client = aws_sdk_cloudwatch::Client::new(config);
    sum_over(&client, namespace, name, &dimensions, 24).await
}

/// GetMetricData's Sum of one series over the last `hours`.
async fn sum_over(
    client: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    name: &str,
    dimensions: &BTreeMap<String, String>,
    hours: i64,
) -> Result<f64> {
    let mut metric = Metric::builder().namespace(namespace).metric_name(name);
    for (k, v) in dimensions {
        metric = metric.dimensions(Dimension::builder().name(k).value(v).build());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let data = client
        .get_metric_data()
        .metric_data_queries(
            MetricDataQuery::builder()
                .id("s")
                .metric_stat(
                    MetricStat::builder()
                        .metric(metric.build())
                        .period(60)
                        .stat("Sum")
                        .build(),
                )
                .build(),
        )
        .start_time(DateTime::from_secs(now - hours * 3600))
        .end_time(DateTime::from_secs(now + 600))
        .send()
        .await?;
    Ok(data
        .metric_data_results()
        .iter()
        .flat_map(|r| r.values())
        .sum())
}

/// The expired-token errors per principal and session, as a text table for people.
pub async fn sessions_table(config: &aws_config::SdkConfig, namespace: &str) -> Result<String> {
    let series = read_series(config, namespace, metric::EXPIRED_TOKEN_ERRORS, 24).await?;
    let mut rows = vec![(
        "PRINCIPAL".to_owned(),
        "SESSION (normalized)".to_owned(),
        "EXPIRED-TOKEN ERRORS".to_owned(),
    )];
    for s in series
        .iter()
        .filter(|s| s.dimensions.len() == 2 && s.dimensions.contains_key(dimension::SESSION_NAME))
    {
        rows.push((
            s.dimensions
                .get(dimension::PRINCIPAL)
                .cloned()
                .unwrap_or_default(),
            s.dimensions
                .get(dimension::SESSION_NAME)
                .cloned()
                .unwrap_or_default(),
            format!("{}", s.sum),
        ));
    }
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    Ok(rows
        .iter()
        .map(|(a, b, c)| format!("{a:<w0$}  {b:<w1$}  {c:>20}\n"))
        .collect())
}
