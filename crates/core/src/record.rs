//! The CloudTrail record as tokenwatch reads it: only the fields it uses, borrowed from the input where
//! the JSON has no escapes, everything else skipped.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use serde::Deserialize;
use serde::de::{Deserializer, Error, Visitor};

/// A JSON string borrowed from the input when it has no escapes. (serde's own `Cow<str>` always copies.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Str<'a>(pub Cow<'a, str>);

impl Deref for Str<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;

        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }

            fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(StrVisitor)
    }
}

type Text<'a> = Option<Str<'a>>;

/// One CloudTrail record (one API call). Unknown fields are ignored; every field is optional because
/// real records omit many of them (service events have no `userIdentity`, exports drop `eventTime`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record<'a> {
    #[serde(rename = "eventID", borrow, default)]
    pub event_id: Text<'a>,
    #[serde(borrow, default)]
    pub event_time: Text<'a>,
    /// Logstash exports carry the time here and drop `eventTime`.
    #[serde(rename = "@timestamp", borrow, default)]
    pub export_timestamp: Text<'a>,
    #[serde(borrow, default)]
    pub event_source: Text<'a>,
    #[serde(borrow, default)]
    pub event_name: Text<'a>,
    #[serde(borrow, default)]
    pub aws_region: Text<'a>,
    #[serde(rename = "sourceIPAddress", borrow, default)]
    pub source_ip_address: Text<'a>,
    #[serde(borrow, default)]
    pub user_agent: Text<'a>,
    #[serde(borrow, default)]
    pub error_code: Text<'a>,
    #[serde(borrow, default)]
    pub recipient_account_id: Text<'a>,
    #[serde(borrow, default)]
    pub user_identity: Option<UserIdentity<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserIdentity<'a> {
    #[serde(rename = "type", borrow, default)]
    pub kind: Text<'a>,
    #[serde(borrow, default)]
    pub principal_id: Text<'a>,
    #[serde(borrow, default)]
    pub arn: Text<'a>,
    #[serde(borrow, default)]
    pub account_id: Text<'a>,
    #[serde(borrow, default)]
    pub access_key_id: Text<'a>,
    #[serde(borrow, default)]
    pub user_name: Text<'a>,
    #[serde(borrow, default)]
    pub invoked_by: Text<'a>,
    #[serde(borrow, default)]
    pub session_context: Option<SessionContext<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionContext<'a> {
    #[serde(borrow, default)]
    pub session_issuer: Option<SessionIssuer<'a>>,
    #[serde(borrow, default)]
    pub attributes: Option<SessionAttributes<'a>>,
    #[serde(borrow, default)]
    pub web_id_federation_data: Option<WebIdFederationData<'a>>,
    /// Present (e.g. `"2.0"`) when EC2 delivered the credentials through instance metadata.
    #[serde(borrow, default)]
    pub ec2_role_delivery: Text<'a>,
    #[serde(borrow, default)]
    pub source_identity: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionIssuer<'a> {
    #[serde(rename = "type", borrow, default)]
    pub kind: Text<'a>,
    #[serde(borrow, default)]
    pub arn: Text<'a>,
    #[serde(borrow, default)]
    pub account_id: Text<'a>,
    #[serde(borrow, default)]
    pub user_name: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionAttributes<'a> {
    #[serde(borrow, default)]
    pub creation_date: Text<'a>,
    #[serde(borrow, default)]
    pub mfa_authenticated: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebIdFederationData<'a> {
    #[serde(borrow, default)]
    pub federated_provider: Text<'a>,
}

impl<'a> Record<'a> {
    /// Decodes one record from its JSON bytes.
    pub fn from_slice(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The text of an optional field, treating an empty string as absent (CloudTrail writes `""` and `{}` for
/// fields it has no value for).
pub fn text<'s>(field: &'s Text<'_>) -> Option<&'s str> {
    field.as_deref().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_it_needs_and_skips_the_rest() {
        let json = br#"{"eventVersion":"1.08","userIdentity":{"type":"AssumedRole","principalId":"AROAEXAMPLE:build-42",
            "arn":"arn:aws:sts::111122223333:assumed-role/ci/build-42","accountId":"111122223333","accessKeyId":"ASIAEXAMPLE",
            "sessionContext":{"sessionIssuer":{"type":"Role","principalId":"AROAEXAMPLE","arn":"arn:aws:iam::111122223333:role/ci",
            "accountId":"111122223333","userName":"ci"},"webIdFederationData":{},"attributes":{"creationDate":"2024-05-01T09:00:00Z",
            "mfaAuthenticated":"false"}}},"eventTime":"2024-05-01T10:01:02Z","eventSource":"s3.amazonaws.com","eventName":"ListBuckets",
            "awsRegion":"us-east-1","sourceIPAddress":"203.0.113.7","userAgent":"aws-cli/2.15.0","errorCode":"ExpiredToken",
            "errorMessage":"The security token included in the request is expired","requestParameters":{"deep":{"x":[1,2,{"y":null}]}},
            "responseElements":null,"eventID":"e1","readOnly":true,"recipientAccountId":"111122223333"}"#;
        let r = Record::from_slice(json).expect("parses");
        assert_eq!(r.event_id.as_deref(), Some("e1"));
        assert_eq!(r.error_code.as_deref(), Some("ExpiredToken"));
        let id = r.user_identity.expect("identity");
        assert_eq!(id.kind.as_deref(), Some("AssumedRole"));
        let ctx = id.session_context.expect("context");
        assert_eq!(
            ctx.session_issuer.and_then(|i| i.arn).as_deref(),
            Some("arn:aws:iam::111122223333:role/ci")
        );
        assert_eq!(
            ctx.attributes.and_then(|a| a.creation_date).as_deref(),
            Some("2024-05-01T09:00:00Z")
        );
        assert!(
            matches!(r.event_time, Some(Str(Cow::Borrowed(_)))),
            "no escapes: borrowed"
        );
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let r = Record::from_slice(br#"{"userAgent":"a\"b\u0041"}"#).expect("parses");
        assert_eq!(r.user_agent.as_deref(), Some("a\"bA"));
        assert!(matches!(r.user_agent, Some(Str(Cow::Owned(_)))));
    }

    #[test]
    fn wrong_types_are_errors_not_panics() {
        assert!(Record::from_slice(br#"{"errorCode":5}"#).is_err());
        assert!(Record::from_slice(br#"{"userIdentity":"root"}"#).is_err());
    }

    #[test]
    fn null_and_empty_fields_are_absent() {
        let r = Record::from_slice(br#"{"userIdentity":null,"errorCode":""}"#).expect("parses");
        assert!(r.user_identity.is_none());
        assert_eq!(text(&r.error_code), None);
    }
}
