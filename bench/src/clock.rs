//! Clock helpers shared by the generator and the receiver.
//!
//! Latency is measured one-way by comparing a send stamp carried in the
//! payload with the receive time, so both sides must read the *same* clock.
//! `CLOCK_MONOTONIC` is shared by all network namespaces on a host (unlike
//! per-namespace time offsets, which only apply to time namespaces), which is
//! why it is used rather than `CLOCK_REALTIME`.

/// Reads `clock` in nanoseconds, or `None` if the kernel refuses.
fn read_clock(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// `CLOCK_MONOTONIC` in nanoseconds.
///
/// Returns 0 if the clock cannot be read; that never happens on Linux for this
/// clock id, and a zero stamp only degrades latency numbers rather than
/// aborting a measurement run.
pub fn monotonic_ns() -> u64 {
    read_clock(libc::CLOCK_MONOTONIC).unwrap_or(0)
}

/// CPU time consumed so far by the calling thread, in nanoseconds.
///
/// Used to report the load generator's own CPU cost separately from the
/// relay's, so a saturated generator is not mistaken for a slow relay.
pub fn thread_cpu_ns() -> u64 {
    read_clock(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_advances() {
        let a = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = monotonic_ns();
        assert!(a > 0);
        assert!(b >= a + 1_000_000);
    }

    #[test]
    fn thread_cpu_is_readable() {
        let mut x = 0u64;
        for i in 0..100_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(thread_cpu_ns() > 0);
    }
}
