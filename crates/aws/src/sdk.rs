//! One place that builds the SDK configuration: rustls on ring, the standard retry policy with backoff,
//! timeouts, and the standard environment (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`, profiles, SSO).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// Attempts per call, throttling and 5xx included, with exponential backoff between them.
pub const MAX_ATTEMPTS: u32 = 4;
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One attempt, unless the caller sets its own ([`SdkOptions::attempt_timeout`]); S3 reads stream well
/// within it (the body is read after the attempt ends).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// What a person may override on the command line; the Lambda uses the defaults (its environment).
#[derive(Debug, Clone, Default)]
pub struct SdkOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    /// How long one attempt of a call may take before it is abandoned and retried.
    pub attempt_timeout: Option<Duration>,
}

pub async fn sdk_config(options: &SdkOptions) -> SdkConfig {
    loader(options).load().await
}

/// The configuration loader behind [`sdk_config`], for callers that add to it (tests add credentials).
pub fn loader(options: &SdkOptions) -> aws_config::ConfigLoader {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(INITIAL_BACKOFF),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(options.attempt_timeout.unwrap_or(ATTEMPT_TIMEOUT))
                .build(),
        );
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &options.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &options.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader
}

/// Custom endpoints (`AWS_ENDPOINT_URL`: local emulators, S3-compatible stores) rarely serve
/// virtual-hosted buckets, so S3 uses path-style addressing with them.
pub fn uses_custom_endpoint(config: &SdkConfig) -> bool {
    config.endpoint_url().is_some()
}
