//! Alerts to the on-call SNS topic: people (email, chat) get the text, machines (SQS, Lambda, HTTPS) get JSON,
//! and message attributes let subscriptions filter by severity, principal or account.

use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;
use serde_json::json;
use tokenwatch_core::alert::Alert;
use tokenwatch_core::ports::Notifier;

use crate::AwsError;

#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: Client,
    topic_arn: String,
}

impl SnsNotifier {
    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        Self {
            client,
            topic_arn: topic_arn.into(),
        }
    }
}

/// The per-protocol message of `MessageStructure=json`.
pub fn message_structure(alert: &Alert) -> String {
    let machine =
        json!({"subject": alert.subject, "body": alert.body, "alert": alert.payload}).to_string();
    json!({
        "default": alert.body,
        "email": alert.body,
        "sms": alert.subject,
        "sqs": machine,
        "lambda": machine,
        "http": machine,
        "https": machine,
        "firehose": machine,
    })
    .to_string()
}

impl Notifier for SnsNotifier {
    type Error = AwsError;

    async fn send(&self, alert: &Alert) -> Result<(), AwsError> {
        let mut request = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(&alert.subject)
            .message_structure("json")
            .message(message_structure(alert));
        for (name, value) in &alert.attributes {
            let attribute = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| AwsError {
                    operation: "sns:Publish",
                    message: e.to_string(),
                    retryable: false,
                })?;
            request = request.message_attributes(*name, attribute);
        }
        request
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sns:Publish", e))?;
        Ok(())
    }
}
