//! CPU time of processes, read from Linux `/proc/<pid>/stat`, so a report can say how
//! much CPU the proxy (or the upstream) spent on the messages it counted, and of the
//! whole machine (`/proc/stat`), so it can say how much else was running.

/// `/proc` reports times in USER_HZ ticks, fixed at 100 per second by the Linux ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// Parses a `--cpu NAME=PID` argument.
pub fn parse_watch(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
    let pid = pid.parse().map_err(|e| format!("PID {pid:?}: {e}"))?;
    if name.is_empty() {
        return Err("empty NAME".into());
    }
    Ok((name.to_owned(), pid))
}

/// User plus system CPU seconds used so far by process `pid` (`None`: this process).
pub fn seconds(pid: Option<u32>) -> Result<f64, String> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after
    // its last ')', with utime and stime the 12th and 13th of those.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let mut fields = rest.split_whitespace().skip(11);
    let mut tick = || -> Result<u64, String> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("{path}: unexpected format"))
    };
    let ticks = tick()? + tick()?;
    Ok(ticks as f64 / TICKS_PER_SECOND)
}

/// Resident memory of process `pid` in KiB (`VmRSS`), if it can be read.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Busy CPU seconds of the whole machine so far (all CPUs; idle and iowait left out),
/// to tell how much else ran during a window.
pub fn machine_seconds() -> Result<f64, String> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let line = stat.lines().next().unwrap_or("");
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    if ticks.len() < 8 || !line.starts_with("cpu ") {
        return Err("/proc/stat: unexpected format".into());
    }
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().map(|&i| ticks[i]).sum();
    Ok(busy as f64 / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = seconds(None).expect("own /proc/self/stat");
        assert!(s >= 0.0);
    }

    #[test]
    fn reads_the_machine() {
        assert!(machine_seconds().expect("/proc/stat") > 0.0);
    }

    #[test]
    fn parses_watch_arguments() {
        assert_eq!(parse_watch("proxy=42"), Ok(("proxy".into(), 42)));
        assert!(parse_watch("proxy").is_err());
        assert!(parse_watch("=42").is_err());
        assert!(parse_watch("proxy=x").is_err());
    }
}
