//! What to scan: files named on the command line, directories walked recursively, or stdin.

use std::fs;
use std::path::{Path, PathBuf};

/// Inside directories, only files that can hold records are read.
const RECORD_FILE_SUFFIXES: [&str; 5] = [".json", ".json.gz", ".gz", ".jsonl", ".ndjson"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stdin,
    File { path: PathBuf, size: u64 },
}

impl Source {
    pub fn name(&self) -> String {
        match self {
            Self::Stdin => "<stdin>".to_owned(),
            Self::File { path, .. } => path.display().to_string(),
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Self::Stdin => 0,
            Self::File { size, .. } => *size,
        }
    }
}

/// Sources in a stable order, and a message for each path that could not be used.
pub fn collect(paths: &[PathBuf]) -> (Vec<Source>, Vec<String>) {
    let (mut sources, mut problems) = (Vec::new(), Vec::new());
    for path in paths {
        if path.as_os_str() == "-" {
            sources.push(Source::Stdin);
            continue;
        }
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => walk(path, &mut sources, &mut problems),
            Ok(meta) => sources.push(Source::File {
                path: path.clone(),
                size: meta.len(),
            }),
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    (sources, problems)
}

fn walk(dir: &Path, sources: &mut Vec<Source>, problems: &mut Vec<String>) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        match entry.metadata() {
            Ok(meta) if meta.is_dir() => walk(&path, sources, problems),
            Ok(meta) if is_record_file(&name) => sources.push(Source::File {
                path,
                size: meta.len(),
            }),
            Ok(_) => {}
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
}

fn is_record_file(name: &str) -> bool {
    !name.contains(tokenwatch_core::envelope::DIGEST_MARKER)
        && RECORD_FILE_SUFFIXES.iter().any(|s| name.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_directories_and_skips_digests_and_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("AWSLogs/1/CloudTrail/us-east-1/2024/05/01");
        let digests = dir
            .path()
            .join("AWSLogs/1/CloudTrail-Digest/us-east-1/2024/05/01");
        fs::create_dir_all(&logs).expect("mkdir");
        fs::create_dir_all(&digests).expect("mkdir");
        for name in ["b.json.gz", "a.json", "notes.txt", ".hidden.json"] {
            fs::write(logs.join(name), "{}").expect("write");
        }
        fs::write(
            digests.join("1_CloudTrail-Digest_us-east-1_x.json.gz"),
            "{}",
        )
        .expect("write");
        let missing = dir.path().join("missing.json");
        let (sources, problems) = collect(&[dir.path().to_path_buf(), PathBuf::from("-"), missing]);
        let names: Vec<String> = sources.iter().map(Source::name).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names[0].ends_with("01/a.json"));
        assert!(names[1].ends_with("01/b.json.gz"));
        assert_eq!(names[2], "<stdin>");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("missing.json"));
    }
}
