//! Metrics to CloudWatch with PutMetricData, batched within the API's limits (see `tokenwatch_core::metrics`).

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum as SdkDatum, StandardUnit, StatisticSet};
use tokenwatch_core::contract::Unit;
use tokenwatch_core::metrics::{MetricDatum, batches};
use tokenwatch_core::ports::MetricsSink;
use tracing::debug;

use crate::AwsError;

#[derive(Debug, Clone)]
pub struct CloudWatchMetrics {
    client: Client,
    namespace: String,
}

impl CloudWatchMetrics {
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }
}

fn unit(unit: Unit) -> StandardUnit {
    match unit {
        Unit::Count => StandardUnit::Count,
        Unit::Seconds => StandardUnit::Seconds,
    }
}

fn to_sdk(datum: &MetricDatum) -> SdkDatum {
    SdkDatum::builder()
        .metric_name(datum.name)
        .unit(unit(datum.unit))
        .timestamp(DateTime::from_secs(datum.timestamp.unix()))
        .statistic_values(
            StatisticSet::builder()
                .sample_count(datum.stats.count as f64)
                .sum(datum.stats.sum)
                .minimum(datum.stats.min)
                .maximum(datum.stats.max)
                .build(),
        )
        .set_dimensions(Some(
            datum
                .dimensions
                .iter()
                .map(|d| Dimension::builder().name(d.name).value(&d.value).build())
                .collect(),
        ))
        .build()
}

impl MetricsSink for CloudWatchMetrics {
    type Error = AwsError;

    async fn publish(&self, data: &[MetricDatum]) -> Result<(), AwsError> {
        for batch in batches(data) {
            debug!(namespace = %self.namespace, data = batch.len(), "PutMetricData");
            self.client
                .put_metric_data()
                .namespace(&self.namespace)
                .set_metric_data(Some(batch.iter().map(to_sdk).collect()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("cloudwatch:PutMetricData", e))?;
        }
        Ok(())
    }
}
