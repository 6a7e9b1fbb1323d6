//! The fused CPU path never allocates anything of size N x N: a counting global allocator
//! measures the peak of live allocations during a forward and backward at N = 8192, d = 128,
//! where a single N x N f32 buffer would be 256 MiB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Distribution, Int, Tensor};
use scl_loss::{SupConLossConfig, supcon_fused};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only
// observe sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(live, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn fused_forward_and_backward_at_8192_stay_under_64_mib_beyond_the_inputs() {
    type B = Autodiff<NdArray>;
    let (n, d) = (8192usize, 128usize);
    let device = Default::default();
    let features =
        Tensor::<B, 3>::random([n, 1, d], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let labels = Tensor::<B, 1, Int>::from_ints(
        (0..n as i64).map(|i| i % 10).collect::<Vec<_>>().as_slice(),
        &device,
    );
    let loss = SupConLossConfig::new()
        .with_temperature(0.1)
        .with_normalize(true)
        .init();
    // Warm up once so that thread pools and one-time buffers are not counted.
    let warm = supcon_fused(features.clone(), Some(labels.clone()), &loss);
    drop(warm.backward());

    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let value = supcon_fused(features.clone(), Some(labels), &loss);
    let grads = value.backward();
    let grad = features.grad(&grads).expect("the features get a gradient");
    let extra = PEAK.load(Ordering::SeqCst) - before;
    assert_eq!(grad.dims(), [n, 1, d]);
    let mib = extra as f64 / (1024.0 * 1024.0);
    eprintln!("fused forward + backward at N = {n}, d = {d}: peak {mib:.1} MiB beyond the inputs");
    assert!(mib < 64.0, "peak {mib:.1} MiB beyond the inputs");
}
