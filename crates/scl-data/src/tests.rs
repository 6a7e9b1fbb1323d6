//! Reader, store and batcher tests on small files written here in the exact official formats,
//! and every kind of bad input the readers must report.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::Device;

use crate::readers::cifar::{Cifar100Labels, CifarVariant, read_cifar_archive};
use crate::readers::folder::{count_archive, read_image_folder, read_image_folder_archive};
use crate::readers::idx::{encode_idx, read_idx_pair};
use crate::store::{DataDir, Fetch, ensure_files, file_state};
use crate::*;

fn names(k: usize) -> Vec<String> {
    (0..k).map(|c| format!("c{c}")).collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

/// Five 2x3 images with pixel value 10 * index + position, labels 0, 1, 2, 0, 1.
fn idx_files(dir: &Path, gz: bool) -> (PathBuf, PathBuf) {
    let pixels: Vec<u8> = (0..5)
        .flat_map(|i| (0..6).map(move |p| 10 * i + p))
        .collect();
    let images = encode_idx(&[5, 2, 3], &pixels);
    let labels = encode_idx(&[5], &[0, 1, 2, 0, 1]);
    let (images, labels) = if gz {
        (gzip(&images), gzip(&labels))
    } else {
        (images, labels)
    };
    let ext = if gz { ".gz" } else { "" };
    (
        write(&dir.join(format!("img-idx3-ubyte{ext}")), &images),
        write(&dir.join(format!("lab-idx1-ubyte{ext}")), &labels),
    )
}

#[test]
fn idx_reader_reads_raw_and_gzip_files() {
    let dir = tempfile::tempdir().unwrap();
    for gz in [false, true] {
        let (img, lab) = idx_files(&dir.path().join(gz.to_string()), gz);
        let set = read_idx_pair(&img, &lab, [1, 2, 3], &names(3)).unwrap();
        assert_eq!(set.len(), 5);
        assert_eq!(set.labels(), [0, 1, 2, 0, 1]);
        assert_eq!(set.image(3), [30, 31, 32, 33, 34, 35]);
        assert_eq!(set.class_counts(), [2, 2, 1]);
    }
}

fn idx_error(images: Vec<u8>, labels: Vec<u8>, classes: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let img = write(&dir.path().join("images"), &images);
    let lab = write(&dir.path().join("labels"), &labels);
    read_idx_pair(&img, &lab, [1, 2, 3], &names(classes))
        .unwrap_err()
        .to_string()
}

#[test]
fn idx_reader_reports_each_bad_input() {
    let px = vec![0u8; 5 * 6];
    let good_labels = encode_idx(&[5], &[0, 1, 2, 0, 1]);
    // Wrong magic number (a label file where images are expected).
    let msg = idx_error(encode_idx(&[5], &[0; 5]), good_labels.clone(), 3);
    assert!(
        msg.contains("magic number is 0x00000801, expected 0x00000803"),
        "{msg}"
    );
    // Truncated data.
    let mut short = encode_idx(&[5, 2, 3], &px);
    short.truncate(short.len() - 7);
    let msg = idx_error(short, good_labels.clone(), 3);
    assert!(
        msg.contains("truncated: expected 30 bytes") && msg.contains("found 23"),
        "{msg}"
    );
    // Truncated header.
    let msg = idx_error(vec![0, 0, 8, 3, 0, 0], good_labels.clone(), 3);
    assert!(msg.contains("truncated: expected 16 bytes"), "{msg}");
    // Trailing bytes.
    let mut long = encode_idx(&[5, 2, 3], &px);
    long.extend_from_slice(&[1, 2]);
    let msg = idx_error(long, good_labels.clone(), 3);
    assert!(msg.contains("2 unexpected bytes"), "{msg}");
    // Image count different from label count.
    let msg = idx_error(encode_idx(&[5, 2, 3], &px), encode_idx(&[4], &[0; 4]), 3);
    assert!(
        msg.contains("holds 5 images but") && msg.contains("holds 4 labels"),
        "{msg}"
    );
    // Label outside the class range.
    let msg = idx_error(
        encode_idx(&[5, 2, 3], &px),
        encode_idx(&[5], &[0, 1, 7, 0, 1]),
        3,
    );
    assert!(
        msg.contains("label 7 of example 2 is outside the class range 0..3"),
        "{msg}"
    );
    // Wrong image size.
    let msg = idx_error(encode_idx(&[5, 3, 2], &px), good_labels.clone(), 3);
    assert!(
        msg.contains("image is 1x3x2, the dataset's images are 1x2x3"),
        "{msg}"
    );
    // Corrupted gzip stream: flip bytes inside the deflate data; the CRC catches what the
    // inflater does not.
    let mut gz = gzip(&encode_idx(&[5, 2, 3], &px));
    let mid = gz.len() / 2;
    for b in &mut gz[mid..mid + 4] {
        *b ^= 0x5a;
    }
    let msg = idx_error(gz, good_labels.clone(), 3);
    assert!(msg.contains("corrupted gzip stream"), "{msg}");
    // A gzip stream cut short.
    let gz = gzip(&encode_idx(&[5, 2, 3], &px));
    let msg = idx_error(gz[..gz.len() - 10].to_vec(), good_labels, 3);
    assert!(msg.contains("corrupted gzip stream"), "{msg}");
}

fn tar_gz(path: &Path, members: &[(&str, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    let enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut builder = tar::Builder::new(enc);
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, &bytes[..]).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

/// `n` CIFAR records; pixel bytes all equal to the record's number, labels `label(i)`.
fn cifar_records(n: usize, label_bytes: usize, label: impl Fn(usize) -> [u8; 2]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        out.extend_from_slice(&label(i)[..label_bytes]);
        out.extend(std::iter::repeat_n(i as u8, 3072));
    }
    out
}

#[test]
fn cifar10_archive_reads_batches_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    let mut members: Vec<(String, Vec<u8>)> = (1..=5)
        .map(|b| {
            (
                format!("cifar-10-batches-bin/data_batch_{b}.bin"),
                cifar_records(3, 1, |i| [((b + i) % 10) as u8, 0]),
            )
        })
        .collect();
    members.push((
        "cifar-10-batches-bin/test_batch.bin".into(),
        cifar_records(2, 1, |_| [9, 0]),
    ));
    // Members in a different order from the batches, as tar files may be.
    members.reverse();
    let refs: Vec<(&str, Vec<u8>)> = members
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    tar_gz(&archive, &refs);
    let train =
        read_cifar_archive(&archive, CifarVariant::Cifar10, Split::Train, &names(10)).unwrap();
    assert_eq!(train.len(), 15);
    // Batch 1 first: labels 1, 2, 3; then batch 2: 2, 3, 4; ...
    assert_eq!(&train.labels()[..6], [1, 2, 3, 2, 3, 4]);
    assert_eq!(train.image(4)[0], 1);
    let test =
        read_cifar_archive(&archive, CifarVariant::Cifar10, Split::Test, &names(10)).unwrap();
    assert_eq!(test.labels(), [9, 9]);
}

#[test]
fn cifar100_archive_gives_fine_or_coarse_labels() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("cifar-100-binary.tar.gz");
    let train = cifar_records(4, 2, |i| [i as u8 + 10, i as u8 + 90]);
    tar_gz(
        &archive,
        &[
            ("cifar-100-binary/train.bin", train),
            ("cifar-100-binary/test.bin", cifar_records(1, 2, |_| [0, 0])),
        ],
    );
    let fine = read_cifar_archive(
        &archive,
        CifarVariant::Cifar100(Cifar100Labels::Fine),
        Split::Train,
        &names(100),
    )
    .unwrap();
    assert_eq!(fine.labels(), [90, 91, 92, 93]);
    let coarse = read_cifar_archive(
        &archive,
        CifarVariant::Cifar100(Cifar100Labels::Coarse),
        Split::Train,
        &names(20),
    )
    .unwrap();
    assert_eq!(coarse.labels(), [10, 11, 12, 13]);
}

#[test]
fn cifar_reader_reports_each_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("bad.tar.gz");
    // A record of the wrong length.
    let mut short = cifar_records(2, 2, |_| [0, 0]);
    short.pop();
    tar_gz(&archive, &[("cifar-100-binary/train.bin", short)]);
    let msg = read_cifar_archive(
        &archive,
        CifarVariant::Cifar100(Cifar100Labels::Fine),
        Split::Train,
        &names(100),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("not a whole number of 3074-byte CIFAR records (3073 bytes left over)"),
        "{msg}"
    );
    assert!(msg.contains("cifar-100-binary/train.bin"), "{msg}");
    // A label outside the range.
    tar_gz(
        &archive,
        &[(
            "cifar-100-binary/test.bin",
            cifar_records(3, 2, |i| [0, if i == 2 { 100 } else { 1 }]),
        )],
    );
    let msg = read_cifar_archive(
        &archive,
        CifarVariant::Cifar100(Cifar100Labels::Fine),
        Split::Test,
        &names(100),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("label 100 of example 2 is outside the class range 0..100"),
        "{msg}"
    );
    // A member missing from the archive.
    let msg = read_cifar_archive(&archive, CifarVariant::Cifar10, Split::Test, &names(10))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("member `cifar-10-batches-bin/test_batch.bin` is missing"),
        "{msg}"
    );
    // Not a gzip file at all.
    let junk = write(&dir.path().join("junk.tar.gz"), b"this is not an archive");
    let msg = read_cifar_archive(&junk, CifarVariant::Cifar10, Split::Test, &names(10))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("junk.tar.gz: unreadable tar archive"), "{msg}");
}

fn png(value: u8, side: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(side, side, |x, y| image::Rgb([value, x as u8, y as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn jpg(value: u8, side: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(side, side, image::Rgb([value, value, value]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

#[test]
fn image_folder_reads_directories_and_archives_alike() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let files: Vec<(String, Vec<u8>)> = vec![
        ("train/cat/0001.png".into(), png(11, 4)),
        ("train/cat/0000.png".into(), png(10, 4)),
        ("train/dog/0000.jpg".into(), jpg(200, 4)),
        ("train/dog/README.txt".into(), b"not an image".to_vec()),
        ("test/cat/0000.png".into(), png(1, 4)),
        ("test/dog/0000.png".into(), png(2, 4)),
    ];
    for (name, bytes) in &files {
        write(&root.join(name), bytes);
    }
    let classes = vec!["dog".to_string(), "cat".to_string()];
    let set = read_image_folder(&root, "train", Some(&classes), [3, 4, 4]).unwrap();
    assert_eq!(set.labels(), [0, 1, 1]);
    // Within a class, files in name order; CHW with the red plane first.
    assert_eq!(set.image(1)[0], 10);
    assert_eq!(set.image(2)[0], 11);
    // Green plane of a PNG is the x coordinate.
    assert_eq!(&set.image(1)[16..20], [0, 1, 2, 3]);
    // JPEG is lossy, but a flat grey survives almost exactly.
    assert!(set.image(0).iter().all(|&v| v.abs_diff(200) <= 2));
    // Without class names: sorted folder names.
    let sorted = read_image_folder(&root, "test", None, [3, 4, 4]).unwrap();
    assert_eq!(sorted.class_names(), ["cat", "dog"]);
    // The same layout in a tar.gz, with a leading folder as GitHub archives have.
    let archive = dir.path().join("images.tar.gz");
    let members: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(n, b)| (format!("repo-abc/{n}"), b.clone()))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = members
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    tar_gz(&archive, &refs);
    let from_archive =
        read_image_folder_archive(&archive, "train", Some(&classes), [3, 4, 4]).unwrap();
    assert_eq!(from_archive.labels(), set.labels());
    for i in 0..set.len() {
        assert_eq!(from_archive.image(i), set.image(i));
    }
    assert_eq!(count_archive(&archive, "train", &classes).unwrap(), [1, 2]);
    // Grey conversion for one-channel datasets.
    let grey = read_image_folder(&root, "test", None, [1, 4, 4]).unwrap();
    assert_eq!(grey.shape(), [1, 4, 4]);
}

#[test]
fn image_folder_reports_each_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("train/cat/0.png"), &png(1, 4));
    std::fs::create_dir_all(root.join("train/dog")).unwrap();
    // Empty class folder.
    let msg = read_image_folder(root, "train", None, [3, 4, 4])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("train/dog: class folder holds no .png or .jpg image"),
        "{msg}"
    );
    // Unreadable image.
    write(&root.join("train/dog/0.png"), b"\x89PNG garbage");
    let msg = read_image_folder(root, "train", None, [3, 4, 4])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("dog/0.png: unreadable image"), "{msg}");
    // Wrong size.
    write(&root.join("train/dog/0.png"), &png(1, 5));
    let msg = read_image_folder(root, "train", None, [3, 4, 4])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("image is 3x5x5, the dataset's images are 3x4x4"),
        "{msg}"
    );
    // A class folder that is not one of the dataset's classes.
    write(&root.join("train/dog/0.png"), &png(1, 4));
    let msg = read_image_folder(root, "train", Some(&["cat".to_string()]), [3, 4, 4])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("class folder `dog` is not one of the dataset's classes"),
        "{msg}"
    );
    // A missing split.
    let msg = read_image_folder(root, "test", None, [3, 4, 4])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no `test` folder"), "{msg}");
}

fn one_file_manifest(name: &str, bytes: &[u8], urls: Vec<String>) -> Manifest {
    let mut m = Manifest::named("cifar10").unwrap();
    m.name = "toy".into();
    m.files = vec![FileEntry {
        role: "archive".into(),
        name: name.into(),
        bytes: bytes.len() as u64,
        md5: format!("{:x}", md5::compute(bytes)),
        urls,
        raw_md5: None,
    }];
    m
}

/// An IDX manifest `toy` for the files of [`idx_files`] (three classes of 2x3 images, the same
/// five examples in both splits), with the md5 of each gzip file and of its content.
fn idx_manifest() -> (Manifest, Vec<(String, Vec<u8>)>) {
    let pixels: Vec<u8> = (0..5)
        .flat_map(|i| (0..6).map(move |p| 10 * i + p))
        .collect();
    let images = encode_idx(&[5, 2, 3], &pixels);
    let labels = encode_idx(&[5], &[0, 1, 2, 0, 1]);
    let mut m = Manifest::named("mnist").unwrap();
    m.name = "toy".into();
    m.num_classes = 3;
    m.class_names = names(3);
    m.image_shape = [1, 2, 3];
    let mut raw = Vec::new();
    m.files = ["train", "test"]
        .into_iter()
        .flat_map(|split| {
            [("images", images.clone()), ("labels", labels.clone())].map(|(kind, content)| {
                let name = format!("{split}-{kind}-ubyte");
                let packed = gzip(&content);
                let entry = FileEntry {
                    role: format!("{split}-{kind}"),
                    name: format!("{name}.gz"),
                    bytes: packed.len() as u64,
                    md5: format!("{:x}", md5::compute(&packed)),
                    urls: vec![],
                    raw_md5: Some(format!("{:x}", md5::compute(&content))),
                };
                raw.push((name, content));
                entry
            })
        })
        .collect();
    (m, raw)
}

#[test]
fn unpacked_idx_files_stand_in_for_the_gzip_ones_and_a_folder_in_place_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (m, raw) = idx_manifest();
    for (name, content) in &raw {
        write(&dir.path().join("toy").join(name), content);
    }
    let opts = LoadOptions::offline(DataDir::at(dir.path(), "--data-dir"));
    let set = load(&m, Split::Train, &opts).unwrap();
    assert_eq!(set.labels(), [0, 1, 2, 0, 1]);
    assert_eq!(set.image(3), [30, 31, 32, 33, 34, 35]);
    assert_eq!(split_counts(&m, Split::Test, &opts).unwrap(), [2, 2, 1]);
    assert_eq!(
        file_state(&dir.path().join("toy"), &m.files[0]).unwrap(),
        store::FileState::Verified {
            path: dir.path().join("toy/train-images-ubyte")
        }
    );
    // An unpacked copy is checked against the md5 of the content.
    write(
        &dir.path().join("toy/test-labels-ubyte"),
        &encode_idx(&[5], &[0, 0, 2, 0, 1]),
    );
    let msg = load(&m, Split::Test, &opts).unwrap_err().to_string();
    assert!(
        msg.contains("test-labels-ubyte: md5 mismatch: expected "),
        "{msg}"
    );
    // A folder with the published name is named as such, not reported missing.
    std::fs::create_dir_all(dir.path().join("toy/train-labels-ubyte.gz")).unwrap();
    let msg = load(&m, Split::Train, &opts).unwrap_err().to_string();
    assert!(
        msg.contains("toy/train-labels-ubyte.gz is not a file"),
        "{msg}"
    );
    std::fs::remove_dir(dir.path().join("toy/train-labels-ubyte.gz")).unwrap();
    for (name, content) in &raw {
        write(&dir.path().join("toy").join(name), content);
    }
    // Without the md5 of the content, an unpacked copy is not accepted.
    let mut strict = m.clone();
    strict.files[2].raw_md5 = None;
    let msg = ensure_files(&strict, &opts.data_dir, Fetch::Never)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing 1 file(s)"), "{msg}");
}

#[test]
fn checksums_are_verified_once_and_mismatches_say_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = DataDir::at(dir.path(), "--data-dir");
    let m = one_file_manifest("blob.bin", b"hello", vec![]);
    write(&dir.path().join("toy/blob.bin"), b"hello");
    assert_eq!(
        ensure_files(&m, &data_dir, Fetch::Never).unwrap(),
        dir.path().join("toy")
    );
    // The verification is remembered beside the file.
    let stamps = std::fs::read_to_string(dir.path().join("toy/.scl-verified.json")).unwrap();
    assert!(
        stamps.contains("5d41402abc4b2a76b9719d911017c592"),
        "{stamps}"
    );
    // A changed file (different size) is hashed again and rejected.
    write(&dir.path().join("toy/blob.bin"), b"hello!");
    let msg = ensure_files(&m, &data_dir, Fetch::Never)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("blob.bin: md5 mismatch: expected 5d41402abc4b2a76b9719d911017c592, found "),
        "{msg}"
    );
    assert!(matches!(
        file_state(&dir.path().join("toy"), &m.files[0]).unwrap(),
        store::FileState::Mismatch { .. }
    ));
}

#[cfg(unix)]
#[test]
fn a_file_changed_in_place_with_its_modification_time_restored_is_hashed_again() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = DataDir::at(dir.path(), "--data-dir");
    let m = one_file_manifest("blob.bin", b"hello", vec![]);
    let path = dir.path().join("toy/blob.bin");
    write(&path, b"hello");
    ensure_files(&m, &data_dir, Fetch::Never).unwrap();
    let record = dir.path().join("toy/.scl-verified.json");
    let mode = std::fs::metadata(&record).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "the record must be readable by others");
    // Same size, the old modification time put back (what `touch -r` does), a moment later:
    // file times tick with the kernel's coarse clock (a few milliseconds).
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::fs::write(&path, b"jello").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    let msg = ensure_files(&m, &data_dir, Fetch::Never)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("md5 mismatch"), "{msg}");
}

#[test]
fn missing_files_without_network_give_one_message_with_urls_and_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = DataDir::at(dir.path(), "SCL_DATA_DIR");
    // Port 9 on the loopback is closed here: the download fails at once.
    let m = one_file_manifest(
        "blob.bin",
        b"hello",
        vec!["http://127.0.0.1:9/blob.bin".into()],
    );
    let msg = ensure_files(&m, &data_dir, Fetch::IfMissing { progress: false })
        .unwrap_err()
        .to_string();
    assert!(msg.contains("dataset `toy` is missing 1 file(s)"), "{msg}");
    assert!(msg.contains("the download failed"), "{msg}");
    assert!(
        msg.contains(
            "blob.bin (md5 5d41402abc4b2a76b9719d911017c592) from http://127.0.0.1:9/blob.bin"
        ),
        "{msg}"
    );
    assert!(
        msg.contains(&dir.path().join("toy").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("SCL_DATA_DIR"), "{msg}");
    let offline = ensure_files(&m, &data_dir, Fetch::Never)
        .unwrap_err()
        .to_string();
    assert!(offline.contains("downloading is off"), "{offline}");
    // Nothing was left behind: no file, partial or final.
    let toy = dir.path().join("toy");
    let left: Vec<_> = std::fs::read_dir(&toy)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Serves `body` to every request on a loopback port; returns the URL.
fn serve(body: Vec<u8>, requests: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&body).unwrap();
        }
    });
    format!("http://127.0.0.1:{port}/blob.bin")
}

#[test]
fn downloads_are_verified_before_they_appear() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = DataDir::at(dir.path(), "--data-dir");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let url = serve(payload.clone(), 1);
    let m = one_file_manifest("blob.bin", &payload, vec![url]);
    ensure_files(&m, &data_dir, Fetch::IfMissing { progress: false }).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("toy/blob.bin")).unwrap(),
        payload
    );
    // A server that sends other bytes: md5 mismatch, and no file, partial or final, remains.
    let dir2 = tempfile::tempdir().unwrap();
    let url = serve(b"something else".to_vec(), 1);
    let m = one_file_manifest("blob.bin", &payload, vec![url]);
    let msg = ensure_files(
        &m,
        &DataDir::at(dir2.path(), "--data-dir"),
        Fetch::IfMissing { progress: false },
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("md5 mismatch: expected"), "{msg}");
    let left: Vec<_> = std::fs::read_dir(dir2.path().join("toy"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn embedded_digits_have_the_known_class_counts_and_pixels() {
    let m = Manifest::named("sklearn-digits").unwrap();
    let opts = LoadOptions::offline(DataDir::resolve(None));
    let train = load(&m, Split::Train, &opts).unwrap();
    let test = load(&m, Split::Test, &opts).unwrap();
    assert_eq!((train.len(), test.len()), (1442, 355));
    // Stratified: every 5th image of each class is a test image.
    assert_eq!(
        test.class_counts(),
        [35, 36, 35, 36, 36, 36, 36, 35, 34, 36]
    );
    let total: Vec<usize> = train
        .class_counts()
        .iter()
        .zip(test.class_counts())
        .map(|(a, b)| a + b)
        .collect();
    // Class counts of the sklearn digits (sklearn's digits.rst and ../shared/datasets).
    assert_eq!(total, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    // The first row of sklearn's digits.csv.gz: a zero, 8x8 values 0..16.
    assert_eq!(
        &train.image(0)[..16],
        [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0]
    );
    assert_eq!(train.labels()[0], 0);
    assert_eq!(train.max_value(), 16);
}

#[test]
fn burn_dataset_and_batcher_give_sample_major_normalised_views() {
    let pixels: Vec<u8> = (0..3)
        .flat_map(|i| std::iter::repeat_n(i as u8 * 100, 4))
        .collect();
    let set = ImageSet::new([1, 2, 2], 200, names(2), pixels, vec![0, 1, 1]).unwrap();
    let sub = set.subset(&[2, 0]);
    assert_eq!(Dataset::len(&sub), 2);
    let items: Vec<ImageItem> = (0..2).map(|i| sub.get(i).unwrap()).collect();
    assert_eq!(items[0].label, 1);
    assert_eq!(items[0].pixels, [200; 4]);
    assert!(std::panic::catch_unwind(|| sub.get(2)).is_err());
    assert_eq!(sub.origin(), [2, 0]);
    let views = vec![vec![], vec![Transform::VerticalFlip { p: 1.0 }]];
    let batcher = SclBatcher::new(views, [1, 2, 2], 200, vec![0.5], vec![0.25], 7).unwrap();
    let batch: SclBatch = batcher.batch(items.clone(), &Device::flex());
    assert_eq!(batch.images.dims(), [4, 1, 2, 2]);
    assert_eq!(batch.views, 2);
    let values = batch.images.try_into_vec_as::<f32>().unwrap();
    // Example 0 (pixel 200 -> 1.0 -> (1 - 0.5) / 0.25 = 2) in both views, then example 1
    // (pixel 0 -> -2).
    assert_eq!(
        values,
        [
            2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, -2.0, -2.0, -2.0, -2.0, -2.0, -2.0, -2.0, -2.0
        ]
    );
    assert_eq!(batch.labels.try_into_vec_as::<i64>().unwrap(), [1, 0]);
    // Random views depend on (seed, epoch, index, view) only.
    let rand_views = vec![
        vec![Transform::RandomCrop {
            size: 2,
            padding: 1
        }];
        2
    ];
    let b = SclBatcher::new(rand_views, [1, 2, 2], 200, vec![0.5], vec![0.25], 7).unwrap();
    let first = b.assemble(&items, 3);
    let reversed: Vec<ImageItem> = items.iter().rev().cloned().collect();
    let second = b.assemble(&reversed, 3);
    let per = 2 * 4;
    assert_eq!(first.images[..per], second.images[per..]);
    let epochs: Vec<Vec<f32>> = (0..20).map(|e| b.assemble(&items, e).images).collect();
    assert!(
        epochs.iter().any(|x| *x != epochs[0]),
        "augmentations never change with the epoch"
    );
}

#[test]
fn batcher_rejects_views_of_different_shapes() {
    let views = vec![vec![], vec![Transform::Pad { padding: 1 }]];
    let err = SclBatcher::new(views, [1, 4, 4], 255, vec![0.0], vec![1.0], 0).unwrap_err();
    assert!(err.to_string().contains("different image shapes"), "{err}");
    let err = SclBatcher::new(vec![vec![]], [3, 4, 4], 255, vec![0.0], vec![1.0], 0).unwrap_err();
    assert!(
        err.to_string().contains("needs 3 mean and 3 positive std"),
        "{err}"
    );
}

/// The synthetic files of the CIFAR python layout in `testdata/`, pickled by Python and NumPy
/// (CIFAR-10: protocol 2 with byte-string keys, as published; CIFAR-100: protocols 4 and 5
/// with text keys, as a file pickled again by Python 3 is).
fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// CIFAR-10's folder as torchvision unpacks it (`cifar-10-batches-py/`), unpacked from
/// `testdata/cifar-10-python.tar.gz`: the batch files live only inside the archive.
fn unpacked_cifar10() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let archive = std::fs::File::open(testdata().join("cifar-10-python.tar.gz")).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(archive))
        .unpack(dir.path())
        .unwrap();
    dir
}

/// `manifest` with its torchvision files' md5s replaced by those of the synthetic files: the
/// folder's files under `root`, the archive in `testdata/`.
fn with_testdata_md5s(name: &str, root: &Path) -> Manifest {
    let mut m = Manifest::named(name).unwrap();
    let tv = m.torchvision.as_mut().unwrap();
    let folder = root.join(&tv.folder);
    for f in &mut tv.files {
        f.md5 = format!(
            "{:x}",
            md5::compute(std::fs::read(folder.join(&f.name)).unwrap())
        );
    }
    if let Some(a) = tv.archive.as_mut()
        && let Ok(bytes) = std::fs::read(testdata().join(&a.name))
    {
        a.md5 = format!("{:x}", md5::compute(&bytes));
    }
    m
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn cifar_python_batches_are_read_from_torchvisions_folder_or_archive() {
    let unpacked = unpacked_cifar10();
    let m = with_testdata_md5s("cifar10", unpacked.path());
    // The folder torchvision unpacks into, directly under the data directory.
    let dir = tempfile::tempdir().unwrap();
    copy_tree(
        &unpacked.path().join("cifar-10-batches-py"),
        &dir.path().join("cifar-10-batches-py"),
    );
    let opts = LoadOptions::offline(DataDir::at(dir.path(), "--data-dir"));
    assert_eq!(
        store::locate(&m, &opts.data_dir, Fetch::Never).unwrap(),
        Source::TorchvisionFolder(dir.path().join("cifar-10-batches-py"))
    );
    let train = load(&m, Split::Train, &opts).unwrap();
    // Five batches of two, in batch order; labels (b + i) % 10 as the file generator wrote.
    assert_eq!(train.labels(), [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]);
    let test = load(&m, Split::Test, &opts).unwrap();
    assert_eq!(test.labels(), [9, 8, 7]);
    assert_eq!(test.shape(), [3, 32, 32]);

    // The same pixels from the archive as downloaded, in the data directory.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(
        testdata().join("cifar-10-python.tar.gz"),
        other.path().join("cifar-10-python.tar.gz"),
    )
    .unwrap();
    let from_archive = LoadOptions::offline(DataDir::at(other.path(), "--data-dir"));
    assert!(matches!(
        store::locate(&m, &from_archive.data_dir, Fetch::Never).unwrap(),
        Source::TorchvisionArchive(_)
    ));
    let archived = load(&m, Split::Train, &from_archive).unwrap();
    assert_eq!(archived.labels(), train.labels());
    for i in 0..train.len() {
        assert_eq!(archived.image(i), train.image(i), "image {i}");
    }
    // The rows are R, G, B planes, as in the binary version: the values NumPy reads from
    // the file (`pickle.load(f, encoding="bytes")[b"data"]`), first red and first green pixels.
    assert_eq!(train.image(0)[..8], [139, 74, 229, 241, 169, 65, 6, 160]);
    assert_eq!(train.image(1)[1024..1028], [253, 133, 160, 130]);
    assert_eq!(
        split_counts(&m, Split::Test, &opts).unwrap()[7..],
        [1, 1, 1]
    );

    // The dataset's own folder wins when it is complete: a binary archive there is read.
    let mut binary = Vec::new();
    for b in 1..=5 {
        binary.push((
            format!("cifar-10-batches-bin/data_batch_{b}.bin"),
            cifar_records(1, 1, |_| [0, 0]),
        ));
    }
    binary.push((
        "cifar-10-batches-bin/test_batch.bin".into(),
        cifar_records(1, 1, |_| [0, 0]),
    ));
    let archive = dir.path().join("cifar10/cifar-10-binary.tar.gz");
    std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
    let members: Vec<(&str, Vec<u8>)> = binary
        .iter()
        .map(|(n, b)| (n.as_str(), b.clone()))
        .collect();
    tar_gz(&archive, &members);
    let mut own = m.clone();
    own.files[0].md5 = format!("{:x}", md5::compute(std::fs::read(&archive).unwrap()));
    assert_eq!(load(&own, Split::Train, &opts).unwrap().len(), 5);

    // With the own folder complete, its file is the one verified (here against the official
    // md5, which the test archive does not have).
    let msg = load(&m, Split::Train, &opts).unwrap_err().to_string();
    assert!(
        msg.contains("cifar-10-binary.tar.gz: md5 mismatch"),
        "{msg}"
    );
    std::fs::remove_file(&archive).unwrap();

    // A changed batch is refused with its name, like any dataset file.
    let batch = dir.path().join("cifar-10-batches-py/test_batch");
    let mut bytes = std::fs::read(&batch).unwrap();
    let last = bytes.len() - 40;
    bytes[last] ^= 1;
    std::fs::write(&batch, bytes).unwrap();
    let msg = load(&m, Split::Test, &opts).unwrap_err().to_string();
    assert!(msg.contains("test_batch: md5 mismatch"), "{msg}");
}

#[test]
fn cifar100_python_gives_fine_or_coarse_labels_from_any_pickle_protocol() {
    let m = with_testdata_md5s("cifar100", &testdata());
    let dir = tempfile::tempdir().unwrap();
    copy_tree(
        &testdata().join("cifar-100-python"),
        &dir.path().join("cifar-100-python"),
    );
    let mut opts = LoadOptions::offline(DataDir::at(dir.path(), "--data-dir"));
    // train: protocol 4 (ndarray state); test: protocol 5 (_frombuffer arguments).
    assert_eq!(
        load(&m, Split::Train, &opts).unwrap().labels(),
        [90, 91, 92, 93]
    );
    assert_eq!(load(&m, Split::Test, &opts).unwrap().labels(), [99]);
    opts.cifar100_labels = Cifar100Labels::Coarse;
    let coarse = load(&m, Split::Train, &opts).unwrap();
    assert_eq!(coarse.labels(), [10, 11, 12, 13]);
    assert_eq!(coarse.num_classes(), 20);
}

#[test]
fn pickles_that_are_not_cifar_batches_are_named_and_never_panic() {
    use crate::readers::cifar_python::parse_cifar_pickle;
    let unpacked = unpacked_cifar10();
    let good = std::fs::read(unpacked.path().join("cifar-10-batches-py/data_batch_1")).unwrap();
    let path = Path::new("batch");
    let parse = |bytes: &[u8], variant| {
        parse_cifar_pickle(bytes, path, variant, &mut Vec::new(), &mut Vec::new())
            .map_err(|e| e.to_string())
    };
    assert_eq!(parse(&good, CifarVariant::Cifar10), Ok(2));
    let fine = CifarVariant::Cifar100(Cifar100Labels::Fine);
    let cases: Vec<(Vec<u8>, CifarVariant, &str)> = vec![
        (
            b"not a pickle".to_vec(),
            CifarVariant::Cifar10,
            "not a readable pickle",
        ),
        (
            good[..good.len() / 2].to_vec(),
            CifarVariant::Cifar10,
            "not a readable pickle",
        ),
        // A pickled list, protocol 2: PROTO 2, EMPTY_LIST, STOP.
        (
            b"\x80\x02].".to_vec(),
            CifarVariant::Cifar10,
            "holds no dict",
        ),
        // A CIFAR-10 batch read as CIFAR-100.
        (good.clone(), fine, "no `fine_labels` entry"),
    ];
    for (bytes, variant, want) in cases {
        let msg = parse(&bytes, variant).unwrap_err();
        assert!(
            msg.starts_with("batch: ") && msg.contains(want),
            "{want}: {msg}"
        );
    }
    // Every truncation and every single-byte change of a real batch gives an error or a batch,
    // never a panic.
    for cut in (0..good.len()).step_by(97) {
        let _ = parse(&good[..cut], CifarVariant::Cifar10);
    }
    for at in (0..good.len()).step_by(13) {
        let mut bytes = good.clone();
        bytes[at] = bytes[at].wrapping_add(0x5b);
        let _ = parse(&bytes, CifarVariant::Cifar10);
    }
}
