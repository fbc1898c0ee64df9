//! `macula-peer table DIR`: medians of the reports `compare.sh` wrote, as Markdown.
//!
//! Each report is `DIR/<system>__<scenario>__<payload>__<round>.json`, written by
//! `macula-loadtest pubsub --json` or `macula-peer … --json`; both carry
//! `throughput_msgs_per_s` (deliveries per second, all subscribers), `lost` and `latency_us`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// Arguments of `macula-peer table`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The directory of reports.
    dir: PathBuf,
    /// The peer each measured system is divided by (a ratio column per measured system).
    #[arg(long, default_value = "nats-tcp")]
    against: String,
    /// The ceiling (a second ratio column per measured system).
    #[arg(long, default_value = "quic-copy")]
    ceiling: String,
    /// Systems whose names start with this get the ratio columns.
    #[arg(long, default_value = "macula")]
    measured: String,
}

#[derive(Default)]
struct Cell {
    throughput: Vec<f64>,
    p99: Vec<f64>,
    lost: u64,
    expected: u64,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Prints one table per scenario: a row per payload, a column per system.
pub fn run(a: Args) -> Result<()> {
    // (scenario, payload) -> system -> cell
    let mut cells: BTreeMap<(String, usize), BTreeMap<String, Cell>> = BTreeMap::new();
    let mut systems: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(&a.dir).with_context(|| format!("read {}", a.dir.display()))? {
        let path = entry?.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let parts: Vec<&str> = stem.split("__").collect();
        let [system, scenario, payload, _round] = parts[..] else {
            continue;
        };
        let text = std::fs::read_to_string(&path)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let num = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
        let cell = cells
            .entry((scenario.to_string(), payload.parse()?))
            .or_default()
            .entry(system.to_string())
            .or_default();
        cell.throughput.push(num("throughput_msgs_per_s"));
        cell.p99.push(
            v.pointer("/latency_us/p99")
                .and_then(|x| x.as_f64())
                .unwrap_or(f64::NAN),
        );
        cell.lost += num("lost") as u64;
        cell.expected += num("expected") as u64;
        if !systems.iter().any(|s| s == system) {
            systems.push(system.to_string());
        }
    }
    systems.sort();
    let measured: Vec<String> = systems
        .iter()
        .filter(|s| s.starts_with(&a.measured))
        .cloned()
        .collect();
    let mut scenario = String::new();
    for ((sc, payload), row) in &mut cells {
        if *sc != scenario {
            scenario = sc.clone();
            println!("\n### {sc} (deliveries/s, median; p99 in ms; loss where any)\n");
            print!("| payload |");
            for s in &systems {
                print!(" {s} |");
            }
            for s in &measured {
                print!(" {s} / {} |", a.against);
            }
            for s in &measured {
                print!(" {s} / {} |", a.ceiling);
            }
            println!();
            let cols = systems.len() + 2 * measured.len();
            println!("|---|{}", "---|".repeat(cols));
        }
        let mut med = BTreeMap::new();
        print!("| {payload} B |");
        for s in &systems {
            match row.get_mut(s) {
                Some(c) => {
                    let t = median(&mut c.throughput);
                    let p99 = median(&mut c.p99) / 1000.0;
                    med.insert(s.clone(), t);
                    let loss = if c.lost > 0 && c.expected > 0 {
                        format!("; lost {:.1} %", 100.0 * c.lost as f64 / c.expected as f64)
                    } else {
                        String::new()
                    };
                    print!(
                        " {:.0} k ({:.1} ms{loss}; n={}) |",
                        t / 1000.0,
                        p99,
                        c.throughput.len()
                    );
                }
                None => print!(" – |"),
            }
        }
        let ratio = |s: &str, by: &str| match (med.get(s), med.get(by)) {
            (Some(x), Some(y)) if *y > 0.0 => format!(" {:.2}× |", x / y),
            _ => " – |".to_string(),
        };
        for s in &measured {
            print!("{}", ratio(s, &a.against));
        }
        for s in &measured {
            print!("{}", ratio(s, &a.ceiling));
        }
        println!();
    }
    Ok(())
}
