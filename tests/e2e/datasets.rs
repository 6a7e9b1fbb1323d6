//! The dataset readers against the real files staged in `../shared/datasets` (exact MNIST and
//! Fashion-MNIST, the lossy-JPEG CIFAR-10 archive, the first 20 test images of each as PNG).
//!
//! Where the files are: `$SCL_SHARED_DATASETS`, else `../shared/datasets` beside the
//! workspace. CI sets `SCL_REQUIRE_SHARED_DATA=1`, so there a missing folder fails the tests
//! instead of skipping them.

use std::path::PathBuf;

use scl_data::readers::folder::decode_image;
use scl_data::store::ensure_files;
use scl_data::{DataDir, Fetch, ImageSet, Imbalance, LoadOptions, Manifest, Split, load};

fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("SCL_SHARED_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"));
    if dir.join("mnist").is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("SCL_REQUIRE_SHARED_DATA").is_none(),
        "SCL_REQUIRE_SHARED_DATA is set but {} holds no datasets",
        dir.display()
    );
    eprintln!("skipped: no shared datasets at {}", dir.display());
    None
}

fn opts(dir: &std::path::Path) -> LoadOptions {
    LoadOptions::offline(DataDir::at(dir, "--data-dir"))
}

/// The foolbox samples: the first 20 test images, `<prefix>_<NN>_<label>.png`.
fn samples(dir: &std::path::Path, prefix: &str, shape: [usize; 3]) -> Vec<(usize, Vec<u8>)> {
    (0..20)
        .map(|i| {
            let entry = std::fs::read_dir(dir.join("foolbox-samples"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().to_string();
                    name.starts_with(&format!("{prefix}_{i:02}_"))
                })
                .unwrap_or_else(|| panic!("sample {prefix} {i}"));
            let name = entry.file_stem().unwrap().to_string_lossy().to_string();
            let label = name.rsplit('_').next().unwrap().parse().unwrap();
            (
                label,
                decode_image(&std::fs::read(&entry).unwrap(), &entry, shape).unwrap(),
            )
        })
        .collect()
}

fn check_idx_dataset(name: &str, prefix: &str, train_counts: &[usize], test_counts: &[usize]) {
    let Some(dir) = shared() else { return };
    let manifest = Manifest::named(name).unwrap();
    // md5 of every file against the manifest (the official values).
    ensure_files(&manifest, &DataDir::at(&dir, "--data-dir"), Fetch::Never).unwrap();
    let train = load(&manifest, Split::Train, &opts(&dir)).unwrap();
    let test = load(&manifest, Split::Test, &opts(&dir)).unwrap();
    assert_eq!(train.class_counts(), train_counts);
    assert_eq!(test.class_counts(), test_counts);
    assert_eq!(train.shape(), [1, 28, 28]);
    // The first 20 test images are pixel-identical to the independently decoded samples.
    for (i, (label, pixels)) in samples(&dir, prefix, [1, 28, 28]).into_iter().enumerate() {
        assert_eq!(test.labels()[i], label, "{name} test image {i}");
        assert_eq!(test.image(i), &pixels[..], "{name} test image {i}");
    }
}

#[test]
fn mnist_verifies_and_has_the_known_class_counts() {
    // Counts from the MNIST README in ../shared/datasets (and every MNIST loader).
    check_idx_dataset(
        "mnist",
        "mnist",
        &[5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        &[980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    );
}

#[test]
fn fashion_mnist_verifies_and_has_6000_per_class() {
    check_idx_dataset("fashion-mnist", "fashionMNIST", &[6000; 10], &[1000; 10]);
}

#[test]
fn jpeg_cifar10_reads_60000_images_close_to_the_originals() {
    let Some(dir) = shared() else { return };
    let manifest = Manifest::named("cifar10-jpeg-lossy").unwrap();
    assert!(manifest.lossy && manifest.title.contains("lossy-JPEG"));
    let train = load(&manifest, Split::Train, &opts(&dir)).unwrap();
    let test = load(&manifest, Split::Test, &opts(&dir)).unwrap();
    assert_eq!((train.len(), test.len()), (50_000, 10_000));
    assert_eq!(train.class_counts(), [5000; 10]);
    assert_eq!(test.class_counts(), [1000; 10]);
    // The archive is ordered by class; NNNN is the rank within the class in the original test
    // batch. The k-th lossless sample of class c is therefore test/<c>/<rank>.jpg. Its JPEG
    // error is 4.5-8.1 per channel on average (README of the archive); allow up to 12.
    let first_of =
        |set: &ImageSet, class: usize| set.labels().iter().position(|&l| l == class).unwrap();
    let mut rank = [0usize; 10];
    for (i, (label, original)) in samples(&dir, "cifar10", [3, 32, 32])
        .into_iter()
        .enumerate()
    {
        let at = first_of(&test, label) + rank[label];
        rank[label] += 1;
        let jpeg = test.image(at);
        let mae = jpeg
            .iter()
            .zip(&original)
            .map(|(a, b)| a.abs_diff(*b) as f64)
            .sum::<f64>()
            / jpeg.len() as f64;
        assert!(
            mae < 12.0,
            "cifar10 test sample {i} (class {label}): mean abs error {mae:.1}"
        );
    }
}

#[test]
fn step_imbalance_on_mnist_keeps_5000_and_500() {
    let Some(dir) = shared() else { return };
    let manifest = Manifest::named("mnist").unwrap();
    let train = load(&manifest, Split::Train, &opts(&dir)).unwrap();
    let step = Imbalance::Step {
        ratio: 10.0,
        n_majority: None,
        minority: None,
    };
    let sel = step.select(train.labels(), 10, 1).unwrap();
    let subset = train.subset(&sel.indices);
    // The paper's default: n_majority = 5000 for classes 0..4, 5000 / 10 for classes 5..9.
    assert_eq!(
        subset.class_counts(),
        [5000, 5000, 5000, 5000, 5000, 500, 500, 500, 500, 500]
    );
    assert_eq!(
        sel.indices,
        step.select(train.labels(), 10, 1).unwrap().indices
    );
}

#[test]
fn mnist_and_fashion_mnist_are_found_in_torchvisions_layout() {
    let Some(shared) = shared() else { return };
    // torchvision.datasets.MNIST(root) keeps the files in <root>/MNIST/raw/, gzip and unpacked.
    let root = tempfile::tempdir().unwrap();
    for (name, folder) in [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")] {
        let raw = root.path().join(folder).join("raw");
        std::fs::create_dir_all(&raw).unwrap();
        let manifest = Manifest::named(name).unwrap();
        for (i, f) in manifest.files.iter().enumerate() {
            let bytes = std::fs::read(shared.join(name).join(&f.name)).unwrap();
            // Half the files as torchvision unpacks them, half as downloaded.
            if i % 2 == 0 {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
                    .unwrap();
                std::fs::write(raw.join(f.name.trim_end_matches(".gz")), out).unwrap();
            } else {
                std::fs::write(raw.join(&f.name), bytes).unwrap();
            }
        }
        let source = scl_data::store::locate(
            &manifest,
            &DataDir::at(root.path(), "--data-dir"),
            Fetch::Never,
        )
        .unwrap();
        assert_eq!(source, scl_data::Source::TorchvisionFolder(raw.clone()));
        let from_torchvision = load(&manifest, Split::Test, &opts(root.path())).unwrap();
        let from_own = load(&manifest, Split::Test, &opts(&shared)).unwrap();
        assert_eq!(from_torchvision.labels(), from_own.labels(), "{name}");
        assert!(
            (0..from_own.len()).all(|i| from_torchvision.image(i) == from_own.image(i)),
            "{name}: the pixels differ"
        );
        assert_eq!(
            scl_data::split_counts(&manifest, Split::Train, &opts(root.path()))
                .unwrap()
                .iter()
                .sum::<usize>(),
            60000
        );
    }
}
