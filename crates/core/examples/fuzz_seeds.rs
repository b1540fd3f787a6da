//! Builds the fuzzers' seed corpus (`fuzz/seed.sh` runs it): real CloudTrail files when they are there,
//! the sample generator's records (the only source of expired-token failures), and the Lambda event
//! fixtures, each cut and wrapped into the shape every target reads.
//!
//! Usage: fuzz_seeds OUT_DIR [REAL_CORPUS_DIR]
//! Writes OUT_DIR/<target>/<hash>; an existing corpus is added to, never cleared.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use tokenwatch_core::Timestamp;
use tokenwatch_core::decode::RecordStream;
use tokenwatch_core::sample::{Sample, SampleSpec};

/// Real files hold about 3,300 records; a seed per record would mostly repeat the same few shapes.
const REAL_RECORDS_KEPT: usize = 400;
/// Whole files longer than this are left out: libFuzzer would cut them to its input size anyway.
const MAX_WHOLE_FILE: usize = 64 * 1024;

fn main() {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .expect("usage: fuzz_seeds OUT_DIR [REAL_CORPUS_DIR]"),
    );
    let real = args.next().map(PathBuf::from);
    let mut seeds = Seeds::default();

    let mut real_records = Vec::new();
    if let Some(dir) = real.as_deref().filter(|d| d.is_dir()) {
        for file in files_under(dir) {
            let bytes = fs::read(&file).expect("readable corpus file");
            if bytes.len() <= MAX_WHOLE_FILE {
                seeds.source(&bytes);
            }
            real_records.extend(split(&bytes));
        }
    }
    // Spread the kept records over every file rather than taking the first few files' records.
    let step = (real_records.len() / REAL_RECORDS_KEPT).max(1);
    for record in real_records.iter().step_by(step) {
        seeds.source(record);
    }

    let sample = Sample::new(&SampleSpec {
        seed: 8,
        records: 120,
        start: Timestamp::from_unix(1_780_000_000),
        file_period: 3600,
    });
    let mut failures = Vec::new();
    let mut keys = Vec::new();
    for n in 0..sample.file_count() {
        let file = sample.file(n);
        keys.push(file.path.clone());
        let texts: Vec<String> = file.records.iter().map(Value::to_string).collect();
        for text in &texts {
            seeds.source(text.as_bytes());
            if text.contains("\"errorCode\"") {
                failures.push(text.clone());
            }
        }
        // The framings the splitter accepts, over a few records each.
        let few = &texts[..texts.len().min(3)];
        seeds.source(format!("{{\"Records\":[{}]}}", few.join(",")).as_bytes());
        seeds.source(format!("[{}]", few.join(",\n")).as_bytes());
        seeds.source(few.join("\n").as_bytes());
    }
    for pair in failures.chunks(2).take(20) {
        seeds.source(format!("{{\"Records\":[{}]}}", pair.join(",")).as_bytes());
    }

    for text in failures.iter().take(40) {
        let record: Value = serde_json::from_str(text).expect("the sample writes JSON");
        seeds.add(
            "event",
            json!({"version": "0", "id": "fuzz", "detail-type": "AWS API Call via CloudTrail",
                   "source": "aws.sts", "account": "111122223333", "region": "us-east-1",
                   "detail": record})
            .to_string(),
        );
    }
    for group in failures.chunks(3).take(10) {
        let payload = logs_payload(group);
        seeds.add("logs", payload.clone());
        seeds.add(
            "event",
            json!({"awslogs": {"data": STANDARD.encode(gzip(payload.as_bytes()))}}).to_string(),
        );
    }
    seeds.add(
        "logs",
        json!({"messageType": "CONTROL_MESSAGE", "owner": "CloudwatchLogs", "logGroup": "",
               "logStream": "", "subscriptionFilters": [], "logEvents": [
                   {"id": "", "timestamp": 1_780_000_000_000_u64,
                    "message": "CWL CONTROL MESSAGE: Checking health of destination Lambda."}]})
        .to_string(),
    );
    for key in keys.iter().take(10) {
        // Notifications URL-encode keys: a space and an `=` give the decoder something to do.
        let encoded = key.replacen(".json.gz", "+%3Dcopy.json.gz", 1);
        let s3 = json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3",
            "awsRegion": "us-east-1", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "trail-bucket"}, "object": {"key": encoded, "size": 4096}}}]});
        let sns = json!({"Type": "Notification", "Message": s3.to_string()});
        let bridge = json!({"detail-type": "Object Created", "source": "aws.s3",
            "detail": {"bucket": {"name": "trail-bucket"}, "object": {"key": key, "size": 4096}}});
        for body in [s3.to_string(), sns.to_string(), bridge.to_string()] {
            seeds.add("notification", body.clone());
            seeds.add("event", sqs_event(&[body]));
        }
        seeds.add("event", s3.to_string());
    }
    seeds.add(
        "notification",
        json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "trail-bucket"})
            .to_string(),
    );
    seeds.add(
        "event",
        json!({"detail-type": "Scheduled Event", "source": "aws.events"}).to_string(),
    );

    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    for file in files_under(&fixtures) {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let Ok(event) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        seeds.add("event", text.clone());
        for body in event["Records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["body"].as_str())
        {
            seeds.add("notification", body.to_owned());
        }
        if let Some(data) = event.pointer("/awslogs/data").and_then(Value::as_str)
            && let Some(inflated) = inflate_logs(data)
        {
            seeds.add("logs", inflated);
        }
    }

    let written = seeds.write(&out);
    for (target, count) in written {
        println!("{target}: {count} seeds");
    }
}

/// Every seed, by target, named by its hash so repeated runs add nothing twice.
#[derive(Default)]
struct Seeds(BTreeMap<&'static str, BTreeMap<u64, Vec<u8>>>);

impl Seeds {
    fn add(&mut self, target: &'static str, bytes: impl Into<Vec<u8>>) {
        let bytes = bytes.into();
        self.0.entry(target).or_default().insert(fnv(&bytes), bytes);
    }

    /// A CloudTrail source: plain for the splitter and the scanner, gzipped for the raw gzip target.
    fn source(&mut self, bytes: &[u8]) {
        for target in ["records", "scan", "gzip_records"] {
            self.add(target, bytes);
        }
        self.add("gzip_raw", gzip(bytes));
    }

    fn write(&self, out: &Path) -> Vec<(&'static str, usize)> {
        self.0
            .iter()
            .map(|(target, seeds)| {
                let dir = out.join(target);
                fs::create_dir_all(&dir).expect("corpus directory");
                for (hash, bytes) in seeds {
                    fs::write(dir.join(format!("seed-{hash:016x}")), bytes).expect("seed written");
                }
                (*target, seeds.len())
            })
            .collect()
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "json" || e == "gz") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The records of one source, each as its own JSON text.
fn split(bytes: &[u8]) -> Vec<Vec<u8>> {
    let reader = tokenwatch_core::decode::decompressed(bytes).expect("reading from memory");
    let mut stream = RecordStream::new(reader);
    let mut records = Vec::new();
    while let Some(item) = stream.next_record() {
        match item {
            Ok(raw) => records.push(raw.bytes.to_vec()),
            Err(e) if e.is_fatal() => break,
            Err(_) => {}
        }
    }
    records
}

fn logs_payload(records: &[String]) -> String {
    let events: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(n, r)| json!({"id": format!("{n}"), "timestamp": 1_780_000_000_000_u64, "message": r}))
        .collect();
    json!({"messageType": "DATA_MESSAGE", "owner": "111122223333",
           "logGroup": "aws-cloudtrail-logs-111122223333", "logStream": "111122223333_CloudTrail_us-east-1",
           "subscriptionFilters": ["tokenwatch"], "logEvents": events})
    .to_string()
}

fn sqs_event(bodies: &[String]) -> String {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(n, body)| json!({"messageId": format!("m{n}"), "eventSource": "aws:sqs", "body": body}))
        .collect();
    json!({ "Records": records }).to_string()
}

fn inflate_logs(data: &str) -> Option<String> {
    use std::io::Read;
    let compressed = STANDARD.decode(data.trim()).ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
