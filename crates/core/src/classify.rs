//! What counts: a record's top-level `errorCode`, and nothing else in it, decides whether it is an
//! expired-token failure, a related credential error counted apart, or neither.

/// Error codes counted as expired-token failures unless configured otherwise.
pub const DEFAULT_EXPIRED_CODES: [&str; 2] = ["ExpiredToken", "ExpiredTokenException"];

/// Credential errors that are not expiry but are worth a count of their own: unknown keys, bad
/// signatures, and clock skew (`RequestExpired`), which looks like expiry and is not.
pub const RELATED_CODES: [&str; 5] = [
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "RequestExpired",
];

/// EC2 and a few older services prefix their codes (`Client.RequestExpired`).
const CODE_PREFIXES: [&str; 2] = ["Client.", "Server."];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    ExpiredToken,
    Related(&'static str),
    Other,
}

/// The configured list of expired-token codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorCodes {
    expired: Vec<String>,
}

impl Default for ErrorCodes {
    fn default() -> Self {
        Self::new(DEFAULT_EXPIRED_CODES)
    }
}

impl ErrorCodes {
    pub fn new<I, S>(codes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut expired: Vec<String> = codes
            .into_iter()
            .map(Into::into)
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        expired.sort();
        expired.dedup();
        Self { expired }
    }

    /// Parses a comma-separated list (`ExpiredToken,ExpiredTokenException`); `None` when it names no code.
    pub fn parse_list(list: &str) -> Option<Self> {
        let codes = Self::new(list.split(','));
        (!codes.expired.is_empty()).then_some(codes)
    }

    pub fn expired(&self) -> &[String] {
        &self.expired
    }

    pub fn classify(&self, error_code: Option<&str>) -> Classification {
        let Some(code) = error_code.map(unprefixed) else {
            return Classification::Other;
        };
        if self.expired.iter().any(|c| unprefixed(c) == code) {
            return Classification::ExpiredToken;
        }
        RELATED_CODES
            .iter()
            .find(|c| **c == code)
            .map_or(Classification::Other, |c| Classification::Related(c))
    }
}

fn unprefixed(code: &str) -> &str {
    CODE_PREFIXES
        .iter()
        .find_map(|p| code.strip_prefix(p))
        .unwrap_or(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_codes() {
        let codes = ErrorCodes::default();
        assert_eq!(
            codes.classify(Some("ExpiredToken")),
            Classification::ExpiredToken
        );
        assert_eq!(
            codes.classify(Some("ExpiredTokenException")),
            Classification::ExpiredToken
        );
        assert_eq!(
            codes.classify(Some("Client.ExpiredToken")),
            Classification::ExpiredToken
        );
        assert_eq!(
            codes.classify(Some("Client.RequestExpired")),
            Classification::Related("RequestExpired")
        );
        assert_eq!(
            codes.classify(Some("InvalidClientTokenId")),
            Classification::Related("InvalidClientTokenId")
        );
        assert_eq!(codes.classify(Some("AccessDenied")), Classification::Other);
        assert_eq!(codes.classify(Some("expiredtoken")), Classification::Other);
        assert_eq!(codes.classify(None), Classification::Other);
    }

    #[test]
    fn configured_list_replaces_the_default() {
        let codes =
            ErrorCodes::parse_list(" TokenRefreshRequired , ExpiredToken,,").expect("codes");
        assert_eq!(codes.expired(), ["ExpiredToken", "TokenRefreshRequired"]);
        assert_eq!(
            codes.classify(Some("TokenRefreshRequired")),
            Classification::ExpiredToken
        );
        assert_eq!(
            codes.classify(Some("ExpiredTokenException")),
            Classification::Other
        );
        assert_eq!(ErrorCodes::parse_list(" , "), None);
    }

    #[test]
    fn a_related_code_configured_as_expired_counts_as_expired() {
        let codes = ErrorCodes::new(["RequestExpired"]);
        assert_eq!(
            codes.classify(Some("RequestExpired")),
            Classification::ExpiredToken
        );
    }
}
