//! Translation between the Smithy RPC v2 CBOR wire format and the awsJson 1.0 wire format.
//!
//! Requests go CBOR → JSON and need no schema: CBOR is self-describing, so a tag-1 item is a
//! timestamp (JSON carries timestamps as epoch-seconds numbers), a byte string is a blob (JSON
//! carries blobs as base64 strings), a float is a float.
//!
//! Responses go JSON → CBOR and do need a little schema, because JSON loses types that the SDK's
//! CBOR decoder insists on: a timestamp must be a tag-1 item, a `double` member must be a CBOR
//! float even when its JSON value is written `7`, a blob must be a byte string. [`Hints`] supplies
//! that per member name; [`cloudwatch_hint`] is the table for CloudWatch's output shapes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ciborium::Value as Cbor;
use serde_json::{Map, Number, Value as Json};

/// CBOR tag for an epoch-seconds date/time (RFC 8949 §3.4.2).
pub const EPOCH_TAG: u64 = 1;

/// Why a document could not be translated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    /// The bytes are not one well-formed CBOR data item.
    #[error("malformed CBOR: {0}")]
    MalformedCbor(String),
    /// The bytes are not a JSON document.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A CBOR map key that is not a text string (Smithy structures and maps have text keys).
    #[error("CBOR map key is not a text string")]
    NonTextKey,
    /// A CBOR tag other than 1 (epoch timestamp).
    #[error("unsupported CBOR tag {0}")]
    UnsupportedTag(u64),
    /// A tag-1 item whose content is not a number.
    #[error("CBOR timestamp (tag 1) does not hold a number")]
    BadTimestamp,
    /// An integer outside the range JSON numbers carry here (i64 and u64).
    #[error("integer out of range: {0}")]
    IntegerOutOfRange(i128),
    /// A CBOR item with no JSON counterpart (e.g. `undefined`).
    #[error("unsupported CBOR item: {0}")]
    Unsupported(String),
    /// A JSON value that does not fit the type the member is known to have.
    #[error("member `{member}`: {problem}")]
    Mistyped {
        /// The member name.
        member: String,
        /// What was wrong.
        problem: String,
    },
}

/// The type of a response member that JSON cannot express on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// A `timestamp`: JSON epoch seconds → CBOR tag 1.
    Timestamp,
    /// A `double` or `float`: any JSON number (or `"NaN"`, `"Infinity"`, `"-Infinity"`) → CBOR float.
    Double,
    /// A `blob`: JSON base64 string → CBOR byte string.
    Blob,
}

/// The member-name → type table used for responses. A hint applies to the member's value and,
/// when that value is a list or a map, to its elements or values.
pub type Hints = fn(&str) -> Option<Hint>;

/// No hints: numbers keep their JSON form (integers stay integers), strings stay strings.
pub fn no_hints(_: &str) -> Option<Hint> {
    None
}

/// The members of CloudWatch's output and error shapes whose types JSON loses.
///
/// Derived from the CloudWatch service model (2010-08-01): across every output and error
/// structure, each of these member names has one type, so a name-keyed table is exact.
pub fn cloudwatch_hint(member: &str) -> Option<Hint> {
    match member {
        "AlarmConfigurationUpdatedTimestamp"
        | "CreatedAt"
        | "CreationDate"
        | "EndTime"
        | "ExpireDate"
        | "LastModified"
        | "LastUpdateDate"
        | "LastUpdatedTimestamp"
        | "StartDate"
        | "StartTime"
        | "StateTransitionedTimestamp"
        | "StateUpdatedTimestamp"
        | "Timestamp"
        | "Timestamps"
        | "UpdatedAt" => Some(Hint::Timestamp),
        "AggregateValue"
        | "ApproximateAggregateValue"
        | "ApproximateValue"
        | "Average"
        | "ExtendedStatistics"
        | "MaxContributorValue"
        | "Maximum"
        | "Minimum"
        | "SampleCount"
        | "Sum"
        | "Threshold"
        | "UniqueContributors"
        | "Values" => Some(Hint::Double),
        "MetricWidgetImage" => Some(Hint::Blob),
        _ => None,
    }
}

/// Decodes one CBOR data item (definite or indefinite lengths). An empty body is an empty
/// structure, as the RPC v2 CBOR protocol allows for operations without input.
pub fn decode_cbor(bytes: &[u8]) -> Result<Cbor, ConvertError> {
    if bytes.is_empty() {
        return Ok(Cbor::Map(Vec::new()));
    }
    let mut reader = bytes;
    let value: Cbor = ciborium::de::from_reader(&mut reader)
        .map_err(|e| ConvertError::MalformedCbor(e.to_string()))?;
    if !reader.is_empty() {
        return Err(ConvertError::MalformedCbor(format!(
            "{} trailing bytes after the data item",
            reader.len()
        )));
    }
    Ok(value)
}

/// Encodes a CBOR value (definite lengths; floats in the smallest width that holds them exactly).
pub fn encode_cbor(value: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail for I/O reasons, and every `Value` is serializable.
    if let Err(e) = ciborium::ser::into_writer(value, &mut out) {
        tracing::error!(error = %e, "CBOR encoding failed");
    }
    out
}

/// An RPC v2 CBOR request body → the equivalent awsJson 1.0 request body.
pub fn request_cbor_to_json(bytes: &[u8]) -> Result<Vec<u8>, ConvertError> {
    let json = cbor_to_json(&decode_cbor(bytes)?)?;
    serde_json::to_vec(&json).map_err(|e| ConvertError::MalformedJson(e.to_string()))
}

/// An awsJson 1.0 response body → the equivalent RPC v2 CBOR response body. An empty body is an
/// empty structure.
pub fn response_json_to_cbor(bytes: &[u8], hints: Hints) -> Result<Vec<u8>, ConvertError> {
    let json: Json = if bytes.iter().all(u8::is_ascii_whitespace) {
        Json::Object(Map::new())
    } else {
        serde_json::from_slice(bytes).map_err(|e| ConvertError::MalformedJson(e.to_string()))?
    };
    Ok(encode_cbor(&json_to_cbor(&json, hints)?))
}

/// CBOR → JSON, schema-free.
pub fn cbor_to_json(value: &Cbor) -> Result<Json, ConvertError> {
    Ok(match value {
        Cbor::Null => Json::Null,
        Cbor::Bool(b) => Json::Bool(*b),
        Cbor::Integer(i) => integer_to_json(i128::from(*i))?,
        Cbor::Float(f) => float_to_json(*f),
        Cbor::Text(s) => Json::String(s.clone()),
        Cbor::Bytes(b) => Json::String(BASE64.encode(b)),
        Cbor::Tag(EPOCH_TAG, inner) => match inner.as_ref() {
            Cbor::Integer(i) => integer_to_json(i128::from(*i))?,
            Cbor::Float(f) if f.is_finite() => float_to_json(*f),
            _ => return Err(ConvertError::BadTimestamp),
        },
        Cbor::Tag(tag, _) => return Err(ConvertError::UnsupportedTag(*tag)),
        Cbor::Array(items) => {
            Json::Array(items.iter().map(cbor_to_json).collect::<Result<_, _>>()?)
        }
        Cbor::Map(entries) => {
            let mut object = Map::new();
            for (key, value) in entries {
                let Cbor::Text(key) = key else {
                    return Err(ConvertError::NonTextKey);
                };
                object.insert(key.clone(), cbor_to_json(value)?);
            }
            Json::Object(object)
        }
        other => return Err(ConvertError::Unsupported(format!("{other:?}"))),
    })
}

fn integer_to_json(i: i128) -> Result<Json, ConvertError> {
    if let Ok(v) = i64::try_from(i) {
        Ok(Json::Number(v.into()))
    } else if let Ok(v) = u64::try_from(i) {
        Ok(Json::Number(v.into()))
    } else {
        Err(ConvertError::IntegerOutOfRange(i))
    }
}

/// awsJson writes non-finite doubles as the strings `NaN`, `Infinity` and `-Infinity`.
fn float_to_json(f: f64) -> Json {
    match Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => Json::String("NaN".into()),
        None if f > 0.0 => Json::String("Infinity".into()),
        None => Json::String("-Infinity".into()),
    }
}

/// JSON → CBOR, using `hints` for the members whose type JSON cannot express.
pub fn json_to_cbor(value: &Json, hints: Hints) -> Result<Cbor, ConvertError> {
    convert(value, None, "", hints)
}

fn convert(
    value: &Json,
    hint: Option<Hint>,
    member: &str,
    hints: Hints,
) -> Result<Cbor, ConvertError> {
    let mistyped = |problem: &str| ConvertError::Mistyped {
        member: member.to_owned(),
        problem: problem.to_owned(),
    };
    Ok(match (value, hint) {
        (Json::Null, _) => Cbor::Null,
        (Json::Bool(b), _) => Cbor::Bool(*b),
        (Json::Number(n), Some(Hint::Timestamp)) => {
            Cbor::Tag(EPOCH_TAG, Box::new(number_to_cbor(n)))
        }
        (Json::Number(n), Some(Hint::Double)) => Cbor::Float(
            n.as_f64()
                .ok_or_else(|| mistyped("not representable as a double"))?,
        ),
        (Json::Number(_), Some(Hint::Blob)) => {
            return Err(mistyped("a number where a blob was expected"));
        }
        (Json::Number(n), None) => number_to_cbor(n),
        (Json::String(s), Some(Hint::Double)) => Cbor::Float(match s.as_str() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            _ => return Err(mistyped("a string where a double was expected")),
        }),
        (Json::String(s), Some(Hint::Blob)) => Cbor::Bytes(
            BASE64
                .decode(s)
                .map_err(|e| mistyped(&format!("invalid base64: {e}")))?,
        ),
        (Json::String(_), Some(Hint::Timestamp)) => {
            return Err(mistyped("a string where epoch seconds were expected"));
        }
        (Json::String(s), None) => Cbor::Text(s.clone()),
        (Json::Array(items), hint) => Cbor::Array(
            items
                .iter()
                .map(|item| convert(item, hint, member, hints))
                .collect::<Result<_, _>>()?,
        ),
        // A hinted object is a map whose values have the hinted type (e.g. `ExtendedStatistics`).
        (Json::Object(entries), Some(hint)) => Cbor::Map(
            entries
                .iter()
                .map(|(k, v)| {
                    Ok((
                        Cbor::Text(k.clone()),
                        convert(v, Some(hint), member, hints)?,
                    ))
                })
                .collect::<Result<_, ConvertError>>()?,
        ),
        // An unhinted object is a structure (or a map of unhinted values): hint by member name.
        (Json::Object(entries), None) => Cbor::Map(
            entries
                .iter()
                .map(|(k, v)| Ok((Cbor::Text(k.clone()), convert(v, hints(k), k, hints)?)))
                .collect::<Result<_, ConvertError>>()?,
        ),
    })
}

fn number_to_cbor(n: &Number) -> Cbor {
    if let Some(i) = n.as_i64() {
        Cbor::Integer(i.into())
    } else if let Some(u) = n.as_u64() {
        Cbor::Integer(u.into())
    } else {
        // serde_json numbers are finite, so this is always a real float.
        Cbor::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn request_with_timestamps_blobs_floats_and_nesting_becomes_exact_json() {
        // {"Namespace": "TW", "MetricData": [{"MetricName": "E", "Timestamp": 1(1700000000),
        //   "Value": 1.5, "Counts": [2.0], "Dimensions": [{"Name": "P", "Value": "x"}],
        //   "Blob": h'0102', "Flag": true, "Nothing": null, "Neg": -3}]}
        let cbor = Cbor::Map(vec![
            (Cbor::Text("Namespace".into()), Cbor::Text("TW".into())),
            (
                Cbor::Text("MetricData".into()),
                Cbor::Array(vec![Cbor::Map(vec![
                    (Cbor::Text("MetricName".into()), Cbor::Text("E".into())),
                    (
                        Cbor::Text("Timestamp".into()),
                        Cbor::Tag(1, Box::new(Cbor::Integer(1_700_000_000.into()))),
                    ),
                    (Cbor::Text("Value".into()), Cbor::Float(1.5)),
                    (
                        Cbor::Text("Counts".into()),
                        Cbor::Array(vec![Cbor::Float(2.0)]),
                    ),
                    (
                        Cbor::Text("Dimensions".into()),
                        Cbor::Array(vec![Cbor::Map(vec![
                            (Cbor::Text("Name".into()), Cbor::Text("P".into())),
                            (Cbor::Text("Value".into()), Cbor::Text("x".into())),
                        ])]),
                    ),
                    (Cbor::Text("Blob".into()), Cbor::Bytes(vec![1, 2])),
                    (Cbor::Text("Flag".into()), Cbor::Bool(true)),
                    (Cbor::Text("Nothing".into()), Cbor::Null),
                    (Cbor::Text("Neg".into()), Cbor::Integer((-3).into())),
                ])]),
            ),
        ]);
        let json = request_cbor_to_json(&encode_cbor(&cbor)).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"MetricData":[{"Blob":"AQI=","Counts":[2.0],"Dimensions":[{"Name":"P","Value":"x"}],"Flag":true,"MetricName":"E","Neg":-3,"Nothing":null,"Timestamp":1700000000,"Value":1.5}],"Namespace":"TW"}"#
        );
    }

    #[test]
    fn fractional_float_timestamp_becomes_a_json_float() {
        // 1(1700000000.25) as a double, the way the Rust SDK writes timestamps.
        let bytes = unhex("a1 62 5473 c1 fb 41d954fc40100000");
        assert_eq!(
            String::from_utf8(request_cbor_to_json(&bytes).unwrap()).unwrap(),
            r#"{"Ts":1700000000.25}"#
        );
    }

    #[test]
    fn indefinite_length_items_are_read() {
        // {_ "Keys": [_ "a", (_ "b", "c")], "Raw": (_ h'01', h'02')}
        let bytes =
            unhex("bf 64 4b657973 9f 61 61 7f 61 62 61 63 ff ff 63 526177 5f 41 01 41 02 ff ff");
        assert_eq!(
            String::from_utf8(request_cbor_to_json(&bytes).unwrap()).unwrap(),
            r#"{"Keys":["a","bc"],"Raw":"AQI="}"#
        );
    }

    #[test]
    fn half_single_and_non_finite_floats() {
        // {"h": 1.5 as f16, "s": 0.25 as f32, "n": NaN f16, "i": -Infinity f16}
        let bytes = unhex("a4 61 68 f9 3e00 61 73 fa 3e800000 61 6e f9 7e00 61 69 f9 fc00");
        assert_eq!(
            String::from_utf8(request_cbor_to_json(&bytes).unwrap()).unwrap(),
            r#"{"h":1.5,"i":"-Infinity","n":"NaN","s":0.25}"#
        );
    }

    #[test]
    fn empty_request_body_is_an_empty_structure() {
        assert_eq!(request_cbor_to_json(b"").unwrap(), b"{}");
    }

    #[test]
    fn unsupported_request_items_are_rejected() {
        // tag 4 (decimal fraction)
        assert_eq!(
            request_cbor_to_json(&unhex("a1 61 64 c4 82 21 19 6ab3")),
            Err(ConvertError::UnsupportedTag(4))
        );
        // integer map key
        assert_eq!(
            request_cbor_to_json(&unhex("a1 01 02")),
            Err(ConvertError::NonTextKey)
        );
        // tag 1 around a string
        assert_eq!(
            request_cbor_to_json(&unhex("a1 61 74 c1 61 78")),
            Err(ConvertError::BadTimestamp)
        );
        // truncated
        assert!(matches!(
            request_cbor_to_json(&unhex("a2 61 74")),
            Err(ConvertError::MalformedCbor(_))
        ));
        // two items
        assert!(matches!(
            request_cbor_to_json(&unhex("a0 a0")),
            Err(ConvertError::MalformedCbor(_))
        ));
    }

    #[test]
    fn get_metric_data_response_gets_tagged_timestamps_and_float_values() {
        let json = br#"{"MetricDataResults": [{"Id": "m1", "Label": "E Sum", "Timestamps": [1795782796, 1795782856.5], "Values": [7, 7.5], "StatusCode": "Complete"}]}"#;
        let cbor = response_json_to_cbor(json, cloudwatch_hint).unwrap();
        let expected = Cbor::Map(vec![(
            Cbor::Text("MetricDataResults".into()),
            Cbor::Array(vec![Cbor::Map(vec![
                (Cbor::Text("Id".into()), Cbor::Text("m1".into())),
                (Cbor::Text("Label".into()), Cbor::Text("E Sum".into())),
                (
                    Cbor::Text("StatusCode".into()),
                    Cbor::Text("Complete".into()),
                ),
                (
                    Cbor::Text("Timestamps".into()),
                    Cbor::Array(vec![
                        Cbor::Tag(1, Box::new(Cbor::Integer(1_795_782_796.into()))),
                        Cbor::Tag(1, Box::new(Cbor::Float(1_795_782_856.5))),
                    ]),
                ),
                (
                    Cbor::Text("Values".into()),
                    Cbor::Array(vec![Cbor::Float(7.0), Cbor::Float(7.5)]),
                ),
            ])]),
        )]);
        assert_eq!(decode_cbor(&cbor).unwrap(), expected);
        // The exact bytes: integers stay integers inside tag 1, floats take the narrowest exact width.
        assert_eq!(
            hex(&cbor),
            concat!(
                "a1",
                "71",
                "4d657472696344617461526573756c7473",
                "81",
                "a5",
                "62",
                "4964",
                "62",
                "6d31",
                "65",
                "4c6162656c",
                "65",
                "452053756d",
                "6a",
                "537461747573436f6465",
                "68",
                "436f6d706c657465",
                "6a",
                "54696d657374616d7073",
                "82",
                "c1",
                "1a6b09788c",
                "c1",
                "fb41dac25e32200000",
                "66",
                "56616c756573",
                "82",
                "f94700",
                "f94780",
            )
        );
    }

    #[test]
    fn statistics_response_with_map_of_doubles_blob_and_non_finite() {
        let json = json!({
            "Label": "E",
            "Datapoints": [{"Timestamp": 60, "SampleCount": 3, "Sum": 7.5, "Unit": "Count",
                            "ExtendedStatistics": {"p99": 4}}],
            "MetricWidgetImage": "AQI=",
            "Threshold": "NaN",
            "Period": 60,
        });
        let cbor = json_to_cbor(&json, cloudwatch_hint).unwrap();
        let expected = Cbor::Map(vec![
            (
                Cbor::Text("Datapoints".into()),
                Cbor::Array(vec![Cbor::Map(vec![
                    (
                        Cbor::Text("ExtendedStatistics".into()),
                        Cbor::Map(vec![(Cbor::Text("p99".into()), Cbor::Float(4.0))]),
                    ),
                    (Cbor::Text("SampleCount".into()), Cbor::Float(3.0)),
                    (Cbor::Text("Sum".into()), Cbor::Float(7.5)),
                    (
                        Cbor::Text("Timestamp".into()),
                        Cbor::Tag(1, Box::new(Cbor::Integer(60.into()))),
                    ),
                    (Cbor::Text("Unit".into()), Cbor::Text("Count".into())),
                ])]),
            ),
            (Cbor::Text("Label".into()), Cbor::Text("E".into())),
            (
                Cbor::Text("MetricWidgetImage".into()),
                Cbor::Bytes(vec![1, 2]),
            ),
            (Cbor::Text("Period".into()), Cbor::Integer(60.into())),
            (Cbor::Text("Threshold".into()), Cbor::Float(f64::NAN)),
        ]);
        // NaN != NaN, so compare the encodings.
        assert_eq!(hex(&encode_cbor(&cbor)), hex(&encode_cbor(&expected)));
    }

    #[test]
    fn error_response_keeps_type_and_message() {
        let json =
            br#"{"__type": "GraniteServiceVersion20100801#ValidationException", "message": "bad"}"#;
        let cbor = response_json_to_cbor(json, cloudwatch_hint).unwrap();
        assert_eq!(
            decode_cbor(&cbor).unwrap(),
            Cbor::Map(vec![
                (
                    Cbor::Text("__type".into()),
                    Cbor::Text("GraniteServiceVersion20100801#ValidationException".into())
                ),
                (Cbor::Text("message".into()), Cbor::Text("bad".into())),
            ])
        );
    }

    #[test]
    fn empty_response_body_is_an_empty_map() {
        assert_eq!(
            response_json_to_cbor(b"", cloudwatch_hint).unwrap(),
            vec![0xa0]
        );
        assert_eq!(
            response_json_to_cbor(b"{}", cloudwatch_hint).unwrap(),
            vec![0xa0]
        );
    }

    #[test]
    fn mistyped_response_members_are_rejected() {
        assert!(matches!(
            json_to_cbor(&json!({"Timestamp": "2024-01-01T00:00:00Z"}), cloudwatch_hint),
            Err(ConvertError::Mistyped { member, .. }) if member == "Timestamp"
        ));
        assert!(matches!(
            json_to_cbor(&json!({"MetricWidgetImage": "***"}), cloudwatch_hint),
            Err(ConvertError::Mistyped { member, .. }) if member == "MetricWidgetImage"
        ));
        assert!(matches!(
            response_json_to_cbor(b"<html>", cloudwatch_hint),
            Err(ConvertError::MalformedJson(_))
        ));
    }

    #[test]
    fn round_trip_through_both_directions_preserves_values() {
        let original =
            json!({"Timestamp": 1_700_000_000, "Values": [1.25, 2.0], "Name": "n", "Count": 3});
        let cbor = json_to_cbor(&original, cloudwatch_hint).unwrap();
        let back = cbor_to_json(&cbor).unwrap();
        assert_eq!(
            back,
            json!({"Timestamp": 1_700_000_000, "Values": [1.25, 2.0], "Name": "n", "Count": 3})
        );
    }
}
