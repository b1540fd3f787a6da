//! The function's configuration: read once at cold start from the environment, validated, and refused with
//! a message that names the variable when a value is wrong.

use std::time::Duration;

use tokenwatch_core::ErrorCodes;
use tokenwatch_core::contract::{DEFAULT_NAMESPACE, env};
use tokenwatch_core::detect::Policy;
use tokenwatch_core::metrics::DEFAULT_MAX_SESSION_SERIES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsMode {
    /// PutMetricData.
    Api,
    /// Embedded Metric Format lines on stdout.
    Emf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub namespace: String,
    pub metrics_mode: MetricsMode,
    pub alert_topic_arn: String,
    pub state_table: String,
    pub policy: Policy,
    pub error_codes: ErrorCodes,
    pub max_session_series: usize,
    /// Time an invocation may spend looking up the CloudTrail history of incidents it opens; zero: never.
    pub enrichment_budget: Duration,
    /// How long one attempt of an AWS call may take before the SDK abandons and retries it.
    pub aws_attempt_timeout: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{variable} must be set ({what})")]
    Missing {
        variable: &'static str,
        what: &'static str,
    },
    #[error("{variable}={value:?} is invalid: {why}")]
    Invalid {
        variable: &'static str,
        value: String,
        why: String,
    },
}

/// CloudWatch namespaces are 1 to 255 characters and may not start with `AWS/`.
const MAX_NAMESPACE_CHARS: usize = 255;
/// Enough for a few lookups at LookupEvents' 2 requests per second without making on-call wait.
pub const DEFAULT_ENRICHMENT_BUDGET_SECONDS: u64 = 10;
/// An alert should not wait longer than this for its history.
pub const MAX_ENRICHMENT_BUDGET_SECONDS: u64 = 60;
/// Four attempts of this, with backoff, stay well inside the function's 300-second timeout.
pub const MAX_AWS_ATTEMPT_TIMEOUT_SECONDS: u64 = 60;

impl Config {
    /// Reads the configuration through `lookup` (the process environment in production).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |variable: &'static str| {
            lookup(variable)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let required = |variable: &'static str, what: &'static str| {
            get(variable).ok_or(ConfigError::Missing { variable, what })
        };
        let invalid = |variable: &'static str, value: &str, why: &str| ConfigError::Invalid {
            variable,
            value: value.to_owned(),
            why: why.to_owned(),
        };
        let number = |variable: &'static str, default: u64, min: u64| -> Result<u64, ConfigError> {
            match get(variable) {
                None => Ok(default),
                Some(text) => match text.parse::<u64>() {
                    Ok(n) if n >= min => Ok(n),
                    Ok(_) => Err(invalid(variable, &text, &format!("must be at least {min}"))),
                    Err(_) => Err(invalid(variable, &text, "must be a whole number")),
                },
            }
        };
        let seconds =
            |variable: &'static str, default: i64, min: u64| -> Result<i64, ConfigError> {
                let n = number(variable, default as u64, min)?;
                i64::try_from(n).map_err(|_| invalid(variable, &n.to_string(), "is too large"))
            };

        let namespace = get(env::NAMESPACE).unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        if namespace.chars().count() > MAX_NAMESPACE_CHARS || namespace.starts_with("AWS/") {
            return Err(invalid(
                env::NAMESPACE,
                &namespace,
                "must be 1 to 255 characters and not start with AWS/",
            ));
        }
        let metrics_mode = match get(env::METRICS_MODE).as_deref() {
            None | Some("api") => MetricsMode::Api,
            Some("emf") => MetricsMode::Emf,
            Some(other) => return Err(invalid(env::METRICS_MODE, other, "must be api or emf")),
        };
        let alert_topic_arn = required(env::ALERT_TOPIC_ARN, "the SNS topic that receives alerts")?;
        if !alert_topic_arn.starts_with("arn:") || !alert_topic_arn.contains(":sns:") {
            return Err(invalid(
                env::ALERT_TOPIC_ARN,
                &alert_topic_arn,
                "must be an SNS topic ARN",
            ));
        }
        let state_table = required(env::STATE_TABLE, "the DynamoDB table for incident state")?;
        let defaults = Policy::default();
        let policy = Policy {
            min_failures: number(env::MIN_FAILURES, defaults.min_failures, 1)?,
            min_span_seconds: seconds(env::MIN_SPAN_SECONDS, defaults.min_span_seconds, 0)?,
            renotify_seconds: seconds(env::RENOTIFY_SECONDS, defaults.renotify_seconds, 60)?,
            quiet_seconds: seconds(env::QUIET_SECONDS, defaults.quiet_seconds, 60)?,
        };
        let error_codes = match get(env::ERROR_CODES) {
            None => ErrorCodes::default(),
            Some(list) => ErrorCodes::parse_list(&list).ok_or_else(|| {
                invalid(env::ERROR_CODES, &list, "must name at least one error code")
            })?,
        };
        let max_session_series = number(
            env::MAX_SESSION_SERIES,
            DEFAULT_MAX_SESSION_SERIES as u64,
            1,
        )?;
        let max_session_series = usize::try_from(max_session_series).map_err(|_| {
            invalid(
                env::MAX_SESSION_SERIES,
                &max_session_series.to_string(),
                "is too large",
            )
        })?;
        let budget = number(
            env::ENRICHMENT_BUDGET_SECONDS,
            DEFAULT_ENRICHMENT_BUDGET_SECONDS,
            0,
        )?;
        if budget > MAX_ENRICHMENT_BUDGET_SECONDS {
            return Err(invalid(
                env::ENRICHMENT_BUDGET_SECONDS,
                &budget.to_string(),
                &format!("must be at most {MAX_ENRICHMENT_BUDGET_SECONDS} (0 turns lookups off)"),
            ));
        }
        let attempt_timeout = number(
            env::AWS_ATTEMPT_TIMEOUT_SECONDS,
            tokenwatch_aws::sdk::ATTEMPT_TIMEOUT.as_secs(),
            1,
        )?;
        if attempt_timeout > MAX_AWS_ATTEMPT_TIMEOUT_SECONDS {
            return Err(invalid(
                env::AWS_ATTEMPT_TIMEOUT_SECONDS,
                &attempt_timeout.to_string(),
                &format!("must be at most {MAX_AWS_ATTEMPT_TIMEOUT_SECONDS}"),
            ));
        }
        Ok(Self {
            namespace,
            metrics_mode,
            alert_topic_arn,
            state_table,
            policy,
            error_codes,
            max_session_series,
            enrichment_budget: Duration::from_secs(budget),
            aws_attempt_timeout: Duration::from_secs(attempt_timeout),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    const REQUIRED: [(&str, &str); 2] = [
        (
            "TOKENWATCH_ALERT_TOPIC_ARN",
            "arn:aws:sns:us-east-1:111122223333:oncall",
        ),
        ("TOKENWATCH_STATE_TABLE", "tokenwatch-state"),
    ];

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = config(&REQUIRED).expect("valid");
        assert_eq!(c.namespace, "TokenWatch");
        assert_eq!(c.metrics_mode, MetricsMode::Api);
        assert_eq!(c.policy, Policy::default());
        assert_eq!(c.error_codes, ErrorCodes::default());
        assert_eq!(c.max_session_series, 50);
        assert_eq!(c.enrichment_budget, Duration::from_secs(10));
        assert_eq!(c.aws_attempt_timeout, Duration::from_secs(20));
    }

    #[test]
    fn every_variable_is_read() {
        let mut vars = REQUIRED.to_vec();
        vars.extend([
            ("TOKENWATCH_NAMESPACE", "Custom/Tokens"),
            ("TOKENWATCH_METRICS_MODE", "emf"),
            ("TOKENWATCH_MIN_FAILURES", "5"),
            ("TOKENWATCH_MIN_SPAN_SECONDS", "60"),
            ("TOKENWATCH_RENOTIFY_SECONDS", "7200"),
            ("TOKENWATCH_QUIET_SECONDS", "900"),
            ("TOKENWATCH_ERROR_CODES", "ExpiredToken"),
            ("TOKENWATCH_MAX_SESSION_SERIES", "10"),
            ("TOKENWATCH_ENRICHMENT_BUDGET_SECONDS", "0"),
            ("TOKENWATCH_AWS_ATTEMPT_TIMEOUT_SECONDS", "5"),
        ]);
        let c = config(&vars).expect("valid");
        assert_eq!(c.namespace, "Custom/Tokens");
        assert_eq!(c.metrics_mode, MetricsMode::Emf);
        assert_eq!(
            c.policy,
            Policy {
                min_failures: 5,
                min_span_seconds: 60,
                renotify_seconds: 7200,
                quiet_seconds: 900
            }
        );
        assert_eq!(c.error_codes.expired(), ["ExpiredToken"]);
        assert_eq!(c.max_session_series, 10);
        assert_eq!(c.enrichment_budget, Duration::ZERO);
        assert_eq!(c.aws_attempt_timeout, Duration::from_secs(5));
    }

    #[test]
    fn errors_name_the_variable() {
        for (bad, variable) in [
            (vec![], "TOKENWATCH_ALERT_TOPIC_ARN"),
            (vec![REQUIRED[0]], "TOKENWATCH_STATE_TABLE"),
            (
                vec![("TOKENWATCH_METRICS_MODE", "statsd")],
                "TOKENWATCH_METRICS_MODE",
            ),
            (
                vec![("TOKENWATCH_MIN_FAILURES", "three")],
                "TOKENWATCH_MIN_FAILURES",
            ),
            (
                vec![("TOKENWATCH_MIN_FAILURES", "0")],
                "TOKENWATCH_MIN_FAILURES",
            ),
            (
                vec![("TOKENWATCH_QUIET_SECONDS", "-5")],
                "TOKENWATCH_QUIET_SECONDS",
            ),
            (
                vec![("TOKENWATCH_ERROR_CODES", ",")],
                "TOKENWATCH_ERROR_CODES",
            ),
            (
                vec![("TOKENWATCH_NAMESPACE", "AWS/Lambda")],
                "TOKENWATCH_NAMESPACE",
            ),
            (
                vec![("TOKENWATCH_ALERT_TOPIC_ARN", "oncall")],
                "TOKENWATCH_ALERT_TOPIC_ARN",
            ),
            (
                vec![("TOKENWATCH_MAX_SESSION_SERIES", "0")],
                "TOKENWATCH_MAX_SESSION_SERIES",
            ),
            (
                vec![("TOKENWATCH_ENRICHMENT_BUDGET_SECONDS", "600")],
                "TOKENWATCH_ENRICHMENT_BUDGET_SECONDS",
            ),
            (
                vec![("TOKENWATCH_AWS_ATTEMPT_TIMEOUT_SECONDS", "0")],
                "TOKENWATCH_AWS_ATTEMPT_TIMEOUT_SECONDS",
            ),
            (
                vec![("TOKENWATCH_AWS_ATTEMPT_TIMEOUT_SECONDS", "61")],
                "TOKENWATCH_AWS_ATTEMPT_TIMEOUT_SECONDS",
            ),
        ] {
            let mut vars: Vec<(&str, &str)> =
                if variable.ends_with("TOPIC_ARN") || variable.ends_with("STATE_TABLE") {
                    Vec::new()
                } else {
                    REQUIRED.to_vec()
                };
            vars.extend(bad);
            let error = config(&vars).expect_err(variable).to_string();
            assert!(error.starts_with(variable), "{error}");
        }
    }
}
