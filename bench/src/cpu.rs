//! CPU time of the calling thread: the writer's runtime runs on one thread of its own, so this
//! is the writer's whole CPU cost (its QUIC endpoint, multicast sender and client role).

/// CPU seconds (user and system) the calling thread has used so far; NaN if the clock cannot
/// be read.
pub fn thread_cpu_seconds() -> f64 {
    let mut spec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given, which outlives the call.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut spec) } == 0;
    if !ok {
        return f64::NAN;
    }
    spec.tv_sec as f64 + spec.tv_nsec as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_thread_uses_cpu_and_another_thread_does_not_count() {
        let before = thread_cpu_seconds();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = thread_cpu_seconds() - before;
        assert!(used > 0.0, "a busy loop used {used} s");
        let other = std::thread::spawn(thread_cpu_seconds)
            .join()
            .expect("thread runs");
        assert!(other < before + used, "a fresh thread starts near zero");
    }
}
