//! Resources for the end-to-end tests and `make demo`, created from `infra/template.yaml` itself.
//!
//! The template is the one definition of the table's keys, the topic, the ingest queue and its
//! dead-letter queue, the SQS event source mapping, the EventBridge rule and the function's
//! environment. [`Template`] parses it (CloudFormation short-form tags such as `!Ref` arrive as
//! [`serde_yaml::Value::Tagged`]) and [`Evaluator`] resolves the intrinsic functions those parts use,
//! so a change to the template changes what the tests create. [`Deployment`] creates the parts in
//! the local emulator and offers what AWS would otherwise do between them: receive the ingest queue
//! as the event source mapping does, shape the Lambda SQS event, delete what the function did not
//! report as failed, and read back what reached the on-call topic.
//!
//! What a local deployment does not reproduce, on purpose: encryption (the stack's KMS key), tags,
//! point-in-time recovery, IAM policies (moto enforces none), and the physical names the template
//! leaves to CloudFormation (a [`Deployment`] derives its own from a name).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, QueueAttributeName,
};
use serde_json::{Map, Value as Json, json};
use serde_yaml::{Mapping, Value as Yaml};

/// Logical ids in `infra/template.yaml` that the end-to-end tests rely on.
pub mod logical {
    /// The DynamoDB table with incident state.
    pub const STATE_TABLE: &str = "StateTable";
    /// The on-call SNS topic.
    pub const ALERT_TOPIC: &str = "AlertTopic";
    /// The SQS queue that receives the trail bucket's notifications (`Source=s3`).
    pub const INGEST_QUEUE: &str = "IngestQueue";
    /// The function (`AWS::Serverless::Function`).
    pub const FUNCTION: &str = "Function";
    /// The EventBridge rule for CloudTrail API calls (`Source=eventbridge`).
    pub const CLOUDTRAIL_RULE: &str = "CloudTrailRule";
}

/// The template of this repository, `infra/template.yaml`.
pub fn repository_template_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("infra")
        .join("template.yaml")
}

// ------------------------------------------------------------------------------------------------
// bindings

/// A resource created outside CloudFormation: what `Ref` returns and what `GetAtt` attributes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Physical {
    /// The value of `!Ref Resource` (a table name, a topic ARN, a queue URL...).
    pub reference: String,
    /// The values of `!GetAtt Resource.Attribute`, by attribute.
    pub attributes: BTreeMap<String, String>,
}

impl Physical {
    pub fn new(reference: impl Into<String>) -> Physical {
        Physical {
            reference: reference.into(),
            attributes: BTreeMap::new(),
        }
    }

    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Physical {
        self.attributes.insert(name.into(), value.into());
        self
    }
}

/// Everything the template's intrinsic functions resolve against: parameter values (overriding the
/// template's `Default`), resources created locally, and the pseudo parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bindings {
    pub parameters: BTreeMap<String, String>,
    pub resources: BTreeMap<String, Physical>,
    pub region: String,
    pub account_id: String,
    pub partition: String,
    pub stack_name: String,
}

impl Default for Bindings {
    /// Default parameters, no resources, and the emulator's region and account.
    fn default() -> Bindings {
        Bindings {
            parameters: BTreeMap::new(),
            resources: BTreeMap::new(),
            region: tokenwatch_testkit::REGION.to_owned(),
            account_id: tokenwatch_testkit::ACCOUNT_ID.to_owned(),
            partition: "aws".to_owned(),
            stack_name: "tokenwatch".to_owned(),
        }
    }
}

impl Bindings {
    /// Sets a parameter (`Source=s3`...).
    pub fn parameter(mut self, name: impl Into<String>, value: impl Into<String>) -> Bindings {
        self.parameters.insert(name.into(), value.into());
        self
    }

    /// Binds a logical id to a locally created resource.
    pub fn resource(mut self, logical_id: impl Into<String>, physical: Physical) -> Bindings {
        self.resources.insert(logical_id.into(), physical);
        self
    }
}

// ------------------------------------------------------------------------------------------------
// the template

/// A parsed CloudFormation (SAM) template.
#[derive(Debug, Clone)]
pub struct Template {
    origin: String,
    root: Mapping,
}

/// The state table as the template defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub logical_id: String,
    /// (attribute name, `S` | `N` | `B`).
    pub attribute_definitions: Vec<(String, String)>,
    /// (attribute name, `HASH` | `RANGE`), in the template's order.
    pub key_schema: Vec<(String, String)>,
    /// The TTL attribute, when the template enables TTL.
    pub ttl_attribute: Option<String>,
    /// `PAY_PER_REQUEST` or `PROVISIONED` (CloudFormation's default when absent).
    pub billing_mode: String,
    /// (read, write) capacity units, for `PROVISIONED`.
    pub provisioned_throughput: Option<(i64, i64)>,
}

/// The on-call topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub logical_id: String,
    pub display_name: Option<String>,
}

/// An SQS queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub logical_id: String,
    pub visibility_timeout: Option<u32>,
    pub message_retention_period: Option<u32>,
    pub redrive: Option<RedriveSpec>,
}

/// A queue's `RedrivePolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveSpec {
    /// The logical id of the dead-letter queue (`deadLetterTargetArn: !GetAtt X.Arn`).
    pub dead_letter_logical_id: String,
    pub max_receive_count: u32,
}

/// The S3 ingest queue and its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestSpec {
    pub queue: QueueSpec,
    pub dead_letter: QueueSpec,
}

/// The SQS event source mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSourceMappingSpec {
    pub logical_id: String,
    /// The logical id of the queue it reads (`EventSourceArn: !GetAtt X.Arn`), when it names one.
    pub queue_logical_id: Option<String>,
    /// `BatchSize`, or Lambda's default for SQS (10) when the template sets none.
    pub batch_size: usize,
    pub function_response_types: Vec<String>,
    pub maximum_batching_window_seconds: Option<u32>,
    pub maximum_concurrency: Option<u32>,
}

/// A scheduled EventBridge rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    pub logical_id: String,
    pub expression: String,
    pub state: Option<String>,
}

/// Properties of a table that a local deployment reproduces, and those it leaves out on purpose.
/// Anything else is an error, so a new property in the template is not silently ignored.
const TABLE_PROPERTIES: &[&str] = &[
    "AttributeDefinitions",
    "KeySchema",
    "TimeToLiveSpecification",
    "BillingMode",
    "ProvisionedThroughput",
];
const TABLE_PROPERTIES_SKIPPED: &[&str] = &[
    "TableName",
    "SSESpecification",
    "PointInTimeRecoverySpecification",
    "Tags",
    "DeletionProtectionEnabled",
    "ContributorInsightsSpecification",
    "TableClass",
];
const TOPIC_PROPERTIES: &[&str] = &["DisplayName"];
const TOPIC_PROPERTIES_SKIPPED: &[&str] = &["TopicName", "KmsMasterKeyId", "Tags"];
/// Queue properties and the SQS attribute each one sets.
const QUEUE_PROPERTIES: &[(&str, &str)] = &[
    ("VisibilityTimeout", "VisibilityTimeout"),
    ("MessageRetentionPeriod", "MessageRetentionPeriod"),
    ("DelaySeconds", "DelaySeconds"),
    ("MaximumMessageSize", "MaximumMessageSize"),
    (
        "ReceiveMessageWaitTimeSeconds",
        "ReceiveMessageWaitTimeSeconds",
    ),
    ("RedrivePolicy", "RedrivePolicy"),
    ("RedriveAllowPolicy", "RedriveAllowPolicy"),
];
const QUEUE_PROPERTIES_SKIPPED: &[&str] = &[
    "QueueName",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "Tags",
];

impl Template {
    /// Reads and parses a template file.
    pub fn load(path: &Path) -> Result<Template> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading template {}", path.display()))?;
        Template::parse_named(&text, &path.display().to_string())
    }

    /// `infra/template.yaml` of this repository.
    pub fn load_repository() -> Result<Template> {
        Template::load(&repository_template_path())
    }

    /// Parses template text.
    pub fn parse(text: &str) -> Result<Template> {
        Template::parse_named(text, "inline template")
    }

    fn parse_named(text: &str, origin: &str) -> Result<Template> {
        let value: Yaml =
            serde_yaml::from_str(text).with_context(|| format!("parsing {origin} as YAML"))?;
        let Yaml::Mapping(root) = value else {
            bail!("{origin}: the template is not a mapping");
        };
        let template = Template {
            origin: origin.to_owned(),
            root,
        };
        ensure!(
            template.section("Resources").is_some(),
            "{origin}: the template has no Resources"
        );
        Ok(template)
    }

    /// A top-level section (`Parameters`, `Conditions`, `Mappings`, `Resources`...).
    pub fn section(&self, name: &str) -> Option<&Mapping> {
        self.root.get(name).and_then(Yaml::as_mapping)
    }

    /// A resource's raw definition.
    pub fn resource(&self, logical_id: &str) -> Option<&Mapping> {
        self.section("Resources")?
            .get(logical_id)
            .and_then(Yaml::as_mapping)
    }

    /// A resource's `Type`.
    pub fn resource_type(&self, logical_id: &str) -> Option<&str> {
        self.resource(logical_id)?
            .get("Type")
            .and_then(Yaml::as_str)
    }

    /// The logical ids of all resources, in template order.
    pub fn logical_ids(&self) -> Vec<String> {
        self.section("Resources")
            .map(|r| {
                r.keys()
                    .filter_map(Yaml::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An evaluator of this template's intrinsic functions under `bindings`.
    pub fn evaluator<'a>(&'a self, bindings: &'a Bindings) -> Result<Evaluator<'a>> {
        Evaluator::new(self, bindings)
    }

    /// The state table (`StateTable`): keys, attribute definitions, TTL.
    pub fn state_table(&self) -> Result<TableSpec> {
        self.state_table_with(&Bindings::default())
    }

    /// [`Template::state_table`] under other bindings.
    pub fn state_table_with(&self, bindings: &Bindings) -> Result<TableSpec> {
        let eval = self.evaluator(bindings)?;
        let id = logical::STATE_TABLE;
        eval.require_present(id, "AWS::DynamoDB::Table")?;
        eval.check_properties(id, TABLE_PROPERTIES, TABLE_PROPERTIES_SKIPPED)?;
        let pairs = |property: &str, first: &str, second: &str| -> Result<Vec<(String, String)>> {
            let value = eval
                .property(id, &[property])?
                .with_context(|| format!("{id} has no {property}"))?;
            let items = value
                .as_array()
                .with_context(|| format!("{id}.{property} is not a list"))?;
            items
                .iter()
                .map(|item| {
                    let field = |name: &str| {
                        item.get(name)
                            .map(|v| scalar_string(v, &format!("{id}.{property}[].{name}")))
                            .transpose()?
                            .with_context(|| format!("{id}.{property}[] has no {name}"))
                    };
                    Ok((field(first)?, field(second)?))
                })
                .collect()
        };
        let attribute_definitions =
            pairs("AttributeDefinitions", "AttributeName", "AttributeType")?;
        let key_schema = pairs("KeySchema", "AttributeName", "KeyType")?;
        let ttl_attribute = match eval.property(id, &["TimeToLiveSpecification"])? {
            Some(ttl) => {
                let enabled = match ttl.get("Enabled") {
                    Some(v) => scalar_string(v, "TimeToLiveSpecification.Enabled")? == "true",
                    None => false,
                };
                let attribute = ttl
                    .get("AttributeName")
                    .map(|v| scalar_string(v, "TimeToLiveSpecification.AttributeName"))
                    .transpose()?;
                if enabled { attribute } else { None }
            }
            None => None,
        };
        let billing_mode = eval
            .property(id, &["BillingMode"])?
            .map(|v| scalar_string(&v, "BillingMode"))
            .transpose()?
            .unwrap_or_else(|| "PROVISIONED".to_owned());
        let provisioned_throughput = match eval.property(id, &["ProvisionedThroughput"])? {
            Some(pt) => {
                let units = |name: &str| -> Result<i64> {
                    let v = pt
                        .get(name)
                        .with_context(|| format!("{id}.ProvisionedThroughput has no {name}"))?;
                    scalar_string(v, name)?
                        .parse()
                        .with_context(|| format!("{id}.ProvisionedThroughput.{name}"))
                };
                Some((units("ReadCapacityUnits")?, units("WriteCapacityUnits")?))
            }
            None => None,
        };
        Ok(TableSpec {
            logical_id: id.to_owned(),
            attribute_definitions,
            key_schema,
            ttl_attribute,
            billing_mode,
            provisioned_throughput,
        })
    }

    /// The on-call topic (`AlertTopic`).
    pub fn alert_topic(&self) -> Result<TopicSpec> {
        self.alert_topic_with(&Bindings::default())
    }

    /// [`Template::alert_topic`] under other bindings.
    pub fn alert_topic_with(&self, bindings: &Bindings) -> Result<TopicSpec> {
        let eval = self.evaluator(bindings)?;
        let id = logical::ALERT_TOPIC;
        eval.require_present(id, "AWS::SNS::Topic")?;
        eval.check_properties(id, TOPIC_PROPERTIES, TOPIC_PROPERTIES_SKIPPED)?;
        let display_name = eval
            .property(id, &["DisplayName"])?
            .map(|v| scalar_string(&v, "DisplayName"))
            .transpose()?;
        Ok(TopicSpec {
            logical_id: id.to_owned(),
            display_name,
        })
    }

    /// The S3 ingest queue and its dead-letter queue, as created with `Source=s3`.
    pub fn ingest(&self) -> Result<IngestSpec> {
        self.ingest_with(&s3_bindings())?
            .context("the template creates no ingest queue with Source=s3")
    }

    /// The S3 ingest queue and its dead-letter queue; `None` when the bindings do not create them
    /// (any `Source` but `s3`).
    pub fn ingest_with(&self, bindings: &Bindings) -> Result<Option<IngestSpec>> {
        let eval = self.evaluator(bindings)?;
        let id = logical::INGEST_QUEUE;
        if !eval.resource_present(id)? {
            return Ok(None);
        }
        let queue = eval.queue_spec(id)?;
        let redrive = queue
            .redrive
            .as_ref()
            .with_context(|| format!("{id} has no RedrivePolicy"))?;
        let dead_letter = eval.queue_spec(&redrive.dead_letter_logical_id)?;
        Ok(Some(IngestSpec { queue, dead_letter }))
    }

    /// The SQS attributes a queue is created with (`VisibilityTimeout`, `RedrivePolicy` as JSON
    /// text...), evaluated under `bindings` (which must bind a dead-letter queue it names).
    pub fn queue_attributes(
        &self,
        logical_id: &str,
        bindings: &Bindings,
    ) -> Result<BTreeMap<String, String>> {
        let eval = self.evaluator(bindings)?;
        eval.require_present(logical_id, "AWS::SQS::Queue")?;
        let known: Vec<&str> = QUEUE_PROPERTIES.iter().map(|(p, _)| *p).collect();
        eval.check_properties(logical_id, &known, QUEUE_PROPERTIES_SKIPPED)?;
        let mut attributes = BTreeMap::new();
        for (property, attribute) in QUEUE_PROPERTIES {
            let Some(value) = eval.property(logical_id, &[property])? else {
                continue;
            };
            let text = match &value {
                Json::Object(_) => value.to_string(),
                other => scalar_string(other, &format!("{logical_id}.{property}"))?,
            };
            attributes.insert((*attribute).to_owned(), text);
        }
        Ok(attributes)
    }

    /// The SQS event source mapping, as created with `Source=s3`.
    pub fn event_source_mapping(&self) -> Result<EventSourceMappingSpec> {
        self.event_source_mapping_with(&s3_bindings())?
            .context("the template creates no event source mapping with Source=s3")
    }

    /// The SQS event source mapping (whichever `AWS::Lambda::EventSourceMapping` the bindings
    /// create); `None` when there is none.
    pub fn event_source_mapping_with(
        &self,
        bindings: &Bindings,
    ) -> Result<Option<EventSourceMappingSpec>> {
        let eval = self.evaluator(bindings)?;
        let mut found = Vec::new();
        for id in self.logical_ids() {
            if self.resource_type(&id) == Some("AWS::Lambda::EventSourceMapping")
                && eval.resource_present(&id)?
            {
                found.push(id);
            }
        }
        let id = match found.as_slice() {
            [] => return Ok(None),
            [one] => one.clone(),
            many => bail!("more than one event source mapping: {}", many.join(", ")),
        };
        let number = |name: &str, path: &[&str]| -> Result<Option<u32>> {
            eval.property(&id, path)?
                .map(|v| json_u32(&v, &format!("{id}.{name}")))
                .transpose()
        };
        let function_response_types = match eval.property(&id, &["FunctionResponseTypes"])? {
            Some(Json::Array(items)) => items
                .iter()
                .map(|v| scalar_string(v, "FunctionResponseTypes[]"))
                .collect::<Result<Vec<_>>>()?,
            Some(other) => bail!("{id}.FunctionResponseTypes is not a list: {other}"),
            None => Vec::new(),
        };
        let queue_logical_id = self
            .raw_property(&id, &["EventSourceArn"])
            .and_then(get_att_target);
        Ok(Some(EventSourceMappingSpec {
            batch_size: number("BatchSize", &["BatchSize"])?
                .map_or(SQS_DEFAULT_BATCH_SIZE, |n| n as usize),
            function_response_types,
            maximum_batching_window_seconds: number(
                "MaximumBatchingWindowInSeconds",
                &["MaximumBatchingWindowInSeconds"],
            )?,
            maximum_concurrency: number(
                "ScalingConfig.MaximumConcurrency",
                &["ScalingConfig", "MaximumConcurrency"],
            )?,
            queue_logical_id,
            logical_id: id,
        }))
    }

    /// The CloudTrail rule's event pattern (`CloudTrailRule.Properties.EventPattern`) with the
    /// default parameters.
    pub fn event_pattern(&self) -> Result<Json> {
        self.event_pattern_with(&Bindings::default())?
            .context("the template creates no CloudTrail rule with its default parameters")
    }

    /// The CloudTrail rule's event pattern; `None` when the bindings do not create the rule (any
    /// `Source` but `eventbridge`).
    pub fn event_pattern_with(&self, bindings: &Bindings) -> Result<Option<Json>> {
        let eval = self.evaluator(bindings)?;
        let id = logical::CLOUDTRAIL_RULE;
        if !eval.resource_present(id)? {
            return Ok(None);
        }
        let pattern = eval
            .property(id, &["EventPattern"])?
            .with_context(|| format!("{id} has no EventPattern"))?;
        // CloudFormation accepts the pattern as an object or as JSON text.
        let pattern = match pattern {
            Json::String(text) => serde_json::from_str(&text)
                .with_context(|| format!("{id}.EventPattern is not JSON"))?,
            other => other,
        };
        ensure!(pattern.is_object(), "{id}.EventPattern is not an object");
        Ok(Some(pattern))
    }

    /// The schedule with the default parameters.
    pub fn schedule(&self) -> Result<ScheduleSpec> {
        self.schedule_with(&Bindings::default())?
            .context("the template creates no scheduled rule with its default parameters")
    }

    /// The schedule: the rule with a `ScheduleExpression` that the bindings create; `None` when
    /// there is none (an empty `SweepSchedule`).
    pub fn schedule_with(&self, bindings: &Bindings) -> Result<Option<ScheduleSpec>> {
        let eval = self.evaluator(bindings)?;
        let mut found = Vec::new();
        for id in self.logical_ids() {
            if self.resource_type(&id) != Some("AWS::Events::Rule")
                || !eval.resource_present(&id)?
            {
                continue;
            }
            if let Some(expression) = eval.property(&id, &["ScheduleExpression"])? {
                let expression = scalar_string(&expression, &format!("{id}.ScheduleExpression"))?;
                let state = eval
                    .property(&id, &["State"])?
                    .map(|v| scalar_string(&v, "State"))
                    .transpose()?;
                found.push(ScheduleSpec {
                    logical_id: id,
                    expression,
                    state,
                });
            }
        }
        match found.len() {
            0 | 1 => Ok(found.pop()),
            _ => bail!(
                "more than one scheduled rule: {}",
                found
                    .iter()
                    .map(|s| s.logical_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The function's environment (`Function.Properties.Environment.Variables`), sorted by name.
    /// The bindings must bind the resources it names (the state table, the topic).
    pub fn function_environment(&self, bindings: &Bindings) -> Result<Vec<(String, String)>> {
        let eval = self.evaluator(bindings)?;
        let id = logical::FUNCTION;
        eval.require_present(id, "AWS::Serverless::Function")?;
        let variables = eval
            .property(id, &["Environment", "Variables"])?
            .with_context(|| format!("{id} has no Environment.Variables"))?;
        let Json::Object(variables) = variables else {
            bail!("{id}.Environment.Variables is not a mapping");
        };
        variables
            .iter()
            .map(|(name, value)| Ok((name.clone(), scalar_string(value, name)?)))
            .collect()
    }

    /// A property's raw (unevaluated) value.
    fn raw_property(&self, logical_id: &str, path: &[&str]) -> Option<&Yaml> {
        let mut node = self.resource(logical_id)?.get("Properties")?;
        for key in path {
            node = node.as_mapping()?.get(*key)?;
        }
        Some(node)
    }
}

/// Lambda's default `BatchSize` for an SQS event source.
pub const SQS_DEFAULT_BATCH_SIZE: usize = 10;

/// Default parameters but `Source=s3` (and a placeholder `TrailBucketName`, which `Source=s3`
/// requires).
fn s3_bindings() -> Bindings {
    Bindings::default()
        .parameter("Source", "s3")
        .parameter("TrailBucketName", "trail")
}

/// The logical id named by `!GetAtt X.Arn` (or `{"Fn::GetAtt": [X, Arn]}`).
fn get_att_target(value: &Yaml) -> Option<String> {
    let (name, argument) = intrinsic(value)?;
    if name != "Fn::GetAtt" {
        return None;
    }
    match argument {
        Yaml::String(s) => s.split_once('.').map(|(id, _)| id.to_owned()),
        Yaml::Sequence(items) => items.first()?.as_str().map(str::to_owned),
        _ => None,
    }
}

// ------------------------------------------------------------------------------------------------
// the evaluator

/// Resolves a template's intrinsic functions under [`Bindings`]: `Ref` (parameters, pseudo
/// parameters, bound resources), `Fn::GetAtt`, `Fn::Join`, `Fn::Split`, `Fn::Select`, `Fn::Sub`,
/// `Fn::FindInMap`, `Fn::If` and the condition functions. Any other intrinsic is an error naming it.
/// `!Ref AWS::NoValue` removes the key or list item it stands for.
#[derive(Debug)]
pub struct Evaluator<'a> {
    template: &'a Template,
    bindings: &'a Bindings,
    parameters: BTreeMap<String, Json>,
}

/// The intrinsic function a node is, if any: a short-form tag or a one-key long-form mapping.
fn intrinsic(value: &Yaml) -> Option<(String, &Yaml)> {
    match value {
        Yaml::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let tag = tag.trim_start_matches('!');
            let name = match tag {
                "Ref" | "Condition" => tag.to_owned(),
                other => format!("Fn::{other}"),
            };
            Some((name, &tagged.value))
        }
        Yaml::Mapping(map) if map.len() == 1 => {
            let (key, argument) = map.iter().next()?;
            let key = key.as_str()?;
            (key == "Ref" || key.starts_with("Fn::")).then(|| (key.to_owned(), argument))
        }
        _ => None,
    }
}

impl<'a> Evaluator<'a> {
    fn new(template: &'a Template, bindings: &'a Bindings) -> Result<Evaluator<'a>> {
        let declared = template.section("Parameters");
        for name in bindings.parameters.keys() {
            ensure!(
                declared.is_some_and(|d| d.contains_key(name.as_str())),
                "{}: no parameter {name}",
                template.origin
            );
        }
        let mut parameters = BTreeMap::new();
        for (name, definition) in declared.into_iter().flatten() {
            let name = name
                .as_str()
                .with_context(|| format!("{}: a parameter name is not text", template.origin))?;
            let list = definition
                .get("Type")
                .and_then(Yaml::as_str)
                .is_some_and(|t| t == "CommaDelimitedList" || t.starts_with("List<"));
            let text = match bindings.parameters.get(name) {
                Some(value) => {
                    if let Some(allowed) =
                        definition.get("AllowedValues").and_then(Yaml::as_sequence)
                    {
                        let allowed = allowed
                            .iter()
                            .map(|v| yaml_scalar_string(v, name))
                            .collect::<Result<Vec<_>>>()?;
                        ensure!(
                            allowed.contains(value),
                            "parameter {name}={value} is not one of {}",
                            allowed.join(", ")
                        );
                    }
                    value.clone()
                }
                None => match definition.get("Default") {
                    Some(default) => yaml_scalar_string(default, name)?,
                    // Referencing it is the error, not declaring it.
                    None => continue,
                },
            };
            let value = if list {
                Json::Array(
                    text.split(',')
                        .map(|s| Json::String(s.to_owned()))
                        .collect(),
                )
            } else {
                Json::String(text)
            };
            parameters.insert(name.to_owned(), value);
        }
        Ok(Evaluator {
            template,
            bindings,
            parameters,
        })
    }

    /// A parameter's value (a string, or a list for list types).
    pub fn parameter(&self, name: &str) -> Result<&Json> {
        if let Some(value) = self.parameters.get(name) {
            return Ok(value);
        }
        if self
            .template
            .section("Parameters")
            .is_some_and(|p| p.contains_key(name))
        {
            bail!("parameter {name} has no Default and no value was given");
        }
        bail!("no parameter {name}")
    }

    /// Evaluates a node; `None` is `!Ref AWS::NoValue`.
    pub fn eval(&self, value: &Yaml) -> Result<Option<Json>> {
        if let Some((name, argument)) = intrinsic(value) {
            return self.function(&name, argument);
        }
        Ok(Some(match value {
            Yaml::Null => Json::Null,
            Yaml::Bool(b) => Json::Bool(*b),
            Yaml::Number(n) => yaml_number(n)?,
            Yaml::String(s) => Json::String(s.clone()),
            Yaml::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    if let Some(v) = self.eval(item)? {
                        out.push(v);
                    }
                }
                Json::Array(out)
            }
            Yaml::Mapping(map) => {
                let mut out = Map::new();
                for (key, item) in map {
                    let key = yaml_scalar_string(key, "a mapping key")?;
                    if let Some(v) = self.eval(item)? {
                        out.insert(key, v);
                    }
                }
                Json::Object(out)
            }
            Yaml::Tagged(tagged) => bail!("unsupported YAML tag {}", tagged.tag),
        }))
    }

    /// Evaluates a node that must produce a value.
    fn value(&self, value: &Yaml, what: &str) -> Result<Json> {
        self.eval(value)?
            .with_context(|| format!("{what} is AWS::NoValue"))
    }

    fn string(&self, value: &Yaml, what: &str) -> Result<String> {
        scalar_string(&self.value(value, what)?, what)
    }

    fn arguments<'y>(
        &self,
        function: &str,
        argument: &'y Yaml,
        count: usize,
    ) -> Result<&'y [Yaml]> {
        match argument.as_sequence() {
            Some(items) if items.len() == count => Ok(items),
            _ => bail!("{function} takes a list of {count}"),
        }
    }

    fn function(&self, name: &str, argument: &Yaml) -> Result<Option<Json>> {
        let result = match name {
            "Ref" => {
                let target = argument.as_str().context("Ref takes a name")?;
                return self.reference(target);
            }
            "Fn::GetAtt" => {
                let (id, attribute) = match argument {
                    Yaml::String(s) => {
                        let (id, attribute) = s
                            .split_once('.')
                            .with_context(|| format!("Fn::GetAtt {s}: not Resource.Attribute"))?;
                        (id.to_owned(), attribute.to_owned())
                    }
                    Yaml::Sequence(items) if items.len() == 2 => (
                        self.string(&items[0], "Fn::GetAtt resource")?,
                        self.string(&items[1], "Fn::GetAtt attribute")?,
                    ),
                    _ => bail!("Fn::GetAtt takes Resource.Attribute or [Resource, Attribute]"),
                };
                Json::String(self.attribute(&id, &attribute)?)
            }
            "Fn::Join" => {
                let items = self.arguments(name, argument, 2)?;
                let delimiter = self.string(&items[0], "Fn::Join delimiter")?;
                let list = self.value(&items[1], "Fn::Join list")?;
                let parts = list
                    .as_array()
                    .context("Fn::Join: the second argument is not a list")?
                    .iter()
                    .map(|v| scalar_string(v, "Fn::Join item"))
                    .collect::<Result<Vec<_>>>()?;
                Json::String(parts.join(&delimiter))
            }
            "Fn::Split" => {
                let items = self.arguments(name, argument, 2)?;
                let delimiter = self.string(&items[0], "Fn::Split delimiter")?;
                ensure!(!delimiter.is_empty(), "Fn::Split: empty delimiter");
                let source = self.string(&items[1], "Fn::Split source")?;
                Json::Array(
                    source
                        .split(delimiter.as_str())
                        .map(|s| Json::String(s.to_owned()))
                        .collect(),
                )
            }
            "Fn::Select" => {
                let items = self.arguments(name, argument, 2)?;
                let index: usize = self
                    .string(&items[0], "Fn::Select index")?
                    .parse()
                    .context("Fn::Select: the index is not a number")?;
                let list = self.value(&items[1], "Fn::Select list")?;
                let list = list.as_array().context("Fn::Select: not a list")?;
                list.get(index)
                    .cloned()
                    .with_context(|| format!("Fn::Select: no item {index} in {}", list.len()))?
            }
            "Fn::Sub" => {
                let (text, variables) = match argument {
                    Yaml::String(text) => (text.clone(), BTreeMap::new()),
                    Yaml::Sequence(items) if items.len() == 2 => {
                        let text = items[0]
                            .as_str()
                            .context("Fn::Sub: the first argument is not text")?
                            .to_owned();
                        let map = items[1]
                            .as_mapping()
                            .context("Fn::Sub: the second argument is not a mapping")?;
                        let mut variables = BTreeMap::new();
                        for (key, value) in map {
                            let key = yaml_scalar_string(key, "Fn::Sub variable")?;
                            let value = self.string(value, &format!("Fn::Sub variable {key}"))?;
                            variables.insert(key, value);
                        }
                        (text, variables)
                    }
                    _ => bail!("Fn::Sub takes text or [text, variables]"),
                };
                Json::String(self.substitute(&text, &variables)?)
            }
            "Fn::FindInMap" => {
                let items = self.arguments(name, argument, 3)?;
                let map_name = self.string(&items[0], "Fn::FindInMap map")?;
                let top = self.string(&items[1], "Fn::FindInMap top-level key")?;
                let second = self.string(&items[2], "Fn::FindInMap second-level key")?;
                let found = self
                    .template
                    .section("Mappings")
                    .and_then(|m| m.get(map_name.as_str()))
                    .and_then(|m| m.get(top.as_str()))
                    .and_then(|m| m.get(second.as_str()))
                    .with_context(|| format!("Fn::FindInMap: no {map_name}.{top}.{second}"))?;
                self.value(found, "Fn::FindInMap value")?
            }
            "Fn::If" => {
                let items = self.arguments(name, argument, 3)?;
                let condition = items[0].as_str().context("Fn::If: not a condition name")?;
                let branch = if self.condition(condition)? {
                    &items[1]
                } else {
                    &items[2]
                };
                return self.eval(branch);
            }
            "Fn::Equals" | "Fn::Not" | "Fn::And" | "Fn::Or" | "Condition" => {
                Json::Bool(self.condition_function(name, argument, &mut Vec::new())?)
            }
            other => bail!("unsupported intrinsic function {other}"),
        };
        Ok(Some(result))
    }

    fn reference(&self, target: &str) -> Result<Option<Json>> {
        let b = self.bindings;
        let pseudo = match target {
            "AWS::NoValue" => return Ok(None),
            "AWS::Region" => Some(b.region.clone()),
            "AWS::AccountId" => Some(b.account_id.clone()),
            "AWS::Partition" => Some(b.partition.clone()),
            "AWS::StackName" => Some(b.stack_name.clone()),
            "AWS::URLSuffix" => Some("amazonaws.com".to_owned()),
            "AWS::StackId" => Some(format!(
                "arn:{}:cloudformation:{}:{}:stack/{}/local",
                b.partition, b.region, b.account_id, b.stack_name
            )),
            "AWS::NotificationARNs" => return Ok(Some(Json::Array(Vec::new()))),
            other if other.starts_with("AWS::") => bail!("unsupported pseudo parameter {other}"),
            _ => None,
        };
        if let Some(value) = pseudo {
            return Ok(Some(Json::String(value)));
        }
        if self
            .template
            .section("Parameters")
            .is_some_and(|p| p.contains_key(target))
        {
            return Ok(Some(self.parameter(target)?.clone()));
        }
        if let Some(physical) = b.resources.get(target) {
            return Ok(Some(Json::String(physical.reference.clone())));
        }
        if self.template.resource(target).is_some() {
            bail!("Ref {target}: the resource is not bound to a physical resource");
        }
        bail!("Ref {target}: no such parameter or resource")
    }

    fn attribute(&self, logical_id: &str, attribute: &str) -> Result<String> {
        match self.bindings.resources.get(logical_id) {
            Some(physical) => physical
                .attributes
                .get(attribute)
                .cloned()
                .with_context(|| {
                    format!("Fn::GetAtt {logical_id}.{attribute}: attribute not bound")
                }),
            None if self.template.resource(logical_id).is_some() => {
                bail!("Fn::GetAtt {logical_id}.{attribute}: the resource is not bound")
            }
            None => bail!("Fn::GetAtt {logical_id}.{attribute}: no such resource"),
        }
    }

    /// `Fn::Sub` text: `${Name}`, `${Resource.Attribute}`, `${AWS::Region}`, `${!Literal}`.
    fn substitute(&self, text: &str, variables: &BTreeMap<String, String>) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .with_context(|| format!("Fn::Sub: unclosed ${{ in {text:?}"))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(value) = variables.get(name) {
                out.push_str(value);
            } else if let Some((id, attribute)) = name
                .split_once('.')
                .filter(|(id, _)| !id.starts_with("AWS::"))
            {
                out.push_str(&self.attribute(id, attribute)?);
            } else {
                let value = self
                    .reference(name)?
                    .with_context(|| format!("Fn::Sub: ${{{name}}} is AWS::NoValue"))?;
                out.push_str(&scalar_string(&value, name)?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Whether a named condition of the template holds.
    pub fn condition(&self, name: &str) -> Result<bool> {
        self.named_condition(name, &mut Vec::new())
    }

    fn named_condition(&self, name: &str, visiting: &mut Vec<String>) -> Result<bool> {
        ensure!(
            !visiting.iter().any(|v| v == name),
            "condition {name} refers to itself through {}",
            visiting.join(" → ")
        );
        let definition = self
            .template
            .section("Conditions")
            .and_then(|c| c.get(name))
            .with_context(|| format!("no condition {name}"))?;
        visiting.push(name.to_owned());
        let result = self
            .condition_expression(definition, visiting)
            .with_context(|| format!("condition {name}"));
        visiting.pop();
        result
    }

    fn condition_expression(&self, value: &Yaml, visiting: &mut Vec<String>) -> Result<bool> {
        // `{Condition: Name}` is an intrinsic only inside condition functions.
        if let Some(map) = value.as_mapping()
            && map.len() == 1
            && let Some(Yaml::String(target)) = map.get("Condition")
        {
            return self.named_condition(target, visiting);
        }
        let (name, argument) = intrinsic(value).context("not a condition function")?;
        self.condition_function(&name, argument, visiting)
    }

    fn condition_function(
        &self,
        name: &str,
        argument: &Yaml,
        visiting: &mut Vec<String>,
    ) -> Result<bool> {
        match name {
            "Fn::Equals" => {
                let items = self.arguments(name, argument, 2)?;
                let a = self.value(&items[0], "Fn::Equals argument")?;
                let b = self.value(&items[1], "Fn::Equals argument")?;
                Ok(match (scalar_string(&a, ""), scalar_string(&b, "")) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => a == b,
                })
            }
            "Fn::Not" => {
                let items = self.arguments(name, argument, 1)?;
                Ok(!self.condition_expression(&items[0], visiting)?)
            }
            "Fn::And" | "Fn::Or" => {
                let items = argument
                    .as_sequence()
                    .filter(|items| (2..=10).contains(&items.len()))
                    .with_context(|| format!("{name} takes a list of 2 to 10 conditions"))?;
                let mut results = Vec::with_capacity(items.len());
                for item in items {
                    results.push(self.condition_expression(item, visiting)?);
                }
                Ok(if name == "Fn::And" {
                    results.iter().all(|r| *r)
                } else {
                    results.iter().any(|r| *r)
                })
            }
            "Condition" => {
                let target = argument.as_str().context("Condition takes a name")?;
                self.named_condition(target, visiting)
            }
            other => bail!("{other} is not a condition function"),
        }
    }

    /// Whether the bindings create a resource (it exists and its `Condition`, if any, holds).
    pub fn resource_present(&self, logical_id: &str) -> Result<bool> {
        let Some(resource) = self.template.resource(logical_id) else {
            return Ok(false);
        };
        match resource.get("Condition") {
            None => Ok(true),
            Some(condition) => {
                let condition = condition
                    .as_str()
                    .with_context(|| format!("{logical_id}: Condition is not a name"))?;
                self.condition(condition)
            }
        }
    }

    fn require_present(&self, logical_id: &str, expected_type: &str) -> Result<()> {
        let actual = self
            .template
            .resource_type(logical_id)
            .with_context(|| format!("{}: no resource {logical_id}", self.template.origin))?;
        ensure!(
            actual == expected_type,
            "{logical_id} is a {actual}, not a {expected_type}"
        );
        ensure!(
            self.resource_present(logical_id)?,
            "{logical_id} is not created with these parameters"
        );
        Ok(())
    }

    fn check_properties(&self, logical_id: &str, known: &[&str], skipped: &[&str]) -> Result<()> {
        let properties = self
            .template
            .resource(logical_id)
            .and_then(|r| r.get("Properties"))
            .and_then(Yaml::as_mapping);
        for key in properties.into_iter().flat_map(Mapping::keys) {
            let key = key.as_str().unwrap_or_default();
            ensure!(
                known.contains(&key) || skipped.contains(&key),
                "{logical_id}.{key}: a local deployment does not know this property; decide whether \
                 it must be reproduced (infra.rs)"
            );
        }
        Ok(())
    }

    /// Evaluates `Resources.<logical_id>.Properties.<path>`; `None` when it is absent or
    /// `AWS::NoValue`.
    pub fn property(&self, logical_id: &str, path: &[&str]) -> Result<Option<Json>> {
        let resource = self
            .template
            .resource(logical_id)
            .with_context(|| format!("no resource {logical_id}"))?;
        let context = || format!("evaluating {logical_id}.Properties.{}", path.join("."));
        let Some(mut node) = resource.get("Properties") else {
            return Ok(None);
        };
        for (i, key) in path.iter().enumerate() {
            if intrinsic(node).is_some() {
                // An intrinsic that yields a mapping: evaluate it, then walk the result.
                let Some(mut value) = self.eval(node).with_context(context)? else {
                    return Ok(None);
                };
                for key in &path[i..] {
                    match value.get_mut(*key) {
                        Some(v) => value = v.take(),
                        None => return Ok(None),
                    }
                }
                return Ok(Some(value));
            }
            match node.as_mapping().and_then(|m| m.get(*key)) {
                Some(next) => node = next,
                None => return Ok(None),
            }
        }
        self.eval(node).with_context(context)
    }

    fn queue_spec(&self, logical_id: &str) -> Result<QueueSpec> {
        self.require_present(logical_id, "AWS::SQS::Queue")?;
        let number = |path: &[&str]| -> Result<Option<u32>> {
            self.property(logical_id, path)?
                .map(|v| json_u32(&v, &format!("{logical_id}.{}", path.join("."))))
                .transpose()
        };
        let redrive = match self
            .template
            .raw_property(logical_id, &["RedrivePolicy", "deadLetterTargetArn"])
        {
            Some(target) => {
                let dead_letter_logical_id = get_att_target(target).with_context(|| {
                    format!(
                        "{logical_id}.RedrivePolicy.deadLetterTargetArn is not !GetAtt <queue>.Arn"
                    )
                })?;
                let max_receive_count = number(&["RedrivePolicy", "maxReceiveCount"])?
                    .with_context(|| {
                        format!("{logical_id}.RedrivePolicy has no maxReceiveCount")
                    })?;
                Some(RedriveSpec {
                    dead_letter_logical_id,
                    max_receive_count,
                })
            }
            None => None,
        };
        Ok(QueueSpec {
            logical_id: logical_id.to_owned(),
            visibility_timeout: number(&["VisibilityTimeout"])?,
            message_retention_period: number(&["MessageRetentionPeriod"])?,
            redrive,
        })
    }
}

fn yaml_number(n: &serde_yaml::Number) -> Result<Json> {
    if let Some(i) = n.as_i64() {
        Ok(Json::from(i))
    } else if let Some(u) = n.as_u64() {
        Ok(Json::from(u))
    } else {
        let f = n.as_f64().context("a number that is not one")?;
        serde_json::Number::from_f64(f)
            .map(Json::Number)
            .with_context(|| format!("{f} has no JSON form"))
    }
}

fn yaml_scalar_string(value: &Yaml, what: &str) -> Result<String> {
    match value {
        Yaml::String(s) => Ok(s.clone()),
        Yaml::Number(n) => Ok(n.to_string()),
        Yaml::Bool(b) => Ok(b.to_string()),
        other => bail!("{what} is not a scalar: {other:?}"),
    }
}

/// A scalar as CloudFormation passes it on: text, numbers and booleans as their text.
fn scalar_string(value: &Json, what: &str) -> Result<String> {
    match value {
        Json::String(s) => Ok(s.clone()),
        Json::Number(n) => Ok(n.to_string()),
        Json::Bool(b) => Ok(b.to_string()),
        other => bail!("{what} is not a scalar: {other}"),
    }
}

fn json_u32(value: &Json, what: &str) -> Result<u32> {
    scalar_string(value, what)?
        .parse()
        .with_context(|| format!("{what} is not a whole number: {value}"))
}

// ------------------------------------------------------------------------------------------------
// EventBridge patterns

/// Whether an EventBridge event pattern matches an event, for the pattern forms tokenwatch's rules
/// use and a few more: a field's list of alternatives matches exact strings, numbers, booleans and
/// null (any element when the event's value is a list); nested objects match nested objects; a field
/// absent from the event does not match. Content filters: `prefix`, `suffix`, `equals-ignore-case`,
/// `anything-but` (a value or a list) and `exists`. Any other filter matches nothing.
pub fn pattern_matches(pattern: &Json, event: &Json) -> bool {
    match (pattern, event) {
        (Json::Object(pattern), Json::Object(event)) => pattern
            .iter()
            .all(|(field, expected)| field_matches(expected, event.get(field))),
        _ => false,
    }
}

fn field_matches(expected: &Json, actual: Option<&Json>) -> bool {
    match expected {
        Json::Object(_) => {
            matches!(actual, Some(a @ Json::Object(_)) if pattern_matches(expected, a))
        }
        Json::Array(alternatives) => alternatives.iter().any(|alt| match alt {
            Json::Object(filter) => filter_matches(filter, actual),
            literal => leaf_values(actual).any(|v| literal_equals(literal, v)),
        }),
        // A pattern's leaves are lists; anything else matches nothing.
        _ => false,
    }
}

/// The leaf values an event field offers: itself, or each element of a list.
fn leaf_values(actual: Option<&Json>) -> impl Iterator<Item = &Json> {
    let items: Vec<&Json> = match actual {
        None => Vec::new(),
        Some(Json::Array(items)) => items.iter().collect(),
        Some(value) => vec![value],
    };
    items.into_iter()
}

fn literal_equals(expected: &Json, actual: &Json) -> bool {
    match (expected, actual) {
        (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
        (Json::Object(_) | Json::Array(_), _) | (_, Json::Object(_) | Json::Array(_)) => false,
        (a, b) => a == b,
    }
}

fn filter_matches(filter: &Map<String, Json>, actual: Option<&Json>) -> bool {
    let mut entries = filter.iter();
    let (Some((name, argument)), None) = (entries.next(), entries.next()) else {
        return false;
    };
    let strings = || leaf_values(actual).filter_map(Json::as_str);
    match (name.as_str(), argument) {
        ("exists", Json::Bool(wanted)) => {
            let present = actual.is_some_and(|a| !a.is_object());
            present == *wanted
        }
        ("prefix", Json::String(p)) => strings().any(|s| s.starts_with(p.as_str())),
        ("suffix", Json::String(p)) => strings().any(|s| s.ends_with(p.as_str())),
        ("equals-ignore-case", Json::String(p)) => strings().any(|s| s.eq_ignore_ascii_case(p)),
        ("anything-but", excluded) => {
            let excluded: Vec<&Json> = match excluded {
                Json::Array(items) => items.iter().collect(),
                Json::Object(_) => return false,
                value => vec![value],
            };
            let mut values = leaf_values(actual).peekable();
            values.peek().is_some()
                && values.all(|v| !excluded.iter().any(|e| literal_equals(e, v)))
        }
        _ => false,
    }
}

// ------------------------------------------------------------------------------------------------
// a local deployment

/// One alert as the on-call topic delivered it to the inbox queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub subject: Option<String>,
    /// The SNS `Message`, parsed as JSON when it is JSON, else the text.
    pub message: Json,
    /// Message attributes (name → value).
    pub attributes: BTreeMap<String, String>,
    /// The whole SNS envelope.
    pub envelope: Json,
}

/// The template's resources created in a local emulator (moto), with physical names derived from
/// one name, and the plumbing AWS would provide between them.
#[derive(Debug, Clone)]
pub struct Deployment {
    name: String,
    region: String,
    account_id: String,
    table_name: String,
    table_arn: String,
    table: TableSpec,
    topic_arn: String,
    ingest: IngestSpec,
    ingest_queue_url: String,
    ingest_queue_arn: String,
    dead_letter_queue_url: String,
    dead_letter_queue_arn: String,
    bucket: String,
    object_prefix: String,
    inbox_queue_url: String,
    inbox_queue_arn: String,
    s3_test_event: Json,
    bindings: Bindings,
    env: Vec<(String, String)>,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
}

/// The key suffix of CloudTrail log files, which the bucket notification filters on.
pub const LOG_FILE_SUFFIX: &str = ".json.gz";

impl Deployment {
    pub async fn create(
        config: &aws_config::SdkConfig,
        template: &Template,
        name: &str,
        parameters: &[(&str, &str)],
    ) -> Result<Deployment> {
        ensure!(
            (1..=40).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-'),
            "deployment name {name:?}: use 1 to 40 lowercase letters, digits and inner hyphens"
        );
        let region = config
            .region()
            .context("the SDK configuration has no region")?
            .to_string();
        let sqs = aws_sdk_sqs::Client::new(config);
        let sns = aws_sdk_sns::Client::new(config);
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(config)
                .force_path_style(true)
                .build(),
        );
        let bucket = format!("{name}-trail");

        let mut bindings = Bindings {
            region: region.clone(),
            stack_name: name.to_owned(),
            ..Bindings::default()
        }
        .parameter("Source", "s3");
        for (key, value) in parameters {
            bindings = bindings.parameter(*key, *value);
        }
        bindings = bindings.parameter("TrailBucketName", &bucket);

        // The topic first: its ARN tells the emulator's account and partition.
        let topic = template.alert_topic_with(&bindings)?;
        let topic_name = format!("{name}-alerts");
        let mut create_topic = sns.create_topic().name(&topic_name);
        if let Some(display_name) = &topic.display_name {
            create_topic = create_topic.attributes("DisplayName", display_name);
        }
        let topic_arn = create_topic
            .send()
            .await
            .with_context(|| format!("creating topic {topic_name}"))?
            .topic_arn
            .context("CreateTopic returned no ARN")?;
        let arn_parts: Vec<&str> = topic_arn.split(':').collect();
        let (partition, account_id) = match arn_parts.as_slice() {
            ["arn", partition, "sns", _, account, _] => {
                ((*partition).to_owned(), (*account).to_owned())
            }
            _ => bail!("unexpected topic ARN {topic_arn}"),
        };
        bindings.partition = partition.clone();
        bindings.account_id = account_id.clone();
        bindings = bindings.resource(
            &topic.logical_id,
            Physical::new(&topic_arn).attribute("TopicName", &topic_name),
        );

        // The state table.
        let table = template.state_table_with(&bindings)?;
        let table_name = format!("{name}-state");
        let table_arn = create_table(&dynamodb, &table, &table_name).await?;
        bindings = bindings.resource(
            &table.logical_id,
            Physical::new(&table_name).attribute("Arn", &table_arn),
        );

        // The ingest queue and its dead-letter queue, as `Source=s3` defines them whatever the
        // source chosen (the e2e drives every delivery shape against one deployment).
        let mut s3_bindings = bindings.clone().parameter("Source", "s3");
        let ingest = template
            .ingest_with(&s3_bindings)?
            .context("the template creates no ingest queue with Source=s3")?;
        let dead_letter_name = format!("{name}-ingest-dlq");
        let dead_letter_attributes =
            template.queue_attributes(&ingest.dead_letter.logical_id, &s3_bindings)?;
        let (dead_letter_queue_url, dead_letter_queue_arn) =
            create_queue(&sqs, &dead_letter_name, &dead_letter_attributes).await?;
        let dead_letter = queue_physical(
            &dead_letter_queue_url,
            &dead_letter_queue_arn,
            &dead_letter_name,
        );
        s3_bindings = s3_bindings.resource(&ingest.dead_letter.logical_id, dead_letter.clone());
        bindings = bindings.resource(&ingest.dead_letter.logical_id, dead_letter);
        let ingest_name = format!("{name}-ingest");
        let ingest_attributes =
            template.queue_attributes(&ingest.queue.logical_id, &s3_bindings)?;
        let (ingest_queue_url, ingest_queue_arn) =
            create_queue(&sqs, &ingest_name, &ingest_attributes).await?;
        bindings = bindings.resource(
            &ingest.queue.logical_id,
            queue_physical(&ingest_queue_url, &ingest_queue_arn, &ingest_name),
        );

        // The trail bucket, notifying the ingest queue of new log files.
        let object_prefix = scalar_string(
            template
                .evaluator(&bindings)?
                .parameter("TrailObjectPrefix")?,
            "TrailObjectPrefix",
        )?;
        create_bucket(&s3, &bucket, &region).await?;
        notify_queue(&s3, &bucket, &ingest_queue_arn, &object_prefix).await?;
        // S3 answers a new notification configuration with an s3:TestEvent.
        let test_messages = receive(&sqs, &ingest_queue_url, 10).await?;
        let s3_test_event = match test_messages.as_slice() {
            [message] => serde_json::from_str::<Json>(message.body().unwrap_or_default())
                .context("the s3:TestEvent is not JSON")?,
            other => bail!(
                "expected one s3:TestEvent on the ingest queue after configuring the notification, \
                 found {} messages",
                other.len()
            ),
        };
        ensure!(
            s3_test_event.get("Event").and_then(Json::as_str) == Some("s3:TestEvent")
                && s3_test_event.get("Bucket").and_then(Json::as_str) == Some(bucket.as_str()),
            "unexpected first message on the ingest queue: {s3_test_event}"
        );
        delete_messages(&sqs, &ingest_queue_url, test_messages.iter()).await?;

        // The inbox, subscribed to the topic.
        let inbox_name = format!("{name}-inbox");
        let (inbox_queue_url, inbox_queue_arn) =
            create_queue(&sqs, &inbox_name, &BTreeMap::new()).await?;
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(&inbox_queue_arn)
            .send()
            .await
            .with_context(|| format!("subscribing {inbox_name} to {topic_name}"))?;

        let env = template.function_environment(&bindings)?;
        Ok(Deployment {
            name: name.to_owned(),
            region,
            account_id,
            table_name,
            table_arn,
            table,
            topic_arn,
            ingest,
            ingest_queue_url,
            ingest_queue_arn,
            dead_letter_queue_url,
            dead_letter_queue_arn,
            bucket,
            object_prefix,
            inbox_queue_url,
            inbox_queue_arn,
            s3_test_event,
            bindings,
            env,
            sqs,
            s3,
        })
    }

    /// The name every physical name derives from (also the stack name).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The emulator's account (from the ARNs it returned).
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The state table's name.
    pub fn table_name(&self) -> &str {
        &self.table_name
    }

    pub fn table_arn(&self) -> &str {
        &self.table_arn
    }

    /// The table as the template defines it.
    pub fn table(&self) -> &TableSpec {
        &self.table
    }

    /// The on-call topic.
    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }

    /// The ingest queue and its dead-letter queue as the template defines them.
    pub fn ingest(&self) -> &IngestSpec {
        &self.ingest
    }

    pub fn ingest_queue_url(&self) -> &str {
        &self.ingest_queue_url
    }

    pub fn ingest_queue_arn(&self) -> &str {
        &self.ingest_queue_arn
    }

    pub fn dead_letter_queue_url(&self) -> &str {
        &self.dead_letter_queue_url
    }

    pub fn dead_letter_queue_arn(&self) -> &str {
        &self.dead_letter_queue_arn
    }

    /// The trail bucket; its `ObjectCreated:*` notifications of `<object_prefix>*.json.gz` go to
    /// the ingest queue.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix of the bucket notification (the template's `TrailObjectPrefix`).
    pub fn object_prefix(&self) -> &str {
        &self.object_prefix
    }

    /// The queue subscribed to the on-call topic, which [`Deployment::alerts`] drains.
    pub fn inbox_queue_url(&self) -> &str {
        &self.inbox_queue_url
    }

    pub fn inbox_queue_arn(&self) -> &str {
        &self.inbox_queue_arn
    }

    /// The `s3:TestEvent` body S3 sent when the notification was configured. [`Deployment::create`]
    /// consumes it from the ingest queue, so the queue starts empty.
    pub fn s3_test_event(&self) -> &Json {
        &self.s3_test_event
    }

    /// The bindings the resources were created under (parameters, physical resources), to evaluate
    /// more of the template the same way.
    pub fn bindings(&self) -> &Bindings {
        &self.bindings
    }

    /// The function's environment as the template sets it for these resources.
    pub fn function_env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }

    /// Puts an object into the trail bucket.
    pub async fn upload(&self, key: &str, bytes: impl Into<Vec<u8>>) -> Result<()> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(bytes.into()))
            .send()
            .await
            .with_context(|| format!("uploading s3://{}/{key}", self.bucket))?;
        Ok(())
    }

    /// Receives up to `max` messages of the ingest queue, as the event source mapping does: they stay
    /// invisible for the queue's visibility timeout, and each receive counts toward the redrive
    /// policy. Stops early when the queue has no visible message.
    pub async fn receive_ingest(&self, max: usize) -> Result<Vec<Message>> {
        receive(&self.sqs, &self.ingest_queue_url, max).await
    }

    /// Receives up to `max` messages of the ingest dead-letter queue.
    pub async fn receive_dead_letters(&self, max: usize) -> Result<Vec<Message>> {
        receive(&self.sqs, &self.dead_letter_queue_url, max).await
    }

    /// Makes received ingest messages visible again at once (what the end of their visibility
    /// timeout does), so a retry need not wait for it.
    pub async fn release_ingest(&self, messages: &[Message]) -> Result<()> {
        for chunk in messages.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .visibility_timeout(0)
                        .build()
                        .context("building a visibility change")
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(&self.ingest_queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .context("releasing ingest messages")?;
            ensure!(
                out.failed.is_empty(),
                "releasing ingest messages: {:?}",
                out.failed
            );
        }
        Ok(())
    }

    /// The Lambda SQS event for messages of the ingest queue.
    pub fn sqs_event(&self, messages: &[Message]) -> Json {
        let records: Vec<Json> = messages
            .iter()
            .map(|m| {
                let attributes: Map<String, Json> = m
                    .attributes()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str().to_owned(), Json::String(v.clone())))
                    .collect();
                let message_attributes: Map<String, Json> = m
                    .message_attributes()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| {
                        let mut attribute = Map::new();
                        if let Some(s) = v.string_value() {
                            attribute.insert("stringValue".into(), json!(s));
                        }
                        attribute.insert("stringListValues".into(), json!(v.string_list_values()));
                        attribute.insert("binaryListValues".into(), json!([]));
                        attribute.insert("dataType".into(), json!(v.data_type()));
                        (k.clone(), Json::Object(attribute))
                    })
                    .collect();
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": message_attributes,
                    "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.ingest_queue_arn,
                    "awsRegion": self.region,
                })
            })
            .collect();
        json!({ "Records": records })
    }

    /// Deletes the messages whose id is not in `except_ids` (the function's `batchItemFailures`),
    /// as the event source mapping does after an invocation that reported them.
    pub async fn delete_ingest(&self, messages: &[Message], except_ids: &[String]) -> Result<()> {
        let except: BTreeSet<&str> = except_ids.iter().map(String::as_str).collect();
        let done = messages
            .iter()
            .filter(|m| !except.contains(m.message_id().unwrap_or_default()));
        delete_messages(&self.sqs, &self.ingest_queue_url, done).await
    }

    /// Drains the inbox: what reached the on-call topic since the last call, each SNS `Message`
    /// parsed as JSON when it is JSON, else as a string.
    pub async fn alerts(&self) -> Result<Vec<Json>> {
        Ok(self
            .alert_notifications()
            .await?
            .into_iter()
            .map(|a| a.message)
            .collect())
    }

    /// Drains the inbox, keeping each notification's subject and message attributes.
    pub async fn alert_notifications(&self) -> Result<Vec<Alert>> {
        let mut alerts = Vec::new();
        loop {
            let messages = receive(&self.sqs, &self.inbox_queue_url, 10).await?;
            if messages.is_empty() {
                return Ok(alerts);
            }
            for message in &messages {
                let body = message.body().unwrap_or_default();
                let envelope: Json = serde_json::from_str(body)
                    .with_context(|| format!("an inbox message is not an SNS envelope: {body}"))?;
                let text = envelope
                    .get("Message")
                    .and_then(Json::as_str)
                    .with_context(|| format!("an SNS envelope without a Message: {envelope}"))?;
                let message_value =
                    serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_owned()));
                let attributes = envelope
                    .get("MessageAttributes")
                    .and_then(Json::as_object)
                    .map(|attributes| {
                        attributes
                            .iter()
                            .map(|(k, v)| {
                                let value =
                                    v.get("Value").and_then(Json::as_str).unwrap_or_default();
                                (k.clone(), value.to_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                alerts.push(Alert {
                    subject: envelope
                        .get("Subject")
                        .and_then(Json::as_str)
                        .map(str::to_owned),
                    message: message_value,
                    attributes,
                    envelope,
                });
            }
            delete_messages(&self.sqs, &self.inbox_queue_url, messages.iter()).await?;
        }
    }
}

fn queue_physical(url: &str, arn: &str, name: &str) -> Physical {
    Physical::new(url)
        .attribute("Arn", arn)
        .attribute("QueueName", name)
        .attribute("QueueUrl", url)
}

async fn create_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    spec: &TableSpec,
    table_name: &str,
) -> Result<String> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ProvisionedThroughput,
        ScalarAttributeType, TimeToLiveSpecification,
    };
    let definitions = spec
        .attribute_definitions
        .iter()
        .map(|(name, kind)| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::from(kind.as_str()))
                .build()
                .context("building an attribute definition")
        })
        .collect::<Result<Vec<_>>>()?;
    let keys = spec
        .key_schema
        .iter()
        .map(|(name, kind)| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(KeyType::from(kind.as_str()))
                .build()
                .context("building a key schema element")
        })
        .collect::<Result<Vec<_>>>()?;
    let mut request = dynamodb
        .create_table()
        .table_name(table_name)
        .set_attribute_definitions(Some(definitions))
        .set_key_schema(Some(keys))
        .billing_mode(BillingMode::from(spec.billing_mode.as_str()));
    if let Some((read, write)) = spec.provisioned_throughput {
        request = request.provisioned_throughput(
            ProvisionedThroughput::builder()
                .read_capacity_units(read)
                .write_capacity_units(write)
                .build()
                .context("building provisioned throughput")?,
        );
    }
    let created = request
        .send()
        .await
        .with_context(|| format!("creating table {table_name}"))?;
    let table_arn = created
        .table_description()
        .and_then(|d| d.table_arn())
        .context("CreateTable returned no ARN")?
        .to_owned();
    dynamodb
        .wait_until_table_exists()
        .table_name(table_name)
        .wait(std::time::Duration::from_secs(120))
        .await
        .with_context(|| format!("waiting for table {table_name}"))?;
    if let Some(attribute) = &spec.ttl_attribute {
        dynamodb
            .update_time_to_live()
            .table_name(table_name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(attribute)
                    .build()
                    .context("building the TTL specification")?,
            )
            .send()
            .await
            .with_context(|| format!("enabling TTL on {table_name}.{attribute}"))?;
    }
    Ok(table_arn)
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &BTreeMap<String, String>,
) -> Result<(String, String)> {
    let mut request = sqs.create_queue().queue_name(name);
    for (attribute, value) in attributes {
        request = request.attributes(QueueAttributeName::from(attribute.as_str()), value);
    }
    let url = request
        .send()
        .await
        .with_context(|| format!("creating queue {name}"))?
        .queue_url
        .context("CreateQueue returned no URL")?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .with_context(|| format!("reading the ARN of queue {name}"))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .context("GetQueueAttributes returned no QueueArn")?;
    Ok((url, arn))
}

async fn create_bucket(s3: &aws_sdk_s3::Client, bucket: &str, region: &str) -> Result<()> {
    use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
    let mut request = s3.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        request = request.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    request
        .send()
        .await
        .with_context(|| format!("creating bucket {bucket}"))?;
    Ok(())
}

async fn notify_queue(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    queue_arn: &str,
    prefix: &str,
) -> Result<()> {
    use aws_sdk_s3::types::{
        Event, FilterRule, FilterRuleName, NotificationConfiguration,
        NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
    };
    let mut key_filter = S3KeyFilter::builder().filter_rules(
        FilterRule::builder()
            .name(FilterRuleName::Suffix)
            .value(LOG_FILE_SUFFIX)
            .build(),
    );
    if !prefix.is_empty() {
        key_filter = key_filter.filter_rules(
            FilterRule::builder()
                .name(FilterRuleName::Prefix)
                .value(prefix)
                .build(),
        );
    }
    let queue = QueueConfiguration::builder()
        .id("tokenwatch-ingest")
        .queue_arn(queue_arn)
        .events(Event::from("s3:ObjectCreated:*"))
        .filter(
            NotificationConfigurationFilter::builder()
                .key(key_filter.build())
                .build(),
        )
        .build()
        .context("building the queue notification")?;
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(queue)
                .build(),
        )
        .send()
        .await
        .with_context(|| format!("configuring the notification of bucket {bucket}"))?;
    Ok(())
}

/// Receives up to `max` messages without waiting: stops at the first empty answer. moto delivers S3
/// and SNS notifications before the call that caused them returns, so what was sent is there.
async fn receive(sqs: &aws_sdk_sqs::Client, queue_url: &str, max: usize) -> Result<Vec<Message>> {
    let mut messages = Vec::new();
    while messages.len() < max {
        let batch = i32::try_from((max - messages.len()).min(10)).unwrap_or(10);
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(batch)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .with_context(|| format!("receiving from {queue_url}"))?
            .messages
            .unwrap_or_default();
        if received.is_empty() {
            break;
        }
        messages.extend(received);
    }
    Ok(messages)
}

async fn delete_messages<'m>(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: impl Iterator<Item = &'m Message>,
) -> Result<()> {
    let messages: Vec<&Message> = messages.collect();
    for chunk in messages.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .context("building a delete entry")
            })
            .collect::<Result<Vec<_>>>()?;
        let out = sqs
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .with_context(|| format!("deleting messages from {queue_url}"))?;
        ensure!(
            out.failed.is_empty(),
            "deleting messages from {queue_url}: {:?}",
            out.failed
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INLINE: &str = r#"
Parameters:
  Stage: {Type: String, Default: dev, AllowedValues: [dev, prod]}
  Count: {Type: Number, Default: 3}
  Empty: {Type: String, Default: ""}
  Names: {Type: CommaDelimitedList, Default: "a,b,c"}
  Required: {Type: String}
Mappings:
  Sizes:
    dev: {Memory: 128, Codes: "X,Y"}
    prod: {Memory: 1024, Codes: "Z"}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  IsDev: !Not [!Condition IsProd]
  CountIsThree: !Equals [!Ref Count, "3"]
  HasEmpty: !Not [!Equals [!Ref Empty, ""]]
  Both: !And [!Condition IsDev, !Condition CountIsThree]
  Either: !Or [!Condition IsProd, {Condition: HasEmpty}]
  LongForm: {"Fn::Equals": [{"Ref": "Stage"}, "dev"]}
  Loop1: !Condition Loop2
  Loop2: !And [!Condition Loop1, !Condition IsDev]
Resources:
  Bucket:
    Type: AWS::S3::Bucket
  ProdOnly:
    Type: AWS::SNS::Topic
    Condition: IsProd
  Thing:
    Type: Custom::Thing
    Properties:
      Plain: {a: 1, b: [true, null, 2.5, text]}
      Ref: !Ref Stage
      RefNumber: !Ref Count
      RefList: !Ref Names
      Region: !Ref AWS::Region
      Account: !Ref AWS::AccountId
      Partition: !Ref AWS::Partition
      Stack: !Ref AWS::StackName
      BucketRef: !Ref Bucket
      BucketArn: !GetAtt Bucket.Arn
      BucketArnLong: {"Fn::GetAtt": [Bucket, Arn]}
      Joined: !Join ["-", [!Ref Stage, x, !Ref Count]]
      JoinedSplit: !Join [",", !Split ["|", "p|q|r"]]
      LongJoin: {"Fn::Join": ["/", [{"Ref": "Stage"}, "y"]]}
      Split: !Split [",", !FindInMap [Sizes, !Ref Stage, Codes]]
      Selected: !Select [1, !Ref Names]
      Memory: !FindInMap [Sizes, !Ref Stage, Memory]
      SubShort: !Sub "arn:${AWS::Partition}:s3:::${Bucket}/${Stage}/${!Literal}/${Bucket.Arn}"
      SubLong: !Sub
        - "${Prefix}-${AWS::Region}-${Count}"
        - Prefix: !Join ["", [p, !Ref Stage]]
      IfValue: !If [IsProd, big, small]
      IfRemovedKey: !If [IsProd, here, !Ref AWS::NoValue]
      IfList:
        - one
        - !If [IsDev, !Ref AWS::NoValue, two]
        - !If [Both, three, !Ref AWS::NoValue]
      Nested:
        Deep:
          Value: !Sub "${Stage}!"
      Chosen: !If
        - IsDev
        - {Inner: !Ref Stage, Kept: true}
        - {Inner: other}
"#;

    fn template() -> Template {
        Template::parse(INLINE).expect("inline template parses")
    }

    fn bound() -> Bindings {
        Bindings::default().resource(
            "Bucket",
            Physical::new("my-bucket").attribute("Arn", "arn:aws:s3:::my-bucket"),
        )
    }

    fn thing(bindings: &Bindings, path: &[&str]) -> Option<Json> {
        let t = template();
        let eval = t.evaluator(bindings).expect("evaluator");
        eval.property("Thing", path).expect("evaluates")
    }

    #[test]
    fn plain_values_and_references_evaluate() {
        let b = bound();
        let get = |k: &str| thing(&b, &[k]).expect(k);
        assert_eq!(
            get("Plain"),
            json!({"a": 1, "b": [true, null, 2.5, "text"]})
        );
        assert_eq!(get("Ref"), json!("dev"));
        // Ref of a Number parameter is its text, as CloudFormation passes it on.
        assert_eq!(get("RefNumber"), json!("3"));
        assert_eq!(get("RefList"), json!(["a", "b", "c"]));
        assert_eq!(get("Region"), json!(tokenwatch_testkit::REGION));
        assert_eq!(get("Account"), json!(tokenwatch_testkit::ACCOUNT_ID));
        assert_eq!(get("Partition"), json!("aws"));
        assert_eq!(get("Stack"), json!("tokenwatch"));
        assert_eq!(get("BucketRef"), json!("my-bucket"));
        assert_eq!(get("BucketArn"), json!("arn:aws:s3:::my-bucket"));
        assert_eq!(get("BucketArnLong"), json!("arn:aws:s3:::my-bucket"));
    }

    #[test]
    fn join_split_select_find_in_map() {
        let b = bound();
        let get = |k: &str| thing(&b, &[k]).expect(k);
        assert_eq!(get("Joined"), json!("dev-x-3"));
        assert_eq!(get("JoinedSplit"), json!("p,q,r"));
        assert_eq!(get("LongJoin"), json!("dev/y"));
        assert_eq!(get("Split"), json!(["X", "Y"]));
        assert_eq!(get("Selected"), json!("b"));
        assert_eq!(get("Memory"), json!(128));
        let prod = bound().parameter("Stage", "prod");
        assert_eq!(thing(&prod, &["Memory"]), Some(json!(1024)));
        assert_eq!(thing(&prod, &["Split"]), Some(json!(["Z"])));
    }

    #[test]
    fn sub_in_both_forms() {
        let b = bound();
        assert_eq!(
            thing(&b, &["SubShort"]),
            Some(json!(
                "arn:aws:s3:::my-bucket/dev/${Literal}/arn:aws:s3:::my-bucket"
            ))
        );
        assert_eq!(
            thing(&b, &["SubLong"]),
            Some(json!(format!("pdev-{}-3", tokenwatch_testkit::REGION)))
        );
        assert_eq!(thing(&b, &["Nested", "Deep", "Value"]), Some(json!("dev!")));
    }

    #[test]
    fn if_and_no_value() {
        let dev = bound();
        assert_eq!(thing(&dev, &["IfValue"]), Some(json!("small")));
        assert_eq!(thing(&dev, &["IfRemovedKey"]), None);
        assert_eq!(thing(&dev, &["IfList"]), Some(json!(["one", "three"])));
        // Walking into the mapping an intrinsic yields.
        assert_eq!(thing(&dev, &["Chosen", "Inner"]), Some(json!("dev")));
        assert_eq!(thing(&dev, &["Chosen", "Kept"]), Some(json!(true)));
        let prod = bound().parameter("Stage", "prod");
        assert_eq!(thing(&prod, &["IfValue"]), Some(json!("big")));
        assert_eq!(thing(&prod, &["IfRemovedKey"]), Some(json!("here")));
        assert_eq!(thing(&prod, &["IfList"]), Some(json!(["one", "two"])));
        assert_eq!(thing(&prod, &["Chosen", "Inner"]), Some(json!("other")));
        assert_eq!(thing(&prod, &["Chosen", "Kept"]), None);
    }

    #[test]
    fn conditions() {
        let t = template();
        let check = |b: &Bindings, name: &str| t.evaluator(b).expect("evaluator").condition(name);
        let dev = Bindings::default();
        let prod = Bindings::default().parameter("Stage", "prod");
        assert!(!check(&dev, "IsProd").expect("IsProd"));
        assert!(check(&prod, "IsProd").expect("IsProd"));
        assert!(check(&dev, "IsDev").expect("IsDev"));
        assert!(check(&dev, "CountIsThree").expect("number equals its text"));
        assert!(!check(&dev.clone().parameter("Count", "4"), "CountIsThree").expect("4"));
        assert!(check(&dev, "Both").expect("Both"));
        assert!(!check(&prod, "Both").expect("Both"));
        assert!(!check(&dev, "Either").expect("Either"));
        assert!(check(&prod, "Either").expect("Either"));
        assert!(
            check(&dev.clone().parameter("Empty", "x"), "Either").expect("long-form Condition")
        );
        assert!(check(&dev, "LongForm").expect("LongForm"));
        let cycle = check(&dev, "Loop1").expect_err("a cycle is an error");
        assert!(
            format!("{cycle:#}").contains("refers to itself"),
            "{cycle:#}"
        );
        let missing = check(&dev, "Nope").expect_err("unknown condition");
        assert!(format!("{missing:#}").contains("Nope"), "{missing:#}");
        // A resource's Condition decides whether it is created.
        let eval = t.evaluator(&dev).expect("evaluator");
        assert!(eval.resource_present("Bucket").expect("Bucket"));
        assert!(!eval.resource_present("ProdOnly").expect("ProdOnly"));
        assert!(!eval.resource_present("Absent").expect("Absent"));
        let eval = t.evaluator(&prod).expect("evaluator");
        assert!(eval.resource_present("ProdOnly").expect("ProdOnly"));
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let t = template();
        let message = |b: &Bindings, yaml: &str| -> String {
            let value: Yaml = serde_yaml::from_str(yaml).expect("yaml");
            let eval = t.evaluator(b).expect("evaluator");
            format!("{:#}", eval.eval(&value).expect_err(yaml))
        };
        let b = Bindings::default();
        assert!(message(&b, "!Base64 abc").contains("Fn::Base64"));
        assert!(message(&b, "{'Fn::Cidr': [a, 1, 2]}").contains("Fn::Cidr"));
        assert!(message(&b, "!GetAZs ''").contains("Fn::GetAZs"));
        assert!(message(&b, "!Ref Bucket").contains("not bound"));
        assert!(message(&b, "!GetAtt Bucket.Arn").contains("not bound"));
        assert!(message(&bound(), "!GetAtt Bucket.Nope").contains("Bucket.Nope"));
        assert!(message(&b, "!Ref Nothing").contains("Nothing"));
        assert!(message(&b, "!Ref Required").contains("no Default"));
        assert!(message(&b, "!Sub '${Nothing}'").contains("Nothing"));
        assert!(message(&b, "!Sub '${Stage'").contains("unclosed"));
        assert!(message(&b, "!FindInMap [Sizes, test, Memory]").contains("Sizes.test.Memory"));
        assert!(message(&b, "!Select [5, [a]]").contains("no item 5"));
        assert!(message(&b, "!If [Unknown, a, b]").contains("Unknown"));

        let unknown = Bindings::default().parameter("Stgae", "dev");
        let e = t.evaluator(&unknown).expect_err("unknown parameter");
        assert!(format!("{e:#}").contains("Stgae"), "{e:#}");
        let disallowed = Bindings::default().parameter("Stage", "qa");
        let e = t.evaluator(&disallowed).expect_err("not an allowed value");
        assert!(format!("{e:#}").contains("qa"), "{e:#}");
    }

    #[test]
    fn event_pattern_matching() {
        let pattern = json!({
            "detail-type": ["AWS API Call via CloudTrail"],
            "detail": {"errorCode": ["ExpiredToken", "Client.ExpiredToken"],
                       "userIdentity": {"type": ["AssumedRole", "FederatedUser"]}}
        });
        let event = |error: Option<&str>, kind: &str| {
            let mut detail = json!({"userIdentity": {"type": kind}, "eventName": "ListBuckets"});
            if let Some(error) = error {
                detail["errorCode"] = json!(error);
            }
            json!({"detail-type": "AWS API Call via CloudTrail", "source": "aws.s3", "detail": detail})
        };
        assert!(pattern_matches(
            &pattern,
            &event(Some("ExpiredToken"), "AssumedRole")
        ));
        assert!(pattern_matches(
            &pattern,
            &event(Some("Client.ExpiredToken"), "FederatedUser")
        ));
        assert!(!pattern_matches(
            &pattern,
            &event(Some("AccessDenied"), "AssumedRole")
        ));
        assert!(!pattern_matches(
            &pattern,
            &event(Some("expiredtoken"), "AssumedRole")
        ));
        assert!(!pattern_matches(
            &pattern,
            &event(Some("ExpiredToken"), "IAMUser")
        ));
        // A field absent from the event does not match.
        assert!(!pattern_matches(&pattern, &event(None, "AssumedRole")));
        let mut other = event(Some("ExpiredToken"), "AssumedRole");
        other["detail-type"] = json!("Scheduled Event");
        assert!(!pattern_matches(&pattern, &other));
        // A nested pattern needs an object; a scalar in its place does not match.
        let flat = json!({"detail-type": "AWS API Call via CloudTrail", "detail": "ExpiredToken"});
        assert!(!pattern_matches(&pattern, &flat));
        // A list in the event matches when any element does.
        let listed = json!({"tags": ["a", "b"]});
        assert!(pattern_matches(&json!({"tags": ["b"]}), &listed));
        assert!(!pattern_matches(&json!({"tags": ["c"]}), &listed));
        // Exact values keep their type.
        assert!(pattern_matches(&json!({"n": [5]}), &json!({"n": 5.0})));
        assert!(!pattern_matches(&json!({"n": ["5"]}), &json!({"n": 5})));
        assert!(pattern_matches(&json!({"n": [null]}), &json!({"n": null})));
        // The empty pattern matches any event; a non-object matches nothing.
        assert!(pattern_matches(&json!({}), &json!({"x": 1})));
        assert!(!pattern_matches(&json!({}), &json!("x")));
        // Content filters.
        let ev = json!({"code": "Client.ExpiredToken"});
        assert!(pattern_matches(
            &json!({"code": [{"prefix": "Client."}]}),
            &ev
        ));
        assert!(pattern_matches(
            &json!({"code": [{"suffix": "Token"}]}),
            &ev
        ));
        assert!(pattern_matches(
            &json!({"code": [{"equals-ignore-case": "client.expiredtoken"}]}),
            &ev
        ));
        assert!(pattern_matches(
            &json!({"code": [{"anything-but": ["AccessDenied"]}]}),
            &ev
        ));
        assert!(!pattern_matches(
            &json!({"code": [{"anything-but": "Client.ExpiredToken"}]}),
            &ev
        ));
        assert!(pattern_matches(&json!({"code": [{"exists": true}]}), &ev));
        assert!(!pattern_matches(&json!({"code": [{"exists": false}]}), &ev));
        assert!(pattern_matches(&json!({"other": [{"exists": false}]}), &ev));
        assert!(!pattern_matches(
            &json!({"other": [{"anything-but": "x"}]}),
            &ev
        ));
        assert!(!pattern_matches(
            &json!({"code": [{"numeric": [">", 0]}]}),
            &ev
        ));
    }

    // -------------------------------------------------------------------- the real template

    fn real() -> Template {
        Template::load_repository().expect("infra/template.yaml loads")
    }

    fn s3_source() -> Bindings {
        Bindings::default()
            .parameter("Source", "s3")
            .parameter("TrailBucketName", "trail")
    }

    fn contract_env_names() -> BTreeSet<String> {
        tokenwatch_core::contract::env::ALL
            .iter()
            .map(|s| (*s).to_owned())
            .chain(["RUST_LOG".to_owned()])
            .collect()
    }

    #[test]
    fn real_template_environment_is_the_contract() {
        let bindings = Bindings::default()
            .resource(logical::STATE_TABLE, Physical::new("the-table"))
            .resource(
                logical::ALERT_TOPIC,
                Physical::new("arn:aws:sns:us-east-1:123456789012:t"),
            );
        let env: BTreeMap<String, String> = real()
            .function_environment(&bindings)
            .expect("environment evaluates")
            .into_iter()
            .collect();
        let names: BTreeSet<String> = env.keys().cloned().collect();
        assert_eq!(names, contract_env_names());
        use tokenwatch_core::contract::env;
        assert_eq!(env[env::STATE_TABLE], "the-table");
        assert_eq!(
            env[env::ALERT_TOPIC_ARN],
            "arn:aws:sns:us-east-1:123456789012:t"
        );
        assert_eq!(env[env::NAMESPACE], "TokenWatch");
        assert_eq!(env[env::METRICS_MODE], "api");
        assert_eq!(env[env::MIN_FAILURES], "3");
        assert_eq!(env[env::ERROR_CODES], "ExpiredToken,ExpiredTokenException");
        // Parameters flow through.
        let emf = bindings
            .parameter("MetricsMode", "emf")
            .parameter("MinFailures", "7");
        let env: BTreeMap<String, String> = real()
            .function_environment(&emf)
            .expect("env")
            .into_iter()
            .collect();
        assert_eq!(env[env::METRICS_MODE], "emf");
        assert_eq!(env[env::MIN_FAILURES], "7");
        // Without the physical table, evaluation says what is missing.
        let e = real()
            .function_environment(&Bindings::default())
            .expect_err("unbound resources");
        assert!(format!("{e:#}").contains("not bound"), "{e:#}");
    }

    #[test]
    fn real_template_table_topic_and_queues() {
        let t = real();
        let table = t.state_table().expect("table");
        assert_eq!(
            table.key_schema,
            [
                ("pk".to_owned(), "HASH".to_owned()),
                ("sk".to_owned(), "RANGE".to_owned())
            ]
        );
        assert_eq!(
            table.attribute_definitions,
            [
                ("pk".to_owned(), "S".to_owned()),
                ("sk".to_owned(), "S".to_owned())
            ]
        );
        assert_eq!(table.ttl_attribute.as_deref(), Some("expires_at"));
        assert_eq!(table.billing_mode, "PAY_PER_REQUEST");
        assert_eq!(table.provisioned_throughput, None);

        let topic = t.alert_topic().expect("topic");
        assert_eq!(topic.display_name.as_deref(), Some("tokenwatch"));

        assert_eq!(t.ingest_with(&Bindings::default()).expect("default"), None);
        let ingest = t
            .ingest_with(&s3_source())
            .expect("s3")
            .expect("present with Source=s3");
        assert_eq!(ingest.queue.logical_id, "IngestQueue");
        assert_eq!(ingest.queue.visibility_timeout, Some(1800));
        let redrive = ingest.queue.redrive.as_ref().expect("redrive");
        assert_eq!(redrive.dead_letter_logical_id, "IngestDeadLetterQueue");
        assert_eq!(redrive.max_receive_count, 5);
        assert_eq!(ingest.dead_letter.logical_id, "IngestDeadLetterQueue");
        assert_eq!(ingest.dead_letter.redrive, None);
        // The visibility timeout is six times the function's timeout, as the template says.
        let timeout = t
            .evaluator(&s3_source())
            .expect("evaluator")
            .property(logical::FUNCTION, &["Timeout"])
            .expect("Timeout")
            .expect("present");
        assert_eq!(json_u32(&timeout, "Timeout").expect("number") * 6, 1800);

        // The redrive policy becomes the SQS attribute's JSON text with the bound DLQ's ARN.
        let dlq_arn = "arn:aws:sqs:us-east-1:123456789012:dlq";
        let bindings = s3_source().resource(
            "IngestDeadLetterQueue",
            Physical::new("http://q/dlq").attribute("Arn", dlq_arn),
        );
        let attributes = t
            .queue_attributes("IngestQueue", &bindings)
            .expect("attributes");
        let policy: Json = serde_json::from_str(&attributes["RedrivePolicy"]).expect("JSON");
        assert_eq!(
            policy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})
        );
        assert_eq!(attributes["VisibilityTimeout"], "1800");
        assert_eq!(attributes["MessageRetentionPeriod"], "345600");
        let dlq = t
            .queue_attributes("IngestDeadLetterQueue", &bindings)
            .expect("dlq");
        assert_eq!(dlq["MessageRetentionPeriod"], "1209600");
        assert!(!dlq.contains_key("KmsMasterKeyId"));
    }

    #[test]
    fn real_template_event_source_mapping_and_schedule() {
        let t = real();
        assert_eq!(
            t.event_source_mapping_with(&Bindings::default())
                .expect("default"),
            None
        );
        let esm = t
            .event_source_mapping_with(&s3_source())
            .expect("s3")
            .expect("present with Source=s3");
        assert_eq!(esm.queue_logical_id.as_deref(), Some("IngestQueue"));
        assert_eq!(esm.batch_size, 10);
        assert_eq!(t.event_source_mapping().expect("default is s3"), esm);
        assert!(
            esm.function_response_types
                .iter()
                .any(|t| t == "ReportBatchItemFailures"),
            "{esm:?}"
        );
        assert_eq!(esm.maximum_batching_window_seconds, None);
        assert_eq!(esm.maximum_concurrency, Some(5));

        let schedule = t
            .schedule_with(&Bindings::default())
            .expect("schedule")
            .expect("present");
        assert_eq!(schedule.logical_id, "SweepRule");
        assert_eq!(schedule.expression, "rate(5 minutes)");
        assert_eq!(schedule.state.as_deref(), Some("ENABLED"));
        let none = Bindings::default().parameter("SweepSchedule", "");
        assert_eq!(t.schedule_with(&none).expect("no schedule"), None);
    }

    /// A CloudTrail record as EventBridge delivers it.
    fn cloudtrail_event(error_code: &str) -> Json {
        json!({
            "version": "0",
            "id": "6f1e5f3c-5d5a-4d8e-9b1e-1c2d3e4f5a6b",
            "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.s3",
            "account": "111122223333",
            "time": "2024-05-01T10:01:02Z",
            "region": "us-east-1",
            "resources": [],
            "detail": {
                "eventVersion": "1.09",
                "userIdentity": {
                    "type": "AssumedRole",
                    "principalId": "AROAEXAMPLE:worker-1",
                    "arn": "arn:aws:sts::111122223333:assumed-role/app/worker-1",
                    "accountId": "111122223333",
                    "accessKeyId": "ASIAEXAMPLE"
                },
                "eventTime": "2024-05-01T10:01:02Z",
                "eventSource": "s3.amazonaws.com",
                "eventName": "ListBuckets",
                "awsRegion": "us-east-1",
                "sourceIPAddress": "203.0.113.10",
                "userAgent": "aws-sdk-rust",
                "errorCode": error_code,
                "errorMessage": "The provided token has expired.",
                "readOnly": true,
                "eventType": "AwsApiCall",
                "managementEvent": true,
                "eventID": "3f2e1d0c-0000-4000-8000-000000000001"
            }
        })
    }

    #[test]
    fn real_template_rule_matches_expired_token_events_only() {
        let t = real();
        let pattern = t
            .event_pattern_with(&Bindings::default())
            .expect("pattern")
            .expect("the rule exists with default parameters");
        assert!(pattern_matches(&pattern, &cloudtrail_event("ExpiredToken")));
        assert!(pattern_matches(
            &pattern,
            &cloudtrail_event("ExpiredTokenException")
        ));
        assert!(pattern_matches(
            &pattern,
            &cloudtrail_event("Client.ExpiredToken")
        ));
        assert!(pattern_matches(
            &pattern,
            &cloudtrail_event("InvalidClientTokenId")
        ));
        assert!(pattern_matches(
            &pattern,
            &cloudtrail_event("RequestExpired")
        ));
        assert!(!pattern_matches(
            &pattern,
            &cloudtrail_event("AccessDenied")
        ));
        let mut success = cloudtrail_event("ExpiredToken");
        if let Some(detail) = success["detail"].as_object_mut() {
            detail.remove("errorCode");
        }
        assert!(!pattern_matches(&pattern, &success));
        let mut console = cloudtrail_event("ExpiredToken");
        console["detail-type"] = json!("AWS Console Sign In via CloudTrail");
        assert!(!pattern_matches(&pattern, &console));
        // The list is the configured codes, the related ones and their Client. forms, once each.
        let codes = pattern["detail"]["errorCode"].as_array().expect("a list");
        let unique: BTreeSet<&str> = codes.iter().filter_map(Json::as_str).collect();
        assert_eq!(unique.len(), codes.len(), "{codes:?}");
        assert_eq!(codes.len(), 14, "{codes:?}");
        // Parameters flow into the pattern; other sources create no rule.
        let custom = Bindings::default().parameter("ExpiredTokenErrorCodes", "ExpiredToken");
        let narrowed = t
            .event_pattern_with(&custom)
            .expect("pattern")
            .expect("rule");
        assert!(!pattern_matches(
            &narrowed,
            &cloudtrail_event("ExpiredTokenException")
        ));
        assert_eq!(t.event_pattern_with(&s3_source()).expect("s3"), None);
    }

    // -------------------------------------------------------------------- on the emulator

    async fn deploy(name: &str) -> (tokenwatch_testkit::Stack, aws_config::SdkConfig, Deployment) {
        let stack = tokenwatch_testkit::Stack::start()
            .await
            .expect("moto starts");
        let config = stack.sdk_config().await;
        let deployment = Deployment::create(&config, &real(), name, &[])
            .await
            .expect("deployment is created");
        (stack, config, deployment)
    }

    #[tokio::test]
    async fn deployment_table_topic_and_environment_follow_the_template() {
        let (_stack, config, d) = deploy("e2e-table").await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let described = dynamodb
            .describe_table()
            .table_name(d.table_name())
            .send()
            .await
            .expect("table exists");
        let table = described.table().expect("description");
        let keys: Vec<(String, String)> = table
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    k.key_type().as_str().to_owned(),
                )
            })
            .collect();
        let spec = real().state_table().expect("spec");
        assert_eq!(keys, spec.key_schema);
        let mut definitions: Vec<(String, String)> = table
            .attribute_definitions()
            .iter()
            .map(|a| {
                (
                    a.attribute_name().to_owned(),
                    a.attribute_type().as_str().to_owned(),
                )
            })
            .collect();
        definitions.sort();
        assert_eq!(definitions, spec.attribute_definitions);
        assert_eq!(table.table_arn(), Some(d.table_arn()));
        let ttl = dynamodb
            .describe_time_to_live()
            .table_name(d.table_name())
            .send()
            .await
            .expect("TTL");
        let ttl = ttl.time_to_live_description().expect("TTL description");
        assert_eq!(ttl.attribute_name(), Some("expires_at"));
        assert_eq!(
            ttl.time_to_live_status().map(|s| s.as_str()),
            Some("ENABLED")
        );

        let sns = aws_sdk_sns::Client::new(&config);
        let topic = sns
            .get_topic_attributes()
            .topic_arn(d.topic_arn())
            .send()
            .await
            .expect("topic exists");
        let attributes = topic.attributes().expect("attributes");
        assert_eq!(
            attributes.get("DisplayName").map(String::as_str),
            Some("tokenwatch")
        );

        let env: BTreeMap<String, String> = d.function_env().into_iter().collect();
        assert_eq!(
            env.keys().cloned().collect::<BTreeSet<_>>(),
            contract_env_names()
        );
        use tokenwatch_core::contract::env as names;
        assert_eq!(env[names::STATE_TABLE], d.table_name());
        assert_eq!(env[names::ALERT_TOPIC_ARN], d.topic_arn());
        assert_eq!(d.account_id(), tokenwatch_testkit::ACCOUNT_ID);
        assert_eq!(d.s3_test_event()["Event"], "s3:TestEvent");
    }

    #[tokio::test]
    async fn deployment_ingest_queue_redrives_after_max_receive_count() {
        let (_stack, config, d) = deploy("e2e-redrive").await;
        let sqs = aws_sdk_sqs::Client::new(&config);
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(d.ingest_queue_url())
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .expect("attributes")
            .attributes
            .expect("some");
        let policy: Json = serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy])
            .expect("RedrivePolicy is JSON");
        let max = d
            .ingest
            .queue
            .redrive
            .as_ref()
            .expect("redrive")
            .max_receive_count;
        assert_eq!(
            policy["deadLetterTargetArn"],
            json!(d.dead_letter_queue_arn())
        );
        assert_eq!(
            json_u32(&policy["maxReceiveCount"], "maxReceiveCount").expect("n"),
            max
        );
        assert_eq!(attributes[&QueueAttributeName::VisibilityTimeout], "1800");

        // The behaviour, not only the attribute: a message that keeps failing moves to the DLQ.
        sqs.send_message()
            .queue_url(d.ingest_queue_url())
            .message_body("poison")
            .send()
            .await
            .expect("send");
        for attempt in 1..=max {
            let got = d.receive_ingest(10).await.expect("receive");
            assert_eq!(got.len(), 1, "attempt {attempt}");
            let event = d.sqs_event(&got);
            assert_eq!(
                event["Records"][0]["attributes"]["ApproximateReceiveCount"],
                json!(attempt.to_string())
            );
            // Received messages stay invisible until released (their visibility timeout is 30 min).
            assert!(d.receive_ingest(10).await.expect("receive").is_empty());
            d.release_ingest(&got).await.expect("release");
        }
        assert!(d.receive_ingest(10).await.expect("receive").is_empty());
        let dead = d.receive_dead_letters(10).await.expect("dead letters");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].body(), Some("poison"));
    }

    #[tokio::test]
    async fn uploaded_log_file_notifies_the_ingest_queue() {
        let (_stack, _config, d) = deploy("e2e-notify").await;
        let key = "AWSLogs/111122223333/CloudTrail/us-east-1/2024/05/01/\
                   111122223333_CloudTrail_us-east-1_20240501T1005Z_a b+c.json.gz";
        d.upload(key, b"not really gzip".to_vec())
            .await
            .expect("upload");
        // Neither a file outside the prefix nor one with another suffix is announced.
        d.upload("elsewhere/x.json.gz", b"x".to_vec())
            .await
            .expect("upload");
        d.upload("AWSLogs/111122223333/notes.txt", b"x".to_vec())
            .await
            .expect("upload");
        let messages = d.receive_ingest(10).await.expect("receive");
        assert_eq!(messages.len(), 1, "{messages:?}");
        let body: Json =
            serde_json::from_str(messages[0].body().expect("body")).expect("JSON body");
        let record = &body["Records"][0];
        assert_eq!(record["eventSource"], "aws:s3");
        assert_eq!(record["eventName"], "ObjectCreated:Put");
        assert_eq!(record["s3"]["bucket"]["name"], json!(d.bucket()));
        // Notifications URL-encode the key (moto 5.2.5 also encodes `/` as `%2F`, where S3 keeps it).
        let raw_key = record["s3"]["object"]["key"].as_str().expect("key");
        assert_eq!(
            tokenwatch_core::envelope::url_decode(raw_key),
            key,
            "raw {raw_key}"
        );

        // The SQS event the function gets, read as the function reads it.
        let event = d.sqs_event(&messages);
        let r = &event["Records"][0];
        assert_eq!(r["eventSource"], "aws:sqs");
        assert_eq!(r["eventSourceARN"], json!(d.ingest_queue_arn()));
        assert_eq!(r["awsRegion"], json!(d.region()));
        assert_eq!(r["messageId"], json!(messages[0].message_id()));
        assert_eq!(r["receiptHandle"], json!(messages[0].receipt_handle()));
        assert_eq!(r["attributes"]["ApproximateReceiveCount"], "1");
        assert!(r["attributes"]["SentTimestamp"].is_string(), "{r}");
        use tokenwatch_core::envelope::{Event, Notification, notification, parse_event};
        let Event::Sqs { messages: parsed } = parse_event(event.clone()) else {
            panic!("not recognized as an SQS event: {event}");
        };
        assert_eq!(parsed.len(), 1);
        match notification(&parsed[0].body).expect("an S3 notification") {
            Notification::Objects(objects) => {
                assert_eq!(objects.len(), 1);
                assert_eq!(objects[0].bucket, d.bucket());
                assert_eq!(objects[0].key, key);
            }
            Notification::Test => panic!("a test event"),
        }
        // The configuration's own s3:TestEvent is recognized as one.
        assert_eq!(
            notification(&d.s3_test_event().to_string()).expect("test event"),
            Notification::Test
        );
    }

    #[tokio::test]
    async fn delete_ingest_keeps_only_the_reported_failures() {
        let (_stack, config, d) = deploy("e2e-delete").await;
        for n in 0..3 {
            d.upload(&format!("AWSLogs/f{n}.json.gz"), vec![n])
                .await
                .expect("upload");
        }
        let messages = d.receive_ingest(10).await.expect("receive");
        assert_eq!(messages.len(), 3);
        let failed = messages[1].message_id().expect("id").to_owned();
        d.delete_ingest(&messages, std::slice::from_ref(&failed))
            .await
            .expect("delete");
        let sqs = aws_sdk_sqs::Client::new(&config);
        let counts = sqs
            .get_queue_attributes()
            .queue_url(d.ingest_queue_url())
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("attributes")
            .attributes
            .expect("some");
        assert_eq!(
            counts[&QueueAttributeName::ApproximateNumberOfMessages],
            "0"
        );
        assert_eq!(
            counts[&QueueAttributeName::ApproximateNumberOfMessagesNotVisible],
            "1"
        );
        d.release_ingest(&messages[1..2]).await.expect("release");
        let again = d.receive_ingest(10).await.expect("receive");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].message_id(), Some(failed.as_str()));
        assert_eq!(again[0].body(), messages[1].body());
    }

    #[tokio::test]
    async fn alerts_read_back_what_reaches_the_topic() {
        let (_stack, config, d) = deploy("e2e-alerts").await;
        let sns = aws_sdk_sns::Client::new(&config);
        sns.publish()
            .topic_arn(d.topic_arn())
            .subject("Stale credential: app/worker-1")
            .message(
                "Principal arn:aws:iam::111122223333:role/app\nkeeps signing with an expired token",
            )
            .message_attributes(
                "severity",
                aws_sdk_sns::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("high")
                    .build()
                    .expect("attribute"),
            )
            .send()
            .await
            .expect("publish text");
        sns.publish()
            .topic_arn(d.topic_arn())
            .message(r#"{"kind":"resolved","failures":3}"#)
            .send()
            .await
            .expect("publish JSON");
        let alerts = d.alert_notifications().await.expect("alerts");
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        let text = alerts
            .iter()
            .find(|a| a.message.is_string())
            .expect("the text alert");
        assert_eq!(
            text.subject.as_deref(),
            Some("Stale credential: app/worker-1")
        );
        assert!(
            text.message
                .as_str()
                .is_some_and(|m| m.contains("expired token"))
        );
        assert_eq!(
            text.attributes.get("severity").map(String::as_str),
            Some("high")
        );
        assert_eq!(text.envelope["TopicArn"], json!(d.topic_arn()));
        let structured = alerts
            .iter()
            .find(|a| a.message.is_object())
            .expect("JSON alert");
        assert_eq!(
            structured.message,
            json!({"kind": "resolved", "failures": 3})
        );
        // Drained: nothing is read twice.
        assert!(d.alerts().await.expect("alerts").is_empty());
        sns.publish()
            .topic_arn(d.topic_arn())
            .message("again")
            .send()
            .await
            .expect("publish");
        assert_eq!(d.alerts().await.expect("alerts"), [json!("again")]);
    }

    #[tokio::test]
    async fn deployment_names_and_parameters_are_checked() {
        let stack = tokenwatch_testkit::Stack::start()
            .await
            .expect("moto starts");
        let config = stack.sdk_config().await;
        let e = Deployment::create(&config, &real(), "Bad_Name", &[])
            .await
            .expect_err("invalid name");
        assert!(format!("{e:#}").contains("Bad_Name"), "{e:#}");
        let e = Deployment::create(&config, &real(), "typo", &[("MinFailure", "7")])
            .await
            .expect_err("unknown parameter");
        assert!(format!("{e:#}").contains("MinFailure"), "{e:#}");
        // Parameters reach the environment; another Source still gets the ingest path.
        let tuned = Deployment::create(
            &config,
            &real(),
            "tuned",
            &[("MinFailures", "7"), ("Source", "eventbridge")],
        )
        .await
        .expect("tuned");
        let env: BTreeMap<String, String> = tuned.function_env().into_iter().collect();
        assert_eq!(env[tokenwatch_core::contract::env::MIN_FAILURES], "7");
        assert_eq!(tuned.bindings().parameters["Source"], "eventbridge");
        tuned
            .upload("AWSLogs/t.json.gz", b"t".to_vec())
            .await
            .expect("upload");
        assert_eq!(tuned.receive_ingest(10).await.expect("tuned").len(), 1);
        // Two deployments side by side in one emulator do not see each other's messages.
        let a = Deployment::create(&config, &real(), "one", &[])
            .await
            .expect("one");
        let b = Deployment::create(&config, &real(), "two", &[])
            .await
            .expect("two");
        a.upload("AWSLogs/a.json.gz", b"a".to_vec())
            .await
            .expect("upload");
        assert_eq!(a.receive_ingest(10).await.expect("a").len(), 1);
        assert!(b.receive_ingest(10).await.expect("b").is_empty());
    }
}
