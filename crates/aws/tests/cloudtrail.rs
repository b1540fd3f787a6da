//! The LookupEvents adapter against a local stub that speaks CloudTrail's awsJson 1.1 protocol as the SDK
//! does (moto does not implement LookupEvents): pagination, throttling retried by the SDK, persistent
//! throttling, access denied, a service too slow for the budget, and the rate limiter's refusal.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokenwatch_aws::cloudtrail::RegionLimiters;
use tokenwatch_aws::{CloudTrailHistory, SdkOptions, sdk};
use tokenwatch_core::Timestamp;
use tokenwatch_core::history::{
    CredentialHistory, HistoryQuery, LOOKUP_EVENTS_PER_SECOND, Unavailable,
};
use tokio::net::TcpListener;

/// The target the SDK sends (AWS also accepts it with the `com.amazonaws.cloudtrail.v20131101.` prefix).
const TARGET: &str = "CloudTrail_20131101.LookupEvents";
const LONG_TARGET: &str = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents";
const KEY: &str = "ASIASTUBKEY000000001";

/// What the stub answers, in order; the last answer repeats.
#[derive(Debug, Clone)]
enum Answer {
    Page {
        events: Vec<String>,
        next: Option<String>,
    },
    Error {
        status: u16,
        kind: &'static str,
    },
    Hang,
}

/// A request as the stub saw it: `X-Amz-Target`, `Content-Type`, the JSON body, `Authorization`.
type Seen = (Option<String>, Option<String>, Value, Option<String>);

#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<Answer>>,
    requests: Mutex<Vec<Seen>>,
}

struct Stub {
    endpoint: String,
    script: Arc<Script>,
}

impl Stub {
    async fn start(answers: Vec<Answer>) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let script = Arc::new(Script {
            answers: Mutex::new(answers.into()),
            requests: Mutex::default(),
        });
        let shared = Arc::clone(&script);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let script = Arc::clone(&script);
                        async move { Ok::<_, Infallible>(answer(&script, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Stub { endpoint, script }
    }

    fn requests(&self) -> Vec<Seen> {
        self.script.requests.lock().expect("lock").clone()
    }
}

async fn answer(script: &Script, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (target, content_type) = (header("x-amz-target"), header("content-type"));
    let authorization = header("authorization");
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    script.requests.lock().expect("lock").push((
        target.clone(),
        content_type.clone(),
        body.clone(),
        authorization,
    ));
    let reply = |status: u16, body: Value| {
        Response::builder()
            .status(StatusCode::from_u16(status).expect("status"))
            .header("content-type", "application/x-amz-json-1.1")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("response")
    };
    if !matches!(target.as_deref(), Some(TARGET | LONG_TARGET))
        || content_type.as_deref() != Some("application/x-amz-json-1.1")
    {
        return reply(
            400,
            json!({"__type": "UnknownOperationException", "message": "not LookupEvents"}),
        );
    }
    let next = {
        let mut answers = script.answers.lock().expect("lock");
        if answers.len() > 1 {
            answers.pop_front()
        } else {
            answers.front().cloned()
        }
    };
    match next {
        Some(Answer::Page { events, next }) => {
            let events: Vec<Value> = events
                .iter()
                .map(|record| {
                    let parsed: Value = serde_json::from_str(record).unwrap_or(Value::Null);
                    let time = parsed["eventTime"]
                        .as_str()
                        .and_then(Timestamp::parse)
                        .map_or(0, Timestamp::unix);
                    json!({"EventId": parsed["eventID"], "EventName": parsed["eventName"],
                        "EventSource": parsed["eventSource"], "AccessKeyId": KEY, "ReadOnly": "true",
                        "EventTime": time, "Username": "stub", "Resources": [], "CloudTrailEvent": record})
                })
                .collect();
            let mut body = json!({ "Events": events });
            if let Some(next) = next {
                body["NextToken"] = json!(next);
            }
            reply(200, body)
        }
        Some(Answer::Error { status, kind }) => reply(
            status,
            json!({"__type": kind, "message": format!("{kind} from the stub")}),
        ),
        Some(Answer::Hang) | None => std::future::pending().await,
    }
}

fn record(id: &str, at: i64, name: &str, error: Option<&str>) -> String {
    let mut record = json!({"eventVersion": "1.09", "eventID": id, "eventTime": Timestamp::from_unix(at).rfc3339(),
        "eventSource": "ec2.amazonaws.com", "eventName": name, "awsRegion": "us-east-1",
        "userIdentity": {"type": "AssumedRole", "accessKeyId": KEY}});
    if let Some(code) = error {
        record["errorCode"] = json!(code);
    }
    record.to_string()
}

const T0: i64 = 1_790_000_000;

fn query() -> HistoryQuery {
    HistoryQuery {
        access_key_id: KEY.to_owned(),
        region: None,
        start: Timestamp::from_unix(T0 - 7200),
        end: Timestamp::from_unix(T0 + 600),
    }
}

/// The adapter as shipped (our retry policy and timeouts), pointed at the stub, with its own limiter.
async fn history(stub: &Stub) -> CloudTrailHistory {
    let config = sdk::loader(&SdkOptions {
        region: Some("us-east-1".into()),
        endpoint_url: Some(stub.endpoint.clone()),
        ..SdkOptions::default()
    })
    .credentials_provider(Credentials::for_tests())
    .load()
    .await;
    CloudTrailHistory::with_limiters(
        aws_sdk_cloudtrail::Client::new(&config),
        Arc::new(RegionLimiters::new(1000, 1000)),
    )
}

fn soon(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

#[tokio::test]
async fn pages_are_followed_by_next_token_and_summarized() {
    let stub = Stub::start(vec![
        Answer::Page {
            events: vec![
                record("e5", T0 + 300, "DescribeInstances", Some("ExpiredToken")),
                record("e4", T0 + 200, "DescribeInstances", Some("ExpiredToken")),
            ],
            next: Some("token-1".into()),
        },
        Answer::Page {
            events: vec![record("e3", T0 - 60, "DescribeVolumes", None)],
            next: Some("token-2".into()),
        },
        Answer::Page {
            events: vec![
                record("e2", T0 - 3000, "DescribeInstances", None),
                record("e1", T0 - 3540, "RunInstances", None),
            ],
            next: None,
        },
    ])
    .await;
    let found = history(&stub)
        .await
        .lookup(&query(), soon(30))
        .await
        .expect("history");
    assert_eq!(found.events, 5);
    assert_eq!(found.incomplete, None);
    let first = found.first_used.expect("first use");
    assert_eq!(
        (first.at.unix(), first.call.as_str()),
        (T0 - 3540, "ec2.amazonaws.com RunInstances")
    );
    assert_eq!(found.last_worked.expect("last success").at.unix(), T0 - 60);
    assert_eq!(found.failed_since, 2);

    let requests = stub.requests();
    assert_eq!(requests.len(), 3);
    for (target, content_type, _, _) in &requests {
        assert_eq!(target.as_deref(), Some(TARGET));
        assert_eq!(content_type.as_deref(), Some("application/x-amz-json-1.1"));
    }
    let first_request = &requests[0].2;
    assert_eq!(
        first_request["LookupAttributes"],
        json!([{"AttributeKey": "AccessKeyId", "AttributeValue": KEY}])
    );
    assert_eq!(first_request["StartTime"], json!(T0 - 7200));
    assert_eq!(first_request["EndTime"], json!(T0 + 600));
    assert_eq!(first_request["MaxResults"], json!(50));
    assert_eq!(first_request.get("NextToken"), None);
    assert_eq!(requests[1].2["NextToken"], "token-1");
    assert_eq!(requests[2].2["NextToken"], "token-2");
}

#[tokio::test]
async fn a_throttled_request_is_retried_by_the_sdk() {
    let stub = Stub::start(vec![
        Answer::Error {
            status: 400,
            kind: "ThrottlingException",
        },
        Answer::Page {
            events: vec![record("e1", T0, "DescribeInstances", None)],
            next: None,
        },
    ])
    .await;
    let found = history(&stub)
        .await
        .lookup(&query(), soon(30))
        .await
        .expect("history after a retry");
    assert_eq!(found.events, 1);
    assert_eq!(stub.requests().len(), 2);
}

#[tokio::test]
async fn persistent_throttling_gives_up_after_the_sdk_attempts() {
    let stub = Stub::start(vec![Answer::Error {
        status: 400,
        kind: "ThrottlingException",
    }])
    .await;
    let error = history(&stub)
        .await
        .lookup(&query(), soon(30))
        .await
        .expect_err("throttled");
    assert_eq!(error.reason, Unavailable::Throttled, "{error}");
    assert_eq!(stub.requests().len() as u32, sdk::MAX_ATTEMPTS);
}

#[tokio::test]
async fn throttling_after_some_pages_keeps_what_was_read() {
    let stub = Stub::start(vec![
        Answer::Page {
            events: vec![record("e2", T0, "DescribeInstances", Some("ExpiredToken"))],
            next: Some("token-1".into()),
        },
        Answer::Error {
            status: 400,
            kind: "ThrottlingException",
        },
    ])
    .await;
    let found = history(&stub)
        .await
        .lookup(&query(), soon(30))
        .await
        .expect("partial history");
    assert_eq!(found.events, 1);
    let why = found.incomplete.expect("incomplete");
    assert!(
        why.contains("stopped after 1 pages") && why.contains("throttled"),
        "{why}"
    );
}

#[tokio::test]
async fn access_denied_is_not_retried() {
    let stub = Stub::start(vec![Answer::Error {
        status: 400,
        kind: "AccessDeniedException",
    }])
    .await;
    let error = history(&stub)
        .await
        .lookup(&query(), soon(30))
        .await
        .expect_err("denied");
    assert_eq!(error.reason, Unavailable::Denied, "{error}");
    assert!(error.message.contains("AccessDeniedException"), "{error}");
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn a_service_slower_than_the_budget_times_out() {
    let stub = Stub::start(vec![Answer::Hang]).await;
    let started = Instant::now();
    let error = history(&stub)
        .await
        .lookup(&query(), Instant::now() + Duration::from_millis(300))
        .await
        .expect_err("no answer");
    assert_eq!(error.reason, Unavailable::TimedOut, "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped at the deadline, not the SDK's attempt timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_rate_limiter_stops_a_lookup_whose_next_page_would_miss_the_deadline() {
    let pages: Vec<Answer> = (0..5)
        .map(|n| Answer::Page {
            events: vec![record(
                &format!("e{n}"),
                T0 - n * 60,
                "DescribeInstances",
                None,
            )],
            next: Some(format!("token-{n}")),
        })
        .collect();
    let stub = Stub::start(pages).await;
    let config = sdk::loader(&SdkOptions {
        region: Some("us-east-1".into()),
        endpoint_url: Some(stub.endpoint.clone()),
        ..SdkOptions::default()
    })
    .credentials_provider(Credentials::for_tests())
    .load()
    .await;
    // LookupEvents' own rate: two at once, then one every 500 ms; the budget ends before the third.
    let limited = CloudTrailHistory::with_limiters(
        aws_sdk_cloudtrail::Client::new(&config),
        Arc::new(RegionLimiters::new(
            LOOKUP_EVENTS_PER_SECOND,
            LOOKUP_EVENTS_PER_SECOND,
        )),
    );
    let found = limited
        .lookup(&query(), Instant::now() + Duration::from_millis(250))
        .await
        .expect("the pages read");
    assert_eq!(stub.requests().len(), 2);
    assert_eq!(found.events, 2);
    let why = found.incomplete.expect("incomplete");
    assert!(why.contains("rate limit"), "{why}");
}

#[tokio::test]
async fn the_lookup_goes_to_the_region_the_key_was_used_in_with_that_regions_limit() {
    let stub = Stub::start(vec![Answer::Page {
        events: vec![record("e1", T0, "DescribeInstances", None)],
        next: None,
    }])
    .await;
    let config = sdk::loader(&SdkOptions {
        region: Some("us-east-1".into()),
        endpoint_url: Some(stub.endpoint.clone()),
        ..SdkOptions::default()
    })
    .credentials_provider(Credentials::for_tests())
    .load()
    .await;
    let limiters = Arc::new(RegionLimiters::new(
        LOOKUP_EVENTS_PER_SECOND,
        LOOKUP_EVENTS_PER_SECOND,
    ));
    let history = CloudTrailHistory::with_limiters(
        aws_sdk_cloudtrail::Client::new(&config),
        Arc::clone(&limiters),
    );
    // us-east-1's bucket is spent by someone else; eu-west-1 has its own.
    let spent = limiters.for_region("us-east-1");
    for _ in 0..LOOKUP_EVENTS_PER_SECOND {
        spent
            .acquire(tokio::time::Instant::now() + Duration::from_secs(5))
            .await
            .expect("token");
    }
    let in_ireland = HistoryQuery {
        region: Some("eu-west-1".into()),
        ..query()
    };
    let found = history
        .lookup(&in_ireland, Instant::now() + Duration::from_millis(100))
        .await
        .expect("eu-west-1 has tokens");
    assert_eq!(found.events, 1);
    let authorization = stub.requests()[0].3.clone().expect("signed");
    assert!(
        authorization.contains("/eu-west-1/cloudtrail/aws4_request"),
        "{authorization}"
    );
    let refused = history
        .lookup(&query(), Instant::now() + Duration::from_millis(100))
        .await
        .expect_err("us-east-1 has none before the deadline");
    assert_eq!(refused.reason, Unavailable::TimedOut);
}
