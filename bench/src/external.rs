//! The external mode (`--external`): Debian's `wrk` as the load generator and `nginx` as the
//! origin, which is how users and other tunnel projects measure a tunnel.
//!
//! nginx runs as one foreground process with a configuration of the bench's own: `GET /hello`
//! answers `hello <query>`, and a second loopback port serves `stub_status`, whose request counter,
//! read once a second while wrk runs, gives the per-second rates of each window (wrk reports only
//! the window's mean). wrk checks no bodies: it counts socket errors and non-2xx replies, which
//! are the failures here; the in-process mode is the one that catches a crossed reply.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::load::{Target, middle};
use crate::report::{self, Outcome};
use crate::systems::{self, Cpu, Proc, Running, free_port, wait_for};

/// An nginx origin of the bench's own, stopped (and its directory removed) when dropped.
pub struct Nginx {
    /// Killed first (fields drop in order), then the directory goes.
    _proc: Proc,
    /// The port serving `/hello`.
    pub port: u16,
    /// `host:port` of its `stub_status`.
    status: String,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts nginx (`/usr/sbin/nginx` or the one on `PATH`) on two free loopback ports.
pub fn nginx() -> Result<Nginx, String> {
    let bin = ["/usr/sbin/nginx", "nginx"].into_iter().find(|b| which(b)).ok_or("nginx is not installed")?;
    let (port, status_port) = (free_port()?, free_port()?);
    let dir = std::env::temp_dir().join(format!("aether-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 100000000;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{ listen 127.0.0.1:{port}; location = /hello {{ default_type text/plain; return 200 \"hello $args\"; }} }}\n\
         server {{ listen 127.0.0.1:{status_port}; location / {{ stub_status; }} }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let proc = Proc::spawn(
        Command::new(bin)
            .args(["-e", &format!("{d}/error.log"), "-p", &d.to_string(), "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let nginx = Nginx { _proc: proc, port, status: format!("127.0.0.1:{status_port}"), dir };
    if !wait_for(Duration::from_secs(5), || nginx.served().is_some()) {
        let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
        return Err(format!("nginx did not start: {}", log.lines().last().unwrap_or("no log")));
    }
    Ok(nginx)
}

impl Nginx {
    /// Requests nginx has served so far.
    pub fn served(&self) -> Option<u64> {
        served_at(&self.status)
    }
}

/// The request counter of the `stub_status` at `status`, this request included.
fn served_at(status: &str) -> Option<u64> {
    let mut s = TcpStream::connect(status).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    // "server accepts handled requests\n 1 1 7 \n": the third number of the line after.
    let (_, after) = reply.split_once("handled requests")?;
    after.split_whitespace().nth(2)?.parse().ok()
}

fn which(bin: &str) -> bool {
    Command::new(bin).arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// What one wrk window measured.
#[derive(Debug, Default, PartialEq)]
pub struct Run {
    /// Requests completed.
    pub requests: u64,
    /// Their mean rate over the window.
    pub rps: f64,
    /// Latency quantiles in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Socket errors of every kind, plus non-2xx replies.
    pub failures: u64,
    /// Requests nginx served in each whole second of the window.
    pub per_second: Vec<u64>,
}

/// Runs wrk (one thread, `c` keep-alive connections) on `target` for `time`, sampling nginx.
pub fn wrk(target: &Target, c: usize, time: Duration, nginx: &Nginx) -> Result<Run, String> {
    let url = format!("http://{}{}/hello?wrk", target.addr, target.prefix);
    let child = Command::new("wrk")
        .args(["-t1", "-c", &c.to_string(), "-d", &format!("{}s", time.as_secs()), "--latency"])
        .args(["--timeout", "5s", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start wrk: {e}"))?;
    let (done, seconds) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
    let sampler = {
        let (done, seconds, started) = (done.clone(), seconds.clone(), Instant::now());
        let status = nginx.status.clone();
        thread::spawn(move || {
            let mut last = served_at(&status);
            for s in 1.. {
                let at = started + Duration::from_secs(s);
                thread::sleep(at.saturating_duration_since(Instant::now()));
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let now = served_at(&status);
                if let (Some(a), Some(b)) = (last, now) {
                    // The sample itself is one of the requests counted.
                    seconds.lock().unwrap_or_else(|p| p.into_inner()).push(b.saturating_sub(a + 1));
                }
                last = now;
            }
        })
    };
    let out = child.wait_with_output().map_err(|e| format!("wrk: {e}"));
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut run = parse(&text)
        .ok_or_else(|| format!("wrk printed no figures: {}", String::from_utf8_lossy(&out.stderr).trim()))?;
    let mut seconds = std::mem::take(&mut *seconds.lock().unwrap_or_else(|p| p.into_inner()));
    // A sample taken after wrk's last second would read the idle tail.
    seconds.truncate(time.as_secs() as usize);
    run.per_second = seconds;
    Ok(run)
}

/// The figures of the running systems from `rounds` interleaved rounds: a c=1 window of `c1`
/// on each in turn, then a c=32 window of `c32` on each, with the tunnel's CPU over the latter.
pub fn measure(live: &mut [(Outcome, Running)], nginx: &Nginx, rounds: usize, c1: Duration, c32: Duration) {
    let mut runs: Vec<(Vec<Run>, Vec<Run>, Option<Cpu>)> =
        live.iter().map(|_| (Vec::new(), Vec::new(), Some(Cpu::default()))).collect();
    for _ in 0..rounds {
        for ((outcome, running), (ones, _, _)) in live.iter_mut().zip(&mut runs) {
            match wrk(&running.target, 1, c1, nginx) {
                Ok(run) => ones.push(run),
                Err(e) => outcome.notes.push(format!("c=1: {e}")),
            }
        }
    }
    for _ in 0..rounds {
        for ((outcome, running), (_, many, cpu)) in live.iter_mut().zip(&mut runs) {
            let pids = running.pids();
            let before = systems::cpu_of(&pids);
            let run = wrk(&running.target, 32, c32, nginx);
            *cpu = match (*cpu, before, systems::cpu_of(&pids)) {
                (Some(u), Some(a), Some(b)) if !pids.is_empty() => Some(u.plus(a, b)),
                _ => None,
            };
            match run {
                Ok(run) => many.push(run),
                Err(e) => outcome.notes.push(format!("c=32: {e}")),
            }
        }
    }
    for ((outcome, _), (ones, many, cpu)) in live.iter_mut().zip(runs) {
        let median =
            |runs: &[Run], pick: fn(&Run) -> f64| middle(&mut runs.iter().map(pick).collect::<Vec<_>>());
        let figures = [
            ("p50_ms_c1", median(&ones, |r| r.p50_ms)),
            ("p99_ms_c1", median(&ones, |r| r.p99_ms)),
            ("rps_c32", median(&many, |r| r.rps)),
            ("p99_ms_c32", median(&many, |r| r.p99_ms)),
        ];
        for (key, value) in figures {
            if let Some(v) = value {
                outcome.figures.insert(key, v);
            }
        }
        let requests: u64 = many.iter().map(|r| r.requests).sum();
        if let Some(used) = cpu.filter(|_| requests > 0) {
            let per_10k = 10_000.0 / requests as f64;
            outcome.figures.insert("cpu_s_per_10k", (used.user + used.kernel) * per_10k);
            outcome.figures.insert("cpu_user_s_per_10k", used.user * per_10k);
        }
        let failures: u64 = ones.iter().chain(&many).map(|r| r.failures).sum();
        let broken = (2 * rounds).saturating_sub(ones.len() + many.len());
        outcome.figures.insert("failures", (failures as usize + broken) as f64);
        let seconds: Vec<Vec<u64>> = many.into_iter().map(|r| r.per_second).collect();
        report::per_second(outcome, &seconds);
    }
}

/// Reads wrk's report (`--latency`); `None` if it has no request count or rate.
fn parse(text: &str) -> Option<Run> {
    let mut run = Run::default();
    let mut seen = (false, false);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [n, "requests", "in", ..] => (run.requests, seen.0) = (n.parse().ok()?, true),
            ["Requests/sec:", r] => (run.rps, seen.1) = (r.parse().ok()?, true),
            ["50%", t] => run.p50_ms = millis(t)?,
            ["99%", t] => run.p99_ms = millis(t)?,
            ["Non-2xx", "or", "3xx", "responses:", n] => run.failures += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                run.failures +=
                    rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            _ => {}
        }
    }
    (seen == (true, true)).then_some(run)
}

/// wrk's durations (`412.00us`, `1.25ms`, `2.00s`) in milliseconds.
fn millis(t: &str) -> Option<f64> {
    let split = t.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 2s test @ http://127.0.0.1:8080/hello?wrk
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  310.11us   9.87ms   91.20%
    Req/Sec    31.57k     1.20k   33.01k    80.00%
  Latency Distribution
     50%  973.00us
     75%    1.08ms
     90%    1.25ms
     99%    2.10ms
  62843 requests in 2.00s, 8.03MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  31420.68
Transfer/sec:      4.01MB
";

    #[test]
    fn a_report_gives_its_figures() {
        let run = parse(REPORT).expect("figures");
        assert_eq!(run.requests, 62843);
        assert!((run.rps - 31420.68).abs() < 1e-6);
        assert!((run.p50_ms - 0.973).abs() < 1e-9 && (run.p99_ms - 2.10).abs() < 1e-9);
        assert_eq!(run.failures, 2 + 1 + 4);
    }

    #[test]
    fn a_report_without_a_rate_is_none() {
        let cut: String =
            REPORT.lines().filter(|l| !l.starts_with("Requests/sec")).collect::<Vec<_>>().join("\n");
        assert_eq!(parse(&cut), None);
        assert_eq!(parse("unable to connect to 127.0.0.1:1 Connection refused"), None);
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(millis("250.00us"), Some(0.25));
        assert_eq!(millis("3.50ms"), Some(3.5));
        assert_eq!(millis("1.20s"), Some(1200.0));
        assert_eq!(millis("12"), None);
        assert_eq!(millis("3.5h"), None);
    }
}
