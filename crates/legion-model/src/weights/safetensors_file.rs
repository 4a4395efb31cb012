//! safetensors files read tensor by tensor with positioned reads, not a memory map.
//!
//! burn-store's `SafetensorsStore` maps the whole file. Every page a load or conversion
//! touches then stays in the process's resident set until the last tensor of that file is
//! dropped, so streaming a 14 GB shard through `legion convert` would still show 14 GB of
//! RSS. Here the header is parsed once and each tensor's bytes are read with `pread` only
//! when its data is drawn, and freed once used.
//!
//! Format (<https://github.com/huggingface/safetensors/tree/v0.4.5#format>): an 8-byte
//! little-endian header length `N`, `N` bytes of JSON
//! `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}}`, then the
//! data section; offsets are relative to its start. Every entry is checked against the file
//! before any data is read: a truncated file fails here, naming the tensor that lies past its
//! end.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use burn::store::bridge;
use burn::store::burn_pack::{Error as PackError, Tensor as PackTensor};
use burn::tensor::{BoolStore, DType, TensorData};

use super::WeightsError;

/// The format's own bound on the header (safetensors `MAX_HEADER_SIZE`).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One header entry.
#[derive(serde::Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// Reads the header of the safetensors file at `path` and returns its tensors with their data
/// still on disk, in file order.
///
/// # Errors
/// [`WeightsError::Read`] ("not a readable safetensors file") when the file cannot be opened,
/// its header is not the format's, a dtype is unknown, an entry's byte range disagrees with
/// its dtype and shape, or the data section ends before a tensor does (a truncated file).
pub(crate) fn read_lazy(path: &Path) -> Result<Vec<PackTensor>, WeightsError> {
    let unreadable = |message: String| WeightsError::Read {
        path: path.to_path_buf(),
        what: "not a readable safetensors file",
        source: message.into(),
    };
    let file = File::open(path).map_err(|e| WeightsError::Read {
        path: path.to_path_buf(),
        what: "not a readable safetensors file",
        source: Box::new(e),
    })?;
    let file_len = file
        .metadata()
        .map_err(|e| unreadable(format!("cannot stat the file: {e}")))?
        .len();
    let mut length = [0u8; 8];
    file.read_exact_at(&mut length, 0)
        .map_err(|_| unreadable(format!("{file_len} bytes: too short for a header")))?;
    let header_len = u64::from_le_bytes(length);
    if header_len > MAX_HEADER_BYTES || header_len + 8 > file_len {
        return Err(unreadable(format!(
            "the header claims {header_len} bytes, the file has {file_len}"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8)
        .map_err(|e| unreadable(format!("cannot read the header: {e}")))?;
    let mut entries: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header)
            .map_err(|e| unreadable(format!("the header is not a JSON object: {e}")))?;
    entries.remove("__metadata__");
    let data_start = 8 + header_len;
    let data_len = file_len - data_start;

    let file = Arc::new(file);
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        let entry: Entry = serde_json::from_value(value)
            .map_err(|e| unreadable(format!("tensor `{name}`: malformed header entry: {e}")))?;
        let dtype = dtype_of(&entry.dtype)
            .ok_or_else(|| unreadable(format!("tensor `{name}`: unknown dtype {}", entry.dtype)))?;
        let [begin, end] = entry.data_offsets;
        let elements: Option<u64> = entry
            .shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64));
        let expected = elements.and_then(|n| n.checked_mul(dtype.size() as u64));
        if begin > end || expected != Some(end - begin) {
            return Err(unreadable(format!(
                "tensor `{name}`: bytes {begin}..{end} do not hold a {} tensor of shape {:?}",
                entry.dtype, entry.shape
            )));
        }
        if end > data_len {
            return Err(unreadable(format!(
                "tensor `{name}` ends at data byte {end}, but the file holds only {data_len} \
                 bytes of data (truncated?)"
            )));
        }
        let file = Arc::clone(&file);
        let shape = entry.shape.clone();
        let (offset, len) = (data_start + begin, (end - begin) as usize);
        let tensor_name = name.clone();
        let shown = path.display().to_string();
        tensors.push((
            begin,
            bridge::deferred(name, dtype, entry.shape.into(), None, move || {
                let mut bytes = vec![0u8; len];
                file.read_exact_at(&mut bytes, offset).map_err(|e| {
                    PackError::IoError(format!(
                        "reading tensor `{tensor_name}` ({len} bytes at {offset}) of {shown}: {e}"
                    ))
                })?;
                Ok(TensorData::from_bytes_vec(bytes, shape.clone(), dtype))
            }),
        ));
    }
    // File order: reads then move forward through the file.
    tensors.sort_by_key(|(begin, _)| *begin);
    Ok(tensors.into_iter().map(|(_, t)| t).collect())
}

/// burn's dtype for a safetensors dtype name (as burn-store maps them).
fn dtype_of(name: &str) -> Option<DType> {
    Some(match name {
        "F64" => DType::F64,
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I64" => DType::I64,
        "I32" => DType::I32,
        "I16" => DType::I16,
        "I8" => DType::I8,
        "U64" => DType::U64,
        "U32" => DType::U32,
        "U16" => DType::U16,
        "U8" => DType::U8,
        "BOOL" => DType::Bool(BoolStore::Native),
        _ => return None,
    })
}
