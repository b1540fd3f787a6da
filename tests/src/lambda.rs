//! The real `tokenwatch-lambda` binary under `cargo lambda watch --only-lambda-apis`: cargo lambda serves
//! the Lambda runtime API and the invoke API on loopback, the binary polls it exactly as it polls Lambda's.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `--only-lambda-apis` serves a single function under this name.
const FUNCTION_NAME: &str = "_";
/// What cargo lambda prints once its runtime server listens.
const READY_LINE: &str = "starting Runtime server";
const START_DEADLINE: Duration = Duration::from_secs(90);
/// Lambda's smallest memory setting the product is sized for; the binary reads it like in AWS.
pub const MEMORY_MB: &str = "128";

/// The workspace root (where `Cargo.toml` with `[workspace]` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `cargo-lambda` from the tools venv (`make tools`), or `$TOKENWATCH_CARGO_LAMBDA`.
pub fn cargo_lambda() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TOKENWATCH_CARGO_LAMBDA") {
        return Ok(PathBuf::from(path));
    }
    let path = workspace_root().join(".venv/tools/bin/cargo-lambda");
    if path.exists() {
        Ok(path)
    } else {
        bail!(
            "{} not found: run `make tools` (it installs cargo-lambda from PyPI)",
            path.display()
        )
    }
}

/// The function binary: `$TOKENWATCH_LAMBDA_BIN`, else the debug build in the workspace's target dir.
pub fn function_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TOKENWATCH_LAMBDA_BIN") {
        return Ok(PathBuf::from(path));
    }
    let path = workspace_root().join("target/debug/tokenwatch-lambda");
    if path.exists() {
        Ok(path)
    } else {
        bail!(
            "{} not found: run `cargo build -p tokenwatch-lambda` (make test does)",
            path.display()
        )
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Lines a child process printed, kept for assertions and for showing on failure.
#[derive(Debug, Clone, Default)]
pub struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn capture(&self, stream: impl tokio::io::AsyncRead + Unpin + Send + 'static) {
        let lines = Arc::clone(&self.0);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Ok(mut lines) = lines.lock() {
                    lines.push(line);
                }
            }
        });
    }
}

/// A running function: the runtime emulator and the binary polling it. Both stop on drop.
#[derive(Debug)]
pub struct LocalLambda {
    port: u16,
    _emulator: Child,
    function: Child,
    emulator_output: Output,
    /// The function's stdout (EMF lines) and stderr (JSON logs), interleaved by arrival.
    pub output: Output,
    client: Client<HttpConnector, Full<bytes::Bytes>>,
}

impl LocalLambda {
    /// Starts the emulator, waits until it listens, then starts the binary with `env` (and the runtime
    /// variables Lambda sets).
    pub async fn start(env: &[(String, String)]) -> Result<LocalLambda> {
        let port = free_port()?;
        let mut emulator = Command::new(cargo_lambda()?)
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
            ])
            .arg(port.to_string())
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting cargo lambda watch")?;
        let emulator_output = Output::default();
        let (stdout, stderr) = (emulator.stdout.take(), emulator.stderr.take());
        emulator_output.capture(stdout.context("emulator stdout")?);
        emulator_output.capture(stderr.context("emulator stderr")?);
        let started = Instant::now();
        while !emulator_output
            .lines()
            .iter()
            .any(|l| l.contains(READY_LINE))
        {
            if let Some(status) = emulator.try_wait()? {
                bail!(
                    "cargo lambda watch exited ({status}): {}",
                    emulator_output.lines().join("\n")
                );
            }
            if started.elapsed() > START_DEADLINE {
                bail!(
                    "cargo lambda watch did not start in {START_DEADLINE:?}: {}",
                    emulator_output.lines().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut function = Command::new(function_binary()?)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION_NAME)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", MEMORY_MB)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting tokenwatch-lambda")?;
        let output = Output::default();
        output.capture(function.stdout.take().context("function stdout")?);
        output.capture(function.stderr.take().context("function stderr")?);
        Ok(LocalLambda {
            port,
            _emulator: emulator,
            function,
            emulator_output,
            output,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Invokes the function synchronously and returns its response (or its error document).
    pub async fn invoke(&mut self, payload: &Value) -> Result<Invocation> {
        if let Some(status) = self.function.try_wait()? {
            bail!(
                "the function exited ({status}): {}",
                self.output.lines().join("\n")
            );
        }
        let uri = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{FUNCTION_NAME}/invocations",
            self.port
        );
        let request = http::Request::post(uri)
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(serde_json::to_vec(payload)?)))?;
        let response = self
            .client
            .request(request)
            .await
            .context("invoking the function")?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        Ok(if status.is_success() && value.get("errorType").is_none() {
            Invocation::Ok(value)
        } else {
            Invocation::Error(value)
        })
    }

    /// The function's process id (to read its memory use).
    pub fn pid(&self) -> Option<u32> {
        self.function.id()
    }

    /// The function process's peak resident memory so far, in KiB (`VmHWM`; Linux only).
    pub fn peak_rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// What the emulator printed, for failure messages.
    pub fn emulator_lines(&self) -> Vec<String> {
        self.emulator_output.lines()
    }
}

/// The result of one invocation as the caller (an event source) sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    Ok(Value),
    /// The function reported an error: an async source would retry the event.
    Error(Value),
}

impl Invocation {
    pub fn ok(self) -> Result<Value> {
        match self {
            Invocation::Ok(value) => Ok(value),
            Invocation::Error(error) => bail!("the function failed: {error}"),
        }
    }
}
