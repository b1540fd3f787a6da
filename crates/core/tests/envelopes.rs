//! Every delivery shape, from checked-in payloads as the Lambda receives them.

use std::path::Path;

use serde_json::Value;
use tokenwatch_core::envelope::{Event, Notification, decode_logs, notification, parse_event};
use tokenwatch_core::{ErrorCodes, Scanner, Validation};

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/events")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("fixture is JSON")
}

#[test]
fn eventbridge_cloudtrail_event_carries_one_record() {
    let Event::CloudTrail { record } = parse_event(fixture("eventbridge-cloudtrail.json")) else {
        panic!("not recognized as a CloudTrail event");
    };
    let bytes = serde_json::to_vec(&record).expect("json");
    let scanner = Scanner::new(ErrorCodes::default(), Validation::Full);
    let mut failures = Vec::new();
    let counts = scanner.scan(&bytes[..], |f| failures.push(f), |_| {});
    assert_eq!((counts.records, counts.malformed), (1, 0));
    assert_eq!(
        failures[0].identity.principal,
        "arn:aws:iam::111122223333:role/ci/build-bot"
    );
    assert_eq!(
        failures[0].event_id.as_deref(),
        Some("0f5b4c2e-7c1d-4b8e-9a3f-6d2e1c0b9a87")
    );
}

#[test]
fn scheduled_event_is_the_sweep() {
    assert_eq!(parse_event(fixture("scheduled.json")), Event::Scheduled);
}

#[test]
fn cloudwatch_logs_subscription_decodes_to_records() {
    let Event::Logs { data } = parse_event(fixture("cloudwatch-logs.json")) else {
        panic!("not recognized as a logs subscription");
    };
    let payload = decode_logs(&data).expect("decodes");
    assert!(!payload.is_control());
    assert_eq!(payload.log_group, "aws-cloudtrail-logs-111122223333");
    assert_eq!(payload.log_events.len(), 3);
    let scanner = Scanner::new(ErrorCodes::default(), Validation::Full);
    let mut failures = 0;
    for event in &payload.log_events {
        let counts = scanner.scan(event.message.as_bytes(), |_| failures += 1, |_| {});
        assert_eq!(counts.malformed, 0);
    }
    assert_eq!(failures, 2, "two expired-token records and one success");

    let Event::Logs { data } = parse_event(fixture("cloudwatch-logs-control.json")) else {
        panic!("control message not recognized");
    };
    assert!(decode_logs(&data).expect("decodes").is_control());
}

#[test]
fn sqs_batch_of_every_notification_flavour() {
    let Event::Sqs { messages } = parse_event(fixture("sqs-s3-notifications.json")) else {
        panic!("not recognized as SQS");
    };
    assert_eq!(messages.len(), 6);
    let parsed: Vec<Notification> = messages
        .iter()
        .map(|m| notification(&m.body).unwrap_or_else(|e| panic!("{}: {e}", m.message_id)))
        .collect();
    let Notification::Objects(direct) = &parsed[0] else {
        panic!("direct")
    };
    assert_eq!(direct[0].bucket, "org-trail-logs");
    assert!(
        direct[0]
            .key
            .starts_with("AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/")
    );
    assert_eq!(direct[0].size, Some(48213));
    assert_eq!(
        parsed[1], parsed[0],
        "SNS-wrapped notification names the same object"
    );
    assert_eq!(parsed[2], Notification::Test);
    let Notification::Objects(from_eventbridge) = &parsed[3] else {
        panic!("eventbridge")
    };
    assert!(
        from_eventbridge[0]
            .key
            .ends_with("Zz9yXx8wVv7uTt6s.json.gz")
    );
    let Notification::Objects(digest) = &parsed[4] else {
        panic!("digest")
    };
    assert!(digest[0].is_digest());
    let Notification::Objects(spaced) = &parsed[5] else {
        panic!("spaced")
    };
    assert!(
        spaced[0].key.ends_with("exported by=hand.json.gz"),
        "{}",
        spaced[0].key
    );
}

#[test]
fn direct_s3_invocation() {
    let Event::S3 { objects } = parse_event(fixture("s3-direct.json")) else {
        panic!("not recognized as S3");
    };
    assert_eq!(objects.len(), 1);
    assert!(!objects[0].is_digest());
}

#[test]
fn bad_bodies_are_errors_that_say_what() {
    for body in [
        "",
        "{}",
        "[]",
        r#"{"Type":"Notification"}"#,
        r#"{"Records":[{"s3":{}}]}"#,
        "\u{0}",
    ] {
        let error = notification(body).expect_err(body);
        assert!(
            error.to_string().starts_with("invalid S3 notification"),
            "{body}: {error}"
        );
    }
}
