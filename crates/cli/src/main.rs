use std::process::ExitCode;

use clap::Parser;
use tokenwatch_cli::{Cli, run};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tokenwatch: error: {error:#}");
            ExitCode::from(2)
        }
    }
}
