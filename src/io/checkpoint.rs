//! Checkpoints: one safetensors file holding the network, optimiser, EMA, replay buffer and the
//! run's counters, written atomically (temporary file + rename) so a kill never leaves a torn file.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

fn io_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Write `tensors` to `path` atomically.
pub fn save(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<()> {
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    let tmp =
        super::npy::temporary_sibling(path).ok_or_else(|| io_err(path, "is not a file path"))?;
    candle_core::safetensors::save(&map, &tmp)
        .map_err(|e| io_err(path, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path, format!("cannot move into place: {e}"))
    })
}

/// Read every tensor of a checkpoint.
pub fn load(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device)
        .map_err(|e| io_err(path, format!("cannot read checkpoint: {e}")))
}

/// A scalar stored as a one-element f64 tensor.
pub fn scalar(name: &str, v: f64) -> Result<(String, Tensor)> {
    Ok((name.to_string(), Tensor::new(&[v], &Device::Cpu)?))
}

/// Read back a [`scalar`].
pub fn get_scalar(t: &HashMap<String, Tensor>, name: &str) -> Result<f64> {
    let v = t
        .get(name)
        .ok_or_else(|| Error::Config(format!("checkpoint has no `{name}`")))?;
    Ok(v.flatten_all()?.to_vec1::<f64>()?[0])
}
