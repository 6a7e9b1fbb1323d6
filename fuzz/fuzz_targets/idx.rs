//! IDX reader: arbitrary bytes, optionally gzip, split into an image file and a label file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use scl_data::readers::gunzip_if_compressed;
use scl_data::readers::idx::{parse_idx, parse_idx_pair};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz");
    // Cap the decompressed size so a gzip bomb is not a "crash".
    if data.len() > 1 << 16 {
        return;
    }
    let Ok(bytes) = gunzip_if_compressed(data.to_vec(), path) else {
        return;
    };
    let _ = parse_idx(&bytes, 1, path);
    let _ = parse_idx(&bytes, 3, path);
    let cut = bytes.first().copied().unwrap_or(0) as usize % (bytes.len() + 1);
    let names: Vec<String> = (0..10).map(|c| c.to_string()).collect();
    let _ = parse_idx_pair(&bytes[cut..], &bytes[..cut], path, path, [1, 28, 28], &names);
    let _ = parse_idx_pair(&bytes[cut..], &bytes[..cut], path, path, [1, 2, 2], &names);
});
