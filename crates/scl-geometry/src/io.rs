//! Embeddings and labels from files, so that embeddings computed by any framework can be
//! measured: NumPy `.npy` (what `np.save` writes) and delimited text (`.csv`, `.tsv`, `.txt`).
//!
//! - Embeddings: a 2-D `.npy` array of `f4`/`f8` (little- or big-endian, C or Fortran order),
//!   or text with one row per line, values separated by commas, tabs, semicolons or spaces; a
//!   first line that is not numeric is taken as a header and skipped; empty lines and lines
//!   starting with `#` are ignored.
//! - Labels: a 1-D `.npy` array of integers (`i1`..`i8`, `u1`..`u8`) or of floats holding
//!   whole numbers, or text with one label per line (or one line of separated labels). Any
//!   integer values: [`dense_labels`] maps the distinct values, sorted, to `0..K`.
//!
//! The other direction, for analysis in NumPy: [`npy_f32`] and [`npy_i64`] encode a matrix
//! and a label vector as `.npy` bytes (format 1.0, little-endian, C order), which
//! `numpy.load` and the readers above both read.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("z.csv");
//! std::fs::write(&path, "x,y\n1,0\n1,0\n0,1\n0,1\n").unwrap();
//! let z = scl_geometry::io::read_embeddings(&path).unwrap();
//! let (labels, classes) = scl_geometry::io::dense_labels(&[7, 7, 3, 3]);
//! assert_eq!(classes, [3, 7]);
//! let g = scl_geometry::geometry(&z, &labels, classes.len()).unwrap();
//! assert!(g.of_distance < 1e-12);
//! ```

use std::path::Path;

use crate::{Embeddings, GeometryError};

fn file_error(path: &Path, reason: impl Into<String>) -> GeometryError {
    GeometryError::File {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// A parsed `.npy` array: its shape and values in C order, as `f64`.
struct Npy {
    shape: Vec<usize>,
    values: Vec<f64>,
}

/// The value of `key` in a `.npy` header dictionary (`{'descr': '<f4', ...}`), as raw text.
fn header_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

fn parse_npy(path: &Path, bytes: &[u8]) -> Result<Npy, GeometryError> {
    let bad = |why: &str| file_error(path, why.to_string());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file (no \\x93NUMPY magic)"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => {
            return Err(bad(&format!(
                ".npy format version {v} is not supported (1, 2, 3 are)"
            )));
        }
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or_else(|| bad("the .npy header is cut short"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("the .npy header is not text"))?;
    let descr = header_field(header, "descr")
        .ok_or_else(|| bad("the .npy header has no 'descr'"))?
        .trim_matches(|c| c == '\'' || c == '"');
    let fortran = header_field(header, "fortran_order") == Some("True");
    let shape: Vec<usize> = header_field(header, "shape")
        .ok_or_else(|| bad("the .npy header has no 'shape'"))?
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad("the .npy shape is not a list of sizes"))
        })
        .collect::<Result<_, _>>()?;
    let (order, kind) = descr.split_at(1);
    let big = match order {
        "<" | "|" | "=" => false,
        ">" => true,
        _ => return Err(bad(&format!("the .npy dtype {descr} is not supported"))),
    };
    let width: usize = kind[1..]
        .parse()
        .map_err(|_| bad(&format!("the .npy dtype {descr} is not supported")))?;
    let decode: fn(&[u8], bool) -> f64 = match (kind.as_bytes()[0], width) {
        (b'f', 4) => |b, big| {
            let a = [b[0], b[1], b[2], b[3]];
            f64::from(if big {
                f32::from_be_bytes(a)
            } else {
                f32::from_le_bytes(a)
            })
        },
        (b'f', 8) => |b, big| {
            let a: [u8; 8] = b.try_into().expect("8 bytes");
            if big {
                f64::from_be_bytes(a)
            } else {
                f64::from_le_bytes(a)
            }
        },
        (b'i', 1) => |b, _| f64::from(b[0] as i8),
        (b'u', 1) | (b'b', 1) => |b, _| f64::from(b[0]),
        (b'i', 2) => |b, big| {
            let a = [b[0], b[1]];
            f64::from(if big {
                i16::from_be_bytes(a)
            } else {
                i16::from_le_bytes(a)
            })
        },
        (b'u', 2) => |b, big| {
            let a = [b[0], b[1]];
            f64::from(if big {
                u16::from_be_bytes(a)
            } else {
                u16::from_le_bytes(a)
            })
        },
        (b'i', 4) => |b, big| {
            let a = [b[0], b[1], b[2], b[3]];
            f64::from(if big {
                i32::from_be_bytes(a)
            } else {
                i32::from_le_bytes(a)
            })
        },
        (b'u', 4) => |b, big| {
            let a = [b[0], b[1], b[2], b[3]];
            f64::from(if big {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            })
        },
        (b'i', 8) => |b, big| {
            let a: [u8; 8] = b.try_into().expect("8 bytes");
            (if big {
                i64::from_be_bytes(a)
            } else {
                i64::from_le_bytes(a)
            }) as f64
        },
        (b'u', 8) => |b, big| {
            let a: [u8; 8] = b.try_into().expect("8 bytes");
            (if big {
                u64::from_be_bytes(a)
            } else {
                u64::from_le_bytes(a)
            }) as f64
        },
        _ => {
            return Err(bad(&format!(
                "the .npy dtype {descr} is not supported (floats f4/f8, integers i1-i8/u1-u8)"
            )));
        }
    };
    let count: usize = shape.iter().product();
    let data = &bytes[start + header_len..];
    if data.len() != count * width {
        return Err(bad(&format!(
            "the .npy data holds {} bytes, its shape {shape:?} of {descr} needs {}",
            data.len(),
            count * width
        )));
    }
    let mut values: Vec<f64> = data.chunks_exact(width).map(|b| decode(b, big)).collect();
    if fortran && shape.len() == 2 {
        let (n, d) = (shape[0], shape[1]);
        let column_major = std::mem::take(&mut values);
        values = (0..n * d)
            .map(|k| column_major[(k % d) * n + k / d])
            .collect();
    }
    Ok(Npy { shape, values })
}

/// Rows of numbers from delimited text; the first line may be a header.
fn parse_text(path: &Path, text: &str) -> Result<Vec<Vec<f64>>, GeometryError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line
            .split([',', '\t', ';', ' '])
            .filter(|f| !f.is_empty())
            .collect();
        let parsed: Result<Vec<f64>, _> = fields.iter().map(|f| f.parse::<f64>()).collect();
        match parsed {
            Ok(row) => rows.push(row),
            Err(_) if rows.is_empty() && i == 0 => {} // a header
            Err(_) => {
                let bad = fields
                    .iter()
                    .find(|f| f.parse::<f64>().is_err())
                    .copied()
                    .unwrap_or("");
                return Err(file_error(
                    path,
                    format!("line {}: `{bad}` is not a number", i + 1),
                ));
            }
        }
    }
    Ok(rows)
}

fn read(path: &Path) -> Result<Vec<u8>, GeometryError> {
    std::fs::read(path).map_err(|e| file_error(path, e.to_string()))
}

fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// An embedding matrix `[n, d]` from a `.npy` file or delimited text (see the module
/// documentation).
///
/// # Errors
/// [`GeometryError::File`] naming the file and what is wrong (unreadable, not 2-D, rows of
/// different lengths, a field that is not a number); [`GeometryError::NonFinite`] for NaN or
/// infinite values.
pub fn read_embeddings(path: &Path) -> Result<Embeddings, GeometryError> {
    let bytes = read(path)?;
    let (n, d, values) = if is_npy(path) {
        let npy = parse_npy(path, &bytes)?;
        match npy.shape[..] {
            [n, d] => (n, d, npy.values),
            _ => {
                return Err(file_error(
                    path,
                    format!(
                        "embeddings must be a 2-D array [n, d], found shape {:?}",
                        npy.shape
                    ),
                ));
            }
        }
    } else {
        let text = String::from_utf8(bytes).map_err(|_| file_error(path, "not UTF-8 text"))?;
        let rows = parse_text(path, &text)?;
        let d = rows.first().map_or(0, Vec::len);
        if let Some((i, row)) = rows.iter().enumerate().find(|(_, r)| r.len() != d) {
            return Err(file_error(
                path,
                format!(
                    "data row {} has {} values, the first has {d}",
                    i + 1,
                    row.len()
                ),
            ));
        }
        (rows.len(), d, rows.concat())
    };
    if n == 0 || d == 0 {
        return Err(file_error(
            path,
            format!("no embeddings: the matrix is {n} x {d}"),
        ));
    }
    Embeddings::new(n, d, values)
}

/// Integer labels from a 1-D `.npy` file or text (see the module documentation).
///
/// # Errors
/// [`GeometryError::File`] naming the file and what is wrong (unreadable, not 1-D, a value
/// that is not a whole number).
pub fn read_labels(path: &Path) -> Result<Vec<i64>, GeometryError> {
    let bytes = read(path)?;
    let values = if is_npy(path) {
        let npy = parse_npy(path, &bytes)?;
        if npy.shape.len() != 1 && !(npy.shape.len() == 2 && npy.shape[1] == 1) {
            return Err(file_error(
                path,
                format!("labels must be a 1-D array, found shape {:?}", npy.shape),
            ));
        }
        npy.values
    } else {
        let text = String::from_utf8(bytes).map_err(|_| file_error(path, "not UTF-8 text"))?;
        parse_text(path, &text)?.concat()
    };
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.fract() == 0.0 && v.abs() < 9.0e15 {
                Ok(v as i64)
            } else {
                Err(file_error(
                    path,
                    format!("label {i} ({v}) is not a whole number"),
                ))
            }
        })
        .collect()
}

/// Labels mapped to `0..K`: the distinct values sorted, each replaced by its rank. Returns
/// the mapped labels and the distinct values (class `c` is `classes[c]`).
pub fn dense_labels(raw: &[i64]) -> (Vec<usize>, Vec<i64>) {
    let mut classes = raw.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let labels = raw
        .iter()
        .map(|v| {
            classes
                .binary_search(v)
                .expect("every value is in the list")
        })
        .collect();
    (labels, classes)
}

/// A `.npy` file (format 1.0, C order) of `data`, whose raw little-endian values are
/// `values`, with dtype `descr` and `shape`; the header is padded so the data start at a
/// multiple of 64 bytes, as NumPy writes it.
fn npy_bytes(
    descr: &str,
    shape: &[usize],
    values: impl Iterator<Item = [u8; 8]>,
    width: usize,
) -> Vec<u8> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let count: usize = shape.iter().product();
    let mut out = Vec::with_capacity(10 + header.len() + count * width);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v[..width]);
    }
    out
}

/// The `.npy` bytes of an `[n, d]` matrix of `f32` (`<f4`), rows in order. The embeddings
/// this workspace computes are `f32` on every backend, so nothing is lost against `f64`.
///
/// # Panics
/// When `values.len() != n * d`.
pub fn npy_f32(n: usize, d: usize, values: &[f32]) -> Vec<u8> {
    assert_eq!(values.len(), n * d, "an [n, d] matrix holds n * d values");
    let le = values.iter().map(|v| {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&v.to_le_bytes());
        b
    });
    npy_bytes("<f4", &[n, d], le, 4)
}

/// The `.npy` bytes of a vector of labels (`<i8`).
pub fn npy_i64(labels: &[i64]) -> Vec<u8> {
    npy_bytes(
        "<i8",
        &[labels.len()],
        labels.iter().map(|v| v.to_le_bytes()),
        8,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn npy_float_and_int_arrays_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let z = dir.path().join("z.npy");
        let values: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(&z, npy("<f4", "(3, 2)", &values)).unwrap();
        let e = read_embeddings(&z).unwrap();
        assert_eq!(
            e,
            Embeddings::new(3, 2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap()
        );

        let y = dir.path().join("y.npy");
        let labels: Vec<u8> = [5i64, -1, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&y, npy("<i8", "(3,)", &labels)).unwrap();
        assert_eq!(read_labels(&y).unwrap(), [5, -1, 5]);
        assert_eq!(dense_labels(&[5, -1, 5]), (vec![1, 0, 1], vec![-1, 5]));
    }

    #[test]
    fn bad_files_give_one_sentence_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, Vec<u8>, &str); 6] = [
            ("a.npy", b"not numpy at all".to_vec(), "no \\x93NUMPY magic"),
            ("b.npy", npy("<f4", "(2, 2)", &[0; 12]), "needs 16"),
            ("c.npy", npy("<c8", "(1, 1)", &[0; 8]), "not supported"),
            ("d.npy", npy("<f8", "(2,)", &[0; 16]), "2-D array"),
            ("e.csv", b"1,2\n3\n".to_vec(), "data row 2 has 1 values"),
            (
                "f.csv",
                b"a,b\n1,2\n3,x\n".to_vec(),
                "line 3: `x` is not a number",
            ),
        ];
        for (name, bytes, want) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let e = read_embeddings(&path).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(want), "{name}: {e}");
        }
        let missing = read_embeddings(&dir.path().join("none.npy")).unwrap_err();
        assert!(missing.to_string().contains("none.npy"));
        let labels = dir.path().join("y.txt");
        std::fs::write(&labels, "0\n1.5\n").unwrap();
        assert!(
            read_labels(&labels)
                .unwrap_err()
                .to_string()
                .contains("not a whole number")
        );
    }

    #[test]
    fn written_npy_files_read_back_and_match_numpys_layout() {
        let dir = tempfile::tempdir().unwrap();
        let values = [0.5f32, -1.25, 3.0e-8, 7.0, f32::MAX, -0.0];
        let bytes = npy_f32(3, 2, &values);
        // NumPy's own encoding of the same array (np.save of a float32 [3, 2] array).
        assert_eq!(
            bytes,
            npy(
                "<f4",
                "(3, 2)",
                &values
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<_>>()
            )
        );
        assert_eq!(
            bytes.len() % 64,
            24,
            "64-byte aligned header, then 24 bytes of data"
        );
        let z = dir.path().join("z.npy");
        std::fs::write(&z, bytes).unwrap();
        let back = read_embeddings(&z).unwrap();
        let want: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        assert_eq!(back, Embeddings::new(3, 2, want).unwrap());

        let y = dir.path().join("y.npy");
        let labels = [3i64, 0, -7, i64::from(i32::MAX) + 1];
        let bytes = npy_i64(&labels);
        assert_eq!(
            bytes,
            npy(
                "<i8",
                "(4,)",
                &labels
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<_>>()
            )
        );
        std::fs::write(&y, bytes).unwrap();
        assert_eq!(read_labels(&y).unwrap(), labels);
        // An empty label vector is a valid file too.
        assert_eq!(&npy_i64(&[])[..6], b"\x93NUMPY");
    }

    #[test]
    fn fortran_order_is_transposed_to_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.npy");
        let mut bytes = npy("<f8", "(2, 3)", &[]);
        // Replace the flag, keeping the header length.
        let at = bytes.windows(5).position(|w| w == b"False").unwrap();
        bytes.splice(at..at + 5, b"True ".iter().copied());
        // Column-major [[1, 2, 3], [4, 5, 6]] is 1, 4, 2, 5, 3, 6.
        for v in [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, bytes).unwrap();
        let e = read_embeddings(&path).unwrap();
        assert_eq!(
            e,
            Embeddings::new(2, 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap()
        );
    }
}
