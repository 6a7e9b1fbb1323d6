//! The python version of CIFAR-10 and CIFAR-100, the files torchvision downloads and reads:
//! `cifar-10-python.tar.gz` holds `cifar-10-batches-py/data_batch_{1..5}` and `test_batch`,
//! `cifar-100-python.tar.gz` holds `cifar-100-python/train` and `test`. Each file is a
//! pickled dict (written by Python 2's cPickle, protocol 2, so its keys are byte strings):
//! `data`, a NumPy `uint8` array `[n, 3072]` whose rows are the red, green and blue 32x32
//! planes, exactly the pixels of the binary version, and `labels` (CIFAR-10) or
//! `fine_labels` and `coarse_labels` (CIFAR-100), lists of `n` integers.
//!
//! The pickles are decoded by the `serde-pickle` crate, which never runs code from the file:
//! a NumPy array arrives as the arguments NumPy would rebuild it from, either the state that
//! `ndarray.__setstate__` gets, `(version, shape, dtype, is_fortran, raw bytes)` (protocols 2
//! to 4), or the arguments of `numpy._core.numeric._frombuffer`, `(raw bytes, dtype, shape,
//! order)` (protocol 5), and is checked here (a 2-D C-order array of one byte per value).
//! Files pickled again by Python 3 (text keys, protocols 2 to 5) read the same way.

use std::path::Path;

use serde_pickle::{DeOptions, HashableValue, Value};

use super::cifar::{Cifar100Labels, CifarVariant, PIXELS, read_members};
use crate::{DataError, ImageSet};

/// Parses one pickled batch, appending its pixels (`CxHxW` per image) and labels.
///
/// # Errors
/// [`DataError::Pickle`] naming the file and what is not as expected;
/// [`DataError::LabelOutOfRange`] for a label outside the chosen label set.
pub fn parse_cifar_pickle(
    bytes: &[u8],
    path: &Path,
    variant: CifarVariant,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<usize>,
) -> Result<usize, DataError> {
    let bad = |message: String| DataError::Pickle {
        path: path.to_path_buf(),
        message,
    };
    let value = serde_pickle::value_from_slice(bytes, DeOptions::new().keep_restore_state())
        .map_err(|e| bad(format!("not a readable pickle ({e})")))?;
    let Value::Dict(dict) = value else {
        return Err(bad("the pickle holds no dict".into()));
    };
    // Python 2 wrote the keys as byte strings; a file pickled again by Python 3 may have text.
    let get = |key: &str| {
        dict.get(&HashableValue::Bytes(key.as_bytes().to_vec()))
            .or_else(|| dict.get(&HashableValue::String(key.to_string())))
            .ok_or_else(|| bad(format!("the dict has no `{key}` entry")))
    };
    let (n, raw) = array_rows(get("data")?).map_err(|m| bad(format!("`data`: {m}")))?;
    let label_key = match variant {
        CifarVariant::Cifar10 => "labels",
        CifarVariant::Cifar100(Cifar100Labels::Fine) => "fine_labels",
        CifarVariant::Cifar100(Cifar100Labels::Coarse) => "coarse_labels",
    };
    let Value::List(list) = get(label_key)? else {
        return Err(bad(format!("`{label_key}` is not a list")));
    };
    if list.len() != n {
        return Err(bad(format!(
            "`{label_key}` holds {} labels for {n} images",
            list.len()
        )));
    }
    let num_classes = variant.num_classes();
    for (index, v) in list.iter().enumerate() {
        let label = match v {
            Value::I64(l) if *l >= 0 => *l as usize,
            other => {
                return Err(bad(format!(
                    "`{label_key}` entry {index} is {other:?}, not a label"
                )));
            }
        };
        if label >= num_classes {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label,
                num_classes,
            });
        }
        labels.push(label);
    }
    pixels.extend_from_slice(raw);
    Ok(n)
}

/// The rows and raw bytes of a pickled NumPy array `[n, 3072]` of one-byte values in C order.
fn array_rows(value: &Value) -> Result<(usize, &[u8]), String> {
    let Value::Tuple(state) = value else {
        return Err("not a NumPy array".into());
    };
    let (shape, fortran, data) = match &state[..] {
        // ndarray.__reduce__ (protocols 2 to 4): the state (version, shape, dtype,
        // is_fortran, data).
        [_, Value::Tuple(shape), _, Value::Bool(fortran), data] => (shape, *fortran, data),
        // ndarray.__reduce_ex__(5): _frombuffer(data, dtype, shape, order).
        [data, _, Value::Tuple(shape), Value::String(order)] => (shape, order == "F", data),
        _ => return Err("not a NumPy array (unexpected pickled state)".into()),
    };
    let shape: Vec<i64> = shape
        .iter()
        .map(|v| match v {
            Value::I64(s) => Ok(*s),
            _ => Err("its shape is not a tuple of sizes".to_string()),
        })
        .collect::<Result<_, _>>()?;
    let [n, width] = shape[..] else {
        return Err(format!("shape {shape:?}, expected [n, {PIXELS}]"));
    };
    if width != PIXELS as i64 || n < 0 {
        return Err(format!("shape {shape:?}, expected [n, {PIXELS}]"));
    }
    if fortran && n > 1 {
        return Err("the array is in Fortran order; CIFAR batches are in C order".into());
    }
    let Value::Bytes(raw) = data else {
        return Err("the array's data are not raw bytes (an object array?)".into());
    };
    let n = n as usize;
    if raw.len() != n * PIXELS {
        return Err(format!(
            "{} data bytes for {n} x {PIXELS} values; CIFAR pixels are one byte (uint8) each",
            raw.len()
        ));
    }
    Ok((n, raw.as_slice()))
}

/// One split of the python version from torchvision's folder: the `files` (in order) in
/// `dir`.
///
/// # Errors
/// [`DataError::Io`] for a file that cannot be read, and every error of
/// [`parse_cifar_pickle`].
pub fn read_cifar_python_folder(
    dir: &Path,
    files: &[String],
    variant: CifarVariant,
    class_names: &[String],
) -> Result<ImageSet, DataError> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for name in files {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        parse_cifar_pickle(&bytes, &path, variant, &mut pixels, &mut labels)?;
    }
    ImageSet::new([3, 32, 32], 255, class_names.to_vec(), pixels, labels)
}

/// One split of the python version read directly from torchvision's download archive; the
/// files are the members `folder/<file>`.
///
/// # Errors
/// [`DataError::Archive`] for an unreadable archive or a missing member, and every error of
/// [`parse_cifar_pickle`].
pub fn read_cifar_python_archive(
    archive: &Path,
    folder: &str,
    files: &[String],
    variant: CifarVariant,
    class_names: &[String],
) -> Result<ImageSet, DataError> {
    let members: Vec<String> = files.iter().map(|f| format!("{folder}/{f}")).collect();
    let mut found = read_members(archive, &members)?;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for m in &members {
        let bytes = found
            .remove(m)
            .expect("read_members returns every wanted member");
        parse_cifar_pickle(&bytes, &archive.join(m), variant, &mut pixels, &mut labels)?;
    }
    ImageSet::new([3, 32, 32], 255, class_names.to_vec(), pixels, labels)
}
