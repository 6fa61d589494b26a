//! `aether-bench`: aether side by side with the origin directly and the TCP tunnels bore and
//! rathole, all measured in one run on loopback (issue 5).
//!
//! For each system: `GET /hello` latency at c=1 and requests/s at c=32 (keep-alive, every
//! body checked), bulk downloads and uploads, CPU of the tunnel's processes per 10k
//! requests, server and client RSS; for aether also the server's RSS and registration time
//! with N idle tunnels of 10 connections, and the most idle tunnels one server holds (up to
//! 10,000, or what the open-file limit allows the bench). Writes `bench/results.md` and `bench/results.json`.
//! All systems run at once and each load figure is taken in rounds that visit them in turn.
//!
//! `bash bench/run.sh` (full: 10 s per figure in 5 rounds, 100 MiB bulk, 1,000 idle tunnels) or
//! `bash bench/run.sh --quick` (1 s in 1 round, 8 MiB, 50 tunnels). `--systems direct,aether-tokio,...`
//! or `--runtime tokio|smol` measure a subset, `--rounds N` splits each figure's time into N rounds.
//! Exits non-zero if aether or the origin showed an error or a wrong body; never on speed.

mod external;
mod idle;
mod load;
mod origin;
mod report;
mod systems;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use report::Outcome;
use serde_json::json;
use systems::{Bins, System};

/// Run parameters (see the module comment for the two modes).
struct Config {
    quick: bool,
    /// Load time per figure and system, split over `rounds`.
    time: Duration,
    /// Interleaved rounds each load figure is taken in.
    rounds: usize,
    big: usize,
    tunnels: usize,
    /// Most idle tunnels tried in the scale figure.
    scale_cap: usize,
}

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let external = args.iter().any(|a| a == "--external");
    let config = Config {
        quick,
        time: Duration::from_secs(if quick { 1 } else { 10 }),
        rounds: arg_value(&args, "--rounds").and_then(|r| r.parse().ok()).unwrap_or(
            match (quick, external) {
                (true, _) => 1,
                (false, true) => 3,
                (false, false) => 5,
            },
        ),
        big: if quick { 8 << 20 } else { 100 << 20 },
        tunnels: if quick { 50 } else { 1000 },
        scale_cap: if quick { 100 } else { 10_000 },
    };
    let only_rt = arg_value(&args, "--runtime");
    let only: Option<Vec<String>> =
        arg_value(&args, "--systems").map(|s| s.split(',').map(str::to_owned).collect());
    let chosen: Vec<System> = System::ALL
        .into_iter()
        .filter(|s| only.as_ref().is_none_or(|o| o.iter().any(|n| n == s.name())))
        .filter(|s| match (s, &only_rt) {
            (System::Aether(rt), Some(o)) => rt == o,
            _ => true,
        })
        .collect();
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out_dir = arg_value(&args, "--out").map_or(here.clone(), PathBuf::from);
    let bins = Bins {
        aether: std::env::current_exe().map(|e| e.with_file_name("aether")).unwrap_or_default(),
        tools: arg_value(&args, "--tools").map_or(here.join(".tools"), PathBuf::from).join("bin"),
    };
    let config = Config { tunnels: fit_tunnels(config.tunnels, idle::CONNS), ..config };

    // The external mode's origin is nginx; the in-process one serves the payload otherwise.
    let (nginx, big) = if external {
        match external::nginx() {
            Ok(nginx) => (Some(nginx), Arc::new(origin::Payload::new(0))),
            Err(e) => {
                eprintln!("aether-bench: cannot start nginx: {e}");
                std::process::exit(2);
            }
        }
    } else {
        (None, Arc::new(origin::Payload::new(config.big)))
    };
    let origin = match &nginx {
        Some(nginx) => nginx.port,
        None => match origin::start(big.clone()) {
            Ok(port) => port,
            Err(e) => {
                eprintln!("aether-bench: cannot start the origin: {e}");
                std::process::exit(2);
            }
        },
    };
    // Every system up at once (idle ones cost nothing), measured in interleaved rounds.
    let mut live = Vec::new();
    let mut outcomes = Vec::new();
    for system in chosen {
        eprintln!("aether-bench: starting {}", system.name());
        let mut outcome = Outcome::new(system);
        match systems::start(system, &bins, origin) {
            Ok(running) => live.push((outcome, running)),
            Err(why) => {
                outcome.unavailable = Some(why);
                outcomes.push(outcome);
            }
        }
    }
    eprintln!("aether-bench: measuring {} systems in {} interleaved rounds", live.len(), config.rounds);
    match &nginx {
        // A wrk window of 10 s (2 in --quick) at c=32 in each round, 5 s (1) at c=1.
        Some(nginx) => {
            let (c1, c32) = if config.quick { (1, 2) } else { (5, 10) };
            let (c1, c32) = (Duration::from_secs(c1), Duration::from_secs(c32));
            external::measure(&mut live, nginx, config.rounds.max(1), c1, c32);
        }
        None => measure(&mut live, &config, &big),
    }
    // Stopped before the idle figures, which start fresh servers of their own.
    outcomes.extend(live.into_iter().map(|(outcome, _)| outcome));
    outcomes.sort_by_key(|o| System::ALL.iter().position(|s| *s == o.system));
    for outcome in &mut outcomes {
        if let (System::Aether(rt), None, false) = (outcome.system, &outcome.unavailable, external) {
            eprintln!("aether-bench: idle tunnels on aether-{rt}");
            idle_figures(&bins, rt, config.tunnels, config.scale_cap, outcome);
        }
    }

    let mode = match (external, config.quick) {
        (true, true) => "external quick",
        (true, false) => "external",
        (false, true) => "quick",
        (false, false) => "full",
    };
    let header = if external {
        format!(
            "aether-bench, {mode} mode (wrk -t1, nginx origin), {}: {} rounds of a c=1 and a c=32 window; {}",
            shell(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]),
            config.rounds.max(1),
            machine(),
        )
    } else {
        format!(
            "aether-bench, {mode} mode, {}: {} s per figure, {} MiB bulk, N = {} idle tunnels; {}",
            shell(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]),
            config.time.as_secs(),
            config.big >> 20,
            config.tunnels,
            machine(),
        )
    };
    let table = report::markdown(&outcomes, &header, config.tunnels);
    println!("{table}");
    let meta = json!({
        "date": shell(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "machine": machine(),
        "mode": mode,
        "seconds_per_figure": config.time.as_secs(),
        "bulk_bytes": config.big,
        "idle_tunnels": config.tunnels,
        "connections_per_idle_tunnel": 10,
    });
    let doc = report::json(&outcomes, meta);
    let stem = if external { "results-external" } else { "results" };
    let written = std::fs::write(out_dir.join(format!("{stem}.md")), &table).and_then(|()| {
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        std::fs::write(out_dir.join(format!("{stem}.json")), text + "\n")
    });
    match written {
        Ok(()) => eprintln!("aether-bench: wrote {0}/{stem}.md and {0}/{stem}.json", out_dir.display()),
        Err(e) => eprintln!("aether-bench: cannot write results to {}: {e}", out_dir.display()),
    }

    // Speed never fails the run; an error, a wrong body or an aether that would not start does.
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.system.is_peer())
        .filter(|o| o.unavailable.is_some() || o.figures.get("failures").is_some_and(|f| *f > 0.0))
        .map(|o| o.system.name())
        .collect();
    if !failed.is_empty() {
        eprintln!("aether-bench: errors or wrong bodies in: {}", failed.join(", "));
        std::process::exit(1);
    }
}

/// What one system's rounds gathered.
struct Tally {
    c1: load::Load,
    c32: load::Load,
    /// Requests/s of each c=32 round.
    rps: Vec<f64>,
    /// Requests in each second of each c=32 round.
    seconds: Vec<Vec<u64>>,
    /// CPU of the tunnel's processes over the c=32 rounds; `None` if not known.
    cpu: Option<systems::Cpu>,
    downloads: Vec<load::Bulk>,
    uploads: Vec<load::Bulk>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            c1: load::Load::default(),
            c32: load::Load::default(),
            rps: Vec::new(),
            seconds: Vec::new(),
            cpu: Some(systems::Cpu::default()),
            downloads: Vec::new(),
            uploads: Vec::new(),
        }
    }
}

/// Load, bulk, CPU and RSS figures of the running systems.
///
/// Every figure is taken in rounds that visit the systems in turn (a c=1 window of each, then the
/// next round), and pooled or the median taken: on a shared machine a burst of a neighbour's load
/// then lands on every system alike instead of on whichever one was being measured.
fn measure(live: &mut [(Outcome, systems::Running)], config: &Config, big: &origin::Payload) {
    for (outcome, running) in live.iter_mut() {
        if let Some(server) = &running.server {
            outcome.figures.insert("server_idle_rss_kib", systems::rss_kib(server.pid()) as f64);
        }
    }
    let rounds = config.rounds.max(1) as u32;
    let window = config.time / rounds;
    let mut tallies: Vec<Tally> = live.iter().map(|_| Tally::default()).collect();
    for _ in 0..rounds {
        for ((_, running), tally) in live.iter().zip(&mut tallies) {
            tally.c1.absorb(load::hello(&running.target, 1, window));
        }
    }
    for _ in 0..rounds {
        for ((_, running), tally) in live.iter().zip(&mut tallies) {
            let pids = running.pids();
            let before = systems::cpu_of(&pids);
            let round = load::hello(&running.target, 32, window);
            let after = systems::cpu_of(&pids);
            tally.cpu = match (tally.cpu, before, after) {
                (Some(u), Some(a), Some(b)) if !pids.is_empty() => Some(u.plus(a, b)),
                _ => None,
            };
            tally.rps.push(round.rps());
            tally.seconds.push(round.per_second.clone());
            tally.c32.absorb(round);
        }
    }
    // One 100 MiB transfer takes well under a second, so a single one is at the mercy of the
    // scheduler: the figure is the median of several.
    let runs = if config.quick { 1 } else { 5 };
    for _ in 0..runs {
        for ((_, running), tally) in live.iter().zip(&mut tallies) {
            tally.downloads.push(load::download(&running.target, big));
            tally.uploads.push(load::upload(&running.target, big));
        }
    }

    for ((outcome, running), mut tally) in live.iter_mut().zip(tallies) {
        let (c1, c32) = (&tally.c1, &tally.c32);
        let f = &mut outcome.figures;
        f.insert("p50_ms_c1", c1.percentile_ms(0.50));
        f.insert("p99_ms_c1", c1.percentile_ms(0.99));
        f.insert("requests_c1", c1.latencies.len() as f64);
        f.insert("rps_c32", load::middle(&mut tally.rps).unwrap_or(f64::NAN));
        f.insert("p99_ms_c32", c32.percentile_ms(0.99));
        report::per_second(outcome, &tally.seconds);
        let f = &mut outcome.figures;
        f.insert("requests_c32", c32.latencies.len() as f64);
        if let Some(used) = tally.cpu
            && !c32.latencies.is_empty()
        {
            let per_10k = 10_000.0 / c32.latencies.len() as f64;
            f.insert("cpu_s_per_10k", (used.user + used.kernel) * per_10k);
            f.insert("cpu_user_s_per_10k", used.user * per_10k);
        }
        let (errors, non_2xx, wrong) =
            (c1.errors + c32.errors, c1.non_2xx + c32.non_2xx, c1.wrong_bodies + c32.wrong_bodies);
        f.insert("errors", errors as f64);
        f.insert("non_2xx", non_2xx as f64);
        f.insert("wrong_bodies", wrong as f64);
        if errors + non_2xx + wrong > 0 {
            outcome
                .notes
                .push(format!("{errors} errors, {non_2xx} non-2xx, {wrong} wrong bodies under load"));
        }
        let mut bulk_failures = 0;
        let transfers =
            [("download_mb_s", "download", tally.downloads), ("upload_mb_s", "upload", tally.uploads)];
        for (key, what, runs) in transfers {
            match load::median(runs) {
                load::Bulk { mb_per_s: Some(v), .. } => {
                    outcome.figures.insert(key, v);
                }
                load::Bulk { error, .. } => {
                    bulk_failures += 1;
                    outcome.notes.push(format!("{what} failed: {}", error.unwrap_or_default()));
                }
            }
        }
        let f = &mut outcome.figures;
        f.insert("bulk_failures", bulk_failures as f64);
        f.insert("failures", (errors + non_2xx + wrong + bulk_failures) as f64);
        if let Some(client) = &running.client {
            f.insert("client_rss_kib", systems::rss_kib(client.pid()) as f64);
            f.insert("client_peak_rss_kib", systems::hwm_kib(client.pid()) as f64);
        }
        if let Some(server) = &running.server {
            f.insert("server_peak_rss_kib", systems::hwm_kib(server.pid()) as f64);
        }
    }
}

/// The idle-tunnel figures of aether on `rt`, on a fresh server.
fn idle_figures(bins: &Bins, rt: &str, n: usize, scale_cap: usize, outcome: &mut Outcome) {
    match idle::measure(&bins.aether, rt, n) {
        Ok(idle) => {
            let f = &mut outcome.figures;
            f.insert("server_rss_tunnels_kib", idle.held_kib as f64);
            f.insert("server_rss_fresh_kib", idle.base_kib as f64);
            f.insert("bytes_per_idle_tunnel", idle.bytes_per_tunnel());
            f.insert("register_s", idle.register.as_secs_f64());
            f.insert("tunnels_per_s", idle.tunnels as f64 / idle.register.as_secs_f64());
            if let Some(cpu) = idle.register_cpu {
                f.insert("register_cpu_us_per_tunnel", cpu * 1e6 / idle.tunnels.max(1) as f64);
            }
        }
        Err(e) => {
            outcome.notes.push(format!("idle tunnels: {e}"));
            let failures = outcome.figures.entry("failures").or_insert(0.0);
            *failures += 1.0;
        }
    }
    // Tunnels of 10 connections, then of 1: with a low open-file limit, the second still shows
    // how many tunnels one server holds.
    for (conns, key) in [(idle::CONNS, "max_tunnels_held"), (1, "max_tunnels_held_1")] {
        let cap = fit_tunnels(scale_cap, conns);
        match idle::scale(&bins.aether, rt, cap, conns) {
            Ok((held, stopped)) => {
                outcome.figures.insert(key, held as f64);
                let why = stopped
                    .unwrap_or_else(|| format!("the bench's cap of {cap} (mode, or its open-file limit)"));
                let plural = if conns == 1 { "" } else { "s" };
                outcome.notes.push(format!(
                    "scale: held {held} idle tunnels of {conns} connection{plural}; stopped by {why}"
                ));
            }
            Err(e) => outcome.notes.push(format!("scale, {conns} connections: {e}")),
        }
    }
}

/// The most idle tunnels (`conns` connections each, held on both ends here) the open-file limit allows.
fn fit_tunnels(want: usize, conns: usize) -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    match soft {
        Some(soft) if soft < want * conns + 200 => {
            let fit = soft.saturating_sub(200) / conns;
            eprintln!(
                "aether-bench: open-file limit {soft}: measuring {fit} idle tunnels of {conns} connections, not {want}"
            );
            fit.max(1)
        }
        _ => want,
    }
}

fn shell(cmd: &[&str]) -> String {
    std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {model}, Linux {}", shell(&["uname", "-r"]))
}
