//! `emf` mode: metrics as Embedded Metric Format lines on stdout, which Lambda's log group turns into
//! metrics with no API call and no extra cost per request.

use std::io::Write;
use std::sync::Mutex;

use tokenwatch_core::metrics::{MetricDatum, emf_lines};
use tokenwatch_core::ports::MetricsSink;

#[derive(Debug)]
pub struct EmfMetrics<W> {
    namespace: String,
    out: Mutex<W>,
}

impl EmfMetrics<std::io::Stdout> {
    pub fn stdout(namespace: impl Into<String>) -> Self {
        Self::new(namespace, std::io::stdout())
    }
}

impl<W: Write> EmfMetrics<W> {
    pub fn new(namespace: impl Into<String>, out: W) -> Self {
        Self {
            namespace: namespace.into(),
            out: Mutex::new(out),
        }
    }

    pub fn into_inner(self) -> Option<W> {
        self.out.into_inner().ok()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("writing EMF lines: {0}")]
pub struct EmfError(String);

impl<W: Write + Send> MetricsSink for EmfMetrics<W> {
    type Error = EmfError;

    async fn publish(&self, data: &[MetricDatum]) -> Result<(), EmfError> {
        let mut out = self.out.lock().map_err(|e| EmfError(e.to_string()))?;
        for line in emf_lines(&self.namespace, data) {
            // One write per line: Lambda's log capture must see each document whole.
            out.write_all(format!("{line}\n").as_bytes())
                .map_err(|e| EmfError(e.to_string()))?;
        }
        out.flush().map_err(|e| EmfError(e.to_string()))
    }
}
