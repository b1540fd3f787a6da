//! The `tokenwatch` command for people: scan CloudTrail files, backfill from a trail's bucket, generate
//! sample data, print the contract.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tokenwatch_core::{ErrorCodes, Scanner, Timestamp, Validation};

mod backfill_cmd;
mod collect;
pub mod period;
mod sample_cmd;
mod scan_cmd;
pub mod sources;
mod table;

pub use scan_cmd::{ScanOutcome, scan_sources};

#[derive(Debug, Parser)]
#[command(
    name = "tokenwatch",
    version,
    about = "Find processes that keep signing AWS calls with expired credentials"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Count ExpiredToken failures per principal and role session in CloudTrail files.
    Scan(ScanArgs),
    /// Scan a trail's log files in S3 for a past period (by their date folders), and optionally replay the
    /// counts as CloudWatch metrics with their original timestamps.
    Backfill(BackfillArgs),
    /// Write realistic sample CloudTrail log files (gzipped, in the trail bucket layout).
    Sample(SampleArgs),
    /// Print the names shared with the deployment: environment, metrics, dimensions, table keys.
    Contract {
        /// Print JSON (the only format; the flag is accepted for clarity in scripts).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Files or directories (walked recursively) of CloudTrail records; `-` reads stdin.
    /// S3 log files `{"Records":[...]}`, JSON arrays and NDJSON, plain or gzipped.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub report: ReportArgs,
}

/// How records are counted and the report shown: shared by `scan` and `backfill`, so both report alike.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Error codes that count as expired-token failures, comma-separated.
    #[arg(long, default_value = "ExpiredToken,ExpiredTokenException")]
    pub error_codes: String,
    /// Decode every record, not only those with an errorCode, so any malformed record is counted (slower).
    #[arg(long)]
    pub validate_all: bool,
    /// Never show the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Print each incident's alert as on-call would receive it (in the JSON report: an `alerts` list).
    #[arg(long)]
    pub alerts: bool,
    /// An incident needs at least this many expired-token failures of one credential...
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_failures: u64,
    /// ...the first and last at least this many seconds apart.
    #[arg(long, default_value_t = 300)]
    pub min_span: u64,
    /// An incident whose last failure is this many seconds before the scan's latest failure is reported resolved.
    #[arg(long, default_value_t = 1800)]
    pub quiet: u64,
}

impl ReportArgs {
    pub fn policy(&self) -> tokenwatch_core::detect::Policy {
        tokenwatch_core::detect::Policy {
            min_failures: self.min_failures,
            min_span_seconds: i64::try_from(self.min_span).unwrap_or(i64::MAX),
            quiet_seconds: i64::try_from(self.quiet).unwrap_or(i64::MAX),
            ..tokenwatch_core::detect::Policy::default()
        }
    }

    pub fn scanner(&self) -> Result<Scanner> {
        let codes = ErrorCodes::parse_list(&self.error_codes)
            .with_context(|| format!("--error-codes names no code: {:?}", self.error_codes))?;
        let validation = if self.validate_all {
            Validation::Full
        } else {
            Validation::Structure
        };
        Ok(Scanner::new(codes, validation))
    }

    /// Whether to show a progress bar: on a terminal, unless told not to.
    pub fn progress(&self) -> bool {
        use std::io::IsTerminal;
        !self.no_progress && std::io::stderr().is_terminal()
    }
}

/// Where the AWS calls go, as with the AWS CLI: the standard credential chain (environment, profiles, SSO,
/// instance and container roles) and these overrides.
#[derive(Debug, Clone, clap::Args)]
pub struct AwsArgs {
    /// The Region for the calls (default: AWS_REGION, then the profile's).
    #[arg(long)]
    pub region: Option<String>,
    /// A named profile from ~/.aws/config (default: AWS_PROFILE, then `default`).
    #[arg(long)]
    pub profile: Option<String>,
    /// Send every call to this endpoint (an S3-compatible store, a local emulator).
    #[arg(long)]
    pub endpoint_url: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// The trail's bucket and key prefix: s3://BUCKET or s3://BUCKET/PREFIX (the folder holding AWSLogs/).
    pub location: String,
    /// Start of the period: a duration back from now (`7d`, `36h`, `90m`, `2w`), a date (`2026-11-20`, its
    /// first second, UTC) or an RFC 3339 time.
    #[arg(long, value_parser = period::parse_since)]
    pub since: period::When,
    /// End of the period (default: now): same forms; a date means the end of that day.
    #[arg(long, value_parser = period::parse_until)]
    pub until: Option<period::When>,
    /// Only these accounts (repeatable; default: every account folder found).
    #[arg(long = "account")]
    pub accounts: Vec<String>,
    /// Only these trail Regions (repeatable; default: every Region folder found).
    #[arg(long = "trail-region")]
    pub trail_regions: Vec<String>,
    /// Objects read at once.
    #[arg(long, default_value_t = backfill_cmd::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Replay the counts as CloudWatch metrics with their original minute timestamps (data older than
    /// CloudWatch's two weeks is skipped and reported).
    #[arg(long)]
    pub publish: bool,
    /// The CloudWatch namespace for --publish.
    #[arg(long, default_value = tokenwatch_core::contract::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// `[Principal, SessionName]` series kept by name for --publish; the rest are published as `other`.
    #[arg(long, default_value_t = tokenwatch_core::metrics::DEFAULT_MAX_SESSION_SERIES)]
    pub max_session_series: usize,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub report: ReportArgs,
}

#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// Directory to write into (created if missing).
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Background records to write besides the failure scenarios.
    #[arg(long, default_value_t = 20_000)]
    pub records: u64,
    /// Start of the six hours the sample covers (RFC 3339); default: six hours ago, on the hour.
    #[arg(long, value_parser = parse_time)]
    pub start: Option<Timestamp>,
    /// Minutes of events per file: CloudTrail delivers every 5; 360 makes one large file.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=360))]
    pub file_minutes: u64,
}

fn parse_time(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse(text).ok_or_else(|| format!("not an RFC 3339 time: {text}"))
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Scan(args) => scan_cmd::run(&args),
        Command::Backfill(args) => backfill_cmd::run(&args),
        Command::Sample(args) => sample_cmd::run(&args),
        Command::Contract { .. } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&tokenwatch_core::contract::contract())?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
