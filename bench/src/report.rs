//! The figures of every system, rendered as one markdown table (each figure also as a ratio
//! to the origin directly and to the best peer) and as JSON.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::systems::System;

/// Which way a figure is better.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Higher is better (throughput).
    Higher,
    /// Lower is better (latency, CPU, memory, time).
    Lower,
    /// A count to read, not to rank.
    Neither,
}

/// One figure of the table.
pub struct Figure {
    /// JSON key.
    pub key: &'static str,
    /// Table label.
    pub label: &'static str,
    /// Decimals shown.
    pub decimals: usize,
    /// Which way is better.
    pub better: Better,
}

const fn fig(key: &'static str, label: &'static str, decimals: usize, better: Better) -> Figure {
    Figure { key, label, decimals, better }
}

/// The table's rows, in order.
pub const FIGURES: &[Figure] = &[
    fig("p50_ms_c1", "latency p50, c=1 (ms)", 3, Better::Lower),
    fig("p99_ms_c1", "latency p99, c=1 (ms)", 3, Better::Lower),
    fig("rps_c32", "requests/s, c=32", 0, Better::Higher),
    fig("rps_c32_first_s", "requests/s, c=32, first second of a window", 0, Better::Higher),
    fig("p99_ms_c32", "latency p99, c=32 (ms)", 3, Better::Lower),
    fig("failures", "errors + non-2xx + wrong bodies", 0, Better::Neither),
    fig("download_mb_s", "bulk download (MB/s)", 0, Better::Higher),
    fig("upload_mb_s", "bulk upload (MB/s)", 0, Better::Higher),
    fig("cpu_s_per_10k", "CPU s per 10k requests, c=32", 3, Better::Lower),
    fig("cpu_user_s_per_10k", "of which in user space", 3, Better::Lower),
    fig("server_idle_rss_kib", "server RSS idle, client connected (KiB)", 0, Better::Lower),
    fig("client_rss_kib", "client RSS after load (KiB)", 0, Better::Lower),
    fig("server_rss_tunnels_kib", "server RSS, N idle tunnels (KiB)", 0, Better::Lower),
    fig("bytes_per_idle_tunnel", "server bytes per idle tunnel", 0, Better::Lower),
    fig("register_s", "register N tunnels + N×10 conns (s)", 3, Better::Lower),
    fig("tunnels_per_s", "tunnels registered per s (8 at once)", 0, Better::Higher),
    fig("register_cpu_us_per_tunnel", "server CPU per tunnel registered + 10 conns (µs)", 0, Better::Lower),
    fig("max_tunnels_held", "most idle tunnels of 10 connections held (see notes)", 0, Better::Higher),
    fig("max_tunnels_held_1", "most idle tunnels of 1 connection held (see notes)", 0, Better::Higher),
];

/// What one system measured, or why it could not be.
pub struct Outcome {
    /// The system.
    pub system: System,
    /// Figures by key.
    pub figures: BTreeMap<&'static str, f64>,
    /// Why the system is unavailable, if it is.
    pub unavailable: Option<String>,
    /// Problems worth reading (failed transfers, counts of errors by kind).
    pub notes: Vec<String>,
}

impl Outcome {
    /// An outcome with no figures yet.
    pub fn new(system: System) -> Outcome {
        Outcome { system, figures: BTreeMap::new(), unavailable: None, notes: Vec::new() }
    }
}

/// The per-second rates of the c=32 rounds: the median first second as a figure, every second as a note.
pub fn per_second(outcome: &mut Outcome, rounds: &[Vec<u64>]) {
    let mut firsts: Vec<f64> = rounds.iter().filter_map(|r| r.first()).map(|&n| n as f64).collect();
    if let Some(first) = crate::load::middle(&mut firsts) {
        outcome.figures.insert("rps_c32_first_s", first);
    }
    if rounds.iter().any(|r| !r.is_empty()) {
        let shown: Vec<String> =
            rounds.iter().map(|r| r.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")).collect();
        outcome.notes.push(format!("c=32 requests in each second, by round: [{}]", shown.join("] [")));
    }
}

fn best_peer(outcomes: &[Outcome], f: &Figure) -> Option<f64> {
    let peers = outcomes.iter().filter(|o| o.system.is_peer()).filter_map(|o| o.figures.get(f.key).copied());
    match f.better {
        Better::Higher => peers.reduce(f64::max),
        Better::Lower => peers.reduce(f64::min),
        Better::Neither => None,
    }
}

fn ratio(v: f64, base: Option<f64>) -> Option<f64> {
    base.filter(|b| *b > 0.0 && b.is_finite()).map(|b| v / b)
}

/// The markdown table (plus a legend and any unavailable systems and notes).
pub fn markdown(outcomes: &[Outcome], header: &str, n_tunnels: usize) -> String {
    let mut out = format!("{header}\n\n| figure |");
    for o in outcomes {
        out += &format!(" {} |", o.system.name());
    }
    out += "\n| --- |";
    out += &" --- |".repeat(outcomes.len());
    out += "\n";
    let direct = outcomes.iter().find(|o| o.system == System::Direct);
    for f in FIGURES.iter().filter(|f| outcomes.iter().any(|o| o.figures.contains_key(f.key))) {
        let label =
            f.label.replace("N×10", &(n_tunnels * 10).to_string()).replace(" N ", &format!(" {n_tunnels} "));
        out += &format!("| {label} |");
        let best = best_peer(outcomes, f);
        for o in outcomes {
            let cell = match (o.unavailable.as_ref(), o.figures.get(f.key)) {
                (Some(_), _) => "unavailable".to_owned(),
                (None, None) => "-".to_owned(),
                (None, Some(&v)) => {
                    let mut cell = format!("{v:.*}", f.decimals);
                    if f.better != Better::Neither {
                        let d = direct.filter(|d| d.system != o.system).and_then(|d| d.figures.get(f.key));
                        let d = ratio(v, d.copied());
                        let p = ratio(v, best);
                        if d.is_some() || p.is_some() {
                            let show = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.2}"));
                            cell += &format!(" ({} / {})", show(d), show(p));
                        }
                    }
                    cell
                }
            };
            out += &format!(" {cell} |");
        }
        out += "\n";
    }
    out += "\nCells: value (ratio to the origin directly / ratio to the best of bore and rathole). \
            CPU covers the tunnel's server and client processes.\n";
    for o in outcomes {
        if let Some(why) = &o.unavailable {
            out += &format!("\n- {}: unavailable: {why}", o.system.name());
        }
        for note in &o.notes {
            out += &format!("\n- {}: {note}", o.system.name());
        }
    }
    out += "\n";
    out
}

/// The JSON document.
pub fn json(outcomes: &[Outcome], meta: Value) -> Value {
    let systems: serde_json::Map<String, Value> = outcomes
        .iter()
        .map(|o| {
            let figures: serde_json::Map<String, Value> =
                o.figures.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
            let value = json!({
                "available": o.unavailable.is_none(),
                "reason": o.unavailable,
                "figures": figures,
                "notes": o.notes,
            });
            (o.system.name().to_owned(), value)
        })
        .collect();
    json!({ "meta": meta, "systems": systems })
}
