//! The tokenwatch Lambda: recognizes each delivery, reads its records, and hands the failures to the core's
//! pipeline over the AWS adapters. `main` only wires it up.

mod app;
mod config;
pub mod objects;
pub mod telemetry;

pub use app::{App, Handler, InvocationContext, Lookups, Metrics};
pub use config::{Config, ConfigError, MetricsMode};
pub use objects::ObjectSource;
