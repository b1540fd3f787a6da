//! Structured JSON logs, one object per line, as Lambda's JSON log format expects; `RUST_LOG` sets the level.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(false)
        .without_time()
        .with_target(false)
        .flatten_event(true)
        .with_writer(std::io::stderr)
        .init();
}
