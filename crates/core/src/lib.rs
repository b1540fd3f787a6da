//! tokenwatch's pure logic: no AWS SDK, no async runtime, no I/O of its own beyond the readers it is given.
//!
//! The flow: [`decode`] splits input into records, [`scan`] decodes the records that can matter and
//! classifies them ([`classify`], [`identity`]), [`tally`] aggregates, [`report`] presents.

pub mod alert;
pub mod cause;
pub mod classify;
pub mod contract;
pub mod decode;
pub mod detect;
pub mod envelope;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod history;
pub mod identity;
pub mod metrics;
pub mod pipeline;
pub mod ports;
pub mod record;
pub mod report;
pub mod sample;
pub mod scan;
pub mod tally;
pub mod timestamp;
pub mod trail;

pub use classify::ErrorCodes;
pub use identity::{CredentialKey, Identity};
pub use report::ScanReport;
pub use scan::{Failure, FailureKind, Problem, Scanner, SourceCounts, Validation};
pub use tally::Tally;
pub use timestamp::Timestamp;
