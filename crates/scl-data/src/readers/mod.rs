//! Readers of the on-disk formats. The byte-level parsers (`parse_*`) take a byte slice and
//! never panic, whatever the bytes; they are what the fuzz targets drive.

pub mod cifar;
pub mod cifar_python;
#[cfg(feature = "digits")]
pub mod digits;
pub mod folder;
pub mod idx;

use std::io::Read;
use std::path::Path;

use crate::DataError;

/// The two magic bytes of a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Returns `bytes` decompressed when they are a gzip stream (detected by its magic bytes),
/// or unchanged otherwise. `path` is only used in error messages.
///
/// # Errors
/// [`DataError::Gzip`] when the stream is corrupted or truncated (the CRC and length in the
/// gzip trailer are checked).
pub fn gunzip_if_compressed(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>, DataError> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() * 4);
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut out)
        .map_err(|e| DataError::Gzip {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(out)
}

/// Reads a whole file, decompressing it when it is gzip.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    gunzip_if_compressed(bytes, path)
}
