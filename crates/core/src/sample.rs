//! Realistic sample CloudTrail data: background traffic plus the failure scenarios of the troubleshooting
//! guide, laid out as a trail delivers it to S3. Deterministic for a given seed and start time, and it
//! reports what it wrote so tests can check a scan against it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::timestamp::Timestamp;

/// CloudTrail delivers a file about every five minutes per account and Region.
pub const DEFAULT_FILE_PERIOD_SECONDS: i64 = 300;
/// The sample covers this much time.
pub const SAMPLE_SPAN_SECONDS: i64 = 6 * 3600;

pub const SAMPLE_ACCOUNT: &str = "111122223333";
pub const SAMPLE_REGION: &str = "us-east-1";

/// A small, fast, seedable generator (SplitMix64): the output must not change with a dependency's version.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn hex(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize]))
            .collect()
    }

    fn alnum_upper(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        (0..len)
            .map(|_| char::from(ALPHABET[self.below(ALPHABET.len() as u64) as usize]))
            .collect()
    }

    fn uuid(&mut self) -> String {
        format!(
            "{}-{}-4{}-{}{}-{}",
            self.hex(8),
            self.hex(4),
            self.hex(3),
            self.pick(&['8', '9', 'a', 'b']),
            self.hex(3),
            self.hex(12)
        )
    }
}

/// How a scenario's process signs its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    AssumedRole,
    SsoRole,
    InstanceProfile,
    WebIdentity,
    UserSessionToken,
}

/// A named failure pattern from the guide.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: &'static str,
    pub description: &'static str,
    pub credential: Credential,
    pub role_or_user: &'static str,
    pub session_name: String,
    pub access_key_id: String,
    /// When the credential was minted, relative to the sample start.
    pub minted_at: i64,
    /// First and last expired-token failure, relative to the sample start.
    pub fail_from: i64,
    pub fail_until: i64,
    pub fail_every: i64,
    pub user_agent: &'static str,
    pub source_ip: &'static str,
    pub calls: &'static [(&'static str, &'static str)],
    /// Whether a process caching credentials is what is going on (an incident is expected).
    pub caching: bool,
    /// The cause detection should name (DESIGN.md's identifiers).
    pub likely_cause: &'static str,
}

impl Scenario {
    pub fn failure_offsets(&self) -> impl Iterator<Item = i64> + '_ {
        (self.fail_from..=self.fail_until).step_by(self.fail_every.max(1) as usize)
    }

    pub fn principal(&self) -> String {
        match self.credential {
            Credential::UserSessionToken => {
                format!("arn:aws:iam::{SAMPLE_ACCOUNT}:user/{}", self.role_or_user)
            }
            _ => format!("arn:aws:iam::{SAMPLE_ACCOUNT}:role/{}", self.role_or_user),
        }
    }

    fn role_name(&self) -> &'static str {
        self.role_or_user
            .rsplit('/')
            .next()
            .unwrap_or(self.role_or_user)
    }
}

/// The guide's scenarios, anchored to a sample starting at 0 and lasting [`SAMPLE_SPAN_SECONDS`].
pub fn scenarios(rng: &mut Rng, start: Timestamp) -> Vec<Scenario> {
    let key = |rng: &mut Rng| format!("ASIA{}", rng.alnum_upper(16));
    vec![
        Scenario {
            name: "build-job-assume-role",
            description: "A nightly build assumed a role for the default hour, cached the credentials at start, and ran for two.",
            credential: Credential::AssumedRole,
            role_or_user: "ci/build-bot",
            session_name: format!("nightly-build-{}", start.unix() + 1800),
            access_key_id: key(rng),
            minted_at: 1800,
            fail_from: 1800 + 3600 + 7,
            fail_until: 1800 + 2 * 3600,
            fail_every: 45,
            user_agent: "aws-cli/2.15.30 Python/3.11.8 Linux/5.10.210 exec-env/CodeBuild exe/x86_64.amzn.2 command/s3.cp",
            source_ip: "10.20.31.44",
            calls: &[
                ("s3.amazonaws.com", "PutObject"),
                ("s3.amazonaws.com", "GetObject"),
                ("ecr.amazonaws.com", "GetAuthorizationToken"),
            ],
            caching: true,
            likely_cause: "assume_role_session_elapsed",
        },
        Scenario {
            name: "sso-session-lapsed",
            description: "An engineer's IAM Identity Center session lapsed; a script kept retrying with the cached role credentials.",
            credential: Credential::SsoRole,
            role_or_user: "aws-reserved/sso.amazonaws.com/AWSReservedSSO_AdministratorAccess_4f2c9a1b7e3d5a60",
            session_name: "jane.doe@example.com".to_owned(),
            access_key_id: key(rng),
            // The permission set allows four-hour sessions.
            minted_at: 600,
            fail_from: 600 + 4 * 3600 + 10,
            fail_until: 600 + 4 * 3600 + 1200,
            fail_every: 60,
            user_agent: "aws-cli/2.17.2 md/awscrt#0.20.11 ua/2.0 os/macos#23.5.0 md/arch#arm64 lang/python#3.11.9 md/prompt#off command/ec2.describe-instances",
            source_ip: "198.51.100.23",
            calls: &[
                ("ec2.amazonaws.com", "DescribeInstances"),
                ("sts.amazonaws.com", "GetCallerIdentity"),
            ],
            caching: true,
            likely_cause: "sso_session_expired",
        },
        Scenario {
            name: "instance-profile-cached",
            description: "An application on EC2 read instance-profile credentials once and kept them past their rotation.",
            credential: Credential::InstanceProfile,
            role_or_user: "app-server-role",
            session_name: format!("i-0{}", rng.hex(16)),
            access_key_id: key(rng),
            // Instance metadata hands out credentials valid for about six hours and rotates them well before.
            minted_at: -2 * 3600,
            fail_from: 4 * 3600 + 13,
            fail_until: 6 * 3600 - 60,
            fail_every: 120,
            user_agent: "aws-sdk-java/1.12.600 Linux/5.10.215 OpenJDK_64-Bit_Server_VM/17.0.10+7-LTS java/17.0.10 vendor/Amazon.com_Inc. orders-app/3.4",
            source_ip: "10.20.7.112",
            calls: &[
                ("dynamodb.amazonaws.com", "PutItem"),
                ("sqs.amazonaws.com", "SendMessage"),
            ],
            caching: true,
            likely_cause: "instance_profile_cached",
        },
        Scenario {
            name: "eks-web-identity-cached",
            description: "A pod exchanged its service-account token once (IRSA) and never called AssumeRoleWithWebIdentity again.",
            credential: Credential::WebIdentity,
            role_or_user: "eks-reports-exporter",
            session_name: format!("botocore-session-{}", start.unix() + 900),
            access_key_id: key(rng),
            minted_at: 900,
            fail_from: 900 + 3600 + 30,
            fail_until: 900 + 3600 + 1800,
            fail_every: 90,
            user_agent: "Boto3/1.34.84 md/Botocore#1.34.84 ua/2.0 os/linux#5.10.217 md/arch#x86_64 lang/python#3.12.3 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.84",
            source_ip: "10.20.64.9",
            calls: &[("s3.amazonaws.com", "PutObject")],
            caching: true,
            likely_cause: "web_identity_cached",
        },
        Scenario {
            name: "get-session-token-window",
            description: "A batch operator's MFA session token (GetSessionToken, 12 hours) ran out during an overnight job.",
            credential: Credential::UserSessionToken,
            role_or_user: "batch-operator",
            session_name: String::new(),
            access_key_id: key(rng),
            // Twelve hours, GetSessionToken's default.
            minted_at: -9 * 3600,
            fail_from: 3 * 3600 + 20,
            fail_until: 3 * 3600 + 2400,
            fail_every: 150,
            user_agent: "aws-cli/1.32.101 Python/3.9.18 Linux/4.14.336 botocore/1.34.101",
            source_ip: "192.0.2.146",
            calls: &[
                ("glue.amazonaws.com", "StartJobRun"),
                ("s3.amazonaws.com", "ListObjects"),
            ],
            caching: true,
            likely_cause: "session_token_window_closed",
        },
        Scenario {
            name: "sdk-refreshes-correctly",
            description: "A service whose SDK refreshes its role credentials; one call raced the boundary and failed once.",
            credential: Credential::AssumedRole,
            role_or_user: "orders-service",
            session_name: format!("aws-sdk-java-{}", (start.unix() + 7200) * 1000),
            access_key_id: key(rng),
            minted_at: 7200,
            fail_from: 7200 + 3600,
            fail_until: 7200 + 3600,
            fail_every: 1,
            user_agent: "aws-sdk-java/2.25.40 Linux/5.10.216 OpenJDK_64-Bit_Server_VM/21.0.3+9-LTS Java/21.0.3 vendor/Amazon.com_Inc. io/sync http/Apache cfg/retry-mode/standard",
            source_ip: "10.20.5.61",
            calls: &[("sqs.amazonaws.com", "ReceiveMessage")],
            caching: false,
            likely_cause: "assume_role_session_elapsed",
        },
    ]
}

/// What one generated file holds.
#[derive(Debug, Clone)]
pub struct SampleFile {
    /// Relative path in the trail bucket layout.
    pub path: String,
    pub records: Vec<Value>,
}

/// What a sample contains, for checking a scan against it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Manifest {
    pub seed: u64,
    pub start: String,
    pub files: u64,
    /// Distinct records (duplicates not included).
    pub records: u64,
    /// Records written a second time with the same `eventID`, as CloudTrail sometimes does.
    pub duplicate_records: u64,
    pub expired_token_errors: u64,
    pub expired_by_principal: BTreeMap<String, u64>,
    pub related_errors: BTreeMap<String, u64>,
    /// Records that mention the error words outside `errorCode` and must not count.
    pub decoys: u64,
    /// Scenarios whose process caches credentials (an incident each).
    pub caching_scenarios: Vec<String>,
    pub scenarios: Vec<ScenarioSummary>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ScenarioSummary {
    pub name: String,
    pub principal: String,
    pub session_name: Option<String>,
    pub access_key_id: String,
    pub failures: u64,
    pub caching: bool,
    pub likely_cause: String,
    pub description: String,
}

/// Options for [`generate`].
#[derive(Debug, Clone)]
pub struct SampleSpec {
    pub seed: u64,
    /// Background records to aim for (the scenarios add theirs).
    pub records: u64,
    pub start: Timestamp,
    /// Seconds of events per file (CloudTrail: [`DEFAULT_FILE_PERIOD_SECONDS`]); larger makes bigger files.
    pub file_period: i64,
}

const RELATED_ERRORS: [(&str, &str); 3] = [
    (
        "InvalidClientTokenId",
        "The security token included in the request is invalid.",
    ),
    (
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided.",
    ),
    ("Client.RequestExpired", "Request has expired."),
];

/// A planned sample: the scenario records are made up front (they are few), background records are
/// made file by file, so a large sample never has to sit in memory.
#[derive(Debug, Clone)]
pub struct Sample {
    seed: u64,
    start: Timestamp,
    period: i64,
    /// Per delivery slot: its path and the planned (non-background) records with their offsets.
    slots: Vec<Slot>,
    manifest: Manifest,
}

#[derive(Debug, Clone)]
struct Slot {
    index: usize,
    path: String,
    planned: Vec<(i64, Value)>,
    background: u64,
    duplicates: Vec<Value>,
}

impl Sample {
    pub fn new(spec: &SampleSpec) -> Self {
        let mut rng = Rng::new(spec.seed);
        let start = spec.start.minute();
        let scenarios = scenarios(&mut rng, start);
        let period = spec.file_period.clamp(60, SAMPLE_SPAN_SECONDS);
        let slot_count = (SAMPLE_SPAN_SECONDS / period) as usize;
        let mut planned: Vec<Vec<(i64, Value)>> = vec![Vec::new(); slot_count];
        let mut manifest = Manifest {
            seed: spec.seed,
            start: start.rfc3339(),
            ..Manifest::default()
        };

        for scenario in &scenarios {
            let mut failures = 0;
            for offset in scenario.failure_offsets() {
                let (source, name) = *rng.pick(scenario.calls);
                let record = scenario_record(&mut rng, scenario, start, offset, source, name);
                place(&mut planned, period, offset, record);
                failures += 1;
            }
            // The process also made calls that worked while its credential was valid.
            for _ in 0..20 {
                let offset = scenario.minted_at.max(0) + rng.below(3000) as i64;
                let (source, name) = *rng.pick(scenario.calls);
                let mut record = scenario_record(&mut rng, scenario, start, offset, source, name);
                if let Some(map) = record.as_object_mut() {
                    map.remove("errorCode");
                    map.remove("errorMessage");
                }
                place(&mut planned, period, offset, record);
            }
            manifest.expired_token_errors += failures;
            *manifest
                .expired_by_principal
                .entry(scenario.principal())
                .or_default() += failures;
            if scenario.caching {
                manifest.caching_scenarios.push(scenario.name.to_owned());
            }
            manifest.scenarios.push(ScenarioSummary {
                name: scenario.name.to_owned(),
                principal: scenario.principal(),
                session_name: (!scenario.session_name.is_empty())
                    .then(|| scenario.session_name.clone()),
                access_key_id: scenario.access_key_id.clone(),
                failures,
                caching: scenario.caching,
                likely_cause: scenario.likely_cause.to_owned(),
                description: scenario.description.to_owned(),
            });
        }

        for (code, message) in RELATED_ERRORS {
            let count = 3 + rng.below(5);
            for _ in 0..count {
                let offset = rng.below(SAMPLE_SPAN_SECONDS as u64) as i64;
                let mut record = background_record(&mut rng, start, offset);
                record["errorCode"] = json!(code);
                record["errorMessage"] = json!(message);
                place(&mut planned, period, offset, record);
            }
            let canonical = code.trim_start_matches("Client.");
            *manifest
                .related_errors
                .entry(canonical.to_owned())
                .or_default() += count;
        }

        for _ in 0..12 {
            let offset = rng.below(SAMPLE_SPAN_SECONDS as u64) as i64;
            let record = decoy_record(&mut rng, start, offset);
            place(&mut planned, period, offset, record);
            manifest.decoys += 1;
        }

        let per_slot = spec.records / slot_count as u64;
        let extra = spec.records % slot_count as u64;
        let mut slots: Vec<Slot> = planned
            .into_iter()
            .enumerate()
            .map(|(index, planned)| {
                let background = per_slot + u64::from((index as u64) < extra);
                let delivered = start.plus_seconds((index as i64 + 1) * period);
                Slot {
                    index,
                    path: object_key(&mut rng, delivered),
                    planned,
                    background,
                    duplicates: Vec::new(),
                }
            })
            .filter(|slot| slot.background > 0 || !slot.planned.is_empty())
            .collect();

        // CloudTrail delivers some records twice: copy a few expired-token records into the last file.
        let duplicates: Vec<Value> = slots
            .iter()
            .step_by(7)
            .filter_map(|slot| {
                slot.planned
                    .iter()
                    .map(|(_, r)| r)
                    .find(|r| r.get("errorCode") == Some(&json!("ExpiredToken")))
                    .cloned()
            })
            .collect();
        manifest.duplicate_records = duplicates.len() as u64;
        if let Some(last) = slots.last_mut() {
            last.duplicates = duplicates;
        }
        manifest.files = slots.len() as u64;
        manifest.records = slots
            .iter()
            .map(|s| s.planned.len() as u64 + s.background)
            .sum();
        Self {
            seed: spec.seed,
            start,
            period,
            slots,
            manifest,
        }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn file_count(&self) -> usize {
        self.slots.len()
    }

    /// Makes file `n` (0-based, in delivery order): its records sorted by time, duplicates last.
    pub fn file(&self, n: usize) -> SampleFile {
        let slot = &self.slots[n];
        let mut rng =
            Rng::new(self.seed ^ (slot.index as u64 + 1).wrapping_mul(0xa24b_aed4_963e_e407));
        let mut records = slot.planned.clone();
        let slot_start = slot.index as i64 * self.period;
        for _ in 0..slot.background {
            let offset = slot_start + rng.below(self.period as u64) as i64;
            records.push((offset, background_record(&mut rng, self.start, offset)));
        }
        records.sort_by_key(|(offset, _)| *offset);
        let mut records: Vec<Value> = records.into_iter().map(|(_, r)| r).collect();
        records.extend(slot.duplicates.iter().cloned());
        SampleFile {
            path: slot.path.clone(),
            records,
        }
    }
}

fn place(slots: &mut [Vec<(i64, Value)>], period: i64, offset: i64, record: Value) {
    let slot = (offset.clamp(0, SAMPLE_SPAN_SECONDS - 1) / period) as usize;
    slots[slot.min(slots.len() - 1)].push((offset, record));
}

/// `AWSLogs/ACCT/CloudTrail/REGION/YYYY/MM/DD/ACCT_CloudTrail_REGION_YYYYMMDDTHHMMZ_RANDOM.json.gz`
pub fn object_key(rng: &mut Rng, delivered: Timestamp) -> String {
    let t = delivered.rfc3339();
    let (date, time) = (&t[..10], &t[11..16]);
    let (y, m, d) = (&date[..4], &date[5..7], &date[8..10]);
    let (hh, mm) = (&time[..2], &time[3..5]);
    format!(
        "AWSLogs/{SAMPLE_ACCOUNT}/CloudTrail/{SAMPLE_REGION}/{y}/{m}/{d}/{SAMPLE_ACCOUNT}_CloudTrail_{SAMPLE_REGION}_{y}{m}{d}T{hh}{mm}Z_{}.json.gz",
        rng.alnum_upper(16)
    )
}

fn scenario_record(
    rng: &mut Rng,
    scenario: &Scenario,
    start: Timestamp,
    offset: i64,
    event_source: &str,
    event_name: &str,
) -> Value {
    let minted = start.plus_seconds(scenario.minted_at);
    let attributes = json!({"creationDate": minted.rfc3339(), "mfaAuthenticated": "false"});
    let role = scenario.principal();
    let principal_id = format!("AROA{}", rng_stable_id(scenario.name));
    let user_identity = match scenario.credential {
        Credential::UserSessionToken => json!({
            "type": "IAMUser",
            "principalId": format!("AIDA{}", rng_stable_id(scenario.name)),
            "arn": role,
            "accountId": SAMPLE_ACCOUNT,
            "accessKeyId": scenario.access_key_id,
            "userName": scenario.role_or_user,
            "sessionContext": {"sessionIssuer": {}, "webIdFederationData": {},
                "attributes": {"creationDate": minted.rfc3339(), "mfaAuthenticated": "true"}},
        }),
        credential => {
            let mut context = json!({
                "sessionIssuer": {"type": "Role", "principalId": principal_id, "arn": role,
                    "accountId": SAMPLE_ACCOUNT, "userName": scenario.role_name()},
                "webIdFederationData": {},
                "attributes": attributes,
            });
            if credential == Credential::InstanceProfile {
                context["ec2RoleDelivery"] = json!("2.0");
            }
            if credential == Credential::WebIdentity {
                context["webIdFederationData"] = json!({
                    "federatedProvider": "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/5C0A3F2D9B8E7A6F1C4D3E2B1A0F9E8D",
                    "attributes": {}
                });
            }
            json!({
                "type": "AssumedRole",
                "principalId": format!("{principal_id}:{}", scenario.session_name),
                "arn": format!("arn:aws:sts::{SAMPLE_ACCOUNT}:assumed-role/{}/{}", scenario.role_name(), scenario.session_name),
                "accountId": SAMPLE_ACCOUNT,
                "accessKeyId": scenario.access_key_id,
                "sessionContext": context,
            })
        }
    };
    json!({
        "eventVersion": "1.09",
        "userIdentity": user_identity,
        "eventTime": start.plus_seconds(offset).rfc3339(),
        "eventSource": event_source,
        "eventName": event_name,
        "awsRegion": SAMPLE_REGION,
        "sourceIPAddress": scenario.source_ip,
        "userAgent": scenario.user_agent,
        "errorCode": "ExpiredToken",
        "errorMessage": "The security token included in the request is expired",
        "requestParameters": null,
        "responseElements": null,
        "requestID": rng.uuid(),
        "eventID": rng.uuid(),
        "readOnly": event_name.starts_with("Get") || event_name.starts_with("List") || event_name.starts_with("Describe"),
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": SAMPLE_ACCOUNT,
        "eventCategory": "Management",
        "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
            "clientProvidedHostHeader": format!("{}.{SAMPLE_REGION}.amazonaws.com", event_source.trim_end_matches(".amazonaws.com"))},
    })
}

/// A stable id for a name, so every record of a scenario carries the same principal id.
fn rng_stable_id(name: &str) -> String {
    let mut rng = Rng::new(
        name.bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
    );
    rng.alnum_upper(17)
}

const BACKGROUND_ROLES: [(&str, &str); 6] = [
    ("payments-api", "payments-api-task"),
    ("data-pipeline", "airflow-worker"),
    (
        "aws-reserved/sso.amazonaws.com/AWSReservedSSO_ReadOnly_8a7b6c5d4e3f2a1b",
        "sam.lee@example.com",
    ),
    ("terraform-deployer", "terraform-run"),
    ("monitoring", "grafana"),
    ("OrganizationAccountAccessRole", "admin-break-glass"),
];

const BACKGROUND_CALLS: [(&str, &str); 14] = [
    ("s3.amazonaws.com", "GetObject"),
    ("s3.amazonaws.com", "PutObject"),
    ("s3.amazonaws.com", "ListObjects"),
    ("ec2.amazonaws.com", "DescribeInstances"),
    ("ec2.amazonaws.com", "DescribeSecurityGroups"),
    ("kms.amazonaws.com", "Decrypt"),
    ("kms.amazonaws.com", "GenerateDataKey"),
    ("sts.amazonaws.com", "AssumeRole"),
    ("sts.amazonaws.com", "GetCallerIdentity"),
    ("dynamodb.amazonaws.com", "DescribeTable"),
    ("lambda.amazonaws.com", "GetFunction"),
    ("logs.amazonaws.com", "CreateLogStream"),
    ("secretsmanager.amazonaws.com", "GetSecretValue"),
    ("cloudwatch.amazonaws.com", "GetMetricData"),
];

const BACKGROUND_AGENTS: [&str; 5] = [
    "aws-sdk-go-v2/1.30.3 os/linux lang/go#1.22.5 md/GOOS#linux md/GOARCH#amd64 api/s3#1.58.2",
    "Boto3/1.34.144 md/Botocore#1.34.144 ua/2.0 os/linux#5.10.219 md/arch#x86_64 lang/python#3.12.4 Botocore/1.34.144",
    "aws-cli/2.17.13 md/awscrt#0.20.11 ua/2.0 os/linux#6.1.96 md/arch#x86_64 lang/python#3.11.9 md/installer#exe command/s3.ls",
    "APN/1.0 HashiCorp/1.0 Terraform/1.8.5 (+https://www.terraform.io) terraform-provider-aws/5.58.0 aws-sdk-go-v2/1.30.1",
    "AWS Internal",
];

fn background_record(rng: &mut Rng, start: Timestamp, offset: i64) -> Value {
    let (source, name) = *rng.pick(&BACKGROUND_CALLS);
    let time = start.plus_seconds(offset);
    let user_identity = if rng.chance(8) {
        json!({"type": "AWSService", "invokedBy": *rng.pick(&["cloudtrail.amazonaws.com", "ec2.amazonaws.com", "lambda.amazonaws.com"])})
    } else if rng.chance(10) {
        json!({"type": "IAMUser", "principalId": "AIDAQ3EXAMPLEUSER0001", "arn": format!("arn:aws:iam::{SAMPLE_ACCOUNT}:user/legacy-backup"),
            "accountId": SAMPLE_ACCOUNT, "accessKeyId": format!("AKIA{}", rng.alnum_upper(16)), "userName": "legacy-backup"})
    } else {
        let (role, session_base) = *rng.pick(&BACKGROUND_ROLES);
        let role_name = role.rsplit('/').next().unwrap_or(role);
        let session = if session_base.contains('@') {
            session_base.to_owned()
        } else {
            format!("{session_base}-{}", rng.hex(8))
        };
        let minted = time.plus_seconds(-(rng.below(3000) as i64));
        json!({
            "type": "AssumedRole",
            "principalId": format!("AROA{}:{session}", rng_stable_id(role)),
            "arn": format!("arn:aws:sts::{SAMPLE_ACCOUNT}:assumed-role/{role_name}/{session}"),
            "accountId": SAMPLE_ACCOUNT,
            "accessKeyId": format!("ASIA{}", rng.alnum_upper(16)),
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "principalId": format!("AROA{}", rng_stable_id(role)),
                    "arn": format!("arn:aws:iam::{SAMPLE_ACCOUNT}:role/{role}"), "accountId": SAMPLE_ACCOUNT, "userName": role_name},
                "webIdFederationData": {},
                "attributes": {"creationDate": minted.rfc3339(), "mfaAuthenticated": "false"}
            }
        })
    };
    let mut record = json!({
        "eventVersion": "1.09",
        "userIdentity": user_identity,
        "eventTime": time.rfc3339(),
        "eventSource": source,
        "eventName": name,
        "awsRegion": SAMPLE_REGION,
        "sourceIPAddress": format!("10.20.{}.{}", rng.below(255), 1 + rng.below(254)),
        "userAgent": *rng.pick(&BACKGROUND_AGENTS),
        "requestParameters": request_parameters(rng, name),
        "responseElements": null,
        "requestID": rng.uuid(),
        "eventID": rng.uuid(),
        "readOnly": !name.starts_with("Put") && !name.starts_with("Create") && !name.starts_with("Generate"),
        "resources": [{"accountId": SAMPLE_ACCOUNT, "type": "AWS::S3::Bucket", "ARN": format!("arn:aws:s3:::example-data-{}", rng.hex(6))}],
        "eventType": "AwsApiCall",
        "managementEvent": !source.starts_with("s3"),
        "recipientAccountId": SAMPLE_ACCOUNT,
        "eventCategory": if source.starts_with("s3") { "Data" } else { "Management" },
        "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
            "clientProvidedHostHeader": format!("{}.{SAMPLE_REGION}.amazonaws.com", source.trim_end_matches(".amazonaws.com"))},
    });
    if rng.chance(3) {
        record["errorCode"] = json!("AccessDenied");
        record["errorMessage"] = json!(format!("User is not authorized to perform: {name}"));
    }
    record
}

fn request_parameters(rng: &mut Rng, name: &str) -> Value {
    match name {
        "GetObject" | "PutObject" => json!({
            "bucketName": format!("example-data-{}", rng.hex(6)),
            "Host": "example-data.s3.us-east-1.amazonaws.com",
            "key": format!("exports/{}/part-{:05}.parquet", rng.hex(8), rng.below(99_999)),
            "x-amz-server-side-encryption": "aws:kms"
        }),
        "DescribeInstances" => {
            json!({"instancesSet": {"items": [{"instanceId": format!("i-0{}", rng.hex(16))}]}, "filterSet": {}})
        }
        "AssumeRole" => {
            json!({"roleArn": format!("arn:aws:iam::{SAMPLE_ACCOUNT}:role/payments-api"), "roleSessionName": format!("payments-api-task-{}", rng.hex(8)), "durationSeconds": 3600})
        }
        "Decrypt" | "GenerateDataKey" => {
            json!({"encryptionAlgorithm": "SYMMETRIC_DEFAULT", "keyId": format!("arn:aws:kms:{SAMPLE_REGION}:{SAMPLE_ACCOUNT}:key/{}", rng.uuid())})
        }
        _ => json!({"maxResults": 100}),
    }
}

/// Records that mention the error words where they must not count.
fn decoy_record(rng: &mut Rng, start: Timestamp, offset: i64) -> Value {
    let mut record = background_record(rng, start, offset);
    match rng.below(3) {
        0 => {
            record["requestParameters"] =
                json!({"errorCode": "ExpiredToken", "message": "ExpiredToken in a parameter"});
        }
        1 => {
            record["errorCode"] = json!("AccessDenied");
            record["errorMessage"] =
                json!("ExpiredToken: retry with ExpiredTokenException handling is not authorized");
        }
        _ => {
            record["userAgent"] = json!("curl/8.5 \"errorCode\":\"ExpiredToken\"");
            record.as_object_mut().map(|m| m.remove("errorCode"));
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(records: u64) -> SampleSpec {
        SampleSpec {
            seed: 7,
            records,
            start: Timestamp::parse("2026-11-26T00:00:00Z").expect("time"),
            file_period: DEFAULT_FILE_PERIOD_SECONDS,
        }
    }

    fn generate(spec: &SampleSpec) -> (Vec<SampleFile>, Manifest) {
        let sample = Sample::new(spec);
        let files = (0..sample.file_count()).map(|n| sample.file(n)).collect();
        (files, sample.manifest().clone())
    }

    #[test]
    fn deterministic_for_a_seed() {
        let (a, ma) = generate(&spec(500));
        let (b, mb) = generate(&spec(500));
        assert_eq!(ma, mb);
        assert_eq!(a.len(), b.len());
        assert_eq!(a[3].records, b[3].records);
        let (_, other) = generate(&SampleSpec {
            seed: 8,
            ..spec(500)
        });
        assert_ne!(
            ma.scenarios[0].access_key_id,
            other.scenarios[0].access_key_id
        );
    }

    #[test]
    fn records_are_spread_over_the_delivery_slots() {
        let (files, manifest) = generate(&spec(7200));
        assert_eq!(files.len(), 72);
        assert!(files.iter().all(|f| f.records.len() >= 100));
        assert_eq!(
            manifest.records,
            7200 + files
                .iter()
                .map(|f| f.records.len() as u64 - 100)
                .sum::<u64>()
                - manifest.duplicate_records
        );
    }

    #[test]
    fn one_file_for_the_whole_span() {
        let (files, manifest) = generate(&SampleSpec {
            file_period: SAMPLE_SPAN_SECONDS,
            ..spec(300)
        });
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].records.len() as u64,
            manifest.records + manifest.duplicate_records
        );
    }

    #[test]
    fn layout_and_counts() {
        let (files, manifest) = generate(&spec(1000));
        assert_eq!(manifest.files, files.len() as u64);
        assert!(files[0].path.starts_with("AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/26/111122223333_CloudTrail_us-east-1_20261126T0005Z_"));
        assert!(files[0].path.ends_with(".json.gz"));
        let written: u64 = files.iter().map(|f| f.records.len() as u64).sum();
        assert_eq!(written, manifest.records + manifest.duplicate_records);
        assert!(manifest.duplicate_records > 0);
        let expired = files
            .iter()
            .flat_map(|f| &f.records)
            .filter(|r| r["errorCode"] == "ExpiredToken")
            .count() as u64;
        assert_eq!(
            expired,
            manifest.expired_token_errors + manifest.duplicate_records
        );
        assert_eq!(manifest.scenarios.len(), 6);
        assert_eq!(manifest.caching_scenarios.len(), 5);
        assert_eq!(
            manifest
                .scenarios
                .iter()
                .find(|s| !s.caching)
                .map(|s| s.failures),
            Some(1)
        );
    }
}
