//! The bench binary runs and its `--json` output is what scripts expect.

use std::process::Command;

fn run(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .output()
        .expect("run the bench binary");
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn a_short_throughput_run_reports_every_figure() {
    let r = run(&[
        "--seconds",
        "1",
        "--warmup",
        "0.2",
        "--clients",
        "2",
        "--log",
        "sled",
        "--json",
    ]);
    assert!(r["entries_per_second"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["config"]["clients"], 2);
    assert_eq!(r["config"]["log"], "sled");
    for q in ["p50_us", "p99_us", "p999_us", "p50_over_floor"] {
        assert!(r["latency"][q].as_f64().unwrap() > 0.0, "{q}: {r}");
    }
    assert!(r["floors"]["udp_round_trip"]["p50_us"].as_f64().unwrap() > 0.0);
    assert!(r["floors"]["sled_sync"]["p50_us"].as_f64().unwrap() > 0.0);
    if cfg!(target_os = "linux") {
        assert!(r["cpu"]["seconds_per_100k_entries"].as_f64().unwrap() > 0.0);
        assert!(r["memory"]["peak_rss_bytes"].as_u64().unwrap() > 0);
    }
}

#[test]
fn a_failover_trial_elects_and_commits() {
    let r = run(&["--failover", "--trials", "1", "--clients", "2", "--json"]);
    let trial = &r["trials"][0];
    assert!(trial["first_commit_ms"].as_f64().unwrap() > 0.0, "{r}");
    assert!(trial["elected_ms"].as_f64().unwrap() > 0.0, "{r}");
}
