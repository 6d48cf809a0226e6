//! The control socket of `metaguard run`, and the client side used by
//! `metaguard status`, `reload` and `events`.
//!
//! A Unix stream socket, by default [`DEFAULT_SOCKET`], in a directory the
//! daemon creates with mode 0700; the socket is root's with mode 0600, and
//! each connection's peer credentials are checked: only uid 0 is served.
//!
//! Protocol: the client sends one JSON object on one line; the daemon
//! answers with JSON lines and closes the connection (except for `events`).
//!
//! ```text
//! → {"cmd":"status"}
//! ← {"ok":true,"status":{...}}                      (see [`Status`])
//!
//! → {"cmd":"reload"}
//! ← {"ok":true,"policy":"/etc/metaguard/policy.toml","generation":4}
//! ← {"ok":false,"error":"policy rejected ...","errors":["file:3:1: ...", ...]}
//!
//! → {"cmd":"events","format":"json"}                (format: "json" or "text")
//! ← {"ok":true}
//! ← one line per line the daemon writes on its stdout, as it writes it:
//!   the event object itself for "json", a JSON string for "text";
//!   last, if the client fell behind: {"notice":"dropped","lost":N,"message":"..."}
//! ```
//!
//! Any failure (bad request, non-root peer) is `{"ok":false,"error":"..."}`.
//! Each `events` client has a bounded queue ([`EVENT_QUEUE`] lines); when it
//! is full the daemon drops the client (after what is queued and the notice)
//! instead of waiting for it.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{
        fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
        net::UnixStream as StdUnixStream,
    },
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use crate::{events::Format, metrics::Counters};

pub const DEFAULT_SOCKET: &str = "/run/metaguard/control.sock";
/// Lines queued for one `events` client before it is dropped.
pub const EVENT_QUEUE: usize = 4096;
/// Longest request line accepted.
const MAX_REQUEST: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Status,
    Reload,
    /// Lets one running process through for `ttl_secs` (to `endpoint`, or
    /// every endpoint).
    Grant {
        pid: u32,
        ttl_secs: u64,
        #[serde(default)]
        endpoint: Option<String>,
    },
    Revoke {
        pid: u32,
    },
    Events {
        #[serde(default = "json_format", with = "format_serde")]
        format: Format,
    },
}

fn json_format() -> Format {
    Format::Json
}

mod format_serde {
    use super::Format;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(f: &Format, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match f {
            Format::Json => "json",
            Format::Text => "text",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Format, D::Error> {
        match String::deserialize(d)?.as_str() {
            "json" => Ok(Format::Json),
            "text" => Ok(Format::Text),
            other => Err(serde::de::Error::custom(format!(
                "unknown format {other:?} (json or text)"
            ))),
        }
    }
}

impl Request {
    /// Parses one request line.
    pub fn parse(line: &str) -> Result<Request, String> {
        serde_json::from_str(line.trim()).map_err(|e| format!("bad request: {e}"))
    }
}

/// One response line: `ok`, and either the payload's fields or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Each policy error, one line each as `metaguard check` prints them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// reload: the policy file and the generation now in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// grant: what was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantStatus>,
}

/// A temporary grant as `status` and `grant` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantStatus {
    pub pid: u32,
    /// The process's executable when granted (its identity is what counts).
    pub exe: String,
    /// Endpoint names, or `["*"]` for every endpoint.
    pub endpoints: Vec<String>,
    pub expires_in_seconds: u64,
}

impl Response {
    pub fn ok() -> Response {
        Response {
            ok: true,
            error: None,
            errors: vec![],
            status: None,
            policy: None,
            generation: None,
            grant: None,
        }
    }

    pub fn error(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(msg.into()),
            ..Response::ok()
        }
    }

    pub fn parse(line: &str) -> Result<Response, String> {
        serde_json::from_str(line.trim()).map_err(|e| format!("bad response from the daemon: {e}"))
    }

    fn line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// What `metaguard status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Temporary grants in force.
    #[serde(default)]
    pub grants: Vec<GrantStatus>,
    pub pid: u32,
    /// When the daemon started (RFC 3339) and for how long it has run.
    pub started: String,
    pub uptime_seconds: u64,
    /// The policy's top-level mode: "enforce" or "audit".
    pub mode: String,
    pub policy: PolicyStatus,
    pub programs: Vec<ProgramStatus>,
    /// Socket maps of taken-over program sets, kept (with their per-send
    /// program and frozen policy) while connections opened before the
    /// takeover are open.
    #[serde(default)]
    pub draining: Vec<DrainingStatus>,
    /// Decisions (repeats included), lost events and reloads since start.
    pub counters: Counters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainingStatus {
    /// The draining set's pin directory.
    pub path: String,
    /// Connections still in its socket map; null when it cannot be read.
    pub sockets: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyStatus {
    pub path: String,
    /// SHA-256 of the file's bytes as last loaded, lowercase hex.
    pub sha256: String,
    /// When the policy in force was loaded (RFC 3339).
    pub loaded: String,
    /// The kernel's policy generation (events carry it as `policy_generation`).
    pub generation: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramStatus {
    pub name: String,
    /// Kernel program id (`bpftool prog show id N`).
    pub id: u32,
    /// The cgroup2 directory it is attached to.
    pub cgroup: String,
}

impl Status {
    pub fn text(&self) -> String {
        let mut s = String::new();
        let up = humantime::format_duration(Duration::from_secs(self.uptime_seconds));
        s += &format!(
            "metaguard pid {}, up {up} (since {})\n",
            self.pid, self.started
        );
        s += &format!("mode:       {}\n", self.mode);
        for g in &self.grants {
            s += &format!(
                "grant:      pid {} ({}) to {} for {} s more\n",
                g.pid,
                g.exe,
                g.endpoints.join(", "),
                g.expires_in_seconds
            );
        }
        s += &format!(
            "policy:     {} (generation {})\n",
            self.policy.path, self.policy.generation
        );
        s += &format!("  sha256:   {}\n", self.policy.sha256);
        s += &format!("  loaded:   {}\n", self.policy.loaded);
        s += "programs:\n";
        for p in &self.programs {
            s += &format!("  {:<9} id {:<6} on {}\n", p.name, p.id, p.cgroup);
        }
        for d in &self.draining {
            let n = d.sockets.map_or("?".to_string(), |n| n.to_string());
            s += &format!(
                "draining:   {} ({n} connection(s) opened before a takeover, checked by the old policy)\n",
                d.path
            );
        }
        let c = &self.counters;
        let list = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "-".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        s += "decisions:\n";
        s += &format!("  by action:   {}\n", list(&c.by_action));
        s += &format!("  by endpoint: {}\n", list(&c.by_endpoint));
        s += &format!("  by rule:     {}\n", list(&c.by_rule));
        s += &format!("lost events: {}\n", c.lost_events);
        s += &format!(
            "reloads:    {} applied, {} rejected\n",
            c.reloads_applied, c.reloads_rejected
        );
        s
    }
}

// ---------------------------------------------------------------- server --

/// A request the daemon's main loop answers (it owns the programs and the
/// policy); the connection task waits for the answer.
pub type Ask = (Request, oneshot::Sender<Response>);

/// One line as the daemon writes it, in both formats, for `events` clients.
pub struct Line {
    pub json: String,
    pub text: String,
}

struct Subscriber {
    format: Format,
    tx: mpsc::Sender<Arc<str>>,
    lost: Arc<AtomicU64>,
}

/// The `events` clients; the daemon hands every stdout line to [`Fanout::send`].
#[derive(Default)]
pub struct Fanout {
    subs: Mutex<Vec<Subscriber>>,
}

impl Fanout {
    /// Whether any client listens (else the daemon need not render both formats).
    pub fn active(&self) -> bool {
        !self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn subscribe(
        &self,
        format: Format,
        capacity: usize,
    ) -> (mpsc::Receiver<Arc<str>>, Arc<AtomicU64>) {
        let (tx, rx) = mpsc::channel(capacity);
        let lost = Arc::new(AtomicU64::new(0));
        self.lock().push(Subscriber {
            format,
            tx,
            lost: lost.clone(),
        });
        (rx, lost)
    }

    /// Queues `lines` for every client without waiting: a client whose
    /// queue is full is dropped (its queue still drains, then it is told how
    /// many lines it lost); a client that went away is forgotten.
    pub fn send(&self, lines: &[Line]) {
        if lines.is_empty() {
            return;
        }
        let mut subs = self.lock();
        let wants = |f: Format| subs.iter().any(|s| s.format == f);
        let json: Vec<Arc<str>> = match wants(Format::Json) {
            true => lines.iter().map(|l| Arc::from(l.json.as_str())).collect(),
            false => vec![],
        };
        let text: Vec<Arc<str>> = match wants(Format::Text) {
            true => lines.iter().map(|l| Arc::from(quote(&l.text))).collect(),
            false => vec![],
        };
        subs.retain(|s| {
            let items = match s.format {
                Format::Json => &json,
                Format::Text => &text,
            };
            for (i, item) in items.iter().enumerate() {
                match s.tx.try_send(item.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        s.lost
                            .fetch_add((items.len() - i) as u64, Ordering::Relaxed);
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }

    /// Drops every client (their connections end once their queues drain).
    pub fn close(&self) {
        self.lock().clear();
    }
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// The listening socket; removes its file when dropped.
pub struct Server {
    path: PathBuf,
    ino: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        // Only our own socket: a newer daemon may have replaced it.
        if std::fs::symlink_metadata(&self.path).ok().map(|m| m.ino()) == Some(self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Server {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Binds `path` (0600, root's, in a 0700 directory created if missing)
    /// and serves connections: status and reload are passed to `asks`,
    /// events clients join `fanout`. Refuses when another daemon answers
    /// there; a stale socket file is replaced.
    pub fn start(path: &Path, asks: mpsc::Sender<Ask>, fanout: Arc<Fanout>) -> Result<Server> {
        let listener = bind(path)?;
        let ino = std::fs::symlink_metadata(path)
            .with_context(|| format!("{}", path.display()))?
            .ino();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                tokio::spawn(serve(conn, asks.clone(), fanout.clone()));
            }
        });
        Ok(Server {
            path: path.to_path_buf(),
            ino,
            task,
        })
    }
}

fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match StdUnixStream::connect(path) {
            Ok(_) => bail!(
                "another metaguard daemon is answering on {}: stop it first, or give this one another --control path",
                path.display()
            ),
            // Stale: its daemon is gone.
            Err(_) => std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?,
        },
        Ok(_) => bail!(
            "{} exists and is not a socket; not replacing it",
            path.display()
        ),
        Err(_) => {}
    }
    // No moment with a socket others could connect to.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::os::unix::fs::chown(path, Some(0), Some(0))
        .with_context(|| format!("chown root {}", path.display()))?;
    Ok(listener)
}

async fn serve(conn: UnixStream, asks: mpsc::Sender<Ask>, fanout: Arc<Fanout>) {
    let cred = conn.peer_cred();
    let (rd, mut wr) = conn.into_split();
    match cred {
        Ok(c) if c.uid() == 0 => {}
        Ok(c) => {
            let msg = format!(
                "permission denied: the control socket serves root only (peer uid {})",
                c.uid()
            );
            let _ = wr.write_all(Response::error(msg).line().as_bytes()).await;
            return;
        }
        Err(e) => {
            let msg = format!("cannot read the peer's credentials: {e}");
            let _ = wr.write_all(Response::error(msg).line().as_bytes()).await;
            return;
        }
    }
    let mut rd = tokio::io::BufReader::new(rd.take(MAX_REQUEST));
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), rd.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return;
    }
    let req = match Request::parse(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = wr.write_all(Response::error(e).line().as_bytes()).await;
            return;
        }
    };
    match req {
        Request::Events { format } => {
            let (mut rx, lost) = fanout.subscribe(format, EVENT_QUEUE);
            drop(fanout);
            if wr
                .write_all(Response::ok().line().as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let mut rd = rd.into_inner().into_inner();
            let mut sink = [0u8; 256];
            loop {
                tokio::select! {
                    item = rx.recv() => match item {
                        Some(l) => {
                            let mut b = Vec::with_capacity(l.len() + 1);
                            b.extend_from_slice(l.as_bytes());
                            b.push(b'\n');
                            if wr.write_all(&b).await.is_err() {
                                return;
                            }
                        }
                        None => {
                            let n = lost.load(Ordering::Relaxed);
                            if n > 0 {
                                let notice = serde_json::json!({
                                    "notice": "dropped",
                                    "lost": n,
                                    "message": format!("lost {n} lines: this client fell more than {EVENT_QUEUE} lines behind and was dropped"),
                                });
                                let _ = wr.write_all(format!("{notice}\n").as_bytes()).await;
                            }
                            let _ = wr.shutdown().await;
                            return;
                        }
                    },
                    // The client has nothing more to say; EOF or error means it left.
                    r = rd.read(&mut sink) => if !matches!(r, Ok(n) if n > 0) { return },
                }
            }
        }
        req => {
            let (tx, rx) = oneshot::channel();
            let resp = if asks.send((req, tx)).await.is_err() {
                Response::error("the daemon is shutting down")
            } else {
                rx.await
                    .unwrap_or_else(|_| Response::error("the daemon is shutting down"))
            };
            let _ = wr.write_all(resp.line().as_bytes()).await;
            let _ = wr.shutdown().await;
        }
    }
}

// ---------------------------------------------------------------- client --

/// A client failure, with the exit code the CLI should use.
#[derive(Debug)]
pub struct ClientError {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn fail(message: impl Into<String>) -> ClientError {
    ClientError {
        code: 1,
        message: message.into(),
    }
}

/// Connects, sends `req`, and returns the reader positioned after the
/// first response line (an `ok:false` answer is an error).
fn request(
    path: &Path,
    req: &Request,
) -> Result<(Response, BufReader<StdUnixStream>), ClientError> {
    let mut s = StdUnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => fail(format!(
            "no metaguard daemon on {}: is `metaguard run` running?",
            path.display()
        )),
        std::io::ErrorKind::PermissionDenied => fail(format!(
            "permission denied on {}: the control socket is for root",
            path.display()
        )),
        _ => fail(format!("connecting to {}: {e}", path.display())),
    })?;
    let mut line = serde_json::to_string(req).unwrap_or_default();
    line.push('\n');
    // A refused peer may be closed before it reads the request: a failed
    // write is reported by what the daemon answered, if anything.
    let _ = s.write_all(line.as_bytes());
    let mut r = BufReader::new(s);
    let mut first = String::new();
    match r.read_line(&mut first) {
        Ok(n) if n > 0 => {}
        Ok(_) => {
            return Err(fail(format!(
                "the daemon on {} closed the connection without an answer",
                path.display()
            )))
        }
        Err(e) => return Err(fail(format!("reading from {}: {e}", path.display()))),
    }
    let resp = Response::parse(&first).map_err(fail)?;
    Ok((resp, r))
}

fn refused(resp: &Response) -> Option<ClientError> {
    (!resp.ok).then(|| fail(resp.error.clone().unwrap_or_else(|| "refused".into())))
}

/// `metaguard status`: the status text (or JSON) to print.
pub fn status(path: &Path, format: Format) -> Result<String, ClientError> {
    let (resp, _) = request(path, &Request::Status)?;
    if let Some(e) = refused(&resp) {
        return Err(e);
    }
    let st = resp
        .status
        .ok_or_else(|| fail("the daemon's answer has no status"))?;
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&st).unwrap_or_default() + "\n",
        Format::Text => st.text(),
    })
}

/// `metaguard learn --live`: follows the daemon's JSON events for `span`
/// and keeps them in a file (under the runtime directory) for `learn`.
pub fn record_events(path: &Path, span: Duration) -> Result<PathBuf, ClientError> {
    let dir = std::env::temp_dir().join(format!("metaguard-learn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
    let file = dir.join("events.jsonl");
    let mut out = std::fs::File::create(&file)
        .map_err(|e| fail(format!("creating {}: {e}", file.display())))?;
    let mut conn = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        fail(format!(
            "no metaguard daemon on {}: is `metaguard run` running? ({e})",
            path.display()
        ))
    })?;
    let req = serde_json::to_string(&Request::Events {
        format: Format::Json,
    })
    .unwrap_or_default();
    use std::io::{BufRead as _, Write as _};
    conn.write_all(format!("{req}\n").as_bytes())
        .map_err(|e| fail(format!("asking for events: {e}")))?;
    let deadline = std::time::Instant::now() + span;
    let mut reader = std::io::BufReader::new(conn.try_clone().map_err(|e| fail(e.to_string()))?);
    let mut first = true;
    eprintln!(
        "metaguard learn: recording events for {} ...",
        humantime::format_duration(span)
    );
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let _ = conn.set_read_timeout(Some(left.min(Duration::from_millis(500))));
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => break, // the daemon stopped
            Ok(_) if first => {
                first = false;
                let resp = Response::parse(&line).map_err(fail)?;
                if let Some(e) = refused(&resp) {
                    return Err(e);
                }
            }
            Ok(_) => {
                let _ = out.write_all(line.as_bytes());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(fail(format!("reading events: {e}"))),
        }
    }
    Ok(file)
}

/// `metaguard grant`: what was granted, or why not.
pub fn grant(
    path: &Path,
    pid: u32,
    ttl_secs: u64,
    endpoint: Option<String>,
) -> Result<String, ClientError> {
    let (resp, _) = request(
        path,
        &Request::Grant {
            pid,
            ttl_secs,
            endpoint,
        },
    )?;
    if let Some(e) = refused(&resp) {
        return Err(e);
    }
    let g = resp
        .grant
        .ok_or_else(|| fail("the daemon's answer has no grant"))?;
    Ok(format!(
        "granted pid {} ({}) access to {} for {} s\n",
        g.pid,
        g.exe,
        g.endpoints.join(", "),
        g.expires_in_seconds
    ))
}

/// `metaguard revoke`.
pub fn revoke(path: &Path, pid: u32) -> Result<String, ClientError> {
    let (resp, _) = request(path, &Request::Revoke { pid })?;
    if let Some(e) = refused(&resp) {
        return Err(e);
    }
    Ok(format!("revoked the grant of pid {pid}\n"))
}

/// `metaguard reload`: "reloaded PATH (generation N)", or the policy's
/// errors as `check` prints them (exit code 2).
pub fn reload(path: &Path) -> Result<String, ClientError> {
    let (resp, _) = request(path, &Request::Reload)?;
    if resp.ok {
        return Ok(format!(
            "reloaded {} (generation {})\n",
            resp.policy.unwrap_or_default(),
            resp.generation.unwrap_or_default()
        ));
    }
    if !resp.errors.is_empty() {
        return Err(ClientError {
            code: 2,
            message: resp.errors.join("\n"),
        });
    }
    Err(refused(&resp).unwrap_or_else(|| fail("reload failed")))
}

/// `metaguard events`: writes every line the daemon prints to `out` until
/// the daemon goes away (Ok) or drops this client (Err).
pub fn events(
    path: &Path,
    format: Format,
    out: &mut dyn std::io::Write,
) -> Result<(), ClientError> {
    let (resp, r) = request(path, &Request::Events { format })?;
    if let Some(e) = refused(&resp) {
        return Err(e);
    }
    for line in r.lines() {
        let Ok(line) = line else { break };
        let shown = match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::String(text)) => text,
            Ok(v) if v.get("notice").is_some() => {
                return Err(fail(format!(
                    "metaguard events: {}",
                    v["message"].as_str().unwrap_or("dropped by the daemon")
                )))
            }
            _ => line,
        };
        if writeln!(out, "{shown}").and_then(|_| out.flush()).is_err() {
            return Ok(()); // our reader went away (e.g. `| head`)
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_round_trip() {
        assert_eq!(Request::parse(r#"{"cmd":"status"}"#), Ok(Request::Status));
        assert_eq!(
            Request::parse(" {\"cmd\":\"reload\"}\n"),
            Ok(Request::Reload)
        );
        assert_eq!(
            Request::parse(r#"{"cmd":"events"}"#),
            Ok(Request::Events {
                format: Format::Json
            })
        );
        assert_eq!(
            Request::parse(r#"{"cmd":"events","format":"text"}"#),
            Ok(Request::Events {
                format: Format::Text
            })
        );
        for req in [
            Request::Status,
            Request::Reload,
            Request::Events {
                format: Format::Text,
            },
        ] {
            let line = serde_json::to_string(&req).unwrap();
            assert_eq!(Request::parse(&line), Ok(req));
        }
        for bad in [
            "",
            "status",
            r#"{"cmd":"unload"}"#,
            r#"{"cmd":"events","format":"xml"}"#,
            r#"{"command":"status"}"#,
        ] {
            let e = Request::parse(bad).unwrap_err();
            assert!(e.starts_with("bad request: "), "{bad}: {e}");
        }
    }

    #[test]
    fn responses_parse_and_round_trip() {
        let r = Response::parse(r#"{"ok":true,"policy":"/p.toml","generation":3}"#).unwrap();
        assert!(r.ok);
        assert_eq!(r.policy.as_deref(), Some("/p.toml"));
        assert_eq!(r.generation, Some(3));
        let e = Response::parse(r#"{"ok":false,"error":"policy rejected","errors":["a:1:1: x"]}"#)
            .unwrap();
        assert!(!e.ok);
        assert_eq!(e.errors, vec!["a:1:1: x".to_string()]);
        assert!(Response::parse("nope").is_err());
        // Only the fields present are written.
        assert_eq!(Response::ok().line(), "{\"ok\":true}\n");
        let st = Status {
            grants: vec![],
            pid: 7,
            started: "t0".into(),
            uptime_seconds: 61,
            mode: "enforce".into(),
            policy: PolicyStatus {
                path: "/p.toml".into(),
                sha256: "ab".into(),
                loaded: "t1".into(),
                generation: 2,
            },
            programs: vec![ProgramStatus {
                name: "connect4".into(),
                id: 12,
                cgroup: "/sys/fs/cgroup".into(),
            }],
            draining: vec![DrainingStatus {
                path: "/sys/fs/bpf/metaguard/cgroup-1/draining-set-1".into(),
                sockets: Some(2),
            }],
            counters: Counters::default(),
        };
        let resp = Response {
            status: Some(st.clone()),
            ..Response::ok()
        };
        let back = Response::parse(&resp.line()).unwrap();
        assert_eq!(back.status.as_ref(), Some(&st));
        let text = st.text();
        assert!(text.contains("pid 7, up 1m 1s"), "{text}");
        assert!(text.contains("connect4  id 12"), "{text}");
        assert!(
            text.contains(
                "draining:   /sys/fs/bpf/metaguard/cgroup-1/draining-set-1 (2 connection(s)"
            ),
            "{text}"
        );
        // A status from a daemon without draining sets still parses.
        let mut v: serde_json::Value = serde_json::to_value(&st).unwrap();
        v.as_object_mut().unwrap().remove("draining");
        let old: Status = serde_json::from_value(v).unwrap();
        assert!(old.draining.is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_events_client_is_dropped_with_the_count() {
        let f = Fanout::default();
        let (mut rx, lost) = f.subscribe(Format::Text, 2);
        let line = |n: u32| Line {
            json: format!("{{\"n\":{n}}}"),
            text: format!("line {n}"),
        };
        f.send(&[line(1), line(2), line(3)]);
        f.send(&[line(4)]);
        assert!(!f.active(), "dropped");
        assert_eq!(rx.recv().await.as_deref(), Some("\"line 1\""));
        assert_eq!(rx.recv().await.as_deref(), Some("\"line 2\""));
        assert_eq!(rx.recv().await, None);
        assert_eq!(lost.load(Ordering::Relaxed), 1);

        let (mut rx, _) = f.subscribe(Format::Json, 8);
        f.send(&[line(5)]);
        assert_eq!(rx.recv().await.as_deref(), Some("{\"n\":5}"));
        drop(rx);
        f.send(&[line(6)]);
        assert!(!f.active(), "a client that left is forgotten");
    }
}
