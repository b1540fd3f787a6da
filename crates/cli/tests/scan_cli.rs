//! The `tokenwatch` binary as a user runs it: sample data, the real corpus, bad input, stdin.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;

fn tokenwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(args)
        .output()
        .expect("tokenwatch runs")
}

fn json_report(args: &[&str]) -> (Value, String) {
    let out = tokenwatch(args);
    assert!(out.status.success(), "{out:?}");
    let report = serde_json::from_slice(&out.stdout).expect("JSON report");
    (report, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/real")
}

#[test]
fn the_whole_real_corpus_parses_and_holds_no_expired_tokens() {
    let corpus = corpus();
    let corpus = corpus.to_str().expect("utf-8 path");
    for extra in [None, Some("--validate-all")] {
        let mut args = vec!["scan", corpus, "--format", "json"];
        args.extend(extra);
        let (report, stderr) = json_report(&args);
        assert_eq!(report["records_scanned"], 3313, "{extra:?}");
        assert_eq!(report["malformed_records"], 0, "{extra:?}: {stderr}");
        assert_eq!(report["expired_token_errors"], 0);
        assert_eq!(report["principals"], Value::Array(vec![]));
        assert!(stderr.is_empty(), "{stderr}");
    }
}

#[test]
fn a_scan_of_sample_data_matches_what_was_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8");
    let written = tokenwatch(&[
        "sample",
        out,
        "--seed",
        "42",
        "--records",
        "5000",
        "--start",
        "2026-11-26T00:00:00Z",
    ]);
    assert!(written.status.success(), "{written:?}");
    let manifest: Value = serde_json::from_slice(
        &fs::read(dir.path().join(".sample-manifest.json")).expect("manifest"),
    )
    .expect("json");

    let (report, stderr) = json_report(&["scan", out, "--format", "json"]);
    assert!(stderr.is_empty(), "{stderr}");
    let records = manifest["records"].as_u64().expect("n")
        + manifest["duplicate_records"].as_u64().expect("n");
    assert_eq!(report["records_scanned"], records);
    assert_eq!(report["malformed_records"], 0);
    assert_eq!(report["duplicate_events"], manifest["duplicate_records"]);
    assert_eq!(
        report["expired_token_errors"],
        manifest["expired_token_errors"]
    );
    for (code, n) in manifest["related_errors"].as_object().expect("map") {
        assert_eq!(&report["related_errors"][code], n, "{code}");
    }
    let by_principal: serde_json::Map<String, Value> = report["principals"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| {
            (
                p["principal"].as_str().expect("s").to_owned(),
                p["expired_token_errors"].clone(),
            )
        })
        .collect();
    assert_eq!(
        Value::Object(by_principal),
        manifest["expired_by_principal"]
    );
    // Each scenario's session carries its one access key, first and last failure.
    for scenario in manifest["scenarios"].as_array().expect("list") {
        let principal = report["principals"]
            .as_array()
            .expect("list")
            .iter()
            .find(|p| p["principal"] == scenario["principal"])
            .expect("scenario principal reported");
        let session = &principal["sessions"][0];
        assert_eq!(session["session_name"], scenario["session_name"]);
        assert_eq!(
            session["access_key_ids"],
            serde_json::json!([scenario["access_key_id"]])
        );
        assert_eq!(session["expired_token_errors"], scenario["failures"]);
    }
    // Sorted by errors, most first.
    let counts: Vec<u64> = report["principals"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["expired_token_errors"].as_u64().expect("n"))
        .collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");

    // Every caching scenario is an incident with the cause it was written as; the well-behaved SDK is not.
    let incidents = report["incidents"].as_array().expect("list");
    let caching: Vec<&Value> = manifest["scenarios"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|s| s["caching"] == true)
        .collect();
    assert_eq!(incidents.len(), caching.len());
    for scenario in caching {
        let incident = incidents
            .iter()
            .find(|i| i["access_key_id"] == scenario["access_key_id"])
            .unwrap_or_else(|| panic!("no incident for {}", scenario["name"]));
        assert_eq!(
            incident["likely_cause"], scenario["likely_cause"],
            "{}",
            scenario["name"]
        );
        assert_eq!(incident["failures"], scenario["failures"]);
        assert_eq!(incident["principal"], scenario["principal"]);
        assert!(
            incident["source_ips"]
                .as_array()
                .is_some_and(|ips| ips.len() == 1)
        );
    }
    let stricter = json_report(&["scan", out, "--format", "json", "--min-failures", "70"]).0;
    assert_eq!(
        stricter["incidents"].as_array().map(Vec::len),
        Some(1),
        "only the build job failed 70+ times"
    );

    let with_alerts = json_report(&["scan", out, "--format", "json", "--alerts"]).0;
    let alerts = with_alerts["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), incidents.len());
    assert!(
        alerts
            .iter()
            .all(|a| a["subject"].as_str().is_some_and(|s| s.len() < 100))
    );
    assert!(
        alerts
            .iter()
            .all(|a| a["body"].as_str().is_some_and(|b| b.contains("WHAT TO DO")))
    );

    let table = tokenwatch(&["scan", out]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("expired-token errors from 6 principals"),
        "{table}"
    );
    assert!(
        table.contains("arn:aws:iam::111122223333:role/ci/build-bot"),
        "{table}"
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(bytes).expect("compress");
    gz.finish().expect("compress")
}

const GOOD: &str = r#"{"eventID":"g1","eventTime":"2024-05-01T10:00:00Z","errorCode":"ExpiredToken","userIdentity":{"type":"AssumedRole","arn":"arn:aws:sts::1:assumed-role/r/s","accessKeyId":"ASIA1"}}"#;

#[test]
fn bad_input_is_named_and_the_rest_still_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::write(d.join("good.json"), format!("{{\"Records\":[{GOOD}]}}")).expect("write");
    let long: String = (0..3000)
        .map(|i| format!("{{\"eventID\":\"n{i}\"}},"))
        .collect();
    let whole = gzip(format!("{{\"Records\":[{long}{{}}]}}").as_bytes());
    fs::write(d.join("truncated.json.gz"), &whole[..whole.len() / 2]).expect("write");
    fs::write(
        d.join("invalid.json"),
        b"{\"Records\":[{\"a\":1},{\"b\":}] garbage",
    )
    .expect("write");
    fs::write(d.join("garbage.json"), [0u8, 159, 146, 150, 255, 1, 2]).expect("write");
    fs::write(d.join("types.ndjson"), b"{\"errorCode\":[\"ExpiredToken\"],\"eventTime\":\"2024-05-01T10:00:00Z\"}\n{\"errorCode\":\"ExpiredToken\",\"eventTime\":42}\n").expect("write");
    let missing = d.join("missing.json");
    let out = tokenwatch(&[
        "scan",
        d.to_str().expect("utf-8"),
        missing.to_str().expect("utf-8"),
        "--format",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a path that cannot be read fails the run: {stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("report still printed");
    assert_eq!(report["expired_token_errors"], 1, "{stderr}");
    // truncated (1), invalid (1), garbage (1), two records with wrong types (2).
    assert_eq!(report["malformed_records"], 5, "{stderr}");
    for (file, what) in [
        ("truncated.json.gz", "read failed"),
        ("invalid.json", "invalid JSON at byte 28"),
        ("garbage.json", "not CloudTrail JSON"),
        ("types.ndjson", "record #1 at byte 0"),
        ("types.ndjson", "record #2 at byte 66"),
        ("missing.json", "No such file"),
    ] {
        assert!(
            stderr.lines().any(|l| l.contains(file) && l.contains(what)),
            "{file}: {what}\n{stderr}"
        );
    }
}

#[test]
fn stdin_is_a_source() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenwatch"))
        .args(["scan", "-", "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let body = gzip(format!("{GOOD}\n{GOOD}\n").as_bytes());
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&body)
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["records_scanned"], 2);
    assert_eq!(report["expired_token_errors"], 1);
    assert_eq!(report["duplicate_events"], 1);
}

#[test]
fn a_useless_error_code_list_is_refused_by_name() {
    let out = tokenwatch(&["scan", "-", "--error-codes", " , "]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--error-codes"));
}

#[test]
fn contract_names_the_metrics() {
    let out = tokenwatch(&["contract", "--json"]);
    let contract: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(contract["namespace"], "TokenWatch");
    assert!(
        contract["env"]
            .as_array()
            .expect("list")
            .iter()
            .any(|e| e == "TOKENWATCH_ERROR_CODES")
    );
}
