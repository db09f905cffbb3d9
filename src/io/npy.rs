//! `.npy` batches of configurations, via `ndarray-npy`.
//!
//! * Reading accepts float32 and float64 files (either byte order); float64 is converted to f32,
//!   idem's tensor type. Anything else (integers, complex, object arrays, truncated or corrupt
//!   files) is an error naming the file and the problem.
//! * Writing is atomic: data go to a temporary file in the destination folder, which is then
//!   renamed over the destination, so an interrupted write never leaves a half-written file and
//!   never destroys the previous one.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};

use crate::energy::ParticleShape;
use crate::error::{Error, Result};

/// A float array read from a `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// Values in row-major (C) order.
    pub data: Vec<f32>,
    /// The file's shape.
    pub shape: Vec<usize>,
    /// `"float32"` or `"float64"`: the file's element type before conversion.
    pub dtype: &'static str,
}

fn npy_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Npy {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn describe(e: &ReadNpyError) -> String {
    match e {
        ReadNpyError::WrongDescriptor(d) => {
            format!("unsupported element type {d} (expected float32 or float64)")
        }
        ReadNpyError::MissingData => {
            "file is truncated: it holds fewer values than its header declares".into()
        }
        ReadNpyError::ExtraBytes(n) => format!("file has {n} unexpected bytes after the data"),
        ReadNpyError::ParseHeader(h) => format!("not a valid .npy file ({h})"),
        other => other.to_string(),
    }
}

/// Read a float32 or float64 `.npy` file of any shape.
pub fn read(path: &Path) -> Result<NpyArray> {
    let bytes = fs::read(path).map_err(|e| npy_err(path, format!("cannot read: {e}")))?;
    match ArrayD::<f32>::read_npy(Cursor::new(&bytes)) {
        Ok(a) => Ok(NpyArray {
            shape: a.shape().to_vec(),
            data: into_vec(a),
            dtype: "float32",
        }),
        Err(ReadNpyError::WrongDescriptor(_)) => match ArrayD::<f64>::read_npy(Cursor::new(&bytes))
        {
            Ok(a) => Ok(NpyArray {
                shape: a.shape().to_vec(),
                data: a.iter().map(|&v| v as f32).collect(),
                dtype: "float64",
            }),
            Err(e) => Err(npy_err(path, describe(&e))),
        },
        Err(e) => Err(npy_err(path, describe(&e))),
    }
}

fn into_vec(a: ArrayD<f32>) -> Vec<f32> {
    if a.is_standard_layout() {
        a.into_raw_vec_and_offset().0
    } else {
        a.iter().copied().collect() // Fortran-ordered file
    }
}

/// A batch of configurations read for a target of dimension `dim`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `[n, dim]` row-major.
    pub data: Vec<f32>,
    /// Number of configurations.
    pub n: usize,
    /// The file's shape (to write outputs with the same layout).
    pub shape: Vec<usize>,
    /// The file's element type before conversion.
    pub dtype: &'static str,
}

/// Read a batch of configurations: shape `[N, dim]`, or `[N, n_particles, spatial_dim]` for a
/// particle target. Rejects other shapes and non-finite values with an error naming the first
/// offending configuration.
pub fn read_batch(path: &Path, dim: usize, particles: Option<ParticleShape>) -> Result<Batch> {
    let arr = read(path)?;
    let ok = match arr.shape.as_slice() {
        [_, d] => *d == dim,
        [_, n, d] => particles.is_some_and(|p| p.n_particles == *n && p.spatial_dim == *d),
        _ => false,
    };
    if !ok {
        let expect = match particles {
            Some(p) => format!("[N, {dim}] or [N, {}, {}]", p.n_particles, p.spatial_dim),
            None => format!("[N, {dim}]"),
        };
        return Err(npy_err(
            path,
            format!("has shape {:?}, expected {expect}", arr.shape),
        ));
    }
    let n = arr.shape[0];
    if let Some(i) = arr.data.iter().position(|v| !v.is_finite()) {
        return Err(npy_err(
            path,
            format!(
                "configuration {} contains a non-finite value ({})",
                i / dim,
                arr.data[i]
            ),
        ));
    }
    Ok(Batch {
        data: arr.data,
        n,
        shape: arr.shape,
        dtype: arr.dtype,
    })
}

/// Write `data` with `shape` as a float32 `.npy` file, atomically.
pub fn write(path: &Path, data: &[f32], shape: &[usize]) -> Result<()> {
    if shape.iter().product::<usize>() != data.len() {
        return Err(Error::Shape(format!(
            "{} values do not fill shape {shape:?}",
            data.len()
        )));
    }
    let arr = ArrayD::from_shape_vec(IxDyn(shape), data.to_vec())
        .map_err(|e| Error::Shape(e.to_string()))?;
    let mut buf = Vec::with_capacity(data.len() * 4 + 128);
    arr.write_npy(&mut buf)
        .map_err(|e| npy_err(path, format!("cannot encode: {e}")))?;
    write_atomic(path, &buf)
}

/// A temporary file name next to `path` (same folder, so a rename is atomic), or `None` if
/// `path` names no file.
pub fn temporary_sibling(path: &Path) -> Option<PathBuf> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name()?;
    Some(dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Write bytes to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_sibling(path).ok_or_else(|| npy_err(path, "is not a file path"))?;
    fs::write(&tmp, bytes).map_err(|e| npy_err(path, format!("cannot write: {e}")))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        npy_err(path, format!("cannot move into place: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_shape_checks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
        write(&p, &data, &[3, 8]).unwrap();
        let b = read_batch(&p, 8, None).unwrap();
        assert_eq!((b.n, b.data.clone(), b.dtype), (3, data.clone(), "float32"));
        let dw = ParticleShape {
            n_particles: 4,
            spatial_dim: 2,
        };
        write(&p, &data, &[3, 4, 2]).unwrap();
        assert_eq!(read_batch(&p, 8, Some(dw)).unwrap().data, data);
        let err = read_batch(&p, 8, None).unwrap_err().to_string();
        assert!(
            err.contains("shape [3, 4, 2]") && err.contains("[N, 8]"),
            "{err}"
        );
        write(&p, &data, &[4, 6]).unwrap();
        assert!(read_batch(&p, 8, Some(dw))
            .unwrap_err()
            .to_string()
            .contains("expected [N, 8] or [N, 4, 2]"));
        assert!(write(&p, &data, &[5, 5]).is_err());
    }

    #[test]
    fn float64_is_converted_and_integers_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let a = ndarray::Array2::<f64>::from_shape_fn((2, 2), |(i, j)| (i * 2 + j) as f64 + 0.25);
        let mut buf = Vec::new();
        a.write_npy(&mut buf).unwrap();
        fs::write(&p, &buf).unwrap();
        let b = read_batch(&p, 2, None).unwrap();
        assert_eq!((b.data, b.dtype), (vec![0.25, 1.25, 2.25, 3.25], "float64"));
        let ints = ndarray::Array2::<i64>::zeros((2, 2));
        let mut buf = Vec::new();
        ints.write_npy(&mut buf).unwrap();
        fs::write(&p, &buf).unwrap();
        let err = read(&p).unwrap_err().to_string();
        assert!(
            err.contains("unsupported element type") && err.contains("x.npy"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_truncated_and_nonfinite_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        fs::write(&p, b"definitely not numpy").unwrap();
        assert!(read(&p)
            .unwrap_err()
            .to_string()
            .contains("not a valid .npy"));
        write(&p, &[1.0; 16], &[2, 8]).unwrap();
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("truncated"));
        let mut v = vec![1.0f32; 16];
        v[9] = f32::NAN;
        write(&p, &v, &[2, 8]).unwrap();
        let err = read_batch(&p, 8, None).unwrap_err().to_string();
        assert!(
            err.contains("configuration 1") && err.contains("NaN"),
            "{err}"
        );
        assert!(read(&dir.path().join("missing.npy"))
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
    }
}
