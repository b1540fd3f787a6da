//! Integration tests of the testkit against a real moto and the real AWS SDK clients.
//! One binary (several modules) so the SDKs are linked once.

#![allow(clippy::unwrap_used)]

mod bridge;
mod faults;
mod moto;
mod stack;

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;

/// The SDK's standard retry policy (3 attempts, throttling and transient errors retried) with a
/// tiny backoff, so a test that exercises retries does not wait for the real one.
pub fn quick_retries(config: SdkConfig) -> SdkConfig {
    config
        .into_builder()
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(2))
                .with_max_backoff(Duration::from_millis(20)),
        )
        .build()
}
