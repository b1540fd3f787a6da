//! Adapters from tokenwatch's ports to AWS, on the AWS SDK for Rust: CloudWatch metrics (or EMF on stdout),
//! SNS alerts, DynamoDB incident state and event claims, streaming S3 reads and listings, CloudTrail
//! event history lookups behind a shared rate limiter.

pub mod cloudtrail;
pub mod cloudwatch;
pub mod dynamodb;
pub mod emf;
pub mod ratelimit;
pub mod s3;
pub mod sdk;
pub mod sns;

pub use cloudtrail::CloudTrailHistory;
pub use cloudwatch::CloudWatchMetrics;

pub use dynamodb::{DynamoClaims, DynamoStore};
pub use emf::EmfMetrics;
pub use s3::{ObjectInfo, S3Objects};
pub use sdk::{SdkOptions, sdk_config};
pub use sns::SnsNotifier;

/// Service clients from shared configuration (each reads its `AWS_ENDPOINT_URL_<SERVICE>` override).
pub fn cloudwatch_client(config: &aws_config::SdkConfig) -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::new(config)
}

pub fn sns_client(config: &aws_config::SdkConfig) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(config)
}

pub fn dynamodb_client(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

/// An AWS call that failed, with the operation it was and the SDK's own explanation.
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct AwsError {
    pub operation: &'static str,
    pub message: String,
    /// Throttling, 5xx, timeouts: worth retrying later.
    pub retryable: bool,
}

impl AwsError {
    pub(crate) fn from_sdk<E>(
        operation: &'static str,
        error: aws_smithy_runtime_api::client::result::SdkError<
            E,
            aws_smithy_runtime_api::http::Response,
        >,
    ) -> Self
    where
        E: std::error::Error
            + aws_smithy_types::error::metadata::ProvideErrorMetadata
            + Send
            + Sync
            + 'static,
    {
        use aws_smithy_runtime_api::client::result::SdkError;
        use aws_smithy_types::error::metadata::ProvideErrorMetadata;
        let status = error.raw_response().map(|r| r.status().as_u16());
        let retryable = matches!(
            error,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
        ) || status.is_some_and(|s| s == 429 || s >= 500)
            || error.code().is_some_and(is_throttling_code);
        let message = match error.code() {
            Some(code) => format!("{code}: {}", error.message().unwrap_or("no message")),
            None => aws_smithy_types::error::display::DisplayErrorContext(&error).to_string(),
        };
        Self {
            operation,
            message,
            retryable,
        }
    }
}

/// The services' own names for "slow down": worth retrying later, whatever the status says.
fn is_throttling_code(code: &str) -> bool {
    code.contains("Throttl")
        || matches!(
            code,
            "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded"
                | "SlowDown"
                | "TooManyRequestsException"
                | "RequestThrottled"
        )
}
