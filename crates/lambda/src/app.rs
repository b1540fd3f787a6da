//! The handler: one entry for every delivery shape. It reads records (streaming S3 objects on a blocking
//! thread), then lets the core's pipeline count, detect and alert over the ports it was built with.

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};
use tokenwatch_aws::{
    AwsError, CloudTrailHistory, CloudWatchMetrics, DynamoClaims, DynamoStore, EmfMetrics,
    S3Objects, SdkOptions, SnsNotifier, sdk_config,
};
use tokenwatch_core::contract::source;
use tokenwatch_core::decode::DecodeError;
use tokenwatch_core::detect::{Detector, IncidentStore};
use tokenwatch_core::envelope::{self, Event, Notification, S3Object};
use tokenwatch_core::history::{
    CredentialHistory, HistoryCache, HistoryQuery, KeyHistory, LookupError,
};
use tokenwatch_core::metrics::MetricDatum;
use tokenwatch_core::pipeline::{self, Delivery, Origin, Outcome, Ports, Settings};
use tokenwatch_core::ports::{EventClaims, MetricsSink, NoHistory, Notifier};
use tokenwatch_core::{Failure, Problem, Scanner, SourceCounts, Timestamp, Validation};
use tokio_util::io::SyncIoBridge;
use tracing::{error, info, warn};

use crate::config::{Config, MetricsMode};
use crate::objects::ObjectSource;

/// No new S3 object is started with less than this left before the invocation's deadline: its message is
/// handed back for redelivery instead, leaving time to report.
pub const DEADLINE_RESERVE: Duration = Duration::from_secs(60);
/// History lookups stop at least this long before the invocation's deadline, leaving time to send.
pub const HISTORY_RESERVE: Duration = Duration::from_secs(20);
/// Problems logged per object or payload; the rest are only counted.
const PROBLEMS_LOGGED: usize = 10;

/// The metrics sink the configuration chose.
#[derive(Debug)]
pub enum Metrics {
    Api(CloudWatchMetrics),
    Emf(EmfMetrics<io::Stdout>),
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    Api(#[from] AwsError),
    #[error(transparent)]
    Emf(#[from] tokenwatch_aws::emf::EmfError),
}

impl MetricsSink for Metrics {
    type Error = MetricsError;

    async fn publish(&self, data: &[MetricDatum]) -> Result<(), MetricsError> {
        match self {
            Self::Api(sink) => Ok(sink.publish(data).await?),
            Self::Emf(sink) => Ok(sink.publish(data).await?),
        }
    }
}

/// CloudTrail history lookups, or none when the budget is zero.
#[derive(Debug)]
pub enum Lookups {
    CloudTrail(CloudTrailHistory),
    Off(NoHistory),
}

impl CredentialHistory for Lookups {
    async fn lookup(
        &self,
        query: &HistoryQuery,
        deadline: Instant,
    ) -> Result<KeyHistory, LookupError> {
        match self {
            Self::CloudTrail(history) => history.lookup(query, deadline).await,
            Self::Off(off) => off.lookup(query, deadline).await,
        }
    }
}

/// The invocation could not be completed; the delivery should be retried.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvocationError(String);

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(error: InvocationError) -> Self {
        Self {
            error_type: "TokenwatchRetry".to_owned(),
            error_message: error.0,
        }
    }
}

/// Everything an invocation needs, built once at cold start.
#[derive(Debug)]
pub struct Handler<M, N, S, C, O, H, K> {
    pub scanner: Arc<Scanner>,
    pub metrics: M,
    pub notifier: N,
    pub detector: Detector<S>,
    pub claims: C,
    pub objects: O,
    /// The key histories of newly opened incidents, and where they are remembered.
    pub history: H,
    pub history_cache: K,
    /// Time an invocation may spend on history lookups.
    pub history_budget: Duration,
    pub max_session_series: usize,
    pub clock: fn() -> Timestamp,
}

/// The production handler.
pub type App =
    Handler<Metrics, SnsNotifier, DynamoStore, DynamoClaims, S3Objects, Lookups, DynamoStore>;

/// What the runtime tells about one invocation.
#[derive(Debug, Clone, Default)]
pub struct InvocationContext {
    /// Lambda keeps it when it retries an asynchronous invocation, so it names the delivery across retries.
    pub request_id: String,
    /// When the runtime will stop the invocation.
    pub deadline: Option<SystemTime>,
}

pub fn system_clock() -> Timestamp {
    Timestamp::from_unix(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

impl App {
    /// Clients from the SDK's standard configuration (`AWS_ENDPOINT_URL` and friends included).
    pub async fn from_environment(config: Config) -> Self {
        let sdk = sdk_config(&SdkOptions {
            attempt_timeout: Some(config.aws_attempt_timeout),
            ..SdkOptions::default()
        })
        .await;
        let metrics = match config.metrics_mode {
            MetricsMode::Api => Metrics::Api(CloudWatchMetrics::new(
                tokenwatch_aws::cloudwatch_client(&sdk),
                &config.namespace,
            )),
            MetricsMode::Emf => Metrics::Emf(EmfMetrics::stdout(&config.namespace)),
        };
        let dynamodb = tokenwatch_aws::dynamodb_client(&sdk);
        let history = if config.enrichment_budget.is_zero() {
            Lookups::Off(NoHistory)
        } else {
            Lookups::CloudTrail(CloudTrailHistory::from_config(&sdk))
        };
        Handler {
            scanner: Arc::new(Scanner::new(
                config.error_codes.clone(),
                Validation::Structure,
            )),
            metrics,
            notifier: SnsNotifier::new(tokenwatch_aws::sns_client(&sdk), &config.alert_topic_arn),
            detector: Detector::new(
                DynamoStore::new(dynamodb.clone(), &config.state_table),
                config.policy,
            ),
            claims: DynamoClaims::new(dynamodb.clone(), &config.state_table, system_clock),
            objects: S3Objects::from_config(&sdk),
            history,
            history_cache: DynamoStore::new(dynamodb, &config.state_table),
            history_budget: config.enrichment_budget,
            max_session_series: config.max_session_series,
            clock: system_clock,
        }
    }
}

/// What reading one object produced, or why it must be retried.
struct ObjectScan {
    failures: Vec<Failure>,
    counts: SourceCounts,
}

impl<M, N, S, C, O, H, K> Handler<M, N, S, C, O, H, K>
where
    M: MetricsSink + Sync,
    N: Notifier + Sync,
    S: IncidentStore + Sync,
    C: EventClaims + Sync,
    O: ObjectSource,
    H: CredentialHistory + Sync,
    K: HistoryCache + Sync,
{
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, InvocationError> {
        let context = InvocationContext {
            request_id: event.context.request_id,
            deadline: Some(UNIX_EPOCH + Duration::from_millis(event.context.deadline)),
        };
        self.handle_payload(event.payload, &context).await
    }

    /// Handles one payload.
    pub async fn handle_payload(
        &self,
        payload: Value,
        context: &InvocationContext,
    ) -> Result<Value, InvocationError> {
        let deadline = context.deadline;
        match envelope::parse_event(payload) {
            Event::CloudTrail { record } => {
                let bytes = serde_json::to_vec(&record).unwrap_or_default();
                let delivery =
                    self.scan_in_memory([bytes.as_slice()], source::EVENTBRIDGE, "eventbridge");
                self.finish("eventbridge", delivery, BTreeSet::new(), context)
                    .await
                    .map(|_| json!({}))
            }
            Event::Logs { data } => {
                let payload = match envelope::decode_logs(&data) {
                    Ok(payload) => payload,
                    Err(e) => {
                        warn!(error = %e, "CloudWatch Logs payload does not decode; counted as malformed");
                        let delivery = malformed(source::CLOUDWATCH_LOGS);
                        return self
                            .finish("cloudwatch_logs", delivery, BTreeSet::new(), context)
                            .await
                            .map(|_| json!({}));
                    }
                };
                if payload.is_control() {
                    info!(log_group = %payload.log_group, "CloudWatch Logs control message");
                    return Ok(json!({}));
                }
                let messages = payload.log_events.iter().map(|e| e.message.as_bytes());
                let delivery =
                    self.scan_in_memory(messages, source::CLOUDWATCH_LOGS, &payload.log_group);
                self.finish("cloudwatch_logs", delivery, BTreeSet::new(), context)
                    .await
                    .map(|_| json!({}))
            }
            Event::Sqs { messages } => {
                // Each message is its own origin; its redelivery keeps the message id.
                let mut delivery = Delivery {
                    holders: messages
                        .iter()
                        .enumerate()
                        .map(|(origin, m)| (origin, m.message_id.clone()))
                        .collect(),
                    ..Delivery::default()
                };
                let mut failed = BTreeSet::new();
                for (origin, message) in messages.iter().enumerate() {
                    match envelope::notification(&message.body) {
                        Ok(Notification::Test) => {
                            info!(message_id = %message.message_id, "s3:TestEvent")
                        }
                        Ok(Notification::Objects(objects)) => {
                            if !self
                                .read_objects(&objects, origin, deadline, &mut delivery)
                                .await
                            {
                                failed.insert(origin);
                            }
                        }
                        Err(e) => {
                            // Retrying a body that does not parse cannot help; count it and move on.
                            warn!(message_id = %message.message_id, error = %e, "SQS message is not an S3 notification; counted as malformed");
                            delivery.sources.push((
                                origin,
                                source::S3,
                                SourceCounts {
                                    records: 1,
                                    malformed: 1,
                                },
                            ));
                        }
                    }
                }
                let outcome = self.run_pipeline(delivery, deadline).await;
                failed.extend(outcome.failed_origins.iter().copied());
                log_outcome("sqs", &outcome, failed.len());
                let failures: Vec<Value> = failed
                    .iter()
                    .filter_map(|i| messages.get(*i))
                    .map(|m| json!({"itemIdentifier": m.message_id}))
                    .collect();
                Ok(json!({"batchItemFailures": failures}))
            }
            Event::S3 { objects } => {
                let mut delivery = Delivery::default();
                let read = self
                    .read_objects(&objects, 0, deadline, &mut delivery)
                    .await;
                let failed = if read {
                    BTreeSet::new()
                } else {
                    BTreeSet::from([0])
                };
                self.finish("s3", delivery, failed, context)
                    .await
                    .map(|_| json!({}))
            }
            Event::Scheduled => {
                let ports = self.ports();
                let outcome = pipeline::sweep(&ports, (self.clock)()).await;
                log_outcome("schedule", &outcome, 0);
                Ok(json!({}))
            }
            Event::Unrecognized { reason } => {
                error!(%reason, "payload of no known shape; counted as malformed, not retried");
                let delivery = malformed(source::UNRECOGNIZED);
                self.finish("unrecognized", delivery, BTreeSet::new(), context)
                    .await
                    .map(|_| json!({}))
            }
        }
    }

    fn ports(&self) -> Ports<'_, M, N, S, C, H, K> {
        Ports {
            metrics: &self.metrics,
            notifier: &self.notifier,
            detector: &self.detector,
            claims: &self.claims,
            history: &self.history,
            history_cache: &self.history_cache,
        }
    }

    /// Lookups end after the budget, and early enough before the invocation's deadline to send alerts.
    fn history_deadline(&self, deadline: Option<SystemTime>) -> Instant {
        let left = deadline.map(|d| {
            d.duration_since(SystemTime::now())
                .unwrap_or_default()
                .saturating_sub(HISTORY_RESERVE)
        });
        Instant::now() + left.map_or(self.history_budget, |left| left.min(self.history_budget))
    }

    async fn run_pipeline(&self, delivery: Delivery, deadline: Option<SystemTime>) -> Outcome {
        let settings = Settings {
            now: (self.clock)(),
            max_session_series: self.max_session_series,
            history_deadline: self.history_deadline(deadline),
        };
        let outcome = pipeline::process(&self.ports(), delivery, settings).await;
        for e in &outcome.errors {
            error!(error = %e, "delivery problem");
        }
        outcome
    }

    /// Runs the pipeline for a single-origin delivery; any failed origin fails the invocation (to be retried,
    /// under the same request id, which therefore holds the delivery's claims).
    async fn finish(
        &self,
        shape: &'static str,
        mut delivery: Delivery,
        mut failed: BTreeSet<Origin>,
        context: &InvocationContext,
    ) -> Result<(), InvocationError> {
        delivery.holders.insert(0, context.request_id.clone());
        let outcome = self.run_pipeline(delivery, context.deadline).await;
        failed.extend(outcome.failed_origins.iter().copied());
        log_outcome(shape, &outcome, failed.len());
        if failed.is_empty() {
            Ok(())
        } else {
            Err(InvocationError(format!(
                "{shape} delivery not fully processed ({}); it will be retried",
                outcome.errors.join("; ")
            )))
        }
    }

    /// Scans records held in memory (EventBridge, CloudWatch Logs): one origin.
    fn scan_in_memory<'b>(
        &self,
        records: impl IntoIterator<Item = &'b [u8]>,
        source: &'static str,
        name: &str,
    ) -> Delivery {
        let mut delivery = Delivery::default();
        let mut total = SourceCounts::default();
        let mut logged = 0;
        for bytes in records {
            let counts = self.scanner.scan(
                bytes,
                |f| delivery.failures.push((f, 0)),
                |p| {
                    logged += 1;
                    if logged <= PROBLEMS_LOGGED {
                        warn!(source, input = %name, problem = %p, "malformed record");
                    }
                },
            );
            total.records += counts.records;
            total.malformed += counts.malformed;
        }
        delivery.sources.push((0, source, total));
        delivery
    }

    /// Reads every object of one origin into the delivery. Returns false when the origin must be retried
    /// (a transient read error, or too little time left); its partial results are then discarded.
    async fn read_objects(
        &self,
        objects: &[S3Object],
        origin: Origin,
        deadline: Option<SystemTime>,
        delivery: &mut Delivery,
    ) -> bool {
        let mut failures = Vec::new();
        let mut counts = SourceCounts::default();
        for object in objects {
            if object.is_digest() {
                continue;
            }
            let left = deadline.and_then(|d| d.duration_since(SystemTime::now()).ok());
            if left.is_some_and(|left| left < DEADLINE_RESERVE) {
                warn!(bucket = %object.bucket, key = %object.key, "too close to the deadline; handing the message back");
                return false;
            }
            match self.read_object(object).await {
                Ok(scan) => {
                    failures.extend(scan.failures);
                    counts.records += scan.counts.records;
                    counts.malformed += scan.counts.malformed;
                }
                Err(ReadError::Transient(e)) => {
                    warn!(bucket = %object.bucket, key = %object.key, error = %e, "read failed; the message will be retried");
                    return false;
                }
                Err(ReadError::Permanent(e)) => {
                    warn!(bucket = %object.bucket, key = %object.key, error = %e, "object cannot be read; counted as malformed");
                    counts.records += 1;
                    counts.malformed += 1;
                }
            }
        }
        delivery
            .failures
            .extend(failures.into_iter().map(|f| (f, origin)));
        delivery.sources.push((origin, source::S3, counts));
        true
    }

    async fn read_object(&self, object: &S3Object) -> Result<ObjectScan, ReadError> {
        let reader = self
            .objects
            .open(&object.bucket, &object.key)
            .await
            .map_err(|e| {
                if e.retryable {
                    ReadError::Transient(e.to_string())
                } else {
                    ReadError::Permanent(e.to_string())
                }
            })?;
        let scanner = Arc::clone(&self.scanner);
        let runtime = tokio::runtime::Handle::current();
        let key = object.key.clone();
        let (scan, transient) = tokio::task::spawn_blocking(move || {
            let bridge = SyncIoBridge::new_with_handle(reader, runtime);
            let mut failures = Vec::new();
            let mut transient = None;
            let mut logged = 0;
            let counts = scanner.scan(
                bridge,
                |f| failures.push(f),
                |p| {
                    if let Problem::Input(DecodeError::Io { source, .. }) = &p
                        && is_transient(source)
                    {
                        transient = Some(p.to_string());
                        return;
                    }
                    logged += 1;
                    if logged <= PROBLEMS_LOGGED {
                        warn!(key = %key, problem = %p, "malformed record");
                    }
                },
            );
            (ObjectScan { failures, counts }, transient)
        })
        .await
        .map_err(|e| ReadError::Transient(format!("scanning task failed: {e}")))?;
        match transient {
            Some(e) => Err(ReadError::Transient(e)),
            None => Ok(scan),
        }
    }
}

enum ReadError {
    Transient(String),
    Permanent(String),
}

/// Corrupt or truncated data is the file's fault and will not get better; a broken connection will.
fn is_transient(error: &io::Error) -> bool {
    !matches!(
        error.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof
    )
}

fn malformed(source: &'static str) -> Delivery {
    Delivery {
        sources: vec![(
            0,
            source,
            SourceCounts {
                records: 1,
                malformed: 1,
            },
        )],
        ..Delivery::default()
    }
}

fn log_outcome(shape: &'static str, outcome: &Outcome, failed: usize) {
    info!(
        shape,
        records = outcome.records,
        malformed = outcome.malformed,
        counted = outcome.counted,
        duplicates = outcome.duplicates,
        metric_data = outcome.metric_data,
        metrics_outside_window = outcome.metrics_outside_window,
        incidents_opened = outcome.opened,
        alerts_sent = outcome.alerts_sent,
        alerts_pending = outcome.alerts_pending,
        histories_looked_up = outcome.histories_looked_up,
        histories_unavailable = outcome.histories_unavailable,
        failed_origins = failed,
        errors = outcome.errors.len(),
        "invocation done"
    );
}
