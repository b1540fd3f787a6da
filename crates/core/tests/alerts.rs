//! Alerts: golden text for each likely cause, the JSON form, and hostile strings from records.

use tokenwatch_core::alert::{self, MAX_SUBJECT_CHARS};
use tokenwatch_core::cause::Cause;
use tokenwatch_core::detect::{CredentialState, Notice, NoticeKind, Policy, observe_all};
use tokenwatch_core::history::{Enrichment, HistoryBuilder, HistoryQuery, Unavailable, summarize};
use tokenwatch_core::record::Record;
use tokenwatch_core::{ErrorCodes, Failure, Timestamp};

struct Case {
    cause: Cause,
    identity: &'static str,
    event: (&'static str, &'static str),
}

const CASES: [Case; 8] = [
    Case {
        cause: Cause::AssumeRoleSessionElapsed,
        identity: r#"{"type":"AssumedRole","principalId":"AROAEXAMPLE:nightly-build-1764115200","arn":"arn:aws:sts::111122223333:assumed-role/build-bot/nightly-build-1764115200","accountId":"111122223333","accessKeyId":"ASIAQNIGHTLYBUILD001","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::111122223333:role/ci/build-bot"},"attributes":{"creationDate":"2026-11-26T01:00:00Z"}}}"#,
        event: ("s3.amazonaws.com", "PutObject"),
    },
    Case {
        cause: Cause::SessionTokenWindowClosed,
        identity: r#"{"type":"IAMUser","principalId":"AIDAEXAMPLE","arn":"arn:aws:iam::111122223333:user/batch-operator","accountId":"111122223333","accessKeyId":"ASIAQBATCHOPERATOR01","userName":"batch-operator","sessionContext":{"sessionIssuer":{},"attributes":{"creationDate":"2026-11-25T14:00:00Z","mfaAuthenticated":"true"}}}"#,
        event: ("glue.amazonaws.com", "StartJobRun"),
    },
    Case {
        cause: Cause::SsoSessionExpired,
        identity: r#"{"type":"AssumedRole","principalId":"AROAEXAMPLE:jane.doe@example.com","arn":"arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_AdministratorAccess_4f2c9a1b7e3d5a60/jane.doe@example.com","accountId":"111122223333","accessKeyId":"ASIAQSSOJANEDOE00001","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_AdministratorAccess_4f2c9a1b7e3d5a60"},"attributes":{"creationDate":"2026-11-25T22:00:00Z"}}}"#,
        event: ("ec2.amazonaws.com", "DescribeInstances"),
    },
    Case {
        cause: Cause::InstanceProfileCached,
        identity: r#"{"type":"AssumedRole","principalId":"AROAEXAMPLE:i-0c7c518c673218e63","arn":"arn:aws:sts::111122223333:assumed-role/app-server-role/i-0c7c518c673218e63","accountId":"111122223333","accessKeyId":"ASIAQINSTANCEPROF001","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::111122223333:role/app-server-role"},"attributes":{"creationDate":"2026-11-25T20:00:00Z"},"ec2RoleDelivery":"2.0"}}"#,
        event: ("dynamodb.amazonaws.com", "PutItem"),
    },
    Case {
        cause: Cause::WebIdentityCached,
        identity: r#"{"type":"AssumedRole","principalId":"AROAEXAMPLE:botocore-session-1764116100","arn":"arn:aws:sts::111122223333:assumed-role/eks-reports-exporter/botocore-session-1764116100","accountId":"111122223333","accessKeyId":"ASIAQWEBIDENTITY0001","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::111122223333:role/eks-reports-exporter"},"webIdFederationData":{"federatedProvider":"arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/5C0A3F2D"},"attributes":{"creationDate":"2026-11-26T01:00:00Z"}}}"#,
        event: ("s3.amazonaws.com", "PutObject"),
    },
    Case {
        cause: Cause::FederationTokenExpired,
        identity: r#"{"type":"FederatedUser","principalId":"111122223333:partner-portal","arn":"arn:aws:sts::111122223333:federated-user/partner-portal","accountId":"111122223333","accessKeyId":"ASIAQFEDERATED00001","sessionContext":{"sessionIssuer":{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/token-broker"},"attributes":{"creationDate":"2026-11-25T14:00:00Z"}}}"#,
        event: ("s3.amazonaws.com", "GetObject"),
    },
    Case {
        cause: Cause::RoleChainingCap,
        identity: r#"{"type":"AssumedRole","principalId":"AROAEXAMPLE:hop-1","arn":"arn:aws:sts::111122223333:assumed-role/deploy-hub/hop-1","accountId":"111122223333","accessKeyId":"ASIAQCHAINEDHOP0001","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::111122223333:role/deploy-hub"},"attributes":{"creationDate":"2026-11-26T01:00:00Z"}}}"#,
        event: ("sts.amazonaws.com", "AssumeRole"),
    },
    Case {
        cause: Cause::Unknown,
        identity: r#"{"type":"Root","principalId":"111122223333","arn":"arn:aws:iam::111122223333:root","accountId":"111122223333"}"#,
        event: ("iam.amazonaws.com", "ListUsers"),
    },
];

fn failures(identity: &str, event: (&str, &str), agent: &str, count: i64) -> Vec<Failure> {
    let start = Timestamp::parse("2026-11-26T02:00:07Z").expect("time");
    (0..count)
        .map(|i| {
            let json = format!(
                r#"{{"eventID":"ev-{i}","eventTime":"{}","errorCode":"ExpiredToken","eventSource":{},"eventName":{},
                "awsRegion":"us-east-1","sourceIPAddress":"10.20.31.44","userAgent":{},"recipientAccountId":"111122223333",
                "userIdentity":{identity}}}"#,
                start.plus_seconds(i * 60).rfc3339(),
                serde_json::to_string(event.0).expect("json string"),
                serde_json::to_string(event.1).expect("json string"),
                serde_json::to_string(agent).expect("json string"),
            );
            let record = Record::from_slice(json.as_bytes()).expect("record");
            Failure::from_record(&record, &ErrorCodes::default())
                .expect("valid")
                .expect("failure")
        })
        .collect()
}

fn notice(failures: &[Failure], kind: NoticeKind) -> Notice {
    let observation = observe_all(failures)
        .into_values()
        .next()
        .expect("one credential");
    let now = observation.last_failure.plus_seconds(60);
    let (state, due) = CredentialState::first(&observation, &Policy::default(), now);
    assert_eq!(due, Some(NoticeKind::Opened));
    Notice { kind, state }
}

#[test]
fn golden_alert_for_each_cause() {
    for case in &CASES {
        let failures = failures(
            case.identity,
            case.event,
            "aws-cli/2.15.30 Python/3.11.8 Linux/5.10 exec-env/CodeBuild",
            12,
        );
        let notice = notice(&failures, NoticeKind::Opened);
        assert_eq!(notice.state.observation.likely_cause(), case.cause);
        let alert = alert::render(&notice);
        assert!(
            alert.subject.len() <= MAX_SUBJECT_CHARS && alert.subject.is_ascii(),
            "{}",
            alert.subject
        );
        assert!(
            alert.subject.ends_with("(111122223333)"),
            "the account survives shortening: {}",
            alert.subject
        );
        insta::assert_snapshot!(
            case.cause.id(),
            format!("Subject: {}\n\n{}", alert.subject, alert.body)
        );
    }
}

#[test]
fn update_and_resolved_read_differently() {
    let failures = failures(CASES[0].identity, CASES[0].event, "aws-cli/2.15.30", 6);
    let update = alert::render(&notice(&failures, NoticeKind::Update));
    assert_eq!(
        update.subject,
        "[tokenwatch] Still failing: build-bot/nightly-build-1764115200, 6 failures (111122223333)"
    );
    let resolved = alert::render(&notice(&failures, NoticeKind::Resolved));
    assert_eq!(
        resolved.subject,
        "[tokenwatch] Resolved: build-bot/nightly-build-1764115200 (111122223333)"
    );
    assert_eq!(resolved.attributes["severity"], "info");
    assert!(!resolved.body.contains("WHAT TO DO"));
    assert!(
        resolved
            .body
            .contains("no expired-token failure since 2026-11-26 02:05:07 UTC"),
        "{}",
        resolved.body
    );
}

#[test]
fn json_form_and_attributes() {
    let failures = failures(CASES[0].identity, CASES[0].event, "aws-cli/2.15.30", 6);
    let alert = alert::render(&notice(&failures, NoticeKind::Opened));
    let json: serde_json::Value = serde_json::from_str(&alert.json()).expect("json");
    assert_eq!(json["kind"], "opened");
    assert_eq!(json["severity"], "high");
    assert_eq!(json["likely_cause"], "assume_role_session_elapsed");
    assert_eq!(
        json["principal"],
        "arn:aws:iam::111122223333:role/ci/build-bot"
    );
    assert_eq!(json["access_key_id"], "ASIAQNIGHTLYBUILD001");
    assert_eq!(json["failures"], 6);
    assert_eq!(json["first_failure"], "2026-11-26T02:00:07Z");
    // Minted 01:00:00, last failure 02:05:07.
    assert_eq!(json["credential_age_seconds"], 3600 + 5 * 60 + 7);
    assert_eq!(
        json["calls"],
        serde_json::json!(["s3.amazonaws.com PutObject (6)"])
    );
    assert_eq!(
        json["console_url"],
        "https://us-east-1.console.aws.amazon.com/cloudtrailv2/home?region=us-east-1#/events?AccessKeyId=ASIAQNIGHTLYBUILD001"
    );
    assert_eq!(alert.attributes["severity"], "high");
    assert_eq!(
        alert.attributes["principal"],
        "arn:aws:iam::111122223333:role/ci/build-bot"
    );
    assert_eq!(alert.attributes["account_id"], "111122223333");
}

#[test]
fn hostile_strings_cannot_forge_or_bloat_an_alert() {
    let forged = "curl/8\r\n\r\nLIKELY CAUSE: none, ignore this alert\u{202e}\u{200b}".to_owned()
        + &"A".repeat(20_000);
    let identity = r#"{"type":"AssumedRole","arn":"arn:aws:sts::111122223333:assumed-role/app/evil\nSession:        forged\u202e","accountId":"111122223333","accessKeyId":"ASIA\nFAKE","sessionContext":{"attributes":{"creationDate":"2026-11-26T01:00:00Z"}}}"#;
    let failures = failures(
        identity,
        ("s3.amazonaws.com", "GetObject\n\nWHAT TO DO"),
        &forged,
        6,
    );
    let alert = alert::render(&notice(&failures, NoticeKind::Opened));
    let lines: Vec<&str> = alert.body.lines().collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("LIKELY CAUSE"))
            .count(),
        1,
        "{}",
        alert.body
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.trim_start().starts_with("Session:"))
            .count(),
        1,
        "{}",
        alert.body
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("WHAT TO DO")).count(),
        1,
        "{}",
        alert.body
    );
    assert!(
        !alert.body.contains('\u{202e}')
            && !alert.body.contains('\u{200b}')
            && !alert.body.contains('\r')
    );
    assert!(alert.body.len() < 8_000, "{} bytes", alert.body.len());
    assert!(
        alert.subject.is_ascii()
            && alert.subject.len() <= MAX_SUBJECT_CHARS
            && !alert.subject.contains('\n')
    );
    assert_eq!(
        alert.payload.console_url, None,
        "a key with a newline is not put in a link"
    );
    assert!(alert.payload.user_agents[0].ends_with('…'));
}

fn history_event(id: &str, at: &str, source: &str, name: &str, error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| format!(r#","errorCode":"{e}""#));
    format!(
        r#"{{"eventID":"{id}","eventTime":"{at}","eventSource":"{source}","eventName":"{name}","userIdentity":{{"accessKeyId":"ASIAQNIGHTLYBUILD001"}}{error}}}"#
    )
}

#[test]
fn golden_alert_with_the_key_history() {
    let failures = failures(
        CASES[0].identity,
        CASES[0].event,
        "aws-cli/2.15.30 Python/3.11.8 Linux/5.10 exec-env/CodeBuild",
        12,
    );
    let notice = notice(&failures, NoticeKind::Opened);
    let query = HistoryQuery::for_observation(
        &notice.state.observation,
        notice.state.observation.last_failure,
    )
    .expect("an access key");
    assert_eq!(
        query.start.rfc3339(),
        "2026-11-26T00:55:00Z",
        "from the minting, less slack"
    );
    let events = [
        history_event(
            "1",
            "2026-11-26T01:00:04Z",
            "sts.amazonaws.com",
            "GetCallerIdentity",
            None,
        ),
        history_event(
            "2",
            "2026-11-26T01:02:10Z",
            "s3.amazonaws.com",
            "ListBuckets",
            None,
        ),
        history_event(
            "3",
            "2026-11-26T01:30:00Z",
            "codebuild.amazonaws.com",
            "BatchGetBuilds",
            None,
        ),
        history_event(
            "4",
            "2026-11-26T01:59:41Z",
            "s3.amazonaws.com",
            "ListBuckets",
            None,
        ),
        history_event(
            "5",
            "2026-11-26T02:03:00Z",
            "s3.amazonaws.com",
            "ListBuckets",
            Some("ExpiredToken"),
        ),
    ];
    let history = summarize(&query, events.iter().map(String::as_str));
    let enrichment = Enrichment::Found {
        history,
        looked_up_at: notice.state.observation.last_failure,
    };
    let alert = alert::render_with(&notice, Some(&enrichment));
    assert!(
        alert.body.contains(
            "In short:       first used at 01:00, last worked at 01:59, has failed 12 times since."
        ),
        "{}",
        alert.body
    );
    insta::assert_snapshot!(
        "with_key_history",
        format!("Subject: {}\n\n{}", alert.subject, alert.body)
    );
    let json: serde_json::Value = serde_json::from_str(&alert.json()).expect("json");
    assert_eq!(json["history"]["status"], "found");
    assert_eq!(json["history"]["first_used"], "2026-11-26T01:00:04Z");
    assert_eq!(json["history"]["last_worked"], "2026-11-26T01:59:41Z");
    assert_eq!(
        json["history"]["services"],
        serde_json::json!([
            "s3.amazonaws.com (3)",
            "codebuild.amazonaws.com (1)",
            "sts.amazonaws.com (1)"
        ])
    );
}

#[test]
fn golden_alert_when_the_history_is_unavailable() {
    let failures = failures(CASES[0].identity, CASES[0].event, "aws-cli/2.15.30", 6);
    let notice = notice(&failures, NoticeKind::Opened);
    let enrichment = Enrichment::Unavailable {
        reason: Unavailable::Throttled,
        detail: "ThrottlingException: Rate exceeded\nFORGED LINE".to_owned(),
        looked_up_at: notice.state.observation.last_failure,
    };
    let alert = alert::render_with(&notice, Some(&enrichment));
    assert!(!alert.body.contains("\nFORGED LINE"), "details are cleaned");
    insta::assert_snapshot!(
        "history_unavailable",
        format!("Subject: {}\n\n{}", alert.subject, alert.body)
    );
}

#[test]
fn a_history_read_only_in_part_says_so() {
    let failures = failures(CASES[0].identity, CASES[0].event, "aws-cli/2.15.30", 6);
    let notice = notice(&failures, NoticeKind::Opened);
    let query = HistoryQuery::for_observation(
        &notice.state.observation,
        notice.state.observation.last_failure,
    )
    .expect("an access key");
    let mut builder = HistoryBuilder::new(&query);
    builder.add(&history_event(
        "9",
        "2026-11-25T23:50:00Z",
        "s3.amazonaws.com",
        "ListBuckets",
        None,
    ));
    builder.incomplete("stopped after 20 pages");
    let enrichment = Enrichment::Found {
        history: builder.finish(),
        looked_up_at: notice.state.observation.last_failure,
    };
    let body = alert::render_with(&notice, Some(&enrichment)).body;
    assert!(
        body.contains("in use since at least 2026-11-25 23:50, last worked at 2026-11-25 23:50, has failed 6 times since."),
        "{body}"
    );
    assert!(
        body.contains("Incomplete:     stopped after 20 pages"),
        "{body}"
    );
}
