//! Export of a [`Legion`] back to one safetensors file in the GLaMM / LEGION reference naming
//! and PyTorch layout, for Python (`LegionForCausalLM.load_state_dict`, `safetensors.torch
//! .load_file`).
//!
//! [`GLAMM_LEGION_EXPORT_REMAP`] is the inverse of [`glamm_legion_remaps`] on the model's
//! parameters; [`export_glamm_safetensors`] checks that inverse for every tensor it writes (the
//! exported key, read back through the import table, names the same parameter), so the file
//! always loads back with [`Legion::load_glamm`]. Linear weights are transposed back to
//! `[out, in]`, norm `gamma`/`beta` renamed `weight`/`bias` (burn's `BurnToPyTorchAdapter`).
//!
//! Not written: `model.region_encoder.*` (GLaMM's box encoder, not part of [`Legion`]) and the
//! CLIP `position_ids` buffer, which [`Legion::load_glamm`] ignores on the way in; a Python
//! load of the export therefore needs `strict=False` for those, or the original's values.
//!
//! ```text
//! legion export MODEL_DIR --out legion.safetensors
//! /work/venv/bin/python scripts/check_export.py ORIGINAL.safetensors legion.safetensors
//! ```

use std::path::{Path, PathBuf};

use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::FloatDType;

use super::{Legion, glamm_legion_remaps};
use crate::clip_vision::{clip_tower_export_remap, glamm_clip_prefix};
use crate::weights::dtype::ExportAdapter;
use crate::weights::{KeyRemap, RemapTable, WeightsError};

/// burn field paths of [`Legion`] -> GLaMM / LEGION reference keys, applied in order (each
/// rule on the result of the previous one, like the import tables).
pub const GLAMM_LEGION_EXPORT_REMAP: &[KeyRemap] = clip_tower_export_remap!(
    // HF CLIP inside GLaMM's CLIPVisionTower (the names from the one CLIP key table).
    r"vision_tower\.", glamm_clip_prefix!(key);
    [
        // SAM `Sequential` indices (inverse of SAM_REMAP), under any prefix.
        (
            r"(^|\.)image_encoder\.neck\.conv1\.",
            "${1}image_encoder.neck.0.",
        ),
        (
            r"(^|\.)image_encoder\.neck\.norm1\.",
            "${1}image_encoder.neck.1.",
        ),
        (
            r"(^|\.)image_encoder\.neck\.conv2\.",
            "${1}image_encoder.neck.2.",
        ),
        (
            r"(^|\.)image_encoder\.neck\.norm2\.",
            "${1}image_encoder.neck.3.",
        ),
        (
            r"(^|\.)prompt_encoder\.mask_downscaling\.conv1\.",
            "${1}prompt_encoder.mask_downscaling.0.",
        ),
        (
            r"(^|\.)prompt_encoder\.mask_downscaling\.norm1\.",
            "${1}prompt_encoder.mask_downscaling.1.",
        ),
        (
            r"(^|\.)prompt_encoder\.mask_downscaling\.conv2\.",
            "${1}prompt_encoder.mask_downscaling.3.",
        ),
        (
            r"(^|\.)prompt_encoder\.mask_downscaling\.norm2\.",
            "${1}prompt_encoder.mask_downscaling.4.",
        ),
        (
            r"(^|\.)prompt_encoder\.mask_downscaling\.conv3\.",
            "${1}prompt_encoder.mask_downscaling.6.",
        ),
        (
            r"(^|\.)mask_decoder\.output_upscaling\.conv_transpose1\.",
            "${1}mask_decoder.output_upscaling.0.",
        ),
        (
            r"(^|\.)mask_decoder\.output_upscaling\.norm\.",
            "${1}mask_decoder.output_upscaling.1.",
        ),
        (
            r"(^|\.)mask_decoder\.output_upscaling\.conv_transpose2\.",
            "${1}mask_decoder.output_upscaling.3.",
        ),
        (r"^grounding_encoder\.", "model.grounding_encoder.")
    ];
    [
        (r"^mm_projector\.fc1\.", "model.mm_projector.0."),
        (r"^mm_projector\.fc2\.", "model.mm_projector.2."),
        (r"^text_hidden_fcs\.fc1\.", "model.text_hidden_fcs.0.0."),
        (r"^text_hidden_fcs\.fc2\.", "model.text_hidden_fcs.0.2."),
        (r"^llm\.lm_head\.", "lm_head."),
        (r"^llm\.", "model.")
    ]
);

/// How [`export_glamm_safetensors`] writes.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Leave out the CLIP tower (`model.vision_tower.*`), as GLaMM's merged checkpoints do.
    pub skip_vision_tower: bool,
    /// Cast every float tensor to this dtype (default: keep the model's).
    pub float_dtype: Option<FloatDType>,
    /// Replace an existing file.
    pub overwrite: bool,
}

/// What [`export_glamm_safetensors`] wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The file.
    pub path: PathBuf,
    /// Reference keys written, sorted.
    pub keys: Vec<String>,
}

fn skip_vision_tower(path: &str, _container: &str) -> bool {
    !path.starts_with("vision_tower.")
}

/// Writes `model` as one safetensors file in the GLaMM / LEGION naming and PyTorch layout
/// (`metadata = {"format": "pt"}`, as `save_pretrained` writes).
///
/// # Errors
/// [`WeightsError::Source`] when the file exists and `overwrite` is off, or the reverse table
/// does not invert the import table for some parameter (a bug: the message names it);
/// [`WeightsError::Write`] when writing fails.
pub fn export_glamm_safetensors(
    model: &Legion,
    path: &Path,
    options: &ExportOptions,
) -> Result<ExportReport, WeightsError> {
    let io_error = |message: String| WeightsError::Source {
        path: path.to_path_buf(),
        message,
    };
    if path.exists() && !options.overwrite {
        return Err(io_error(
            "the file exists (pass overwrite to replace it)".into(),
        ));
    }
    let export = RemapTable::new(GLAMM_LEGION_EXPORT_REMAP)?;
    let import = RemapTable::new(&glamm_legion_remaps())?;
    let adapter = ExportAdapter {
        dtype: options.float_dtype.map(Into::into),
    };
    // Names after the adapter (norms as weight/bias), before any data is read.
    let mut keys = Vec::new();
    let mut broken = Vec::new();
    for tensor in model.collect(None, Some(Box::new(adapter.clone())), true) {
        if options.skip_vision_tower && !skip_vision_tower(&tensor.name, "") {
            continue;
        }
        let key = export.apply(&tensor.name);
        let back = import.apply(&key);
        if back != tensor.name {
            broken.push(format!("{} -> {key} -> {back}", tensor.name));
        }
        keys.push(key);
    }
    if !broken.is_empty() {
        return Err(io_error(format!(
            "the export table does not invert the import table for: {}",
            crate::weights::list(&broken)
        )));
    }
    keys.sort();
    if keys.windows(2).any(|w| w[0] == w[1]) {
        return Err(io_error("two parameters export to the same key".into()));
    }

    let mut store = SafetensorsStore::from_file(path)
        .with_to_adapter(adapter)
        .skip_enum_variants(true)
        .metadata("format", "pt")
        .overwrite(options.overwrite);
    for (from, to) in GLAMM_LEGION_EXPORT_REMAP {
        // Constant patterns, compiled above by `RemapTable::new`.
        store = store.with_key_remapping(*from, *to);
    }
    if options.skip_vision_tower {
        store = store.with_predicate(skip_vision_tower);
    }
    model
        .save_into(&mut store)
        .map_err(|e| WeightsError::Write {
            path: path.to_path_buf(),
            what: "cannot write safetensors",
            source: Box::new(e),
        })?;
    tracing::debug!(path = %path.display(), tensors = keys.len(), "GLaMM safetensors exported");
    Ok(ExportReport {
        path: path.to_path_buf(),
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::store::BurnToPyTorchAdapter;
    use burn::tensor::Device;

    use crate::legion::LegionConfig;

    #[test]
    fn export_table_inverts_the_import_table_on_every_parameter() {
        let model = LegionConfig::fixture().init(&Device::flex()).unwrap();
        let export = RemapTable::new(GLAMM_LEGION_EXPORT_REMAP).unwrap();
        let import = RemapTable::new(&glamm_legion_remaps()).unwrap();
        let tensors = model.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true);
        assert!(tensors.len() > 100, "{}", tensors.len());
        for tensor in tensors {
            let key = export.apply(&tensor.name);
            assert_eq!(import.apply(&key), tensor.name, "{key}");
        }
        assert_eq!(
            export.apply("grounding_encoder.mask_decoder.output_upscaling.conv_transpose2.bias"),
            "model.grounding_encoder.mask_decoder.output_upscaling.3.bias"
        );
        assert_eq!(
            export.apply("vision_tower.pre_layernorm.weight"),
            "model.vision_tower.vision_tower.vision_model.pre_layrnorm.weight"
        );
        assert_eq!(
            export.apply("vision_tower.layers.0.mlp.fc1.weight"),
            "model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"
        );
        assert_eq!(
            export.apply("vision_tower.embeddings.patch_embedding.weight"),
            "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight"
        );
        assert_eq!(export.apply("llm.lm_head.weight"), "lm_head.weight");
        assert_eq!(
            export.apply("llm.layers.1.self_attn.q_proj.weight"),
            "model.layers.1.self_attn.q_proj.weight"
        );
        // The SAM part has one inverse rule per import rule.
        assert_eq!(
            GLAMM_LEGION_EXPORT_REMAP
                .iter()
                .filter(|(from, _)| from.starts_with("(^|"))
                .count(),
            crate::sam::SAM_REMAP.len()
        );
    }
}
