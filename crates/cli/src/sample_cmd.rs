//! `tokenwatch sample`: writes the sample as gzipped S3 log files and a manifest of what it holds.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use rayon::prelude::*;
use tokenwatch_core::Timestamp;
use tokenwatch_core::sample::{SAMPLE_SPAN_SECONDS, Sample, SampleFile, SampleSpec};

use crate::SampleArgs;
use crate::table::thousands;

/// Hidden, so scanning the output directory does not read it as a record.
pub const MANIFEST_NAME: &str = ".sample-manifest.json";

pub fn run(args: &SampleArgs) -> Result<ExitCode> {
    let start = args.start.unwrap_or_else(|| {
        let now = Timestamp::from_unix(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );
        let hour = now.unix() - now.unix().rem_euclid(3600);
        Timestamp::from_unix(hour - SAMPLE_SPAN_SECONDS)
    });
    let sample = Sample::new(&SampleSpec {
        seed: args.seed,
        records: args.records,
        start,
        file_period: args.file_minutes.saturating_mul(60) as i64,
    });
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let bytes: u64 = (0..sample.file_count())
        .into_par_iter()
        .map(|n| write_file(&args.out, &sample.file(n)))
        .collect::<Result<Vec<u64>>>()?
        .iter()
        .sum();
    let manifest = sample.manifest();
    let manifest_path = args.out.join(MANIFEST_NAME);
    fs::write(&manifest_path, serde_json::to_vec_pretty(manifest)?)
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    println!(
        "Wrote {} records ({} expired-token failures in {} scenarios, {} duplicate deliveries) in {} files, {} MB uncompressed, under {}",
        thousands(manifest.records + manifest.duplicate_records),
        thousands(manifest.expired_token_errors),
        manifest.scenarios.len(),
        manifest.duplicate_records,
        manifest.files,
        bytes / 1_000_000,
        args.out.display()
    );
    println!("What it holds: {}", manifest_path.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes one `{"Records":[...]}` file, gzipped; returns its uncompressed size.
fn write_file(root: &Path, file: &SampleFile) -> Result<u64> {
    let path = root.join(&file.path);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut gz = GzEncoder::new(BufWriter::new(out), Compression::new(6));
    let body = serde_json::to_vec(&serde_json::json!({ "Records": file.records }))?;
    gz.write_all(&body)?;
    gz.finish()?.flush()?;
    Ok(body.len() as u64)
}
