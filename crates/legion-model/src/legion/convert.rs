//! `legion convert`'s core: a GLaMM / LEGION checkpoint (any layout the loader reads), an
//! optional separate CLIP file and an optional PEFT adapter, written as a native folder one
//! tensor at a time ([`crate::weights::stream`]).
//!
//! The result is the folder [`save_native`](super::save_native) writes after a
//! [`Legion::load_glamm_with`](super::Legion::load_glamm_with) (+
//! [`merge_peft_adapter`](super::Legion::merge_peft_adapter)): the same tensors, names, dtypes
//! and header, checked by the same strict rules; but the model is never in memory, so peak
//! memory stays about one tensor whatever the model size.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::store::bridge;
use burn::tensor::Device;

use super::{
    ClipWeights, LegionConfig, LegionError, NativeFiles, glamm_allowances, glamm_legion_remaps,
    write_native_tensors,
};
use crate::clip_vision::ClipCheckpointLayout;
use crate::weights::stream::StreamPlan;
use crate::weights::{
    AdapterReport, Allowances, CheckpointSource, LoadOptions, LoadReport, PeftAdapter, RemapTable,
};

/// Called with `(bytes written, bytes in total)` as tensors are written.
pub type ByteProgress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// What to convert, and how.
pub struct ConvertRequest<'a> {
    /// The GLaMM / LEGION checkpoint (file, HF folder, index).
    pub checkpoint: &'a Path,
    /// Where CLIP's weights are.
    pub clip: ClipWeights<'a>,
    /// A PEFT LoRA adapter to merge.
    pub adapter: Option<&'a Path>,
    /// The user's allowances (on top of the GLaMM / LEGION defaults).
    pub allow: &'a Allowances,
    /// Load options: dtype policy, top-level key, per-file progress while headers are read.
    pub options: LoadOptions<'a>,
    /// Output folder.
    pub out: &'a Path,
    /// `legion.<key>` entries of the `.bpk` header.
    pub metadata: &'a BTreeMap<String, String>,
    /// Replace existing output files.
    pub overwrite: bool,
    /// Progress while writing.
    pub progress: Option<ByteProgress>,
}

/// What [`convert_glamm_to_native`] did.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    /// The checkpoint (and CLIP file) as the loader would report them.
    pub load: LoadReport,
    /// The adapter merge, if any.
    pub adapter: Option<AdapterReport>,
    /// The files written.
    pub files: NativeFiles,
    /// Parameters written.
    pub parameters: usize,
    /// Bytes of tensor data written.
    pub bytes: u64,
}

/// Converts a GLaMM / LEGION checkpoint to a native folder without building the model's
/// weights (see the module docs).
///
/// # Errors
/// As [`super::Legion::load_glamm_with`] and [`super::Legion::merge_peft_adapter`] (every
/// check happens before anything is written), and [`crate::weights::WeightsError::Write`] when
/// writing fails.
pub fn convert_glamm_to_native(
    config: &LegionConfig,
    request: &ConvertRequest<'_>,
) -> Result<ConvertReport, LegionError> {
    // Parameters stay lazy: only their paths, shapes and dtypes are read.
    let module = config.init(&Device::flex())?;
    let mut plan = StreamPlan::new(&module, request.options.float_dtype)?;
    drop(module);

    let allow = glamm_allowances(&request.clip, request.allow);
    let source = CheckpointSource::resolve(request.checkpoint)?;
    let remaps = RemapTable::new(&glamm_legion_remaps())?;
    let mut load = plan.add_source(&source, &remaps, "", &allow, &request.options)?;
    if let ClipWeights::HfFile(clip_path) = request.clip {
        let layout = ClipCheckpointLayout::HfClip;
        let clip_source = CheckpointSource::resolve(clip_path)?;
        let clip_report = plan.add_source(
            &clip_source,
            &RemapTable::new(layout.remaps())?,
            "vision_tower.",
            &layout.allowances(),
            &request.options,
        )?;
        load.absorb(clip_report, "vision_tower.");
    }
    let adapter = match request.adapter {
        Some(path) => {
            let adapter = PeftAdapter::open(path)?;
            Some(plan.add_adapter(&adapter, &remaps, &request.options)?)
        }
        None => None,
    };

    let parameters = plan.parameters();
    let bytes = plan.bytes();
    let mut tensors = plan.into_tensors();
    if let Some(progress) = &request.progress {
        let written = Arc::new(AtomicU64::new(0));
        tensors = tensors
            .into_iter()
            .map(|tensor| {
                let (name, dtype, shape) =
                    (tensor.name.clone(), tensor.dtype, tensor.shape.clone());
                let (progress, written) = (Arc::clone(progress), Arc::clone(&written));
                let size = tensor.byte_len() as u64;
                bridge::map_data(tensor, name, dtype, shape, move |data| {
                    progress(written.fetch_add(size, Ordering::Relaxed) + size, bytes);
                    data
                })
            })
            .collect();
    }
    let files = write_native_tensors(
        tensors,
        config,
        request.out,
        request.metadata,
        request.overwrite,
    )?;
    tracing::info!(
        out = %request.out.display(),
        parameters,
        bytes,
        "checkpoint converted"
    );
    Ok(ConvertReport {
        load,
        adapter,
        files,
        parameters,
        bytes,
    })
}
