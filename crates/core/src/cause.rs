//! Why a credential outlived its lease, inferred from the records alone, and what on-call should do about it.
//! The facts behind the steps come from the troubleshooting guide in `shared/reference/`; the words are ours.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::identity::IdentityKind;

/// The likely cause of a stale-credential incident (DESIGN.md's identifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    AssumeRoleSessionElapsed,
    SessionTokenWindowClosed,
    SsoSessionExpired,
    InstanceProfileCached,
    WebIdentityCached,
    FederationTokenExpired,
    RoleChainingCap,
    Unknown,
}

/// What the records say about a credential, as far as the cause is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CauseFacts {
    pub kind: Option<IdentityKindName>,
    pub role_name: Option<String>,
    pub principal: String,
    pub session_name: Option<String>,
    pub temporary_key: bool,
    pub ec2_role_delivery: bool,
    pub web_identity_provider: Option<String>,
    /// The credential was used to call `sts:AssumeRole`: it is one hop of a role chain.
    pub assumed_another_role: bool,
}

/// `userIdentity.type`, kept as the names CloudTrail uses so stored state reads naturally.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IdentityKindName {
    AssumedRole,
    IAMUser,
    Root,
    FederatedUser,
    AWSService,
    Other(String),
}

impl From<&IdentityKind> for Option<IdentityKindName> {
    fn from(kind: &IdentityKind) -> Self {
        Some(match kind {
            IdentityKind::AssumedRole => IdentityKindName::AssumedRole,
            IdentityKind::IamUser => IdentityKindName::IAMUser,
            IdentityKind::Root => IdentityKindName::Root,
            IdentityKind::FederatedUser => IdentityKindName::FederatedUser,
            IdentityKind::AwsService => IdentityKindName::AWSService,
            IdentityKind::Other(other) => IdentityKindName::Other(other.clone()),
            IdentityKind::Missing => return None,
        })
    }
}

/// IAM Identity Center provisions roles named `AWSReservedSSO_<permission set>_<id>` under this path.
const SSO_ROLE_PREFIX: &str = "AWSReservedSSO_";
const SSO_ROLE_PATH: &str = "/aws-reserved/sso.amazonaws.com/";
/// EKS Pod Identity names sessions `eks-<cluster>-<pod>-<uuid>`.
const POD_IDENTITY_SESSION_PREFIX: &str = "eks-";

impl Cause {
    pub fn infer(facts: &CauseFacts) -> Self {
        match facts.kind {
            Some(IdentityKindName::IAMUser | IdentityKindName::Root) if facts.temporary_key => {
                Self::SessionTokenWindowClosed
            }
            Some(IdentityKindName::FederatedUser) => Self::FederationTokenExpired,
            Some(IdentityKindName::AssumedRole) => {
                let session = facts.session_name.as_deref().unwrap_or_default();
                if facts
                    .role_name
                    .as_deref()
                    .is_some_and(|r| r.starts_with(SSO_ROLE_PREFIX))
                    || facts.principal.contains(SSO_ROLE_PATH)
                {
                    Self::SsoSessionExpired
                } else if facts.ec2_role_delivery || is_instance_id(session) {
                    Self::InstanceProfileCached
                } else if facts.web_identity_provider.is_some()
                    || session.starts_with(POD_IDENTITY_SESSION_PREFIX)
                {
                    Self::WebIdentityCached
                } else if facts.assumed_another_role {
                    Self::RoleChainingCap
                } else {
                    Self::AssumeRoleSessionElapsed
                }
            }
            _ => Self::Unknown,
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            Self::AssumeRoleSessionElapsed => "assume_role_session_elapsed",
            Self::SessionTokenWindowClosed => "session_token_window_closed",
            Self::SsoSessionExpired => "sso_session_expired",
            Self::InstanceProfileCached => "instance_profile_cached",
            Self::WebIdentityCached => "web_identity_cached",
            Self::FederationTokenExpired => "federation_token_expired",
            Self::RoleChainingCap => "role_chaining_cap",
            Self::Unknown => "unknown",
        }
    }

    /// One line on what is going on.
    pub fn summary(self) -> &'static str {
        match self {
            Self::AssumeRoleSessionElapsed => {
                "An AssumeRole session ran past its lifetime and the process kept using the credentials it fetched at the start."
            }
            Self::SessionTokenWindowClosed => {
                "An IAM user's session token (GetSessionToken, often MFA-backed) reached the end of its window and is still being used."
            }
            Self::SsoSessionExpired => {
                "An IAM Identity Center (SSO) session expired; the role credentials cached from it are still being used."
            }
            Self::InstanceProfileCached => {
                "Code on an EC2 instance read the instance-profile credentials once and kept them after the metadata service rotated them."
            }
            Self::WebIdentityCached => {
                "A workload exchanged its web-identity token (EKS IRSA or Pod Identity) once and never refreshed the role session."
            }
            Self::FederationTokenExpired => {
                "A GetFederationToken session ended and the federated user's credentials are still being used."
            }
            Self::RoleChainingCap => {
                "The credential is a hop in a role chain (it assumes other roles); chained sessions last at most one hour, whatever the role allows."
            }
            Self::Unknown => {
                "Temporary credentials are being used after they expired; the records do not say how they were issued."
            }
        }
    }

    /// How long such credentials usually live, for comparing with the credential's age.
    pub fn usual_lifetime(self) -> &'static str {
        match self {
            Self::AssumeRoleSessionElapsed => {
                "AssumeRole sessions last 1 hour by default, up to the role's MaxSessionDuration (at most 12 hours)."
            }
            Self::SessionTokenWindowClosed => {
                "GetSessionToken credentials last 12 hours by default and at most 36 hours."
            }
            Self::SsoSessionExpired => {
                "Identity Center role credentials last as long as the permission set's session duration (1 to 12 hours)."
            }
            Self::InstanceProfileCached => {
                "Instance-profile credentials are rotated by the metadata service well before they expire, every few hours."
            }
            Self::WebIdentityCached => {
                "AssumeRoleWithWebIdentity sessions last 1 hour by default; the SDK refreshes them when it owns them."
            }
            Self::FederationTokenExpired => {
                "GetFederationToken credentials last 12 hours by default, 15 minutes to 36 hours."
            }
            Self::RoleChainingCap => "Sessions from role chaining are capped at 1 hour.",
            Self::Unknown => {
                "Temporary credentials last from 15 minutes to 36 hours depending on how they were issued."
            }
        }
    }

    /// The runbook: numbered steps, most likely to help first. `{key}` and `{profile}` are not templated:
    /// the steps name the credential in prose so they read well in any alert.
    pub fn runbook(self) -> &'static [&'static str] {
        match self {
            Self::AssumeRoleSessionElapsed => &[
                "Confirm the source: `aws sts get-caller-identity` on the host shows an assumed-role ARN for this role; find the process by the source IP and user agent above.",
                "Unblock it: have the process call AssumeRole again (or restart it) so it signs with a fresh access key, secret and session token, all three together.",
                "Stop the caching: let the SDK's credential provider chain own the role (a profile with role_arn, or an AssumeRole credentials provider) instead of exporting AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN once at start; the provider refreshes before expiry.",
                "If the job legitimately runs longer than an hour, also request a longer session (--duration-seconds, up to the role's MaxSessionDuration, raised on the role if needed); a job longer than any session still has to refresh in its loop.",
                "Verify: no new ExpiredToken failures for this principal on the dashboard after the fix.",
            ],
            Self::SessionTokenWindowClosed => &[
                "Confirm the source: the principal is an IAM user signing with an ASIA key, i.e. credentials from `aws sts get-session-token` (usually with MFA) exported into an environment.",
                "Unblock it: run GetSessionToken again (with the MFA code) and replace all three exported values in the environment running the job.",
                "Stop the caching: use a named profile with mfa_serial so the CLI and SDKs prompt and refresh, instead of exporting a token into a long-lived shell or scheduler.",
                "For overnight batches, request a longer window (--duration-seconds up to 129600, 36 hours) or, better, move the job to a role it assumes with automatic refresh.",
                "Verify: `aws sts get-caller-identity` succeeds with the new token and failures stop.",
            ],
            Self::SsoSessionExpired => &[
                "Confirm the source: the role is an Identity Center permission set (AWSReservedSSO_...); the session name is the person's user name.",
                "Unblock it: the person runs `aws sso login --profile <their profile>`; every profile on that SSO session works again at once.",
                "Stop the caching: use the SSO profile directly (sso_session in ~/.aws/config) instead of copying the role credentials into environment variables or scripts.",
                "Make it routine: run `aws sso login` before long scripts, or raise the permission set's session duration if work regularly outlasts it.",
                "Verify: `aws sts get-caller-identity --profile <profile>` returns the assumed-role ARN.",
            ],
            Self::InstanceProfileCached => &[
                "Confirm the source: the session name is the EC2 instance id; find the process on that instance by the user agent above.",
                "Unblock it: restart the process so it reads fresh credentials from the instance metadata service.",
                "Stop the caching: remove any code or startup script that copies credentials out of instance metadata (curl of 169.254.169.254, exported AWS_* variables, values written to files) and let the SDK's default provider chain read instance metadata itself; it refreshes before rotation.",
                "Check the SDK version: very old SDKs cache instance credentials too long; upgrade if so.",
                "Verify: failures stop for this instance's session.",
            ],
            Self::WebIdentityCached => &[
                "Confirm the source: the session comes from a web-identity token (EKS IRSA or Pod Identity); find the pod by the session name, source IP and user agent.",
                "Unblock it: restart the pod so the SDK exchanges the projected service-account token again.",
                "Stop the caching: let the SDK's web-identity provider (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, or the Pod Identity container credentials endpoint) own the credentials instead of calling AssumeRoleWithWebIdentity once and keeping the result.",
                "Check the SDK version supports IRSA / Pod Identity refresh; old SDKs fall back to other providers.",
                "Verify: failures stop for this role.",
            ],
            Self::FederationTokenExpired => &[
                "Confirm the source: the identity is a federated user (GetFederationToken) issued by the IAM user shown as principal.",
                "Unblock it: have the broker that issued the token call GetFederationToken again and hand out the new credentials.",
                "Stop the caching: make the broker refresh tokens before expiry, or move the workload to a role with automatic refresh.",
                "If sessions are legitimately long, raise --duration-seconds (up to 36 hours for IAM users).",
                "Verify: failures stop for this federated user.",
            ],
            Self::RoleChainingCap => &[
                "Confirm the chain: this credential itself calls sts:AssumeRole, so it is an intermediate hop, and sessions obtained from a role are capped at one hour whatever MaxSessionDuration says.",
                "Unblock it: re-run the first hop and every hop after it to get fresh sessions.",
                "Stop the caching: refresh each hop before its hour is up (an AssumeRole credentials provider per hop, or a profile chain with source_profile, refreshes automatically).",
                "If a longer session is needed, assume the final role directly from a non-role identity instead of chaining; longer durations do not apply to chained sessions.",
                "Verify: failures stop for every hop.",
            ],
            Self::Unknown => &[
                "Confirm the source: run `aws sts get-caller-identity` where the process runs; an assumed-role or federated-user ARN means temporary credentials.",
                "Unblock it: obtain a fresh set of temporary credentials (access key, secret and session token together) and restart the process with them.",
                "Stop the caching: let the SDK's default credential provider chain supply and refresh credentials instead of exported values.",
                "Rule out clock skew: check the host's clock against NTP; skew produces RequestExpired, which looks similar.",
                "Verify: failures stop for this credential.",
            ],
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// `i-` and 8 or 17 hex digits: EC2 names instance-profile sessions after the instance.
fn is_instance_id(session: &str) -> bool {
    session.strip_prefix("i-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(principal: &str, session: &str) -> CauseFacts {
        CauseFacts {
            kind: Some(IdentityKindName::AssumedRole),
            role_name: principal.rsplit('/').next().map(str::to_owned),
            principal: principal.to_owned(),
            session_name: Some(session.to_owned()),
            temporary_key: true,
            ..CauseFacts::default()
        }
    }

    #[test]
    fn classification_table() {
        let cases: Vec<(CauseFacts, Cause)> = vec![
            (
                role("arn:aws:iam::1:role/ci/build-bot", "nightly-1"),
                Cause::AssumeRoleSessionElapsed,
            ),
            (
                role(
                    "arn:aws:iam::1:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0a1b",
                    "jane@example.com",
                ),
                Cause::SsoSessionExpired,
            ),
            (
                role("arn:aws:iam::1:role/app", "i-0abc1234def567890"),
                Cause::InstanceProfileCached,
            ),
            (
                role("arn:aws:iam::1:role/app", "i-0abc1234"),
                Cause::InstanceProfileCached,
            ),
            (
                role("arn:aws:iam::1:role/app", "i-nothex12"),
                Cause::AssumeRoleSessionElapsed,
            ),
            (
                CauseFacts {
                    ec2_role_delivery: true,
                    ..role("arn:aws:iam::1:role/app", "x")
                },
                Cause::InstanceProfileCached,
            ),
            (
                CauseFacts {
                    web_identity_provider: Some("oidc.eks.us-east-1.amazonaws.com/id/X".into()),
                    ..role("arn:aws:iam::1:role/pod", "botocore-session-1")
                },
                Cause::WebIdentityCached,
            ),
            (
                role("arn:aws:iam::1:role/pod", "eks-prod-api-7f9c-0b1e"),
                Cause::WebIdentityCached,
            ),
            (
                CauseFacts {
                    assumed_another_role: true,
                    ..role("arn:aws:iam::1:role/hop", "hop-1")
                },
                Cause::RoleChainingCap,
            ),
            (
                CauseFacts {
                    kind: Some(IdentityKindName::IAMUser),
                    principal: "arn:aws:iam::1:user/ops".into(),
                    temporary_key: true,
                    ..CauseFacts::default()
                },
                Cause::SessionTokenWindowClosed,
            ),
            (
                CauseFacts {
                    kind: Some(IdentityKindName::IAMUser),
                    principal: "arn:aws:iam::1:user/ops".into(),
                    temporary_key: false,
                    ..CauseFacts::default()
                },
                Cause::Unknown,
            ),
            (
                CauseFacts {
                    kind: Some(IdentityKindName::FederatedUser),
                    ..CauseFacts::default()
                },
                Cause::FederationTokenExpired,
            ),
            (CauseFacts::default(), Cause::Unknown),
        ];
        for (facts, expected) in cases {
            assert_eq!(Cause::infer(&facts), expected, "{facts:?}");
        }
    }

    #[test]
    fn identifiers_are_the_documented_ones() {
        let all = [
            Cause::AssumeRoleSessionElapsed,
            Cause::SessionTokenWindowClosed,
            Cause::SsoSessionExpired,
            Cause::InstanceProfileCached,
            Cause::WebIdentityCached,
            Cause::FederationTokenExpired,
            Cause::RoleChainingCap,
            Cause::Unknown,
        ];
        for cause in all {
            assert_eq!(serde_json::to_value(cause).expect("json"), cause.id());
            assert!(cause.runbook().len() >= 4, "{cause}");
        }
    }
}
