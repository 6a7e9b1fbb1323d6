//! Peak heap memory of a computation, measured by a counting global allocator.
//!
//! The memory figures of the loss benchmark and the memory test of the fused CPU path come from
//! here: a program installs [`CountingAllocator`] as its global allocator and wraps the work in
//! [`measure_peak`]. Until the first measurement the allocator only forwards to the system
//! allocator (one relaxed atomic load per call); from then on it keeps a count of live bytes
//! (two relaxed atomic operations per call).
//!
//! # Example
//!
//! ```no_run
//! use scl_loss::memory::{CountingAllocator, measure_peak};
//!
//! #[global_allocator]
//! static ALLOCATOR: CountingAllocator = CountingAllocator;
//!
//! let (len, peak) = measure_peak(|| vec![0u8; 1 << 20].len());
//! assert_eq!(len, 1 << 20);
//! assert!(peak >= 1 << 20);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// A global allocator that forwards to the system allocator and, once [`measure_peak`] has been
/// called, counts live heap bytes and their peak.
pub struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
// Signed: bytes allocated before counting began and freed after it make the count go down,
// which is right for a peak measured as growth over a starting point.
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only
// observe sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            let size = layout.size() as isize;
            let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
    }
}

/// Runs `f` and returns its result with the peak growth of live heap bytes while it ran (over
/// every thread of the process). Without [`CountingAllocator`] installed as the global
/// allocator, the peak is 0.
pub fn measure_peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
    COUNTING.store(true, Ordering::SeqCst);
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    let peak = PEAK.load(Ordering::SeqCst);
    (out, usize::try_from(peak - base).unwrap_or(0))
}
