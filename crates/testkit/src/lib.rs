//! Test support for tokenwatch: real AWS-compatible parts on loopback, for integration and
//! end-to-end tests.
//!
//! # What each piece is for
//!
//! - [`Moto`]: a [moto](https://github.com/getmoto/moto) server (the local AWS emulator) on
//!   127.0.0.1 with a free port, owned by one test and killed on drop. It serves S3, DynamoDB, SNS,
//!   SQS and CloudWatch. The executable is `$TOKENWATCH_MOTO_SERVER`, else
//!   `.venv/tools/bin/moto_server` at the workspace root (installed by `make tools`). Each test can
//!   start its own: they start in well under a second and run side by side.
//! - [`CloudWatchBridge`]: the current `aws-sdk-cloudwatch` speaks only Smithy RPC v2 CBOR, which
//!   moto does not (moto issue #9195). The bridge accepts the SDK's CBOR requests and forwards
//!   them to moto as awsJson 1.0 (`X-Amz-Target: GraniteServiceVersion20100801.<Op>`), translating
//!   the responses and errors back to CBOR. The translation itself is in [`cbor`]. Requests that
//!   are already awsJson or awsQuery (boto3, the AWS CLI) pass through untouched.
//! - [`FaultProxy`]: a reverse proxy in front of moto or the bridge that tells which service and
//!   operation each request is (DynamoDB and SQS by `X-Amz-Target`, SNS by the form's `Action`,
//!   CloudWatch by its RPC v2 path, S3 by method and path), counts calls per (service, operation),
//!   and injects faults by [`Rule`]: [`Fault::Throttle`] and [`Fault::ServerError`] shaped as the
//!   real service answers in that protocol (so the SDK classifies and retries them as it would in
//!   AWS), [`Fault::Delay`], [`Fault::Reset`] (a TCP reset, no response), [`Fault::Hang`] (no
//!   answer until the client's timeout) and [`Fault::LoseResponse`] (the service acts, the answer is
//!   lost).
//! - [`Stack`]: all of the above wired together (moto, the bridge, a proxy in front of each), with
//!   [`Stack::sdk_config`] for in-process clients and [`Stack::env`] for child processes (the
//!   Lambda binary under a runtime emulator, the CLI), which reach the same stack through the
//!   standard `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_CLOUDWATCH` variables.
//!
//! # Protocols, as the SDKs in Cargo.lock speak them
//!
//! | service    | SDK protocol                                  | operation is named by            |
//! |------------|-----------------------------------------------|----------------------------------|
//! | CloudWatch | Smithy RPC v2 CBOR (bridged to awsJson 1.0)   | path `/service/…/operation/<Op>` |
//! | DynamoDB   | awsJson 1.0                                   | `X-Amz-Target: DynamoDB_20120810.<Op>` |
//! | SQS        | awsJson 1.0, awsQuery-compatible              | `X-Amz-Target: AmazonSQS.<Op>`   |
//! | SNS        | awsQuery (form-encoded, XML responses)        | form field `Action=<Op>`         |
//! | S3         | REST XML                                      | method + path (+ `x-id` query)   |
//!
//! # S3 needs path-style addressing
//!
//! Against a custom endpoint, configure the S3 client with `force_path_style(true)` so requests
//! are `http://127.0.0.1:PORT/bucket/key` (virtual-hosted `bucket.127.0.0.1` cannot resolve, and
//! the proxy names S3 operations from the path):
//!
//! ```no_run
//! # async fn example(stack: &tokenwatch_testkit::Stack) {
//! let config = stack.sdk_config().await;
//! let s3 = aws_sdk_s3::Client::from_conf(
//!     aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build(),
//! );
//! # }
//! ```
//!
//! (With an IP-literal endpoint such as `http://127.0.0.1:PORT` the SDK's endpoint rules choose
//! path-style by themselves, so a child process configured only by [`Stack::env`] works too; a
//! host name such as `localhost` would get virtual-hosted addressing.)
//!
//! # moto behaviours worth knowing (moto 5.2.5)
//!
//! - `GetMetricData`: a `MetricStat` without dimensions aggregates the metric's data points of
//!   *every* dimension set, and one with dimensions ignores the namespace (CloudWatch matches
//!   namespace, name and the exact dimension set). Query with the full dimension set.
//! - A new alarm reports `OK` at once rather than `INSUFFICIENT_DATA`.
//! - moto accepts any credentials and verifies no signature; for an access key it does not know
//!   (such as [`ACCESS_KEY_ID`]) resources live in account [`ACCOUNT_ID`].
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use tokenwatch_testkit::{Fault, Rule, Service, Stack};
//!
//! let stack = Stack::start().await?;
//! let dynamodb = aws_sdk_dynamodb::Client::new(&stack.sdk_config().await);
//! // The second PutItem is throttled once; the SDK retries it.
//! stack.add_rule(Rule::new(Service::DynamoDb, Fault::Throttle).operation("PutItem").skip(1));
//! // ... run the code under test, which writes two items ...
//! assert_eq!(stack.calls_to(Service::DynamoDb, "PutItem"), 3);
//! # let _ = dynamodb;
//! # Ok(())
//! # }
//! ```

mod bridge;
pub mod cbor;
mod moto;
mod net;
mod proxy;
mod stack;

pub use bridge::CloudWatchBridge;
pub use moto::{MOTO_SERVER_ENV, MOTO_SERVER_RELATIVE, Moto, locate_moto_server};
pub use proxy::{Fault, FaultProxy, Rule, Service};
pub use stack::{ACCESS_KEY_ID, ACCOUNT_ID, REGION, SECRET_ACCESS_KEY, Stack, sdk_config_for};
