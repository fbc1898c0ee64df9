//! Issue 5 with real processes: the sharded bridge fleet under QoS 1 load, a worker killed,
//! added or drained mid-run. Each test runs `macula-loadtest pubsub --spawn --workers 3`
//! (`loadtest/fleet.rs`: 3 workers, 12 one-node clusters, cluster i publishing to cluster
//! i+1) and asserts on its JSON report, which it prints (`cargo test --test fleet --
//! --nocapture`). When a run goes wrong the report's `logs` names the kept process logs.

use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

/// One fleet at a time: three of them at once would starve two shared cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// A finished load-generator run.
struct Run {
    report: Value,
    stderr: String,
}

impl Run {
    /// `self.report[key]` as u64 (panics with the report when absent).
    fn num(&self, key: &str) -> u64 {
        self.report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("report has no number {key:?}\n{}", self.context()))
    }

    /// The report's event of `kind`.
    fn event(&self, kind: &str) -> &Value {
        self.report["events"]
            .as_array()
            .and_then(|es| es.iter().find(|e| e["kind"] == kind))
            .unwrap_or_else(|| panic!("no {kind} event\n{}", self.context()))
    }

    /// What an assertion message shows: the report and the end of the run's stderr.
    fn context(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "report: {}\nstderr (end):\n{tail}",
            serde_json::to_string_pretty(&self.report).unwrap_or_default()
        )
    }

    /// The figures every fleet run must show: everything sent was acknowledged and received
    /// exactly once where the test asks for it.
    fn assert_no_loss(&self, no_duplicates: bool) {
        assert!(self.num("sent") > 0, "nothing sent\n{}", self.context());
        assert_eq!(self.num("lost"), 0, "lost messages\n{}", self.context());
        assert_eq!(
            self.num("unacked"),
            0,
            "publishes never acknowledged\n{}",
            self.context()
        );
        if no_duplicates {
            assert_eq!(self.num("duplicated"), 0, "duplicates\n{}", self.context());
        }
    }

    /// The event of `kind` re-homed every node (its `rehome_ms` is a number).
    fn assert_rehomed(&self, kind: &str) {
        assert!(
            self.report["rehome_ms"][kind].is_u64(),
            "the fleet did not re-home after the {kind}\n{}",
            self.context()
        );
    }
}

/// Runs `macula-loadtest pubsub --spawn <args> --json <tmp>`; panics if it fails.
fn loadtest(args: &[&str]) -> Run {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let json = tempfile::NamedTempFile::new().expect("temp file");
    let out = Command::new(env!("CARGO_BIN_EXE_macula-loadtest"))
        .args(["pubsub", "--spawn"])
        .args(args)
        .arg("--json")
        .arg(json.path())
        .env("LOADTEST_MACULA_BIN", env!("CARGO_BIN_EXE_macula"))
        .output()
        .expect("macula-loadtest runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "macula-loadtest {} failed ({}):\n{stderr}",
        args.join(" "),
        out.status
    );
    let text = std::fs::read_to_string(json.path()).expect("the report was written");
    println!("macula-loadtest pubsub --spawn {}\n{text}", args.join(" "));
    Run {
        report: serde_json::from_str(&text).expect("the report is JSON"),
        stderr,
    }
}

const FLEET: [&str; 6] = ["--workers", "3", "--clusters", "12", "--qos", "1"];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    FLEET.iter().chain(extra).copied().collect()
}

#[test]
fn worker_killed_under_qos1_load_loses_nothing() {
    let run = loadtest(&with(&[
        "--rate",
        "2000",
        "--duration",
        "8",
        "--kill-worker-at",
        "3",
    ]));
    run.assert_no_loss(true);
    run.assert_rehomed("kill");
    let killed = run.event("kill")["worker"].clone();
    let end = run.report["per_worker"]["end"]
        .as_array()
        .expect("per_worker.end");
    assert!(
        end.iter()
            .any(|w| w["name"] == killed && w["alive"] == false),
        "the killed worker is reported dead\n{}",
        run.context()
    );
}

#[test]
fn added_worker_takes_only_its_share() {
    let run = loadtest(&with(&[
        "--rate",
        "1000",
        "--duration",
        "6",
        "--add-worker-at",
        "2",
    ]));
    run.assert_no_loss(false);
    run.assert_rehomed("add");
    let new = run.event("add")["worker"].clone();
    assert_eq!(new, "worker-4", "{}", run.context());
    assert_eq!(
        run.num("moved_between_old"),
        0,
        "clusters moved between the old workers\n{}",
        run.context()
    );
    let moved = run.report["moved"].as_array().expect("moved");
    assert!(
        moved.iter().all(|m| m["to"] == new),
        "every moved cluster went to the new worker\n{}",
        run.context()
    );
    assert_eq!(run.num("moved_to_new"), moved.len() as u64);
}

#[test]
fn drained_worker_under_load_loses_nothing() {
    let run = loadtest(&with(&[
        "--rate",
        "2000",
        "--duration",
        "8",
        "--drain-worker-at",
        "3",
    ]));
    run.assert_no_loss(true);
    run.assert_rehomed("drain");
    let drain = run.event("drain");
    assert_eq!(
        drain["exit"]["exited"],
        true,
        "the drained worker exited on its own\n{}",
        run.context()
    );
    assert_eq!(
        drain["exit"]["code"],
        0,
        "the drained worker exited with status 0\n{}",
        run.context()
    );
    let end = run.report["per_worker"]["end"]
        .as_array()
        .expect("per_worker.end");
    assert!(
        end.iter()
            .any(|w| w["name"] == drain["worker"] && w["alive"] == false && w["exit_code"] == 0),
        "per_worker shows the drained worker exited 0\n{}",
        run.context()
    );
}
