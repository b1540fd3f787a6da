//! A moto server (the local AWS emulator) owned by a test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, Command};
use tokio::time::Instant;

use crate::net::{self, HttpClient};

/// Environment variable naming the `moto_server` executable, overriding the lookup.
pub const MOTO_SERVER_ENV: &str = "TOKENWATCH_MOTO_SERVER";

/// Where `make tools` installs moto, relative to the workspace root.
pub const MOTO_SERVER_RELATIVE: &str = ".venv/tools/bin/moto_server";

/// How long moto may take to start listening and answer (generous: a loaded CI machine with two
/// cores importing moto for the first time is slow).
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// Lines of moto's stderr kept for an error message when it fails to start.
const STDERR_TAIL: usize = 20;

/// Run by the venv's Python instead of the `moto_server` script itself: the same entry point, plus
/// a watchdog thread that exits when stdin closes, so the server dies with the test process even
/// when that process is killed outright and never runs `Drop`.
///
/// It also makes DynamoDB's TransactWriteItems affordable on a large table. Before each transaction moto
/// backs up every table it touches with a deep copy, for the rollback; that costs time in proportion to the
/// table, and every copy is a new model instance that moto's instance tracker keeps for ever, so memory
/// grows by a table's size per transaction (22 GB and an OOM kill in a 100,000-event load run). A copy of
/// the item index instead still took time in proportion to the table, as moto rehashes every key (a
/// 20,000-event run fell below 5 calls a second). Here the backup is a deep copy of just the items the
/// transaction names (at most 100), taken before it runs and put back if it fails.
/// `a_cancelled_transaction_leaves_every_item_as_it_was` holds it to that.
const WATCHDOG_MAIN: &str = "\\
import copy, os, sys, threading
def _watch():
    try:
        while sys.stdin.buffer.read(65536):
            pass
    finally:
        os._exit(0)
threading.Thread(target=_watch, daemon=True).start()
import moto.dynamodb.models as _ddb
from moto.dynamodb.models.dynamo_type import DynamoType as _DynamoType
from moto.dynamodb.models.table import Table as _Table
class _NoTableCopies:
    def __getattr__(self, name):
        return getattr(copy, name)
    @staticmethod
    def deepcopy(value, memo=None):
        if isinstance(value, _Table):
            return value
        return copy.deepcopy(value, memo)
_ddb.copy = _NoTableCopies()
def _touched_items(backend, transact_items):
    saved = []
    for entry in transact_items:
        for op in entry.values():
            try:
                table = backend.get_table(op['TableName'])
                attrs = op.get('Key') or op['Item']
                hash_key = _DynamoType(attrs[table.hash_key_attr])
                range_key = None
                if table.range_key_attr is not None:
                    range_key = _DynamoType(attrs[table.range_key_attr])
                current = table.get_item(hash_key, range_key)
            except Exception:
                continue
            saved.append((table, hash_key, range_key, copy.deepcopy(current)))
    return saved
def _put_back(saved):
    for table, hash_key, range_key, item in reversed(saved):
        if range_key is None:
            if item is None:
                table.items.pop(hash_key, None)
            else:
                table.items[hash_key] = item
        elif item is None:
            table.items.get(hash_key, {}).pop(range_key, None)
        else:
            table.items[hash_key][range_key] = item
_transact = _ddb.DynamoDBBackend.transact_write_items
def _transact_write_items(self, transact_items):
    saved = _touched_items(self, transact_items)
    try:
        return _transact(self, transact_items)
    except BaseException:
        _put_back(saved)
        raise
_ddb.DynamoDBBackend.transact_write_items = _transact_write_items
sys.argv[0] = 'moto_server'
from moto.server import main
sys.exit(main())
";

/// A moto server on 127.0.0.1 with a free port, killed (with its process group) on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    pid: Option<u32>,
    port: u16,
    // Held open for the watchdog: closing it (on drop, or when this process dies) stops moto.
    _stdin: Option<ChildStdin>,
    client: HttpClient,
}

impl Moto {
    /// Starts moto and waits until it answers HTTP.
    pub async fn start() -> anyhow::Result<Moto> {
        let program = locate_moto_server()?;
        let started = Instant::now();
        let deadline = started + STARTUP_DEADLINE;

        let mut command = moto_command(&program)?;
        command
            .args(["-H", "127.0.0.1", "-p", "0"])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let stderr = child
            .stderr
            .take()
            .context("moto's stderr was not captured")?;

        let mut moto = Moto {
            child,
            pid,
            port: 0,
            _stdin: stdin,
            client: net::client(),
        };
        let mut lines = BufReader::new(stderr).lines();
        moto.port = moto.read_port(&mut lines, deadline, &program).await?;
        tokio::spawn(drain_stderr(lines));
        moto.wait_until_answering(deadline).await?;
        tracing::debug!(port = moto.port, elapsed = ?started.elapsed(), "moto is up");
        Ok(moto)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Forgets every resource in every service (`POST /moto-api/reset`).
    pub async fn reset(&self) -> anyhow::Result<()> {
        let uri: http::Uri = format!("{}/moto-api/reset", self.endpoint()).parse()?;
        let request = hyper::Request::post(uri).body(net::full(""))?;
        let response = self
            .client
            .request(request)
            .await
            .context("POST /moto-api/reset")?;
        anyhow::ensure!(
            response.status().is_success(),
            "POST /moto-api/reset answered {}",
            response.status()
        );
        Ok(())
    }

    async fn read_port(
        &mut self,
        lines: &mut tokio::io::Lines<BufReader<ChildStderr>>,
        deadline: Instant,
        program: &Path,
    ) -> anyhow::Result<u16> {
        let mut tail: Vec<String> = Vec::new();
        loop {
            let line = match tokio::time::timeout_at(deadline, lines.next_line()).await {
                Err(_) => anyhow::bail!(
                    "moto ({}) did not report its port within {STARTUP_DEADLINE:?}; its stderr:\n{}",
                    program.display(),
                    tail.join("\n")
                ),
                Ok(Err(e)) => return Err(e).context("reading moto's stderr"),
                Ok(Ok(None)) => {
                    let status = self.exit_status().await;
                    anyhow::bail!(
                        "moto ({}) exited before listening ({status}); its stderr:\n{}",
                        program.display(),
                        tail.join("\n")
                    )
                }
                Ok(Ok(Some(line))) => line,
            };
            if let Some(port) = parse_listening_port(&line) {
                return Ok(port);
            }
            tail.push(line);
            if tail.len() > STDERR_TAIL {
                tail.remove(0);
            }
        }
    }

    async fn exit_status(&mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(Ok(status)) => format!("exit {status}"),
            Ok(Err(e)) => format!("status unknown: {e}"),
            Err(_) => "still running".to_owned(),
        }
    }

    /// moto prints its address once the socket listens; this confirms the WSGI app serves.
    async fn wait_until_answering(&self, deadline: Instant) -> anyhow::Result<()> {
        let uri: http::Uri = format!("{}/moto-api/config", self.endpoint()).parse()?;
        loop {
            let request = hyper::Request::get(uri.clone()).body(net::full(""))?;
            let attempt = tokio::time::timeout_at(deadline, self.client.request(request)).await;
            match attempt {
                Ok(Ok(response)) if response.status().is_success() => return Ok(()),
                Ok(Ok(response)) => tracing::debug!(status = %response.status(), "moto not ready"),
                Ok(Err(e)) => tracing::debug!(error = %e, "moto not ready"),
                Err(_) => anyhow::bail!(
                    "moto on port {} did not answer within {STARTUP_DEADLINE:?}",
                    self.port
                ),
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "moto on port {} did not answer in time",
                self.port
            );
            // Poll interval between readiness probes (bounded by the deadline above).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self
            .pid
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(rustix::process::Pid::from_raw)
            && let Err(e) = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL)
        {
            tracing::debug!(error = %e, "killing moto's process group");
        }
        if let Err(e) = self.child.start_kill() {
            tracing::debug!(error = %e, "killing moto");
        }
    }
}

/// Finds `moto_server`: `$TOKENWATCH_MOTO_SERVER`, else `.venv/tools/bin/moto_server` in the
/// nearest ancestor of the crate being tested, of this crate, or of the current directory.
pub fn locate_moto_server() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(MOTO_SERVER_ENV) {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "{MOTO_SERVER_ENV}={} does not name a file",
            path.display()
        );
        return Ok(path);
    }
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        starts.push(dir.into());
    }
    starts.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    if let Ok(dir) = std::env::current_dir() {
        starts.push(dir);
    }
    for start in &starts {
        for dir in start.ancestors() {
            let candidate = dir.join(MOTO_SERVER_RELATIVE);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    anyhow::bail!(
        "moto_server not found: no {MOTO_SERVER_RELATIVE} above {}. Run `make tools` at the workspace root \
         (installs moto[server] from tools/requirements.txt), or set {MOTO_SERVER_ENV}",
        starts
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The command that runs `program`: through its Python interpreter with the watchdog when it is a
/// Python console script, else the program itself.
fn moto_command(program: &Path) -> anyhow::Result<Command> {
    if let Some(python) = python_interpreter(program)? {
        let mut command = Command::new(python);
        command.arg("-c").arg(WATCHDOG_MAIN);
        return Ok(command);
    }
    Ok(Command::new(program))
}

/// The interpreter of a `#!.../python3` script, when it is one and exists.
fn python_interpreter(program: &Path) -> anyhow::Result<Option<PathBuf>> {
    use std::io::BufRead as _;
    let file =
        std::fs::File::open(program).with_context(|| format!("opening {}", program.display()))?;
    let mut first = String::new();
    // A binary executable is not valid UTF-8: that is simply "not a script".
    if std::io::BufReader::new(file).read_line(&mut first).is_err() {
        return Ok(None);
    }
    let Some(shebang) = first.trim_end().strip_prefix("#!") else {
        return Ok(None);
    };
    let mut words = shebang.split_whitespace();
    let Some(mut interpreter) = words.next().map(PathBuf::from) else {
        return Ok(None);
    };
    if interpreter.file_name().is_some_and(|n| n == "env") {
        // `#!/usr/bin/env python3` names a program on PATH; run the script directly instead.
        return Ok(None);
    }
    if words.next().is_some() {
        return Ok(None);
    }
    let is_python = interpreter
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("python"));
    if !is_python || !interpreter.is_file() {
        return Ok(None);
    }
    if interpreter.is_relative() {
        interpreter = program.parent().unwrap_or(Path::new(".")).join(interpreter);
    }
    Ok(Some(interpreter))
}

/// `" * Running on http://127.0.0.1:36859"` → 36859.
fn parse_listening_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("Running on http://")? + "Running on http://".len()..];
    let address = rest.split_whitespace().next()?;
    address
        .rsplit_once(':')?
        .1
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// Keeps reading moto's stderr (its request log) so the pipe never fills and blocks it.
async fn drain_stderr(mut lines: tokio::io::Lines<BufReader<ChildStderr>>) {
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::trace!(target: "tokenwatch_testkit::moto", "{line}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn port_is_read_from_the_werkzeug_banner() {
        assert_eq!(
            parse_listening_port(" * Running on http://127.0.0.1:36859"),
            Some(36859)
        );
        assert_eq!(
            parse_listening_port("\u{1b}[31m * Running on http://127.0.0.1:80/ (Press CTRL+C)"),
            Some(80)
        );
        assert_eq!(
            parse_listening_port("WARNING: This is a development server."),
            None
        );
    }

    #[test]
    fn venv_console_script_runs_through_its_python() {
        let program = locate_moto_server().unwrap();
        let python = python_interpreter(&program).unwrap().unwrap();
        assert!(
            python
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("python")
        );
    }

    #[tokio::test]
    async fn starts_answers_resets_and_dies_on_drop() {
        let moto = Moto::start().await.unwrap();
        let endpoint = moto.endpoint();
        assert!(endpoint.starts_with("http://127.0.0.1:"));
        moto.reset().await.unwrap();
        let pid = moto.pid.unwrap();
        drop(moto);
        // The process is gone once the kill lands: probe until it is (bounded), never a fixed sleep.
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = net::client();
        loop {
            let request = hyper::Request::get(
                format!("{endpoint}/moto-api/config")
                    .parse::<http::Uri>()
                    .unwrap(),
            )
            .body(net::full(""))
            .unwrap();
            if client.request(request).await.is_err() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto (pid {pid}) still answers after drop"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn several_servers_start_side_by_side() {
        let (a, b) = tokio::join!(Moto::start(), Moto::start());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a.port(), b.port());
    }
}
