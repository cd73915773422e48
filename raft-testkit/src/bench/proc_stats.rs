//! CPU time and memory of this process, from Linux's `/proc` (no `unsafe`, no libc).
//! Elsewhere every figure reads as zero and the report says so.

use std::collections::BTreeMap;
use std::time::Duration;

/// `/proc/*/stat` counts CPU time in clock ticks of `USER_HZ`, which is 100 on every
/// Linux architecture we run on (it is part of the kernel's ABI, unlike `HZ`).
const USER_HZ: f64 = 100.0;

/// CPU time the whole process used so far (every thread, finished ones included),
/// user plus system. `None` when `/proc/self/stat` cannot be read.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (utime, stime) = parse_stat_times(&stat)?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
}

/// Fields 14 and 15 (utime, stime) of a `stat` line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted from its closing parenthesis.
fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After the name: state is field 3, so utime (14) is the 12th from here.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// A memory figure of this process from `/proc/self/status`, in bytes: `VmHWM` (peak
/// resident set) or `VmRSS` (resident now).
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The peak resident set size of the process so far, in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// The resident set size of the process now, in bytes.
pub fn rss_bytes() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// CPU time of every live thread, grouped by thread kind: the thread's name without its
/// node suffix (`raft-loop-n2` counts as `raft-loop`). Linux keeps only 15 bytes of a
/// thread's name, so long names come out cut (`raft-processor-`); the trailing `-nN`
/// or `-` is stripped either way.
pub fn cpu_by_thread_kind() -> BTreeMap<String, Duration> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let cpu = match std::fs::read_to_string(path.join("schedstat")) {
            // Nanoseconds on the CPU: finer than the stat file's ticks.
            Ok(s) => s
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse().ok())
                .map(Duration::from_nanos),
            Err(_) => std::fs::read_to_string(path.join("stat"))
                .ok()
                .and_then(|s| parse_stat_times(&s))
                .map(|(u, s)| Duration::from_secs_f64((u + s) as f64 / USER_HZ)),
        };
        if let Some(cpu) = cpu {
            *out.entry(thread_kind(comm.trim())).or_default() += cpu;
        }
    }
    out
}

/// Context switches of every live thread so far (voluntary: it blocked; involuntary: it
/// was preempted), summed. Each hand-off between threads costs at least one.
pub fn context_switches() -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return total;
    };
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            let field = |name: &str| {
                line.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            if let Some(n) = field("voluntary_ctxt_switches:") {
                total.0 += n;
            } else if let Some(n) = field("nonvoluntary_ctxt_switches:") {
                total.1 += n;
            }
        }
    }
    total
}

/// `raft-loop-n12` -> `raft-loop`; `raft-processor-` -> `raft-processor`;
/// `bench-client-7` -> `bench-client`.
fn thread_kind(name: &str) -> String {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let trimmed = trimmed.strip_suffix("-n").unwrap_or(trimmed);
    let trimmed = trimmed.trim_end_matches('-');
    if trimmed.is_empty() {
        name.to_string()
    } else {
        trimmed.to_string()
    }
}

/// The difference `after - before` of two [`cpu_by_thread_kind`] readings (a thread kind
/// missing before counts from zero).
pub fn cpu_delta(
    before: &BTreeMap<String, Duration>,
    after: &BTreeMap<String, Duration>,
) -> BTreeMap<String, Duration> {
    after
        .iter()
        .map(|(k, a)| {
            let b = before.get(k).copied().unwrap_or_default();
            (k.clone(), a.saturating_sub(b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_survive_odd_names() {
        let line = "1234 (raft (x) y) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15";
        assert_eq!(parse_stat_times(line), Some((111, 222)));
    }

    #[test]
    fn thread_kinds() {
        assert_eq!(thread_kind("raft-loop-n12"), "raft-loop");
        assert_eq!(thread_kind("raft-processor-"), "raft-processor");
        assert_eq!(thread_kind("raft-listener-n"), "raft-listener");
        assert_eq!(thread_kind("bench-client-7"), "bench-client");
        assert_eq!(thread_kind("bench"), "bench");
    }

    #[test]
    fn this_process_has_figures_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(process_cpu().is_some());
            assert!(peak_rss_bytes().unwrap() >= rss_bytes().unwrap() / 2);
            assert!(!cpu_by_thread_kind().is_empty());
        }
    }
}
