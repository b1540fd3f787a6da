//! The `tokenwatch` command for people: scan CloudTrail files, generate sample data, print the contract.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use tokenwatch_core::Timestamp;

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

impl ScanArgs {
    pub fn policy(&self) -> tokenwatch_core::detect::Policy {
        tokenwatch_core::detect::Policy {
            min_failures: self.min_failures,
            min_span_seconds: i64::try_from(self.min_span).unwrap_or(i64::MAX),
            quiet_seconds: i64::try_from(self.quiet).unwrap_or(i64::MAX),
            ..tokenwatch_core::detect::Policy::default()
        }
    }
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
