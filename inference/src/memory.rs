//! Giving freed memory back to the OS, and reading how much the process holds.
//!
//! KV caches and a step's scratch tensors are plain heap allocations (candle's CPU
//! tensors are `Vec`s). glibc's malloc keeps what they free in its arenas, one per thread
//! that allocated (every rank and matmul thread has its own), and only returns the top of
//! each heap, so after a burst of long prompts the process stays at its peak RSS although
//! nothing uses that memory. [`release_free_memory`] asks malloc to return it.

/// Returns the free memory malloc holds to the OS (glibc's `malloc_trim(0)`: every
/// arena, whole free pages inside the heaps included). Takes a few milliseconds on a
/// large heap, so call it when the engine goes idle, not every step. Returns whether
/// anything was released; always false where there is no such call.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks and shrinks malloc's own free lists under its arena
        // locks; it is thread-safe and touches no memory that is in use.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The process's resident set size in bytes (`VmRSS` in /proc/self/status), where the
/// OS reports it.
pub fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<usize> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss_in_kib() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t  1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn rss_is_reported_and_plausible() {
        let rss = rss_bytes().expect("linux reports VmRSS");
        assert!(rss > 1 << 20, "{rss}");
    }
}
