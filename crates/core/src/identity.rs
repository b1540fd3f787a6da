//! Who made a call: the principal, the role session, and the credential that signed it, derived from a
//! record's `userIdentity` by the rules in DESIGN.md.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::record::{Record, UserIdentity, text};
use crate::timestamp::Timestamp;

/// Principal used when a record names nobody (service events carry no `userIdentity`).
pub const UNKNOWN_PRINCIPAL: &str = "unknown";

/// The `userIdentity.type` values tokenwatch treats differently.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum IdentityKind {
    AssumedRole,
    IamUser,
    Root,
    FederatedUser,
    AwsService,
    Other(String),
    Missing,
}

impl IdentityKind {
    fn from_type(kind: Option<&str>) -> Self {
        match kind {
            Some("AssumedRole") => Self::AssumedRole,
            Some("IAMUser") => Self::IamUser,
            Some("Root") => Self::Root,
            Some("FederatedUser") => Self::FederatedUser,
            Some("AWSService") => Self::AwsService,
            Some(other) => Self::Other(other.to_owned()),
            None => Self::Missing,
        }
    }

    /// Long-lived identities have no role session of their own.
    fn has_sessions(&self) -> bool {
        !matches!(self, Self::IamUser | Self::Root | Self::AwsService)
    }
}

/// The signing identity of one record, owned so it can outlive the input buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub kind: IdentityKind,
    /// The role (with its path), user or root ARN that owns the credential.
    pub principal: String,
    pub account_id: Option<String>,
    /// The role-session or federated-user name; `None` for IAM users and root.
    pub session_name: Option<String>,
    pub access_key_id: Option<String>,
    /// `sessionContext.attributes.creationDate`: when the temporary credential was minted.
    pub credential_created: Option<Timestamp>,
    /// `webIdFederationData.federatedProvider` (an OIDC issuer for IRSA, for instance).
    pub web_identity_provider: Option<String>,
    /// EC2 delivered the credential through instance metadata (`sessionContext.ec2RoleDelivery`).
    pub ec2_role_delivery: bool,
}

/// What identifies one credential for counting and detection: the access key id, or, when a record has
/// none, the principal with its session name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CredentialKey {
    AccessKey(String),
    Session {
        principal: String,
        session_name: Option<String>,
    },
}

impl CredentialKey {
    pub fn access_key_id(&self) -> Option<&str> {
        match self {
            Self::AccessKey(id) => Some(id),
            Self::Session { .. } => None,
        }
    }
}

impl fmt::Display for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AccessKey(id) => f.write_str(id),
            Self::Session {
                principal,
                session_name: Some(name),
            } => write!(f, "{principal} session {name}"),
            Self::Session { principal, .. } => f.write_str(principal),
        }
    }
}

impl Identity {
    pub fn from_record(record: &Record<'_>) -> Self {
        match &record.user_identity {
            Some(user) => Self::from_user_identity(user),
            None => Self {
                kind: IdentityKind::Missing,
                principal: UNKNOWN_PRINCIPAL.to_owned(),
                account_id: text(&record.recipient_account_id).map(str::to_owned),
                session_name: None,
                access_key_id: None,
                credential_created: None,
                web_identity_provider: None,
                ec2_role_delivery: false,
            },
        }
    }

    fn from_user_identity(user: &UserIdentity<'_>) -> Self {
        let kind = IdentityKind::from_type(text(&user.kind));
        let arn = text(&user.arn);
        let context = user.session_context.as_ref();
        let issuer_arn = context
            .and_then(|c| c.session_issuer.as_ref())
            .and_then(|i| text(&i.arn));
        let principal = issuer_arn
            .map(str::to_owned)
            .or_else(|| match kind {
                IdentityKind::IamUser | IdentityKind::Root => arn.map(str::to_owned),
                _ => None,
            })
            .or_else(|| arn.and_then(role_arn_from_assumed_role))
            .or_else(|| arn.map(str::to_owned))
            .or_else(|| text(&user.invoked_by).map(str::to_owned))
            .or_else(|| text(&user.principal_id).map(str::to_owned))
            .unwrap_or_else(|| UNKNOWN_PRINCIPAL.to_owned());
        let session_name = if kind.has_sessions() {
            arn.and_then(session_from_arn)
                .or_else(|| {
                    text(&user.principal_id)
                        .and_then(|id| id.split_once(':'))
                        .map(|(_, session)| session)
                        .filter(|s| !s.is_empty())
                })
                .map(str::to_owned)
        } else {
            None
        };
        let account_id = text(&user.account_id)
            .or_else(|| arn.and_then(account_from_arn))
            .map(str::to_owned);
        Self {
            kind,
            principal,
            account_id,
            session_name,
            access_key_id: text(&user.access_key_id).map(str::to_owned),
            credential_created: context
                .and_then(|c| c.attributes.as_ref())
                .and_then(|a| text(&a.creation_date))
                .and_then(Timestamp::parse),
            web_identity_provider: context
                .and_then(|c| c.web_id_federation_data.as_ref())
                .and_then(|w| text(&w.federated_provider))
                .map(str::to_owned),
            ec2_role_delivery: context.is_some_and(|c| text(&c.ec2_role_delivery).is_some()),
        }
    }

    pub fn credential_key(&self) -> CredentialKey {
        match &self.access_key_id {
            Some(id) => CredentialKey::AccessKey(id.clone()),
            None => CredentialKey::Session {
                principal: self.principal.clone(),
                session_name: self.session_name.clone(),
            },
        }
    }

    /// Seconds the credential had lived when it was used at `at`, when the record says when it was minted.
    pub fn credential_age_at(&self, at: Timestamp) -> Option<i64> {
        self.credential_created
            .map(|created| at.seconds_since(created))
    }

    /// The role name when the principal is a role ARN (`arn:aws:iam::1:role/path/Name` → `Name`).
    pub fn role_name(&self) -> Option<&str> {
        let resource = arn_resource(&self.principal)?;
        let path = resource.strip_prefix("role/")?;
        path.rsplit('/').next().filter(|s| !s.is_empty())
    }

    /// Temporary credentials have `ASIA` access keys; long-term user keys have `AKIA`.
    pub fn is_temporary_key(&self) -> bool {
        self.access_key_id
            .as_deref()
            .is_some_and(|k| k.starts_with("ASIA"))
    }
}

/// The part of an ARN after the fifth `:` (`arn:partition:service:region:account:resource`).
fn arn_resource(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    (parts.next()? == "arn").then_some(())?;
    parts.nth(4)
}

fn account_from_arn(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| !a.is_empty())
}

/// `arn:aws:sts::ACCT:assumed-role/ROLE/SESSION` → `arn:aws:iam::ACCT:role/ROLE` (the path is not in the
/// session ARN, so it cannot be restored here).
fn role_arn_from_assumed_role(arn: &str) -> Option<String> {
    let mut parts = arn.splitn(6, ':');
    let (prefix, partition, service, _region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if prefix != "arn" || service != "sts" {
        return None;
    }
    let role = resource.strip_prefix("assumed-role/")?.split('/').next()?;
    (!role.is_empty()).then(|| format!("arn:{partition}:iam::{account}:role/{role}"))
}

fn session_from_arn(arn: &str) -> Option<&str> {
    let resource = arn_resource(arn)?;
    let name = if let Some(rest) = resource.strip_prefix("assumed-role/") {
        rest.split_once('/')?.1
    } else {
        resource.strip_prefix("federated-user/")?
    };
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(json: &str) -> Identity {
        let record = Record::from_slice(json.as_bytes()).expect("test record parses");
        Identity::from_record(&record)
    }

    #[test]
    fn assumed_role_uses_the_issuer_with_its_path() {
        let id = identity(
            r#"{"userIdentity":{"type":"AssumedRole","principalId":"AROAX:jane@example.com",
            "arn":"arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Admin_0123/jane@example.com",
            "accountId":"111122223333","accessKeyId":"ASIAQ1",
            "sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0123"},
            "attributes":{"creationDate":"2024-05-01T09:00:00Z"}}},"eventTime":"2024-05-01T10:00:00Z"}"#,
        );
        assert_eq!(id.kind, IdentityKind::AssumedRole);
        assert_eq!(
            id.principal,
            "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0123"
        );
        assert_eq!(id.session_name.as_deref(), Some("jane@example.com"));
        assert_eq!(id.role_name(), Some("AWSReservedSSO_Admin_0123"));
        assert_eq!(
            id.credential_key(),
            CredentialKey::AccessKey("ASIAQ1".into())
        );
        let at = Timestamp::parse("2024-05-01T10:00:00Z").expect("time");
        assert_eq!(id.credential_age_at(at), Some(3600));
    }

    #[test]
    fn assumed_role_without_issuer_derives_the_role_arn() {
        let id = identity(
            r#"{"userIdentity":{"type":"AssumedRole","arn":"arn:aws-us-gov:sts::111122223333:assumed-role/deploy/run-7","sessionContext":{"sessionIssuer":{}}}}"#,
        );
        assert_eq!(id.principal, "arn:aws-us-gov:iam::111122223333:role/deploy");
        assert_eq!(id.session_name.as_deref(), Some("run-7"));
        assert_eq!(id.account_id.as_deref(), Some("111122223333"));
        assert_eq!(
            id.credential_key(),
            CredentialKey::Session {
                principal: "arn:aws-us-gov:iam::111122223333:role/deploy".into(),
                session_name: Some("run-7".into())
            }
        );
    }

    #[test]
    fn iam_user_with_a_session_token_has_no_session_name() {
        let id = identity(
            r#"{"userIdentity":{"type":"IAMUser","principalId":"AIDAX","arn":"arn:aws:iam::123456789123:user/pedro",
            "accountId":"123456789123","accessKeyId":"ASIA5F","userName":"pedro",
            "sessionContext":{"webIdFederationData":{},"sessionIssuer":{},"attributes":{"mfaAuthenticated":"true","creationDate":"2020-09-13T17:16:47Z"}}}}"#,
        );
        assert_eq!(id.kind, IdentityKind::IamUser);
        assert_eq!(id.principal, "arn:aws:iam::123456789123:user/pedro");
        assert_eq!(id.session_name, None);
        assert!(id.is_temporary_key());
        assert_eq!(id.web_identity_provider, None);
        assert!(id.credential_created.is_some());
    }

    #[test]
    fn root_is_its_own_principal() {
        let id = identity(
            r#"{"userIdentity":{"type":"Root","principalId":"111122223333","arn":"arn:aws:iam::111122223333:root","accountId":"111122223333","accessKeyId":"ASIAR"}}"#,
        );
        assert_eq!(id.principal, "arn:aws:iam::111122223333:root");
        assert_eq!(id.session_name, None);
    }

    #[test]
    fn federated_user_session_and_issuer() {
        let id = identity(
            r#"{"userIdentity":{"type":"FederatedUser","principalId":"111122223333:stratus","arn":"arn:aws:sts::111122223333:federated-user/stratus",
            "accountId":"111122223333","accessKeyId":"ASIAF","sessionContext":{"sessionIssuer":{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/ops"}}}}"#,
        );
        assert_eq!(id.principal, "arn:aws:iam::111122223333:user/ops");
        assert_eq!(id.session_name.as_deref(), Some("stratus"));
    }

    #[test]
    fn aws_service_is_named_by_the_service() {
        let id = identity(
            r#"{"userIdentity":{"type":"AWSService","invokedBy":"cloudtrail.amazonaws.com"}}"#,
        );
        assert_eq!(id.kind, IdentityKind::AwsService);
        assert_eq!(id.principal, "cloudtrail.amazonaws.com");
        assert_eq!(id.session_name, None);
        assert_eq!(
            id.credential_key(),
            CredentialKey::Session {
                principal: "cloudtrail.amazonaws.com".into(),
                session_name: None
            }
        );
    }

    #[test]
    fn no_user_identity_is_unknown() {
        let id = identity(r#"{"eventType":"AwsServiceEvent","recipientAccountId":"111122223333"}"#);
        assert_eq!(id.kind, IdentityKind::Missing);
        assert_eq!(id.principal, UNKNOWN_PRINCIPAL);
        assert_eq!(id.account_id.as_deref(), Some("111122223333"));
    }

    #[test]
    fn session_from_principal_id_when_the_arn_has_none() {
        let id = identity(
            r#"{"userIdentity":{"type":"AssumedRole","principalId":"AROAX:i-0abc1234def567890","sessionContext":{"ec2RoleDelivery":"2.0",
            "sessionIssuer":{"arn":"arn:aws:iam::1:role/app"}}}}"#,
        );
        assert_eq!(id.session_name.as_deref(), Some("i-0abc1234def567890"));
        assert!(id.ec2_role_delivery);
    }

    #[test]
    fn malformed_arns_do_not_confuse_the_rules() {
        for arn in [
            "",
            "arn",
            "arn:aws:sts",
            "nonsense:aws:sts::1:assumed-role/r/s",
            "arn:aws:sts::1:assumed-role/",
        ] {
            assert_eq!(role_arn_from_assumed_role(arn), None, "{arn}");
        }
        assert_eq!(session_from_arn("arn:aws:sts::1:assumed-role/r"), None);
        assert_eq!(session_from_arn("arn:aws:sts::1:assumed-role/r/"), None);
    }
}
