//! Names shared with the outside world: the Lambda's environment, the metrics and their dimensions, the
//! state table's keys. The SAM template and the dashboard must use exactly these; `tokenwatch contract`
//! prints them so infra tests can check.

use serde::Serialize;

pub const DEFAULT_NAMESPACE: &str = "TokenWatch";

pub mod env {
    pub const NAMESPACE: &str = "TOKENWATCH_NAMESPACE";
    pub const METRICS_MODE: &str = "TOKENWATCH_METRICS_MODE";
    pub const ALERT_TOPIC_ARN: &str = "TOKENWATCH_ALERT_TOPIC_ARN";
    pub const STATE_TABLE: &str = "TOKENWATCH_STATE_TABLE";
    pub const MIN_FAILURES: &str = "TOKENWATCH_MIN_FAILURES";
    pub const MIN_SPAN_SECONDS: &str = "TOKENWATCH_MIN_SPAN_SECONDS";
    pub const RENOTIFY_SECONDS: &str = "TOKENWATCH_RENOTIFY_SECONDS";
    pub const QUIET_SECONDS: &str = "TOKENWATCH_QUIET_SECONDS";
    pub const ERROR_CODES: &str = "TOKENWATCH_ERROR_CODES";
    pub const MAX_SESSION_SERIES: &str = "TOKENWATCH_MAX_SESSION_SERIES";
    /// Seconds an invocation may spend looking up newly opened incidents' key histories (0: never).
    pub const ENRICHMENT_BUDGET_SECONDS: &str = "TOKENWATCH_ENRICHMENT_BUDGET_SECONDS";
    /// Seconds one attempt of an AWS call may take before it is abandoned and retried.
    pub const AWS_ATTEMPT_TIMEOUT_SECONDS: &str = "TOKENWATCH_AWS_ATTEMPT_TIMEOUT_SECONDS";

    pub const ALL: [&str; 12] = [
        NAMESPACE,
        METRICS_MODE,
        ALERT_TOPIC_ARN,
        STATE_TABLE,
        MIN_FAILURES,
        MIN_SPAN_SECONDS,
        RENOTIFY_SECONDS,
        QUIET_SECONDS,
        ERROR_CODES,
        MAX_SESSION_SERIES,
        ENRICHMENT_BUDGET_SECONDS,
        AWS_ATTEMPT_TIMEOUT_SECONDS,
    ];
}

pub mod metric {
    pub const EXPIRED_TOKEN_ERRORS: &str = "ExpiredTokenErrors";
    pub const CREDENTIAL_AGE_SECONDS: &str = "CredentialAgeSeconds";
    pub const STALE_CREDENTIAL_INCIDENTS: &str = "StaleCredentialIncidents";
    pub const RELATED_CREDENTIAL_ERRORS: &str = "RelatedCredentialErrors";
    pub const RECORDS_SCANNED: &str = "RecordsScanned";
    pub const MALFORMED_RECORDS: &str = "MalformedRecords";
}

pub mod dimension {
    pub const ACCOUNT_ID: &str = "AccountId";
    pub const PRINCIPAL: &str = "Principal";
    pub const SESSION_NAME: &str = "SessionName";
    pub const ERROR_CODE: &str = "ErrorCode";
    pub const SOURCE: &str = "Source";
}

/// Where records came from, as the `Source` dimension names it.
pub mod source {
    pub const EVENTBRIDGE: &str = "eventbridge";
    pub const CLOUDWATCH_LOGS: &str = "cloudwatch_logs";
    pub const S3: &str = "s3";

    pub const ALL: [&str; 3] = [EVENTBRIDGE, CLOUDWATCH_LOGS, S3];
    /// Payloads of no known shape (counted as malformed so they are never silently dropped).
    pub const UNRECOGNIZED: &str = "unrecognized";
}

/// The incident state table's key schema and TTL attribute.
pub mod table {
    pub const PARTITION_KEY: &str = "pk";
    pub const SORT_KEY: &str = "sk";
    pub const TTL_ATTRIBUTE: &str = "expires_at";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    Count,
    Seconds,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricSpec {
    pub name: &'static str,
    pub unit: Unit,
    pub dimension_sets: &'static [&'static [&'static str]],
}

use dimension::{ACCOUNT_ID, ERROR_CODE, PRINCIPAL, SESSION_NAME, SOURCE};

/// Every metric tokenwatch emits, with each dimension set it is published under.
pub const METRICS: [MetricSpec; 6] = [
    MetricSpec {
        name: metric::EXPIRED_TOKEN_ERRORS,
        unit: Unit::Count,
        dimension_sets: &[&[], &[ACCOUNT_ID], &[PRINCIPAL], &[PRINCIPAL, SESSION_NAME]],
    },
    MetricSpec {
        name: metric::CREDENTIAL_AGE_SECONDS,
        unit: Unit::Seconds,
        dimension_sets: &[&[PRINCIPAL]],
    },
    MetricSpec {
        name: metric::STALE_CREDENTIAL_INCIDENTS,
        unit: Unit::Count,
        dimension_sets: &[&[], &[PRINCIPAL]],
    },
    MetricSpec {
        name: metric::RELATED_CREDENTIAL_ERRORS,
        unit: Unit::Count,
        dimension_sets: &[&[ERROR_CODE]],
    },
    MetricSpec {
        name: metric::RECORDS_SCANNED,
        unit: Unit::Count,
        dimension_sets: &[&[SOURCE]],
    },
    MetricSpec {
        name: metric::MALFORMED_RECORDS,
        unit: Unit::Count,
        dimension_sets: &[&[SOURCE]],
    },
];

#[derive(Debug, Clone, Serialize)]
pub struct TableSpec {
    pub partition_key: &'static str,
    pub sort_key: &'static str,
    pub ttl_attribute: &'static str,
}

/// The whole contract, as `tokenwatch contract --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Contract {
    pub namespace: &'static str,
    pub env: &'static [&'static str],
    pub metrics: &'static [MetricSpec],
    pub sources: &'static [&'static str],
    pub state_table: TableSpec,
}

pub fn contract() -> Contract {
    Contract {
        namespace: DEFAULT_NAMESPACE,
        env: &env::ALL,
        metrics: &METRICS,
        sources: &source::ALL,
        state_table: TableSpec {
            partition_key: table::PARTITION_KEY,
            sort_key: table::SORT_KEY,
            ttl_attribute: table::TTL_ATTRIBUTE,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_serializes_as_infra_expects() {
        let json = serde_json::to_value(contract()).expect("serializes");
        assert_eq!(json["namespace"], "TokenWatch");
        assert_eq!(json["env"].as_array().map(Vec::len), Some(12));
        assert_eq!(json["metrics"][0]["name"], "ExpiredTokenErrors");
        assert_eq!(
            json["metrics"][0]["dimension_sets"][3],
            serde_json::json!(["Principal", "SessionName"])
        );
        assert_eq!(json["metrics"][1]["unit"], "Seconds");
        assert_eq!(json["state_table"]["ttl_attribute"], "expires_at");
    }

    #[test]
    fn every_dimension_set_fits_cloudwatch() {
        for metric in &METRICS {
            for set in metric.dimension_sets {
                assert!(set.len() <= 30, "{}", metric.name);
            }
        }
    }
}
