//! The fault matrix: for each of S3, DynamoDB, CloudWatch and SNS, the emulator throttles, answers 5xx,
//! hangs until the SDK's attempt timeout, resets the connection, or acts and loses its answer, once or
//! until the fault is lifted, at chosen points of an invocation of the real `tokenwatch-lambda` binary.
//! Each cell drives the same trail files through S3 -> SQS -> the function, then lifts the fault, lets the
//! event source mapping redeliver what the function handed back and runs the schedule twice; then it
//! checks what a user would: every expired-token event counted once, every incident paged once.
//!
//! The two exceptions are the services' own: PutMetricData and SNS Publish have no idempotency key, so a
//! lost answer makes the SDK's retry publish again (counted or paged twice, never lost). Those cells
//! assert exactly that. `docs/RELIABILITY.md` is the table this file proves.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use tokenwatch_core::contract::{self, env, metric};
use tokenwatch_core::sample::{Manifest, SAMPLE_SPAN_SECONDS, Sample, SampleSpec};
use tokenwatch_e2e::infra::{Deployment, Template};
use tokenwatch_e2e::lambda::{LocalLambda, workspace_root};
use tokenwatch_e2e::plumbing::{
    mapping_pass, metric_sum, recent_sample_start, scheduled_event, trail_file,
};
use tokenwatch_testkit::{Fault, Rule, Service, Stack};

/// Seconds one SDK attempt may hang before it is abandoned: short, so a hang costs seconds, not minutes.
const ATTEMPT_TIMEOUT_SECONDS: &str = "1";
/// Four files of trail, so a persistent hang (four timed-out attempts per call) stays quick.
const FILES: i64 = 4;
const ACCOUNT: &str = "111122223333";

/// How long a fault lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Span {
    /// One request: within the SDK's retries.
    Once,
    /// Every matching request until the cell lifts it: beyond the SDK's retries.
    Persistent,
}

/// How many times a user sees each event counted and each incident paged, after retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivered {
    ExactlyOnce,
    /// The service acted on a request whose answer was lost, and the SDK's retry acted again.
    AtLeastOnce,
}

/// Whether the function hands the SQS messages back for redelivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redelivered {
    No,
    Yes,
}

struct Cell {
    name: &'static str,
    service: Service,
    operation: Option<&'static str>,
    /// Matching requests let through before the fault starts (the point in the invocation).
    skip: usize,
    fault: Fault,
    span: Span,
    redelivered: Redelivered,
    counted: Delivered,
    paged: Delivered,
}

impl Cell {
    fn rule(&self) -> Rule {
        let mut rule = Rule::new(self.service, self.fault.clone()).skip(self.skip);
        if let Some(operation) = self.operation {
            rule = rule.operation(operation);
        }
        match self.span {
            Span::Once => rule,
            Span::Persistent => rule.always(),
        }
    }
}

/// The five faults, once and persistent, at one point of the invocation, with what each must lead to.
fn faults_at(
    service: Service,
    operation: Option<&'static str>,
    when_persistent: Redelivered,
    lost_answer: (Delivered, Delivered),
) -> Vec<Cell> {
    // Within the SDK's retries nothing shows; beyond them the delivery is handed back or not, per service.
    let cell = |name, fault, span| Cell {
        name,
        service,
        operation,
        skip: 0,
        fault,
        span,
        redelivered: match span {
            Span::Once => Redelivered::No,
            Span::Persistent => when_persistent,
        },
        counted: Delivered::ExactlyOnce,
        paged: Delivered::ExactlyOnce,
    };
    vec![
        cell("throttle once", Fault::Throttle, Span::Once),
        cell("throttled", Fault::Throttle, Span::Persistent),
        cell("500 once", Fault::ServerError(500), Span::Once),
        cell("503 throughout", Fault::ServerError(503), Span::Persistent),
        cell("hang once", Fault::Hang, Span::Once),
        cell("hangs", Fault::Hang, Span::Persistent),
        cell("reset once", Fault::Reset, Span::Once),
        cell("resets", Fault::Reset, Span::Persistent),
        Cell {
            counted: lost_answer.0,
            paged: lost_answer.1,
            ..cell("answer lost once", Fault::LoseResponse, Span::Once)
        },
    ]
}

/// Trail log files: key and gzipped body.
type Files = Vec<(String, Vec<u8>)>;

/// A trail of six scenarios over six hours ending an hour ago (so every incident is quiet enough to
/// resolve on the schedule), as `FILES` gzipped log files.
fn trail() -> Result<(Files, Manifest)> {
    let sample = Sample::new(&SampleSpec {
        seed: 31,
        records: 1200,
        start: recent_sample_start(),
        file_period: SAMPLE_SPAN_SECONDS / FILES,
    });
    let files = (0..sample.file_count())
        .map(|n| {
            let file = sample.file(n);
            Ok((file.path, trail_file(&file.records)?.0))
        })
        .collect::<Result<_>>()?;
    Ok((files, sample.manifest().clone()))
}

/// What one cell showed.
#[derive(Debug)]
struct Observed {
    /// Invocations, and messages handed back, while the fault was on.
    invocations: u64,
    handed_back: usize,
    faults_injected: u64,
    counted: f64,
    opened: BTreeMap<String, usize>,
    resolved: BTreeMap<String, usize>,
    seconds: f64,
}

struct World {
    stack: Stack,
    config: aws_config::SdkConfig,
    template: Template,
    lambda: LocalLambda,
    name: &'static str,
    parameters: Vec<(&'static str, &'static str)>,
}

impl World {
    /// One emulator and one function process for a whole column of cells: each cell empties the emulator
    /// and creates the same resources again, which the running function finds under the same names.
    async fn start(name: &'static str) -> Result<World> {
        let stack = Stack::start().await?;
        let config = stack.sdk_config().await;
        let template = Template::load(&workspace_root().join("infra/template.yaml"))?;
        let parameters = vec![
            ("Source", "s3"),
            ("AwsAttemptTimeoutSeconds", ATTEMPT_TIMEOUT_SECONDS),
            // moto answers LookupEvents with HTTP 500; the lookup is not what these cells test.
            ("EnrichmentBudgetSeconds", "0"),
        ];
        let deployment = Deployment::create(&config, &template, name, &parameters).await?;
        let mut environment = stack.env();
        environment.extend(deployment.function_env());
        ensure!(
            environment
                .iter()
                .any(|(k, v)| k == env::AWS_ATTEMPT_TIMEOUT_SECONDS && v == ATTEMPT_TIMEOUT_SECONDS),
            "the template passes the attempt timeout to the function"
        );
        let lambda = LocalLambda::start(&environment).await?;
        Ok(World {
            stack,
            config,
            template,
            lambda,
            name,
            parameters,
        })
    }

    async fn run(&mut self, cell: &Cell) -> Result<Observed> {
        let started = Instant::now();
        self.stack.reset().await?;
        let deployment =
            Deployment::create(&self.config, &self.template, self.name, &self.parameters).await?;
        let (files, manifest) = trail()?;
        for (path, bytes) in &files {
            deployment.upload(path, bytes.clone()).await?;
        }
        let batch_size = self.template.event_source_mapping()?.batch_size;

        let injected_before = self.stack.proxy_for(cell.service).faults_injected();
        self.stack.add_rule(cell.rule());
        let (first, handed_back) = mapping_pass(&mut self.lambda, &deployment, batch_size).await?;
        let faults_injected =
            self.stack.proxy_for(cell.service).faults_injected() - injected_before;
        self.stack.clear_rules();

        // The fault is over: what was handed back comes again (its visibility timeout, cut short), then
        // the schedule runs twice (pending alerts go out, then quiet incidents resolve).
        deployment.release_ingest(&handed_back).await?;
        let (_, still_failing) = mapping_pass(&mut self.lambda, &deployment, batch_size).await?;
        ensure!(
            still_failing.is_empty(),
            "{}: {} messages still failing after the fault was lifted: {}",
            cell.name,
            still_failing.len(),
            self.lambda.output.lines().join("\n")
        );
        for _ in 0..2 {
            self.lambda.invoke(&scheduled_event()).await?.ok()?;
        }

        let counted = metric_sum(
            &self.config,
            contract::DEFAULT_NAMESPACE,
            metric::EXPIRED_TOKEN_ERRORS,
            &[("AccountId", ACCOUNT)],
        )
        .await?;
        let expected_keys: Vec<&str> = manifest
            .scenarios
            .iter()
            .filter(|s| s.caching)
            .map(|s| s.access_key_id.as_str())
            .collect();
        let mut opened: BTreeMap<String, usize> =
            expected_keys.iter().map(|k| ((*k).to_owned(), 0)).collect();
        let mut resolved = opened.clone();
        for alert in deployment.alerts().await? {
            let key = alert["alert"]["access_key_id"]
                .as_str()
                .unwrap_or("(none)")
                .to_owned();
            match alert["alert"]["kind"].as_str() {
                Some("opened") => *opened.entry(key).or_insert(0) += 1,
                Some("resolved") => *resolved.entry(key).or_insert(0) += 1,
                other => anyhow::bail!("{}: an unexpected alert kind {other:?}", cell.name),
            }
        }
        let observed = Observed {
            invocations: first.invocations,
            handed_back: handed_back.len(),
            faults_injected,
            counted,
            opened,
            resolved,
            seconds: started.elapsed().as_secs_f64(),
        };
        check(cell, &observed, &manifest).with_context(|| format!("{observed:?}"))?;
        Ok(observed)
    }
}

fn check(cell: &Cell, seen: &Observed, manifest: &Manifest) -> Result<()> {
    let name = cell.name;
    ensure!(seen.faults_injected > 0, "{name}: the fault never fired");
    match cell.redelivered {
        Redelivered::No => ensure!(
            seen.handed_back == 0,
            "{name}: {} messages handed back, expected none",
            seen.handed_back
        ),
        Redelivered::Yes => ensure!(
            seen.handed_back > 0,
            "{name}: expected the delivery to be handed back for a retry"
        ),
    }
    let expected = manifest.expired_token_errors as f64;
    match cell.counted {
        Delivered::ExactlyOnce => ensure!(
            seen.counted == expected,
            "{name}: counted {} expired-token errors, expected {expected}",
            seen.counted
        ),
        Delivered::AtLeastOnce => ensure!(
            seen.counted > expected,
            "{name}: counted {}, expected more than {expected} (a lost answer re-published)",
            seen.counted
        ),
    }
    let keys = manifest.scenarios.iter().filter(|s| s.caching).count();
    ensure!(
        seen.opened.len() == keys,
        "{name}: pages for {:?}, expected one per caching process",
        seen.opened
    );
    ensure!(
        seen.resolved.values().all(|n| *n == 1),
        "{name}: resolutions {:?}",
        seen.resolved
    );
    match cell.paged {
        Delivered::ExactlyOnce => ensure!(
            seen.opened.values().all(|n| *n == 1),
            "{name}: opened pages {:?}, expected each exactly once",
            seen.opened
        ),
        Delivered::AtLeastOnce => ensure!(
            seen.opened.values().all(|n| *n >= 1) && seen.opened.values().any(|n| *n > 1),
            "{name}: opened pages {:?}, expected one incident paged again by the lost answer",
            seen.opened
        ),
    }
    Ok(())
}

/// Runs a column of cells on one world and prints the table `docs/RELIABILITY.md` quotes.
async fn column(world_name: &'static str, cells: Vec<Cell>) -> Result<()> {
    let mut world = World::start(world_name).await?;
    let mut table = String::from(
        "| cell | invocations | handed back | faults | counted | pages (opened) | resolved | s |\n",
    );
    let mut problems = Vec::new();
    for cell in &cells {
        match world.run(cell).await {
            Ok(seen) => {
                let _ = writeln!(
                    table,
                    "| {} {} | {} | {} | {} | {} | {:?} | {:?} | {:.1} |",
                    cell.service,
                    cell.name,
                    seen.invocations,
                    seen.handed_back,
                    seen.faults_injected,
                    seen.counted,
                    seen.opened.values().collect::<Vec<_>>(),
                    seen.resolved.values().collect::<Vec<_>>(),
                    seen.seconds
                );
            }
            Err(e) => problems.push(format!("{} {}: {e:#}", cell.service, cell.name)),
        }
    }
    println!("{table}");
    ensure!(problems.is_empty(), "{}", problems.join("\n\n"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_faults_hand_the_message_back_and_lose_nothing() -> Result<()> {
    let once = Delivered::ExactlyOnce;
    // Reading is idempotent, so even a lost answer is just read again.
    let mut cells = faults_at(
        Service::S3,
        Some("GetObject"),
        Redelivered::Yes,
        (once, once),
    );
    // A missing permission or KMS key grant: no retry of the SDK's fixes it, but the message is not given
    // up on either; it waits (in the end in the dead-letter queue) for the policy to be fixed.
    cells.push(Cell {
        name: "access denied until fixed",
        service: Service::S3,
        operation: Some("GetObject"),
        skip: 0,
        fault: Fault::Deny,
        span: Span::Persistent,
        redelivered: Redelivered::Yes,
        counted: once,
        paged: once,
    });
    column("faults-s3", cells).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_faults_fail_the_delivery_and_the_retry_counts_once() -> Result<()> {
    let once = Delivered::ExactlyOnce;
    // From the first call (the claims) on; a lost claim answer is taken again by the SDK's retry.
    let mut cells = faults_at(Service::DynamoDb, None, Redelivered::Yes, (once, once));
    // An outage that starts after the claims: the state write and the release of the claims both fail,
    // and the redelivered message takes its own claims again.
    cells.push(Cell {
        name: "outage after the claims",
        service: Service::DynamoDb,
        operation: None,
        skip: 1,
        fault: Fault::Reset,
        span: Span::Persistent,
        redelivered: Redelivered::Yes,
        counted: once,
        paged: once,
    });
    column("faults-ddb", cells).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_faults_give_the_claims_back_and_count_once() -> Result<()> {
    let once = Delivered::ExactlyOnce;
    // PutMetricData has no idempotency key: a lost answer is published again by the SDK's retry.
    column(
        "faults-cw",
        faults_at(
            Service::CloudWatch,
            Some("PutMetricData"),
            Redelivered::Yes,
            (Delivered::AtLeastOnce, once),
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_faults_leave_the_alert_to_the_next_sweep_and_page_once() -> Result<()> {
    let once = Delivered::ExactlyOnce;
    // Counts and state are safe before an alert is sent, so nothing is handed back; SNS Publish has no
    // idempotency key, so a lost answer pages twice.
    let mut cells = faults_at(
        Service::Sns,
        Some("Publish"),
        Redelivered::No,
        (once, Delivered::AtLeastOnce),
    );
    cells.push(Cell {
        name: "down after the first page",
        service: Service::Sns,
        operation: Some("Publish"),
        skip: 1,
        fault: Fault::ServerError(503),
        span: Span::Persistent,
        redelivered: Redelivered::No,
        counted: once,
        paged: once,
    });
    column("faults-sns", cells).await
}
