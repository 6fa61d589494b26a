//! What the binary prints: one-line writes to stderr, the server's tunnel events as text or JSON
//! lines (`--log-format`), and the client's reports.
//!
//! Output formatting only; deciding when to stop on an event is `share.rs`'s job.

use std::sync::atomic::{AtomicBool, Ordering};

use aether_core::hub::ServerEvent;
use aether_core::options::Report;
use aether_core::supervisor::ClientEvent;

/// Writes one line to stderr with a single `write`.
///
/// stderr is unbuffered and `eprintln!` writes each formatted piece on its own: five syscalls for
/// one "tunnel … registered" line, and lines of two threads could interleave. A failed write is
/// ignored rather than panicking a server over its log.
macro_rules! say {
    ($($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }};
}
pub(crate) use say;

/// `--log-format`: how the server writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `aether: tunnel x registered`.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses `--log-format`.
pub fn log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("unknown log format `{s}`: use text or json")),
    }
}

/// Set once from `--log-format` before the server starts; read by [`log_server`].
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// Chooses the format of every later server log line.
pub fn set_format(format: LogFormat) {
    JSON_LOGS.store(format == LogFormat::Json, Ordering::Relaxed);
}

/// `--log-format json` was given.
pub fn json() -> bool {
    JSON_LOGS.load(Ordering::Relaxed)
}

/// The server's log callback.
pub fn log_server(event: &ServerEvent) {
    if json() {
        let (what, id) = match event {
            ServerEvent::Registered { id, resumed: false } => ("registered", id),
            ServerEvent::Registered { id, resumed: true } => ("resumed", id),
            ServerEvent::Online { id } => ("online", id),
            ServerEvent::Offline { id } => ("offline", id),
            ServerEvent::Expired { id } => ("expired", id),
        };
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        // Tunnel ids are [a-z0-9-]: nothing to escape.
        return say!(r#"{{"ts":{:.3},"event":"{what}","tunnel":"{id}"}}"#, at.as_secs_f64());
    }
    match event {
        ServerEvent::Registered { id, resumed } => {
            say!("aether: tunnel {id} {}", if *resumed { "resumed" } else { "registered" })
        }
        ServerEvent::Online { id } => say!("aether: tunnel {id} online"),
        ServerEvent::Offline { id } => say!("aether: tunnel {id} offline"),
        ServerEvent::Expired { id } => say!("aether: tunnel {id} expired"),
    }
}

/// Prints a client report (request lines only with `--print-requests`).
pub fn print_report(report: &Report, print_requests: bool) {
    match report {
        Report::Request(r) if print_requests => {
            say!("{} {} {} {}ms", r.method, r.path, r.status, r.duration.as_millis())
        }
        Report::Request(_) => {}
        Report::Client(ClientEvent::Online { .. } | ClientEvent::Fatal { .. }) => {}
        Report::Client(ClientEvent::RegisterRetry { after, why }) => {
            say!("aether: registration failed ({why}); retrying in {} ms", after.as_millis())
        }
        Report::Client(ClientEvent::Reregistering { why }) => {
            say!("aether: the server lost the tunnel ({why:?}); registering again")
        }
        Report::Client(ClientEvent::Reconnecting { .. }) => {}
    }
}
