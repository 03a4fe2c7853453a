//! The processes under load: `edulink serve` and the bare axum baseline (this binary, `baseline`
//! subcommand), each its own process so that both are measured the same way from outside.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pids of the processes this run started, for the time-limit watchdog.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Kills the processes this run started (by their ids).
pub fn kill_children() {
    for pid in CHILDREN.lock().expect("children").drain(..) {
        let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
    }
}

/// A free loopback port (bound and released; the server binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A started server process.
pub struct Proc {
    child: Child,
    pub pid: u32,
    /// From spawn to the ready line on stdout.
    pub start_to_ready: Duration,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        CHILDREN.lock().expect("children").retain(|p| *p != self.pid);
    }
}

/// Spawns `cmd`, copies its output to `log`, and waits until a stdout line contains `ready`.
pub fn spawn(mut cmd: Command, log: &Path, ready: &'static str) -> anyhow::Result<Proc> {
    let err_log = std::fs::File::create(log.with_extension("stderr"))?;
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err_log))
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id();
    CHILDREN.lock().expect("children").push(pid);
    let stdout = child.stdout.take().expect("piped stdout");
    let mut out = std::io::BufWriter::new(std::fs::File::create(log)?);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains(ready)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(Instant::now());
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    });
    let mut proc = Proc { child, pid, start_to_ready: Duration::ZERO };
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(at) => {
            proc.start_to_ready = at - t0;
            Ok(proc)
        }
        Err(_) => bail!("{cmd:?} did not print {ready:?}; see {}", log.display()),
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident set now, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

/// Peak resident set since start or since [`reset_peak`], KiB.
pub fn peak_kib(pid: u32) -> u64 {
    status_field(pid, "VmHWM:")
}

/// Resets the peak resident set of our own child (`/proc/<pid>/clear_refs`, value 5).
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// CPU time (user + system) of a process so far, seconds (Linux USER_HZ = 100).
pub fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields after the command: state is 0, utime is 11, stime is 12.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// CPU seconds of all processes named `name` (e.g. the PostgreSQL server's backends).
pub fn cpu_secs_named(name: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0.0 };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .map(cpu_secs)
        .sum()
}

/// (busy, total) CPU seconds of the whole machine so far.
pub fn machine_cpu() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> =
        s.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    ((total - idle) / 100.0, total / 100.0)
}

/// The bare axum "hello world" baseline (run as `edulink-bench baseline --listen ADDR`).
pub async fn baseline(listen: &str) -> anyhow::Result<()> {
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "Hello, World!" }));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("baseline ready on http://{listen}/");
    axum::serve(listener, app).await?;
    Ok(())
}

/// The server's SQLite write counters from its Prometheus `/metrics`: for each database label,
/// (label, write transactions committed, group commits). Empty when the page has none (PostgreSQL)
/// or cannot be read.
pub async fn sqlite_writes(url: &reqwest::Url) -> Vec<(String, f64, f64)> {
    let Ok(resp) = reqwest::get(url.clone()).await else { return Vec::new() };
    let Ok(text) = resp.text().await else { return Vec::new() };
    parse_sqlite_writes(&text)
}

fn parse_sqlite_writes(text: &str) -> Vec<(String, f64, f64)> {
    let mut out: Vec<(String, f64, f64)> = Vec::new();
    for line in text.lines() {
        let (metric, is_writes) = if let Some(rest) = line.strip_prefix("edulink_sqlite_committed_writes_total{") {
            (rest, true)
        } else if let Some(rest) = line.strip_prefix("edulink_sqlite_commits_total{") {
            (rest, false)
        } else {
            continue;
        };
        let Some((labels, value)) = metric.split_once("} ") else { continue };
        let Some(db) = labels.split(',').find_map(|l| l.strip_prefix("db=\"")).and_then(|l| l.strip_suffix('"')) else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        let i = match out.iter().position(|(d, ..)| d == db) {
            Some(i) => i,
            None => {
                out.push((db.to_string(), 0.0, 0.0));
                out.len() - 1
            }
        };
        if is_writes { out[i].1 = value } else { out[i].2 = value }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_write_counters_of_each_database() {
        let text = "# TYPE edulink_sqlite_commits_total counter\n\
                    edulink_sqlite_commits_total{db=\"max\"} 10\n\
                    edulink_sqlite_committed_writes_total{db=\"max\"} 55\n\
                    edulink_sqlite_commits_total{db=\"diary\"} 4\n\
                    edulink_sqlite_committed_writes_total{db=\"diary\"} 20\n\
                    edulink_http_server_errors_total 0\n";
        assert_eq!(
            super::parse_sqlite_writes(text),
            vec![("diary".to_string(), 20.0, 4.0), ("max".to_string(), 55.0, 10.0)]
        );
    }
}
