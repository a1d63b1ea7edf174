//! Wall-clock time as the wire contract expresses it (Unix epoch nanoseconds).

use std::time::UNIX_EPOCH;

/// Nanoseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn unix_ns() -> u64 {
    UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos() as u64)
}

/// Clock ticks since boot, now: the unit and clock of a process's start
/// time (field 22 of `/proc/<pid>/stat`). 0 where there is no such clock.
pub fn boot_ticks() -> u64 {
    #[cfg(target_os = "linux")]
    {
        use nix::unistd::{sysconf, SysconfVar};
        let hz = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u128;
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME);
        now.map_or(0, |t| {
            (std::time::Duration::from(t).as_nanos() * hz / 1_000_000_000) as u64
        })
    }
    #[cfg(not(target_os = "linux"))]
    0
}
