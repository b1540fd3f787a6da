//! A fault-injecting reverse proxy that knows which AWS service and operation each request is.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::bridge::{self, AWS_JSON_1_0, CBOR_CONTENT_TYPE, RPC_V2_CBOR, SMITHY_PROTOCOL};
use crate::cbor;
use crate::net::{self as h, Body, Handler, HttpClient, LoopbackServer, Outcome, Upstream};

/// An AWS service as the proxy recognizes it (from the SigV4 credential scope first, then from the
/// protocol's own markers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// CloudWatch (signing name `monitoring`; RPC v2 CBOR, or awsJson 1.0 / awsQuery).
    CloudWatch,
    /// DynamoDB (awsJson 1.0, `X-Amz-Target: DynamoDB_20120810.<Op>`).
    DynamoDb,
    /// S3 (REST XML, path-style `/bucket/key`).
    S3,
    /// SNS (awsQuery: form `Action=<Op>`).
    Sns,
    /// SQS (awsJson 1.0, `X-Amz-Target: AmazonSQS.<Op>`; awsQuery from older SDKs).
    Sqs,
    /// Anything else.
    Unknown,
}

impl Service {
    /// The name used in [`FaultProxy::calls`] keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::CloudWatch => "cloudwatch",
            Service::DynamoDb => "dynamodb",
            Service::S3 => "s3",
            Service::Sns => "sns",
            Service::Sqs => "sqs",
            Service::Unknown => "unknown",
        }
    }

    fn from_signing_name(name: &str) -> Service {
        match name {
            "monitoring" => Service::CloudWatch,
            "dynamodb" => Service::DynamoDb,
            "s3" => Service::S3,
            "sns" => Service::Sns,
            "sqs" => Service::Sqs,
            _ => Service::Unknown,
        }
    }

    fn from_target_prefix(prefix: &str) -> Service {
        match prefix {
            "GraniteServiceVersion20100801" => Service::CloudWatch,
            "DynamoDB_20120810" => Service::DynamoDb,
            "AmazonSQS" => Service::Sqs,
            _ => Service::Unknown,
        }
    }

    fn from_query_version(version: &str) -> Service {
        match version {
            "2010-08-01" => Service::CloudWatch,
            "2010-03-31" => Service::Sns,
            "2012-11-05" => Service::Sqs,
            _ => Service::Unknown,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with the service's own throttling error, shaped for the request's protocol so the SDK
    /// classifies it as a retryable throttling error: awsJson 400 `__type`
    /// (`ProvisionedThroughputExceededException` for DynamoDB, `RequestThrottled` for SQS,
    /// `ThrottlingException` otherwise, with `x-amzn-query-error` where the service is
    /// awsQuery-compatible), awsQuery 400 XML `Throttling`, RPC v2 CBOR 400 `__type` +
    /// `x-amzn-query-error: Throttling;Sender`, S3 503 `SlowDown`.
    Throttle,
    /// Answer with this HTTP status and the service's error body for it (500 `InternalFailure`,
    /// `InternalServerError` for DynamoDB, `InternalError` for S3; 503 `ServiceUnavailable`).
    ServerError(u16),
    /// Wait, then forward.
    Delay(Duration),
    /// Refuse with 403 `AccessDenied` (`AccessDeniedException` for JSON protocols): a permission the
    /// caller lacks, which no retry fixes until someone changes a policy.
    Deny,
    /// Close the connection with a TCP reset, without a response (the service never sees the request).
    Reset,
    /// Never answer and never forward: a request lost on the way, which only the client's attempt
    /// timeout ends. The service never sees it.
    Hang,
    /// Forward the request, let the service act on it, then reset the connection instead of answering:
    /// a response lost on the way back. The client cannot tell it from [`Fault::Reset`], so its retry
    /// repeats an operation that already happened.
    LoseResponse,
}

/// A fault-injection rule: among requests to `service` (and `operation`, when given), let the
/// first `skip` through, then apply `fault` to the next `times`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The service to match.
    pub service: Service,
    /// The operation to match (`PutItem`, `Publish`, `GetObject`…); `None` matches all.
    pub operation: Option<String>,
    /// How many matching requests to let through first.
    pub skip: usize,
    /// How many matching requests to fault after those (`usize::MAX`: all of them).
    pub times: usize,
    /// The fault.
    pub fault: Fault,
}

impl Rule {
    /// Faults the next matching request once.
    pub fn new(service: Service, fault: Fault) -> Rule {
        Rule {
            service,
            operation: None,
            skip: 0,
            times: 1,
            fault,
        }
    }

    /// Only requests for this operation.
    pub fn operation(mut self, operation: &str) -> Rule {
        self.operation = Some(operation.to_owned());
        self
    }

    /// Let the first `skip` matching requests through.
    pub fn skip(mut self, skip: usize) -> Rule {
        self.skip = skip;
        self
    }

    /// Fault `times` matching requests.
    pub fn times(mut self, times: usize) -> Rule {
        self.times = times;
        self
    }

    /// Fault every matching request from now on.
    pub fn always(self) -> Rule {
        self.times(usize::MAX)
    }

    fn matches(&self, service: Service, operation: &str) -> bool {
        self.service == service && self.operation.as_deref().is_none_or(|op| op == operation)
    }
}

/// A reverse proxy on 127.0.0.1 in front of moto or the CloudWatch bridge that counts calls per
/// (service, operation) and injects faults by [`Rule`].
///
/// Every rule sees every request it matches (its `skip`/`times` count those), and the first rule,
/// in the order added, that selects a request applies its fault.
#[derive(Debug)]
pub struct FaultProxy {
    server: LoopbackServer,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    rules: Mutex<Vec<ActiveRule>>,
    calls: Mutex<BTreeMap<(String, String), u64>>,
    /// Time spent waiting for the upstream's answer, per (service, operation), unfaulted requests only.
    upstream_time: Mutex<BTreeMap<(String, String), Duration>>,
    injected: AtomicU64,
    request_ids: AtomicU64,
}

#[derive(Debug)]
struct ActiveRule {
    rule: Rule,
    seen: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> anyhow::Result<FaultProxy> {
        Self::start_with(upstream, None).await
    }

    /// A proxy that forwards one request at a time. moto's server is threaded but its backends are not
    /// safe for concurrent requests (parallel DynamoDB transactions fail with HTTP 500, answers come back
    /// garbled): in front of it, this makes it behave like the consistent service it stands for.
    pub async fn start_serial(upstream: &str) -> anyhow::Result<FaultProxy> {
        Self::start_with(upstream, Some(tokio::sync::Mutex::new(()))).await
    }

    async fn start_with(
        upstream: &str,
        one_at_a_time: Option<tokio::sync::Mutex<()>>,
    ) -> anyhow::Result<FaultProxy> {
        let state = Arc::new(State::default());
        let handler = Proxy {
            upstream: Upstream::parse(upstream)?,
            client: h::client(),
            state: state.clone(),
            one_at_a_time,
        };
        Ok(FaultProxy {
            server: LoopbackServer::start("fault-proxy", handler).await?,
            state,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// Adds a rule after the existing ones.
    pub fn add_rule(&self, rule: Rule) {
        lock(&self.state.rules).push(ActiveRule { rule, seen: 0 });
    }

    /// Removes every rule.
    pub fn clear_rules(&self) {
        lock(&self.state.rules).clear();
    }

    /// Requests received per (service, operation), faulted ones included, e.g.
    /// `("dynamodb", "PutItem")`, `("s3", "GetObject")`, `("cloudwatch", "PutMetricData")`.
    pub fn calls(&self) -> BTreeMap<(String, String), u64> {
        lock(&self.state.calls).clone()
    }

    /// Requests received for one operation.
    pub fn calls_to(&self, service: Service, operation: &str) -> u64 {
        lock(&self.state.calls)
            .get(&(service.as_str().to_owned(), operation.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Time the upstream took to answer (headers), per (service, operation), for requests not faulted.
    pub fn upstream_time(&self) -> BTreeMap<(String, String), Duration> {
        lock(&self.state.upstream_time).clone()
    }

    /// All requests received.
    pub fn total_calls(&self) -> u64 {
        lock(&self.state.calls).values().sum()
    }

    /// Forgets the call counts.
    pub fn reset_calls(&self) {
        lock(&self.state.calls).clear();
    }

    /// How many requests were faulted.
    pub fn faults_injected(&self) -> u64 {
        self.state.injected.load(Ordering::SeqCst)
    }
}

struct Proxy {
    upstream: Upstream,
    client: HttpClient,
    state: Arc<State>,
    /// Held while a request is forwarded, when the upstream must see one request at a time.
    one_at_a_time: Option<tokio::sync::Mutex<()>>,
}

/// The wire protocol of a request, which decides the shape of a synthesized error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    AwsJson,
    AwsQuery,
    RpcV2Cbor,
    RestXml,
}

/// What the proxy learned about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identified {
    service: Service,
    /// The service name for counting: `service.as_str()`, or the signing name of an unknown service.
    service_name: String,
    operation: String,
    protocol: Protocol,
}

impl Handler for Proxy {
    async fn handle(&self, request: Request<Incoming>) -> Outcome {
        let (parts, body) = request.into_parts();
        // awsQuery names the operation in the form body: read it (form bodies are small).
        let (form, body) = if is_form(&parts.headers) {
            match body.collect().await {
                Ok(collected) => {
                    let bytes = collected.to_bytes();
                    (Some(bytes.clone()), h::full(bytes))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "client went away while sending its body");
                    return Outcome::Reset;
                }
            }
        } else {
            (None, h::incoming(body))
        };
        let id = identify(&parts.method, &parts.uri, &parts.headers, form.as_deref());
        *lock(&self.state.calls)
            .entry((id.service_name.clone(), id.operation.clone()))
            .or_insert(0) += 1;

        let fault = self.select_fault(&id);
        if let Some(fault) = &fault {
            self.state.injected.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(service = %id.service_name, operation = %id.operation, ?fault, "injecting fault");
        }
        match fault {
            None => {
                let started = std::time::Instant::now();
                let outcome = self.forward(parts, body).await;
                *lock(&self.state.upstream_time)
                    .entry((id.service_name.clone(), id.operation.clone()))
                    .or_default() += started.elapsed();
                outcome
            }
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                self.forward(parts, body).await
            }
            Some(Fault::Reset) => Outcome::Reset,
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::LoseResponse) => {
                if let Outcome::Respond(response) = self.forward(parts, body).await {
                    // The service has answered, so it has acted; reading the whole answer makes sure.
                    if let Err(e) = response.into_body().collect().await {
                        tracing::debug!(error = %e, "upstream answer cut short");
                    }
                }
                Outcome::Reset
            }
            Some(Fault::Throttle) => {
                Outcome::Respond(self.error_response(&id, &parts.method, ErrorKind::Throttle))
            }
            Some(Fault::Deny) => {
                Outcome::Respond(self.error_response(&id, &parts.method, ErrorKind::Denied))
            }
            Some(Fault::ServerError(status)) => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                Outcome::Respond(self.error_response(&id, &parts.method, ErrorKind::Server(status)))
            }
        }
    }
}

impl Proxy {
    fn select_fault(&self, id: &Identified) -> Option<Fault> {
        let mut rules = lock(&self.state.rules);
        let mut selected = None;
        for active in rules
            .iter_mut()
            .filter(|a| a.rule.matches(id.service, &id.operation))
        {
            let position = active.seen;
            active.seen = active.seen.saturating_add(1);
            let in_window =
                position >= active.rule.skip && position - active.rule.skip < active.rule.times;
            if in_window && selected.is_none() {
                selected = Some(active.rule.fault.clone());
            }
        }
        selected
    }

    async fn forward(&self, parts: http::request::Parts, body: Body) -> Outcome {
        let _turn = match &self.one_at_a_time {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        Outcome::Respond(h::forward(&self.client, &self.upstream, parts, body).await)
    }

    fn error_response(&self, id: &Identified, method: &Method, kind: ErrorKind) -> Response<Body> {
        let request_id = format!(
            "tokenwatch-fault-{:08}",
            self.state.request_ids.fetch_add(1, Ordering::SeqCst)
        );
        render_error(&error_shape(id.service, kind), id, method, &request_id)
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// Identifies the service, operation and protocol of a request.
fn identify(
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    form: Option<&[u8]>,
) -> Identified {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signing_name = header("authorization")
        .and_then(signing_name_from_authorization)
        .or_else(|| uri.query().and_then(signing_name_from_presigned_query));
    let target = header("x-amz-target").and_then(|t| t.split_once('.'));
    let rpc = bridge::parse_rpc_path(uri.path());
    let form_params = form.map(parse_form);
    let form_value = |key: &str| {
        form_params.as_ref().and_then(|params| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        })
    };

    let mut service = signing_name
        .as_deref()
        .map_or(Service::Unknown, Service::from_signing_name);
    if service == Service::Unknown {
        service = if let Some((prefix, _)) = target {
            Service::from_target_prefix(prefix)
        } else if let Some((prefix, _)) = rpc {
            Service::from_target_prefix(prefix)
        } else if let Some(version) = form_value("Version") {
            Service::from_query_version(&version)
        } else {
            Service::Unknown
        };
    }
    let is_rpc = rpc.is_some() || header(SMITHY_PROTOCOL) == Some(RPC_V2_CBOR);
    let (operation, protocol) = if let Some((_, operation)) = rpc {
        (operation.to_owned(), Protocol::RpcV2Cbor)
    } else if let Some((_, operation)) = target {
        let protocol = if is_rpc {
            Protocol::RpcV2Cbor
        } else {
            Protocol::AwsJson
        };
        (operation.to_owned(), protocol)
    } else if let Some(action) = form_value("Action") {
        (action, Protocol::AwsQuery)
    } else if service == Service::S3 || signing_name.is_none() && form.is_none() {
        (s3_operation(method, uri, headers), Protocol::RestXml)
    } else {
        ("Unknown".to_owned(), Protocol::AwsJson)
    };
    // An unsigned request that looks like nothing else is most likely S3 (a presigned URL or a
    // plain object fetch).
    if service == Service::Unknown && protocol == Protocol::RestXml && signing_name.is_none() {
        service = Service::S3;
    }
    let service_name = match (service, signing_name) {
        (Service::Unknown, Some(name)) => name,
        _ => service.as_str().to_owned(),
    };
    Identified {
        service,
        service_name,
        operation,
        protocol,
    }
}

/// `AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/dynamodb/aws4_request, ...` → `dynamodb`.
fn signing_name_from_authorization(authorization: &str) -> Option<String> {
    let start = authorization.find("Credential=")? + "Credential=".len();
    let scope = authorization[start..].split([',', ' ']).next()?;
    scope.split('/').nth(3).map(str::to_owned)
}

/// `X-Amz-Credential=AKID%2F20260101%2Fus-east-1%2Fs3%2Faws4_request` → `s3`.
fn signing_name_from_presigned_query(query: &str) -> Option<String> {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("X-Amz-Credential="))?;
    percent_decode(value).split('/').nth(3).map(str::to_owned)
}

fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = &bytes[i + 1..i + 3];
                let decoded = std::str::from_utf8(hex)
                    .ok()
                    .filter(|_| hex.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                match decoded {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The S3 operation of a path-style request, from the SDK's `x-id` query parameter when present,
/// else from the method, the path (`/bucket`, `/bucket/key`) and the subresource parameters.
fn s3_operation(method: &Method, uri: &http::Uri, headers: &HeaderMap) -> String {
    let query: BTreeSet<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map_or(p, |(k, _)| k).to_owned())
        .collect();
    if let Some(x_id) = uri
        .query()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("x-id=")))
    {
        return percent_decode(x_id);
    }
    let has = |key: &str| query.contains(key);
    let path = uri.path().trim_start_matches('/');
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    let copy = headers.contains_key("x-amz-copy-source");
    let op = if bucket.is_empty() {
        match *method {
            Method::GET => "ListBuckets",
            _ => "Unknown",
        }
    } else if key.is_empty() {
        match *method {
            Method::GET if has("list-type") => "ListObjectsV2",
            Method::GET if has("versions") => "ListObjectVersions",
            Method::GET if has("uploads") => "ListMultipartUploads",
            Method::GET if has("location") => "GetBucketLocation",
            Method::GET if has("notification") => "GetBucketNotificationConfiguration",
            Method::GET if has("tagging") => "GetBucketTagging",
            Method::GET if has("policy") => "GetBucketPolicy",
            Method::GET if has("versioning") => "GetBucketVersioning",
            Method::GET if has("lifecycle") => "GetBucketLifecycleConfiguration",
            Method::GET if has("encryption") => "GetBucketEncryption",
            Method::GET if has("acl") => "GetBucketAcl",
            Method::GET => "ListObjects",
            Method::PUT if has("notification") => "PutBucketNotificationConfiguration",
            Method::PUT if has("tagging") => "PutBucketTagging",
            Method::PUT if has("policy") => "PutBucketPolicy",
            Method::PUT if has("versioning") => "PutBucketVersioning",
            Method::PUT if has("lifecycle") => "PutBucketLifecycleConfiguration",
            Method::PUT if has("encryption") => "PutBucketEncryption",
            Method::PUT if has("acl") => "PutBucketAcl",
            Method::PUT => "CreateBucket",
            Method::DELETE if has("tagging") => "DeleteBucketTagging",
            Method::DELETE if has("policy") => "DeleteBucketPolicy",
            Method::DELETE if has("lifecycle") => "DeleteBucketLifecycle",
            Method::DELETE if has("encryption") => "DeleteBucketEncryption",
            Method::DELETE => "DeleteBucket",
            Method::HEAD => "HeadBucket",
            Method::POST if has("delete") => "DeleteObjects",
            _ => "Unknown",
        }
    } else {
        match *method {
            Method::GET if has("tagging") => "GetObjectTagging",
            Method::GET if has("acl") => "GetObjectAcl",
            Method::GET if has("attributes") => "GetObjectAttributes",
            Method::GET if has("uploadId") => "ListParts",
            Method::GET => "GetObject",
            Method::HEAD => "HeadObject",
            Method::PUT if has("partNumber") && has("uploadId") && copy => "UploadPartCopy",
            Method::PUT if has("partNumber") && has("uploadId") => "UploadPart",
            Method::PUT if has("tagging") => "PutObjectTagging",
            Method::PUT if has("acl") => "PutObjectAcl",
            Method::PUT if copy => "CopyObject",
            Method::PUT => "PutObject",
            Method::DELETE if has("uploadId") => "AbortMultipartUpload",
            Method::DELETE if has("tagging") => "DeleteObjectTagging",
            Method::DELETE => "DeleteObject",
            Method::POST if has("uploads") => "CreateMultipartUpload",
            Method::POST if has("uploadId") => "CompleteMultipartUpload",
            Method::POST if has("restore") => "RestoreObject",
            Method::POST if has("select") => "SelectObjectContent",
            _ => "Unknown",
        }
    };
    op.to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Throttle,
    Denied,
    Server(StatusCode),
}

/// A service error as the real service would describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ErrorShape {
    status: StatusCode,
    /// `__type` for JSON and CBOR (a shape id or a bare code), `Code` for XML.
    type_name: &'static str,
    /// The awsQuery error code (`x-amzn-query-error` for awsQuery-compatible services, `Code` in XML).
    query_code: &'static str,
    /// Whether the awsQuery-compatible header is sent with JSON/CBOR errors.
    query_compatible: bool,
    sender: bool,
    message: &'static str,
}

fn error_shape(service: Service, kind: ErrorKind) -> ErrorShape {
    let query_compatible = matches!(service, Service::CloudWatch | Service::Sqs);
    match kind {
        ErrorKind::Throttle => {
            let (status, type_name, query_code, message) = match service {
                Service::DynamoDb => (
                    StatusCode::BAD_REQUEST,
                    "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                    "ProvisionedThroughputExceededException",
                    "The level of configured provisioned throughput for the table was exceeded. \
                     Consider increasing your provisioning level with the UpdateTable API.",
                ),
                Service::Sqs => (
                    StatusCode::BAD_REQUEST,
                    "com.amazonaws.sqs#RequestThrottled",
                    "RequestThrottled",
                    "Request is throttled.",
                ),
                Service::S3 => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SlowDown",
                    "SlowDown",
                    "Please reduce your request rate.",
                ),
                Service::CloudWatch | Service::Sns | Service::Unknown => (
                    StatusCode::BAD_REQUEST,
                    "com.amazon.coral.availability#ThrottlingException",
                    "Throttling",
                    "Rate exceeded",
                ),
            };
            ErrorShape {
                status,
                type_name,
                query_code,
                query_compatible,
                sender: true,
                message,
            }
        }
        ErrorKind::Denied => {
            let (type_name, query_code) = match service {
                Service::S3 => ("AccessDenied", "AccessDenied"),
                Service::Sns => ("AuthorizationError", "AuthorizationError"),
                _ => (
                    "com.amazon.coral.service#AccessDeniedException",
                    "AccessDenied",
                ),
            };
            ErrorShape {
                status: StatusCode::FORBIDDEN,
                type_name,
                query_code,
                query_compatible,
                sender: true,
                message: "User is not authorized to perform this action",
            }
        }
        ErrorKind::Server(status) => {
            let (type_name, query_code, message) = match (service, status.as_u16()) {
                (Service::DynamoDb, 500) => (
                    "com.amazonaws.dynamodb.v20120810#InternalServerError",
                    "InternalServerError",
                    "Internal server error",
                ),
                (Service::CloudWatch, 500) => (
                    "com.amazonaws.cloudwatch#InternalServiceFault",
                    "InternalServiceError",
                    "Internal service error",
                ),
                (Service::S3, 500) => (
                    "InternalError",
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                ),
                (_, 503) => (
                    "com.amazon.coral.availability#ServiceUnavailableException",
                    "ServiceUnavailable",
                    "Service is unable to handle request.",
                ),
                _ => (
                    "com.amazon.coral.service#InternalFailure",
                    "InternalFailure",
                    "The request processing has failed because of an unknown error.",
                ),
            };
            ErrorShape {
                status,
                type_name,
                query_code,
                query_compatible,
                sender: false,
                message,
            }
        }
    }
}

fn render_error(
    shape: &ErrorShape,
    id: &Identified,
    method: &Method,
    request_id: &str,
) -> Response<Body> {
    let fault_type = if shape.sender { "Sender" } else { "Receiver" };
    let mut response = match id.protocol {
        Protocol::RestXml => {
            let body = if *method == Method::HEAD {
                String::new()
            } else {
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>\
                     <RequestId>{request_id}</RequestId><HostId>{request_id}</HostId></Error>",
                    shape.query_code, shape.message
                )
            };
            let mut response = Response::new(h::full(body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml"),
            );
            response
        }
        Protocol::AwsQuery => {
            let namespace = match id.service {
                Service::Sns => " xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"",
                Service::Sqs => " xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\"",
                Service::CloudWatch => " xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\"",
                _ => "",
            };
            let body = format!(
                "<ErrorResponse{namespace}><Error><Type>{fault_type}</Type><Code>{}</Code><Message>{}</Message>\
                 </Error><RequestId>{request_id}</RequestId></ErrorResponse>",
                shape.query_code, shape.message
            );
            let mut response = Response::new(h::full(body));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
            response
        }
        Protocol::AwsJson => {
            let body = serde_json::json!({"__type": shape.type_name, "message": shape.message});
            let mut response = Response::new(h::full(body.to_string()));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(AWS_JSON_1_0));
            response
        }
        Protocol::RpcV2Cbor => {
            let value = ciborium::Value::Map(vec![
                (
                    ciborium::Value::Text("__type".into()),
                    ciborium::Value::Text(shape.type_name.into()),
                ),
                (
                    ciborium::Value::Text("message".into()),
                    ciborium::Value::Text(shape.message.into()),
                ),
            ]);
            let mut response = Response::new(h::full(cbor::encode_cbor(&value)));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(CBOR_CONTENT_TYPE),
            );
            headers.insert(SMITHY_PROTOCOL, HeaderValue::from_static(RPC_V2_CBOR));
            response
        }
    };
    *response.status_mut() = shape.status;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", value.clone());
        if id.service == Service::S3 {
            headers.insert("x-amz-request-id", value);
        }
    }
    if shape.query_compatible
        && matches!(id.protocol, Protocol::AwsJson | Protocol::RpcV2Cbor)
        && let Ok(value) = HeaderValue::from_str(&format!("{};{fault_type}", shape.query_code))
    {
        headers.insert("x-amzn-query-error", value);
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn req(method: Method, uri: &str, headers: &[(&str, &str)]) -> (Method, http::Uri, HeaderMap) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        (method, uri.parse().unwrap(), map)
    }

    fn auth(service: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/{service}/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=00"
        )
    }

    fn id_of(
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        form: Option<&[u8]>,
    ) -> (String, String, Protocol) {
        let (m, u, h) = req(method, uri, headers);
        let id = identify(&m, &u, &h, form);
        (id.service_name, id.operation, id.protocol)
    }

    #[test]
    fn identifies_aws_json_services_by_target() {
        let a = auth("dynamodb");
        assert_eq!(
            id_of(
                Method::POST,
                "/",
                &[
                    ("authorization", &a),
                    ("x-amz-target", "DynamoDB_20120810.PutItem")
                ],
                None
            ),
            ("dynamodb".into(), "PutItem".into(), Protocol::AwsJson)
        );
        // Unsigned: the target prefix alone.
        assert_eq!(
            id_of(
                Method::POST,
                "/",
                &[("x-amz-target", "AmazonSQS.SendMessage")],
                None
            ),
            ("sqs".into(), "SendMessage".into(), Protocol::AwsJson)
        );
    }

    #[test]
    fn identifies_aws_query_by_form_action() {
        let a = auth("sns");
        let form = b"Action=Publish&Version=2010-03-31&TopicArn=arn%3Aaws%3Asns&Message=hi+there";
        assert_eq!(
            id_of(
                Method::POST,
                "/",
                &[
                    ("authorization", &a),
                    (
                        "content-type",
                        "application/x-www-form-urlencoded; charset=utf-8"
                    )
                ],
                Some(form)
            ),
            ("sns".into(), "Publish".into(), Protocol::AwsQuery)
        );
        // Unsigned: the Version says which service.
        assert_eq!(
            id_of(
                Method::POST,
                "/",
                &[],
                Some(b"Action=GetQueueUrl&Version=2012-11-05")
            ),
            ("sqs".into(), "GetQueueUrl".into(), Protocol::AwsQuery)
        );
    }

    #[test]
    fn identifies_rpc_v2_cbor_by_path() {
        let a = auth("monitoring");
        assert_eq!(
            id_of(
                Method::POST,
                "/service/GraniteServiceVersion20100801/operation/PutMetricData",
                &[("authorization", &a), ("smithy-protocol", "rpc-v2-cbor")],
                None
            ),
            (
                "cloudwatch".into(),
                "PutMetricData".into(),
                Protocol::RpcV2Cbor
            )
        );
    }

    #[test]
    fn identifies_s3_operations_by_method_and_path() {
        let a = auth("s3");
        let s3 = |m: Method, uri: &str, extra: &[(&str, &str)]| {
            let mut headers = vec![("authorization", a.as_str())];
            headers.extend_from_slice(extra);
            let (service, op, protocol) = id_of(m, uri, &headers, None);
            assert_eq!(service, "s3");
            assert_eq!(protocol, Protocol::RestXml);
            op
        };
        assert_eq!(s3(Method::GET, "/b/k/with/slashes", &[]), "GetObject");
        assert_eq!(s3(Method::GET, "/b/k?x-id=GetObject", &[]), "GetObject");
        assert_eq!(s3(Method::PUT, "/b/k", &[]), "PutObject");
        assert_eq!(
            s3(Method::PUT, "/b/k", &[("x-amz-copy-source", "/b/j")]),
            "CopyObject"
        );
        assert_eq!(s3(Method::HEAD, "/b/k", &[]), "HeadObject");
        assert_eq!(s3(Method::DELETE, "/b/k", &[]), "DeleteObject");
        assert_eq!(
            s3(Method::GET, "/b?list-type=2&prefix=AWSLogs%2F", &[]),
            "ListObjectsV2"
        );
        assert_eq!(s3(Method::GET, "/b", &[]), "ListObjects");
        assert_eq!(s3(Method::PUT, "/b", &[]), "CreateBucket");
        assert_eq!(s3(Method::HEAD, "/b", &[]), "HeadBucket");
        assert_eq!(
            s3(Method::PUT, "/b?notification", &[]),
            "PutBucketNotificationConfiguration"
        );
        assert_eq!(s3(Method::POST, "/b?delete", &[]), "DeleteObjects");
        assert_eq!(
            s3(Method::POST, "/b/k?uploads", &[]),
            "CreateMultipartUpload"
        );
        assert_eq!(
            s3(Method::PUT, "/b/k?partNumber=1&uploadId=u", &[]),
            "UploadPart"
        );
        assert_eq!(
            s3(Method::POST, "/b/k?uploadId=u", &[]),
            "CompleteMultipartUpload"
        );
        assert_eq!(s3(Method::GET, "/", &[]), "ListBuckets");
        // A presigned URL: the signing name is in the query.
        assert_eq!(
            id_of(
                Method::GET,
                "/b/k?X-Amz-Credential=AKID%2F20260101%2Fus-east-1%2Fs3%2Faws4_request",
                &[],
                None
            )
            .0,
            "s3"
        );
    }

    #[test]
    fn unknown_signing_names_are_counted_under_their_own_name() {
        let a = auth("logs");
        let (service, op, _) = id_of(
            Method::POST,
            "/",
            &[
                ("authorization", &a),
                ("x-amz-target", "Logs_20140328.PutLogEvents"),
            ],
            None,
        );
        assert_eq!((service.as_str(), op.as_str()), ("logs", "PutLogEvents"));
    }

    #[test]
    fn rules_skip_then_fault_times_and_first_rule_wins() {
        let state = State::default();
        let proxy = Proxy {
            upstream: Upstream::parse("http://127.0.0.1:1").unwrap(),
            client: h::client(),
            state: Arc::new(state),
            one_at_a_time: None,
        };
        let put = Identified {
            service: Service::DynamoDb,
            service_name: "dynamodb".into(),
            operation: "PutItem".into(),
            protocol: Protocol::AwsJson,
        };
        let get = Identified {
            operation: "GetItem".into(),
            ..put.clone()
        };
        lock(&proxy.state.rules).push(ActiveRule {
            rule: Rule::new(Service::DynamoDb, Fault::Throttle)
                .operation("PutItem")
                .skip(1)
                .times(2),
            seen: 0,
        });
        lock(&proxy.state.rules).push(ActiveRule {
            rule: Rule::new(Service::DynamoDb, Fault::Reset).always(),
            seen: 0,
        });
        let faults: Vec<Option<Fault>> = (0..4).map(|_| proxy.select_fault(&put)).collect();
        assert_eq!(
            faults,
            vec![
                Some(Fault::Reset),
                Some(Fault::Throttle),
                Some(Fault::Throttle),
                Some(Fault::Reset)
            ]
        );
        assert_eq!(proxy.select_fault(&get), Some(Fault::Reset));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c%3a"), "a/b c:");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        // `+` is a space in form encoding, even after a stray `%`.
        assert_eq!(percent_decode("%+1"), "% 1");
    }

    #[test]
    fn error_shapes_per_protocol() {
        let id = |service, protocol| Identified {
            service,
            service_name: service.as_str().into(),
            operation: "Op".into(),
            protocol,
        };
        let sns = render_error(
            &error_shape(Service::Sns, ErrorKind::Throttle),
            &id(Service::Sns, Protocol::AwsQuery),
            &Method::POST,
            "r1",
        );
        assert_eq!(sns.status(), StatusCode::BAD_REQUEST);
        assert_eq!(sns.headers()["content-type"], "text/xml");

        let sqs = render_error(
            &error_shape(Service::Sqs, ErrorKind::Throttle),
            &id(Service::Sqs, Protocol::AwsJson),
            &Method::POST,
            "r2",
        );
        assert_eq!(
            sqs.headers()["x-amzn-query-error"],
            "RequestThrottled;Sender"
        );

        let cw = render_error(
            &error_shape(
                Service::CloudWatch,
                ErrorKind::Server(StatusCode::INTERNAL_SERVER_ERROR),
            ),
            &id(Service::CloudWatch, Protocol::RpcV2Cbor),
            &Method::POST,
            "r3",
        );
        assert_eq!(cw.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(cw.headers()["smithy-protocol"], "rpc-v2-cbor");
        assert_eq!(
            cw.headers()["x-amzn-query-error"],
            "InternalServiceError;Receiver"
        );

        let s3 = render_error(
            &error_shape(Service::S3, ErrorKind::Throttle),
            &id(Service::S3, Protocol::RestXml),
            &Method::HEAD,
            "r4",
        );
        assert_eq!(s3.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!s3.headers().contains_key("x-amzn-query-error"));
    }
}
