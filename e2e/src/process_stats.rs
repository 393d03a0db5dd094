//! What a process has cost so far, from Linux's /proc: the figures the
//! benchmarks report beside their throughput.

use std::io;

/// Resident memory of a process, in MiB.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Memory {
    /// Now (VmRSS).
    pub rss_mib: f64,
    /// At its peak so far (VmHWM).
    pub peak_mib: f64,
    /// Of the resident memory now, the anonymous part (RssAnon): the
    /// process's own heap and stacks, without the clean pages of its binary
    /// (which count in VmRSS, but how many of those are resident depends on
    /// how the page cache came to hold the file, not on the process).
    pub anon_mib: f64,
}

/// Resident memory now and at its peak.
pub fn memory(pid: u32) -> io::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {key} in /proc/{pid}/status")))
    };
    Ok(Memory {
        rss_mib: kib("VmRSS:")? / 1024.0,
        peak_mib: kib("VmHWM:")? / 1024.0,
        anon_mib: kib("RssAnon:")? / 1024.0,
    })
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    cpu_seconds_of(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: {stat}")))
}

/// utime + stime from a /proc stat line. The fields are counted after the
/// command name, which is in parentheses and may hold spaces or `)`; they are
/// in clock ticks, 100 a second on Linux (USER_HZ).
fn cpu_seconds_of(stat: &str) -> Option<f64> {
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, the 12th and 13th after the name.
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_user_plus_system_ticks_after_the_command_name() {
        let stat = "4242 (java (main) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 30 0 1 2 3";
        assert_eq!(cpu_seconds_of(stat), Some(3.0));
    }

    #[test]
    fn a_truncated_stat_line_is_not_read_as_zero() {
        assert_eq!(cpu_seconds_of("4242 (x) S 1"), None);
    }

    #[test]
    fn this_process_has_memory_and_has_used_cpu() {
        let pid = std::process::id();
        let m = memory(pid).unwrap();
        assert!(m.rss_mib > 0.0 && m.peak_mib >= m.rss_mib);
        assert!(m.anon_mib > 0.0 && m.anon_mib <= m.rss_mib);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
    }
}
