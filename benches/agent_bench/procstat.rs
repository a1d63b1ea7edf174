//! What the kernel accounts for a process: CPU time, wake-ups, peak memory.
//!
//! Two CPU clocks, both summed over all threads:
//! - `stat_ns`: `utime + stime` of `/proc/<pid>/stat` (fields 14 and 15), the
//!   kernel's user + system accounting, in clock ticks (`CLK_TCK`, 10 ms
//!   here) converted to ns. It includes threads that have already exited.
//!   Used for every per-exec figure: over a 10 s storm the tick rounding is
//!   ±1 tick against hundreds.
//! - `sched_ns`: the first field of `/proc/<pid>/task/*/schedstat`, the
//!   scheduler's exact on-CPU time in ns, for live threads only. Used where
//!   ticks are too coarse: the idle scenario, whose target is 1 ms.
//!
//! Wake-ups are `voluntary_ctxt_switches + nonvoluntary_ctxt_switches` of
//! every `/proc/<pid>/task/*/status`: each time a thread was switched out
//! after running is one time it had been woken (or kept running) to do work.

use std::fs;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// `CLOCK_MONOTONIC` when it was taken.
    pub at_ns: u64,
    /// utime + stime, ns (tick resolution).
    pub stat_ns: u64,
    /// Sum of live threads' scheduler run time, ns (exact).
    pub sched_ns: u64,
    /// Sum of live threads' context switches.
    pub switches: u64,
}

/// A process the benchmark measures: its counters and peak memory by pid.
pub trait Measured {
    /// The process's pid.
    fn pid(&self) -> u32;

    /// Counters now.
    fn sample(&self) -> Sample {
        Sample::take(self.pid())
    }

    /// Peak RSS so far, KiB.
    fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib(self.pid())
    }
}

impl Sample {
    /// Reads the counters of `pid` now. Panics if the process is gone: a
    /// benchmark whose agent died has nothing to report.
    pub fn take(pid: u32) -> Self {
        let mut s = Sample {
            at_ns: crate::timing::monotonic_ns(),
            stat_ns: stat_cpu_ns(pid),
            ..Default::default()
        };
        for tid in tasks(pid) {
            let base = format!("/proc/{pid}/task/{tid}");
            if let Ok(sched) = fs::read_to_string(format!("{base}/schedstat")) {
                s.sched_ns += sched
                    .split(' ')
                    .next()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0);
            }
            if let Ok(status) = fs::read_to_string(format!("{base}/status")) {
                s.switches += field(&status, "voluntary_ctxt_switches:")
                    + field(&status, "nonvoluntary_ctxt_switches:");
            }
        }
        s
    }

    /// Counters from `earlier` to `self`.
    pub fn since(&self, earlier: &Sample) -> Sample {
        Sample {
            at_ns: self.at_ns.saturating_sub(earlier.at_ns),
            stat_ns: self.stat_ns.saturating_sub(earlier.stat_ns),
            sched_ns: self.sched_ns.saturating_sub(earlier.sched_ns),
            switches: self.switches.saturating_sub(earlier.switches),
        }
    }

    /// CPU (tick accounting) as a percentage of one core over the interval
    /// (call on a difference).
    pub fn cpu_percent(&self) -> f64 {
        self.stat_ns as f64 / self.at_ns.max(1) as f64 * 100.0
    }
}

/// The kernel's clock tick (`sysconf(_SC_CLK_TCK)`, 100 almost everywhere).
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// utime + stime of `pid` (all threads, living and exited) in ns.
pub fn stat_cpu_ns(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/stat (did the process die?): {e}"));
    // comm may hold spaces and parentheses: fields are counted after the last ')'.
    let after = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<u64> = after.split(' ').map(|x| x.parse().unwrap_or(0)).collect();
    // Fields 14 and 15 of the line are indexes 11 and 12 after the comm.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks * 1_000_000_000 / clk_tck()
}

/// Peak resident set (`VmHWM` of `/proc/<pid>/status`) in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| field(&s, "VmHWM:"))
        .unwrap_or(0)
}

/// Thread ids of `pid`.
fn tasks(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The first number after `key` on its line of a `status` file; 0 if absent.
fn field(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
