//! The shapes a Lambda invocation can take, recognized from the payload itself: an EventBridge CloudTrail
//! event, a CloudWatch Logs subscription, an SQS batch of S3 notifications (direct, wrapped in SNS, or from
//! EventBridge), a direct S3 notification, and the scheduled sweep.

use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::read::GzDecoder;
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

/// A decompressed CloudWatch Logs payload larger than this is refused (Lambda payloads are at most 6 MB
/// compressed, and logs compress well, so this leaves a wide margin).
pub const MAX_LOGS_PAYLOAD_BYTES: u64 = 64 * 1024 * 1024;
/// CloudTrail writes digest files beside the logs; they hold hashes, not records.
pub const DIGEST_MARKER: &str = "CloudTrail-Digest";

const CLOUDTRAIL_DETAIL_TYPE: &str = "AWS API Call via CloudTrail";
const SCHEDULED_DETAIL_TYPE: &str = "Scheduled Event";
const S3_OBJECT_CREATED_DETAIL_TYPE: &str = "Object Created";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("awslogs.data is not valid base64")]
    Base64,
    #[error("awslogs.data does not inflate: {0}")]
    Gzip(String),
    #[error("awslogs.data inflates to more than {MAX_LOGS_PAYLOAD_BYTES} bytes")]
    TooLarge,
    #[error("invalid {what}: {reason}")]
    Shape { what: &'static str, reason: String },
}

/// One invocation's payload, by shape.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// EventBridge `AWS API Call via CloudTrail`: one record, in `detail`.
    CloudTrail {
        record: Value,
    },
    /// CloudWatch Logs subscription: `awslogs.data` (base64 of gzip of JSON).
    Logs {
        data: String,
    },
    /// SQS batch; each body names S3 objects (or is a test event).
    Sqs {
        messages: Vec<SqsMessage>,
    },
    /// S3 notification invoking the function directly.
    S3 {
        objects: Vec<S3Object>,
    },
    /// The schedule: sweep open incidents.
    Scheduled,
    Unrecognized {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsMessage {
    pub message_id: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct S3Object {
    pub bucket: String,
    /// Decoded (notifications URL-encode keys).
    pub key: String,
    pub size: Option<u64>,
}

impl S3Object {
    pub fn is_digest(&self) -> bool {
        self.key.contains(DIGEST_MARKER)
    }
}

/// What an SQS message body announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    Objects(Vec<S3Object>),
    /// `s3:TestEvent`, sent when the bucket notification is configured: nothing to do.
    Test,
}

pub fn parse_event(payload: Value) -> Event {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    if let Some(data) = payload
        .get("awslogs")
        .and_then(|a| a.get("data"))
        .and_then(Value::as_str)
    {
        return Event::Logs {
            data: data.to_owned(),
        };
    }
    match text(&payload, "detail-type").as_deref() {
        Some(CLOUDTRAIL_DETAIL_TYPE) => {
            return match payload.get("detail") {
                Some(detail) if detail.is_object() => Event::CloudTrail {
                    record: detail.clone(),
                },
                _ => Event::Unrecognized {
                    reason: "CloudTrail event without a detail object".to_owned(),
                },
            };
        }
        Some(SCHEDULED_DETAIL_TYPE) => return Event::Scheduled,
        _ => {}
    }
    let Some(records) = payload.get("Records").and_then(Value::as_array) else {
        return Event::Unrecognized {
            reason: describe(&payload),
        };
    };
    let source = records
        .first()
        .and_then(|r| text(r, "eventSource").or_else(|| text(r, "EventSource")));
    match source.as_deref() {
        Some("aws:sqs") => Event::Sqs {
            messages: records
                .iter()
                .map(|r| SqsMessage {
                    message_id: text(r, "messageId").unwrap_or_default(),
                    body: text(r, "body").unwrap_or_default(),
                })
                .collect(),
        },
        Some("aws:s3") => match s3_records(records) {
            Ok(objects) => Event::S3 { objects },
            Err(e) => Event::Unrecognized {
                reason: e.to_string(),
            },
        },
        _ => Event::Unrecognized {
            reason: describe(&payload),
        },
    }
}

/// A short description of an unknown payload for logs: its top-level keys, never its content.
fn describe(payload: &Value) -> String {
    match payload {
        Value::Object(map) => {
            let keys: Vec<&str> = map.keys().take(8).map(String::as_str).collect();
            format!("unknown payload with keys [{}]", keys.join(", "))
        }
        other => format!("unknown payload of JSON type {}", json_type(other)),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The CloudWatch Logs payload, inflated.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsPayload {
    #[serde(default)]
    pub message_type: String,
    #[serde(default)]
    pub log_group: String,
    #[serde(default)]
    pub log_events: Vec<LogEvent>,
}

#[derive(Debug, Deserialize)]
pub struct LogEvent {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub message: String,
}

impl LogsPayload {
    /// CloudWatch Logs sends a control message when a subscription is set up; it holds no records.
    pub fn is_control(&self) -> bool {
        self.message_type == "CONTROL_MESSAGE"
    }
}

pub fn decode_logs(data: &str) -> Result<LogsPayload, EnvelopeError> {
    let compressed = STANDARD
        .decode(data.trim())
        .map_err(|_| EnvelopeError::Base64)?;
    let mut inflated = Vec::new();
    GzDecoder::new(&compressed[..])
        .take(MAX_LOGS_PAYLOAD_BYTES + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| EnvelopeError::Gzip(e.to_string()))?;
    if inflated.len() as u64 > MAX_LOGS_PAYLOAD_BYTES {
        return Err(EnvelopeError::TooLarge);
    }
    serde_json::from_slice(&inflated).map_err(|e| EnvelopeError::Shape {
        what: "CloudWatch Logs payload",
        reason: e.to_string(),
    })
}

/// The S3 objects an SQS message body announces: an S3 event notification, the same wrapped in an SNS
/// notification, or an EventBridge `Object Created` event.
pub fn notification(body: &str) -> Result<Notification, EnvelopeError> {
    let shape = |reason: String| EnvelopeError::Shape {
        what: "S3 notification",
        reason,
    };
    let value: Value = serde_json::from_str(body).map_err(|e| shape(e.to_string()))?;
    if value.get("Type").and_then(Value::as_str) == Some("Notification") {
        let inner = value
            .get("Message")
            .and_then(Value::as_str)
            .ok_or_else(|| shape("SNS notification without a Message".to_owned()))?;
        return notification(inner);
    }
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notification::Test);
    }
    if value.get("detail-type").and_then(Value::as_str) == Some(S3_OBJECT_CREATED_DETAIL_TYPE) {
        let detail = value
            .get("detail")
            .ok_or_else(|| shape("no detail".to_owned()))?;
        let bucket = detail.pointer("/bucket/name").and_then(Value::as_str);
        let key = detail.pointer("/object/key").and_then(Value::as_str);
        return match (bucket, key) {
            (Some(bucket), Some(key)) => Ok(Notification::Objects(vec![S3Object {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                size: detail.pointer("/object/size").and_then(Value::as_u64),
            }])),
            _ => Err(shape(
                "Object Created event without bucket and key".to_owned(),
            )),
        };
    }
    let records = value
        .get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| shape(describe(&value)))?;
    s3_records(records).map(Notification::Objects)
}

fn s3_records(records: &[Value]) -> Result<Vec<S3Object>, EnvelopeError> {
    records
        .iter()
        .map(|r| {
            let bucket = r.pointer("/s3/bucket/name").and_then(Value::as_str);
            let key = r.pointer("/s3/object/key").and_then(Value::as_str);
            match (bucket, key) {
                (Some(bucket), Some(key)) => Ok(S3Object {
                    bucket: bucket.to_owned(),
                    key: url_decode(key),
                    size: r.pointer("/s3/object/size").and_then(Value::as_u64),
                }),
                _ => Err(EnvelopeError::Shape {
                    what: "S3 notification",
                    reason: "record without s3.bucket.name and s3.object.key".to_owned(),
                }),
            }
        })
        .collect()
}

/// S3 notifications encode keys as in a URL form: `+` for space, `%XX` for other bytes.
pub fn url_decode(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]))
            {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_decoding() {
        assert_eq!(
            url_decode("AWSLogs/1/a+b%3Dc.json.gz"),
            "AWSLogs/1/a b=c.json.gz"
        );
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(url_decode("bad%zzkey"), "bad%zzkey");
        assert_eq!(url_decode("%e2%9c%93"), "✓");
        assert_eq!(url_decode("%é%"), "%é%");
    }

    #[test]
    fn unknown_payloads_are_described_without_content() {
        let event = parse_event(serde_json::json!({"hello": "secret", "x": 1}));
        assert_eq!(
            event,
            Event::Unrecognized {
                reason: "unknown payload with keys [hello, x]".to_owned()
            }
        );
        assert!(matches!(
            parse_event(serde_json::json!([1])),
            Event::Unrecognized { .. }
        ));
        assert!(matches!(
            parse_event(
                serde_json::json!({"detail-type": "AWS API Call via CloudTrail", "detail": "x"})
            ),
            Event::Unrecognized { .. }
        ));
    }

    #[test]
    fn bad_logs_data_is_an_error() {
        assert_eq!(decode_logs("!!!").err(), Some(EnvelopeError::Base64));
        assert!(matches!(
            decode_logs("aGVsbG8="),
            Err(EnvelopeError::Gzip(_))
        ));
    }
}
