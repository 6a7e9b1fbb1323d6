//! Pickled CIFAR python batches (what torchvision reads), both label sets of CIFAR-100.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use scl_data::readers::cifar::{Cifar100Labels, CifarVariant};
use scl_data::readers::cifar_python::parse_cifar_pickle;

fuzz_target!(|data: &[u8]| {
    for variant in [
        CifarVariant::Cifar10,
        CifarVariant::Cifar100(Cifar100Labels::Fine),
        CifarVariant::Cifar100(Cifar100Labels::Coarse),
    ] {
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        if let Ok(n) = parse_cifar_pickle(data, Path::new("fuzz"), variant, &mut pixels, &mut labels) {
            assert_eq!(labels.len(), n);
            assert_eq!(pixels.len(), n * 3072);
            assert!(labels.iter().all(|&l| l < variant.num_classes()));
        }
    }
});
