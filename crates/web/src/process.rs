//! The standard `process_*` metrics (CPU seconds, resident memory, open file descriptors, start
//! time), read from `/proc/self` at each scrape.
//!
//! Read here rather than through the `metrics-process` crate: that crate brings `procfs` and its
//! own dependency tree for six numbers that four small files of `/proc/self` give (compiles are
//! the scarce resource of this workspace). Off Linux the metrics stay at 0.

/// Appends the `process_*` metrics in the text exposition format, with the HELP of the
/// catalogue. Written here rather than through the `metrics` facade: its counters are integers,
/// and CPU time is fractional seconds.
pub fn render(out: &mut String) {
    use std::fmt::Write;
    let Some(p) = read() else { return };
    let values = [
        ("process_cpu_seconds_total", p.cpu_seconds),
        ("process_resident_memory_bytes", p.resident_bytes as f64),
        ("process_virtual_memory_bytes", p.virtual_bytes as f64),
        ("process_open_fds", p.open_fds as f64),
        ("process_max_fds", p.max_fds as f64),
        ("process_start_time_seconds", p.start_time_seconds),
    ];
    for (name, value) in values {
        let Some(m) = crate::metrics::CATALOGUE.iter().find(|m| m.name == name) else { continue };
        let kind = if m.kind == crate::metrics::Kind::Counter { "counter" } else { "gauge" };
        let _ = write!(out, "# HELP {name} {}\n# TYPE {name} {kind}\n{name} {value}\n", m.help);
    }
}

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    /// Resident set size.
    pub resident_bytes: u64,
    /// Virtual memory size.
    pub virtual_bytes: u64,
    /// Entries of `/proc/self/fd`.
    pub open_fds: u64,
    /// The soft limit of open files.
    pub max_fds: u64,
    /// When the process started, Unix seconds.
    pub start_time_seconds: f64,
}

/// Reads `/proc/self`; `None` where there is no procfs.
pub fn read() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    parse(&stat, &boot, &limits, open_fds, ticks_per_second(), page_size())
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// The numbers of `/proc/self/stat` (proc(5)), `/proc/stat`'s `btime` and `/proc/self/limits`.
fn parse(stat: &str, boot: &str, limits: &str, open_fds: u64, ticks: f64, page: u64) -> Option<Process> {
    // The command name (field 2) is in parentheses and may hold spaces: fields count from after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let (utime, stime, start, vsize, rss) = (num(14)?, num(15)?, num(22)?, num(23)?, num(24)?);
    let btime: u64 = boot.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0);
    Some(Process {
        cpu_seconds: (utime + stime) as f64 / ticks,
        resident_bytes: rss * page,
        virtual_bytes: vsize,
        open_fds,
        max_fds,
        start_time_seconds: btime as f64 + start as f64 / ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line of proc(5)'s format with a command name holding spaces and a parenthesis.
    #[test]
    fn parses_procfs() {
        let stat = "4242 (edu link) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 8 0 12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let boot = "cpu  1 2 3\nbtime 1765000000\nprocesses 10\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        let p = parse(stat, boot, limits, 17, 100.0, 4096).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.resident_bytes, 2560 * 4096);
        assert_eq!(p.virtual_bytes, 104_857_600);
        assert_eq!(p.open_fds, 17);
        assert_eq!(p.max_fds, 1024);
        assert_eq!(p.start_time_seconds, 1_765_000_000.0 + 123.45);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let p = read().expect("procfs");
        assert!(p.resident_bytes > 0 && p.open_fds > 0 && p.max_fds > 0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0 * 365.0);
    }
}
