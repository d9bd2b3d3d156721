//! The host TSC frequency, for `tsc_early_khz=` on the guest command line.
//!
//! Under TCG the microvm machine has neither HPET nor an ACPI PM timer, so a
//! guest kernel that cannot calibrate its TSC hangs at boot (measured: 4 of 5
//! boots). TCG's guest TSC runs at the host TSC rate, so telling the guest that
//! rate fixes it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The host TSC rate in kHz, measured once per process (~20 ms).
pub fn host_tsc_khz() -> u64 {
    static KHZ: OnceLock<u64> = OnceLock::new();
    *KHZ.get_or_init(measure)
}

#[cfg(target_arch = "x86_64")]
fn measure() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    let read = || unsafe { core::arch::x86_64::_rdtsc() };
    let window = Duration::from_millis(20);
    let (t0, c0) = (Instant::now(), read());
    while t0.elapsed() < window {
        std::hint::spin_loop();
    }
    let (c1, t1) = (read(), t0.elapsed());
    let khz = (c1.wrapping_sub(c0) as u128 * 1_000_000 / t1.as_nanos().max(1)) as u64;
    // Round to 10 kHz: the measurement is not better than that.
    (khz + 5) / 10 * 10
}

#[cfg(not(target_arch = "x86_64"))]
fn measure() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    #[test]
    fn plausible_rate() {
        let khz = super::host_tsc_khz();
        assert!((100_000..10_000_000).contains(&khz), "{khz} kHz");
    }
}
