//! Image-folder archives: arbitrary bytes written as a .tar.gz, read as a split; and the
//! bytes decoded as one image.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use scl_data::readers::folder::{decode_image, read_image_folder_archive};

fuzz_target!(|data: &[u8]| {
    let _ = decode_image(data, Path::new("fuzz.png"), [3, 4, 4]);
    let Ok(dir) = tempfile_dir() else { return };
    let archive = dir.join("a.tar.gz");
    if std::fs::write(&archive, data).is_ok() {
        let _ = read_image_folder_archive(&archive, "train", None, [1, 4, 4]);
    }
});

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("scl-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
