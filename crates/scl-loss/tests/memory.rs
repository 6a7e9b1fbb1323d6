//! The fused CPU path never allocates anything of size N x N: a counting global allocator
//! measures the peak of live allocations during a forward and backward at N = 8192, d = 128,
//! where a single N x N f32 buffer would be 256 MiB.

use burn::tensor::{Device, Distribution, Int, Tensor};
use scl_loss::{Implementation, SupConLossConfig};

use scl_loss::memory::{CountingAllocator, measure_peak};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn fused_forward_and_backward_at_8192_stay_under_64_mib_beyond_the_inputs() {
    let (n, d) = (8192usize, 128usize);
    let device = Device::flex().autodiff();
    let features =
        Tensor::<3>::random([n, 1, d], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let labels = Tensor::<1, Int>::from_ints(
        (0..n as i64).map(|i| i % 10).collect::<Vec<_>>().as_slice(),
        &device,
    );
    let loss = SupConLossConfig::new()
        .with_temperature(0.1)
        .with_normalize(true)
        .with_implementation(Implementation::Fused)
        .init();
    // Warm up once so that thread pools and one-time buffers are not counted.
    let warm = loss.forward(features.clone(), Some(labels.clone()));
    drop(warm.backward());

    let (grad, extra) = measure_peak(|| {
        let value = loss.forward(features.clone(), Some(labels));
        let grads = value.backward();
        features.grad(&grads).expect("the features get a gradient")
    });
    assert_eq!(grad.dims(), [n, 1, d]);
    let mib = extra as f64 / (1024.0 * 1024.0);
    eprintln!("fused forward + backward at N = {n}, d = {d}: peak {mib:.1} MiB beyond the inputs");
    assert!(mib < 64.0, "peak {mib:.1} MiB beyond the inputs");
}
