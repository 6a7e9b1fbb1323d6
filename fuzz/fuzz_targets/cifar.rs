//! CIFAR binary records, both layouts and both CIFAR-100 label sets.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use scl_data::readers::cifar::{Cifar100Labels, CifarVariant, parse_cifar_records};

fuzz_target!(|data: &[u8]| {
    for variant in [
        CifarVariant::Cifar10,
        CifarVariant::Cifar100(Cifar100Labels::Fine),
        CifarVariant::Cifar100(Cifar100Labels::Coarse),
    ] {
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        if parse_cifar_records(data, Path::new("fuzz"), variant, &mut pixels, &mut labels).is_ok() {
            assert_eq!(pixels.len(), labels.len() * 3072);
            assert!(labels.iter().all(|&l| l < variant.num_classes()));
        }
    }
});
