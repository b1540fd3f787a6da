//! moto + the CloudWatch bridge + a fault proxy in front of each, and the SDK configuration and
//! environment that reach them.

use std::collections::BTreeMap;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::Credentials;
use aws_types::origin::Origin;
use aws_types::region::Region;
use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};

use crate::bridge::CloudWatchBridge;
use crate::moto::Moto;
use crate::proxy::{FaultProxy, Rule, Service};

/// The fake access key id every client uses (moto accepts any).
pub const ACCESS_KEY_ID: &str = "AKIDTOKENWATCHTEST";
/// The fake secret access key.
pub const SECRET_ACCESS_KEY: &str = "tokenwatch-test-secret";
/// The region.
pub const REGION: &str = "us-east-1";
/// The account moto puts resources in for an access key it does not know (ARNs, queue URLs).
pub const ACCOUNT_ID: &str = "123456789012";

/// A whole local AWS for one test:
///
/// ```text
/// SDK ──▶ proxy ─────────────────────────▶ gate ──▶ moto   (DynamoDB, S3, SNS, SQS, …)
/// SDK ──▶ cloudwatch_proxy ──▶ bridge ───▶ gate ──▶ moto   (CloudWatch, RPC v2 CBOR → awsJson)
/// ```
///
/// The gate hands moto one request at a time ([`FaultProxy::start_serial`]), so parallel invocations
/// see a consistent service.
///
/// Dropping it stops everything.
#[derive(Debug)]
pub struct Stack {
    // Field order is drop order: the proxies first, moto last.
    proxy: FaultProxy,
    cloudwatch_proxy: FaultProxy,
    bridge: CloudWatchBridge,
    _gate: FaultProxy,
    moto: Moto,
}

impl Stack {
    /// Starts moto, the bridge and both proxies.
    pub async fn start() -> anyhow::Result<Stack> {
        let moto = Moto::start().await?;
        let gate = FaultProxy::start_serial(&moto.endpoint()).await?;
        let bridge = CloudWatchBridge::start(&gate.endpoint()).await?;
        let proxy = FaultProxy::start(&gate.endpoint()).await?;
        let cloudwatch_proxy = FaultProxy::start(&bridge.endpoint()).await?;
        Ok(Stack {
            proxy,
            cloudwatch_proxy,
            bridge,
            _gate: gate,
            moto,
        })
    }

    /// The moto server (for [`Moto::reset`] or direct, un-proxied access).
    pub fn moto(&self) -> &Moto {
        &self.moto
    }

    /// The CloudWatch bridge (direct, un-proxied access).
    pub fn bridge(&self) -> &CloudWatchBridge {
        &self.bridge
    }

    /// The fault proxy in front of moto: every service but CloudWatch goes through it.
    pub fn proxy(&self) -> &FaultProxy {
        &self.proxy
    }

    /// The fault proxy in front of the CloudWatch bridge.
    pub fn cloudwatch_proxy(&self) -> &FaultProxy {
        &self.cloudwatch_proxy
    }

    /// The proxy that sees `service`'s traffic.
    pub fn proxy_for(&self, service: Service) -> &FaultProxy {
        match service {
            Service::CloudWatch => &self.cloudwatch_proxy,
            _ => &self.proxy,
        }
    }

    /// Adds a rule to the proxy that sees its service.
    pub fn add_rule(&self, rule: Rule) {
        self.proxy_for(rule.service).add_rule(rule);
    }

    /// Removes the rules of both proxies.
    pub fn clear_rules(&self) {
        self.proxy.clear_rules();
        self.cloudwatch_proxy.clear_rules();
    }

    /// Calls per (service, operation) across both proxies.
    pub fn calls(&self) -> BTreeMap<(String, String), u64> {
        let mut calls = self.proxy.calls();
        for (key, count) in self.cloudwatch_proxy.calls() {
            *calls.entry(key).or_insert(0) += count;
        }
        calls
    }

    /// Calls per (service, operation) made since `before` (an earlier [`Stack::calls`]), those with none
    /// left out.
    pub fn calls_since(
        &self,
        before: &BTreeMap<(String, String), u64>,
    ) -> BTreeMap<(String, String), u64> {
        self.calls()
            .into_iter()
            .map(|(op, n)| {
                let earlier = before.get(&op).copied().unwrap_or(0);
                (op, n - earlier)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Calls to one operation, through whichever proxy sees it.
    pub fn calls_to(&self, service: Service, operation: &str) -> u64 {
        self.proxy_for(service).calls_to(service, operation)
    }

    /// Time the emulator took to answer, per (service, operation), across both proxies (queueing at the
    /// gate included).
    pub fn upstream_time(&self) -> BTreeMap<(String, String), std::time::Duration> {
        let mut time = self.proxy.upstream_time();
        for (key, spent) in self.cloudwatch_proxy.upstream_time() {
            *time.entry(key).or_default() += spent;
        }
        time
    }

    /// All calls across both proxies.
    pub fn total_calls(&self) -> u64 {
        self.proxy.total_calls() + self.cloudwatch_proxy.total_calls()
    }

    /// Empties moto, removes every rule and forgets the call counts.
    pub async fn reset(&self) -> anyhow::Result<()> {
        self.clear_rules();
        self.moto.reset().await?;
        self.proxy.reset_calls();
        self.cloudwatch_proxy.reset_calls();
        Ok(())
    }

    /// The endpoint for every service but CloudWatch (moto, through its proxy).
    pub fn endpoint(&self) -> String {
        self.proxy.endpoint()
    }

    /// The endpoint for CloudWatch (the bridge, through its proxy).
    pub fn cloudwatch_endpoint(&self) -> String {
        self.cloudwatch_proxy.endpoint()
    }

    /// An SDK configuration that sends every client through the proxies: fake static credentials,
    /// `us-east-1`, a plain-HTTP client, [`Stack::endpoint`] for every service and
    /// [`Stack::cloudwatch_endpoint`] for CloudWatch. The SDK's default retry policy applies
    /// (standard, 3 attempts); to make retries quick in a test, override it:
    /// `config.into_builder().retry_config(RetryConfig::standard().with_initial_backoff(..)).build()`.
    ///
    /// S3 needs path-style addressing (`/bucket/key`) against a custom endpoint:
    /// `aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build()`.
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint(), &self.cloudwatch_endpoint()).await
    }

    /// The environment a child process (the Lambda binary, the CLI) needs to reach this stack
    /// through the standard SDK configuration: `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_CLOUDWATCH`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` (and `AWS_DEFAULT_REGION`, the
    /// only one boto3 and the AWS CLI read), `AWS_EC2_METADATA_DISABLED`.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ENDPOINT_URL_CLOUDWATCH", self.cloudwatch_endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            // boto3 and the AWS CLI read only this one.
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// The SDK configuration of [`Stack::sdk_config`] for any pair of endpoints: `endpoint` for every
/// service, `cloudwatch_endpoint` for CloudWatch.
///
/// The CloudWatch endpoint is carried as service-specific configuration, exactly as
/// `AWS_ENDPOINT_URL_CLOUDWATCH` would be; it replaces whatever the environment of the test
/// process says, so a developer's `AWS_ENDPOINT_URL_*` variables cannot leak into a test.
pub async fn sdk_config_for(endpoint: &str, cloudwatch_endpoint: &str) -> SdkConfig {
    let credentials = Credentials::new(
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        None,
        None,
        "tokenwatch-testkit",
    );
    let loaded = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(credentials)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .load()
        .await;
    let mut builder = loaded.into_builder();
    builder.set_endpoint_url(Some(endpoint.to_owned()));
    // A client honours service-specific endpoints only when the shared one was not set in code, so
    // mark it as coming from the environment (as `AWS_ENDPOINT_URL` would).
    builder.insert_origin("endpoint_url", Origin::shared_environment_variable());
    builder
        .service_config(ServiceEndpoints {
            shared: endpoint.to_owned(),
            cloudwatch: cloudwatch_endpoint.to_owned(),
        })
        .build()
}

/// Service-specific endpoint URLs (what `AWS_ENDPOINT_URL_<SERVICE>` carries): CloudWatch's own,
/// the shared one for every other service. No other setting is answered.
#[derive(Debug)]
struct ServiceEndpoints {
    shared: String,
    cloudwatch: String,
}

impl LoadServiceConfig for ServiceEndpoints {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        if key.env() != "AWS_ENDPOINT_URL" {
            return None;
        }
        Some(if key.service_id() == "CloudWatch" {
            self.cloudwatch.clone()
        } else {
            self.shared.clone()
        })
    }
}
