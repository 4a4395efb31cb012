//! Debug entry points: run one component of LEGION on a `.npy` input and write its output as
//! `.npy`, to compare with the PyTorch reference outside the test suite
//! (`legion debug forward <component> --checkpoint DIR --input IN.npy --output OUT.npy`).
//!
//! A checkpoint directory holds `config.json` and the weights in the reference naming, in any
//! layout `legion convert` reads (sharded safetensors or `.bin` with an index,
//! `model.safetensors`, `pytorch_model.bin`, or the folder's only `.safetensors`/`.bin`/`.pt`/
//! `.pth`/`.ckpt` file; [`find_weights`]):
//!
//! | component | `config.json` | weights | inputs -> output |
//! |---|---|---|---|
//! | `clip-vision` | HF `CLIPVisionConfig` (or a `CLIPConfig` with `vision_config`) | HF CLIP (`vision_model.*`) | pixels `[B,3,S,S]` -> patch features of hidden state -2 `[B,N,C]` (LLaVA/LEGION image features, CLS dropped) |
//! | `llama` | HF `LlamaConfig` | HF `LlamaForCausalLM` | ids `[B,T]` (int), optional attention mask `[B,T]` -> logits `[B,T,V]` |
//! | `sam-image-encoder` | SAM config (below) | original SAM checkpoint naming | pixels `[B,3,1024,1024]` (normalised, padded) -> embeddings `[B,256,64,64]` |
//! | `sam-mask-decoder` | SAM config | original SAM naming | image embedding `[1,C,h,w]`, optional `[SEG]`/text embeddings `[n,C]` -> low-res mask logits `[n,1,4h,4w]` (single-mask output, LEGION's prompt: sparse = text, dense = no-mask; without text: one prompt-free mask) |
//! | `legion` | burn JSON of [`LegionConfig`] | GLaMM/LEGION combined naming; CLIP from `clip.safetensors` (HF naming) when that file exists | CLIP pixels `[B,3,S,S]`, ids `[B,T]` with one -200 per row, optional mask `[B,T]` -> logits `[B,T+N-1,V]` |
//!
//! SAM `config.json`: either `{"variant": "vit_h" | "vit_l" | "vit_b"}` (the released SAMs), or
//! segment-anything's `_build_sam` parameters (`{"encoder_embed_dim": 1280, "encoder_depth": 32,
//! "encoder_num_heads": 16, "encoder_global_attn_indexes": [7, 15, 23, 31]}`, optionally
//! `prompt_embed_dim`, `image_size`, `vit_patch_size`), or the burn JSON of [`SamConfig`] (what
//! `SamConfig::save` writes):
//! `{"image_encoder": {"img_size", "patch_size", "embed_dim", "depth", "num_heads",
//! "global_attn_indexes", "window_size", "out_chans", ...}, "prompt_encoder": {"embed_dim",
//! "image_embedding_size", "input_image_size", "mask_in_chans"}, "mask_decoder":
//! {"transformer_dim", "transformer": {"depth", "embedding_dim", "num_heads", "mlp_dim"}, ...}}`;
//! fields with defaults may be left out.
//!
//! Float inputs may be f32 or f64 (computed in f32); id inputs i64 or i32. Outputs are f32.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::config::Config;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::clip_vision::{
    ClipActivation, ClipCheckpointLayout, ClipVisionConfig, load_clip_vision,
};
use crate::legion::{ClipWeights, LegionConfig, LegionError};
use crate::llama::LlamaConfig;
use crate::sam::{
    Sam, SamConfig, SamImageEncoderConfig, SamMaskDecoderConfig, SamPromptEncoderConfig,
    SamPrompts, TwoWayTransformerConfig,
};
use crate::weights::CheckpointSource;
use crate::weights::WeightsError;

/// The components [`debug_forward`] can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugComponent {
    /// CLIP vision tower (hidden state -2 patch features).
    ClipVision,
    /// LLaMA LM (logits).
    Llama,
    /// SAM image encoder.
    SamImageEncoder,
    /// SAM prompt encoder + mask decoder with LEGION's text prompts.
    SamMaskDecoder,
    /// The multimodal LLM of LEGION (logits over the spliced sequence).
    Legion,
}

impl DebugComponent {
    /// Every component, in CLI order.
    pub const ALL: [Self; 5] = [
        Self::ClipVision,
        Self::Llama,
        Self::SamImageEncoder,
        Self::SamMaskDecoder,
        Self::Legion,
    ];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClipVision => "clip-vision",
            Self::Llama => "llama",
            Self::SamImageEncoder => "sam-image-encoder",
            Self::SamMaskDecoder => "sam-mask-decoder",
            Self::Legion => "legion",
        }
    }
}

impl fmt::Display for DebugComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DebugComponent {
    type Err = DebugError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| DebugError::UnknownComponent(s.to_string()))
    }
}

/// Errors of the debug entry points.
#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    /// Not one of [`DebugComponent::ALL`].
    #[error(
        "unknown component `{0}` (expected clip-vision, llama, sam-image-encoder, sam-mask-decoder or legion)"
    )]
    UnknownComponent(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A `.npy` file's header or data cannot be read.
    #[error("{path}: not a readable .npy file: {source}")]
    NpyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A `.npy` file has an unsupported dtype or rank.
    #[error("{path}: {message}")]
    Npy { path: PathBuf, message: String },
    /// `config.json` is not JSON (or not JSON of the config's schema).
    #[error("config {path}: {source}")]
    ConfigJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// `config.json` is missing fields or unsupported.
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    /// `config.json` holds a value no component can be built from.
    #[error("config {path}: {source}")]
    ConfigInvalid {
        path: PathBuf,
        #[source]
        source: crate::config_check::InvalidConfig,
    },
    /// An HF LLaMA `config.json` cannot be read.
    #[error("config {path}: {source}")]
    LlamaConfig {
        path: PathBuf,
        #[source]
        source: Box<crate::llama::LlamaError>,
    },
    /// A burn `LegionConfig` JSON cannot be read.
    #[error("config {path}: {source}")]
    LegionConfig {
        path: PathBuf,
        #[source]
        source: burn::config::ConfigError,
    },
    /// Wrong number of inputs for the component.
    #[error("{component} takes {expected} input file(s), got {got}")]
    Inputs {
        component: DebugComponent,
        expected: &'static str,
        got: usize,
    },
    /// Loading weights failed.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// An input does not fit the model (a shape, an id outside the vocabulary).
    #[error("{component}: {message}")]
    Model {
        component: DebugComponent,
        message: String,
    },
    /// The CLIP vision tower rejected the input.
    #[error("clip-vision: {0}")]
    ClipVision(#[source] crate::clip_vision::ClipVisionError),
    /// The LLaMA weights do not load.
    #[error("llama: {0}")]
    Llama(#[source] Box<crate::llama::LlamaError>),
    /// The LEGION model failed to build, load or run.
    #[error("legion: {0}")]
    Legion(#[source] Box<LegionError>),
    /// The output tensor could not be read back from the device.
    #[error("{component}: reading the output: {source}")]
    Readback {
        component: DebugComponent,
        #[source]
        source: Box<burn::tensor::DataError>,
    },
}

/// A `.npy` array read as f32 or i64.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray<T> {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<T>,
}

fn open_npy(path: &Path) -> Result<npyz::NpyFile<std::io::BufReader<std::fs::File>>, DebugError> {
    let file = std::fs::File::open(path).map_err(|source| DebugError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    npyz::NpyFile::new(std::io::BufReader::new(file)).map_err(|source| DebugError::NpyRead {
        path: path.to_path_buf(),
        source,
    })
}

fn type_str(npy: &npyz::NpyFile<std::io::BufReader<std::fs::File>>) -> String {
    match npy.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => other.descr(),
    }
}

/// Reads a float `.npy` (little-endian f32 or f64) as f32.
///
/// # Errors
/// [`DebugError::Io`] / [`DebugError::NpyRead`] when unreadable, [`DebugError::Npy`] for
/// another dtype.
pub fn read_npy_f32(path: &Path) -> Result<NpyArray<f32>, DebugError> {
    let npy = open_npy(path)?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let dtype = type_str(&npy);
    let err = |message: String| DebugError::Npy {
        path: path.to_path_buf(),
        message,
    };
    let unreadable = |source| DebugError::NpyRead {
        path: path.to_path_buf(),
        source,
    };
    let data = match dtype.as_str() {
        "<f4" => npy.into_vec::<f32>().map_err(unreadable)?,
        "<f8" => npy
            .into_vec::<f64>()
            .map_err(unreadable)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        other => return Err(err(format!("dtype {other}, expected <f4 or <f8"))),
    };
    Ok(NpyArray { shape, data })
}

/// Reads an integer `.npy` (little-endian i64 or i32) as i64.
///
/// # Errors
/// [`DebugError::Io`] / [`DebugError::NpyRead`] when unreadable, [`DebugError::Npy`] for
/// another dtype.
pub fn read_npy_i64(path: &Path) -> Result<NpyArray<i64>, DebugError> {
    let npy = open_npy(path)?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let dtype = type_str(&npy);
    let err = |message: String| DebugError::Npy {
        path: path.to_path_buf(),
        message,
    };
    let unreadable = |source| DebugError::NpyRead {
        path: path.to_path_buf(),
        source,
    };
    let data = match dtype.as_str() {
        "<i8" => npy.into_vec::<i64>().map_err(unreadable)?,
        "<i4" => npy
            .into_vec::<i32>()
            .map_err(unreadable)?
            .into_iter()
            .map(i64::from)
            .collect(),
        other => return Err(err(format!("dtype {other}, expected <i8 or <i4"))),
    };
    Ok(NpyArray { shape, data })
}

/// Writes an f32 `.npy`.
///
/// # Errors
/// [`DebugError::Io`] when the file cannot be written.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), DebugError> {
    use npyz::WriterBuilder;
    let io = |source: std::io::Error| DebugError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(file)
        .begin_nd()
        .map_err(io)?;
    writer.extend(data.iter().copied()).map_err(io)?;
    writer.finish().map_err(io)
}

fn float_tensor<const D: usize>(path: &Path, device: &Device) -> Result<Tensor<D>, DebugError> {
    let array = read_npy_f32(path)?;
    if array.shape.len() != D {
        return Err(DebugError::Npy {
            path: path.to_path_buf(),
            message: format!(
                "rank {} (shape {:?}), expected {D}",
                array.shape.len(),
                array.shape
            ),
        });
    }
    Ok(Tensor::from_data(
        TensorData::new(array.data, array.shape),
        device,
    ))
}

fn ids_array(path: &Path) -> Result<NpyArray<i64>, DebugError> {
    let array = read_npy_i64(path)?;
    if array.shape.len() != 2 {
        return Err(DebugError::Npy {
            path: path.to_path_buf(),
            message: format!("ids must be [B, T], got {:?}", array.shape),
        });
    }
    Ok(array)
}

/// The separate HF CLIP file a `legion` checkpoint directory may hold.
const CLIP_FILE: &str = "clip.safetensors";

/// The weights of a checkpoint directory, in every layout `legion convert` reads
/// ([`CheckpointSource::resolve`]: sharded safetensors or `.bin` with an index,
/// `model.safetensors`, `pytorch_model.bin`, a single `.pt`/`.pth`/`.ckpt`/`.safetensors`),
/// `clip.safetensors` aside: the index or the file to load.
///
/// # Errors
/// [`DebugError::Weights`] when there is none or the choice is ambiguous.
pub fn find_weights(dir: &Path) -> Result<PathBuf, DebugError> {
    let source = CheckpointSource::resolve_folder_excluding(dir, Some(CLIP_FILE))?;
    Ok(source.entry_file().to_path_buf())
}

/// [`DebugError::ConfigInvalid`] for the config file `path`.
fn config_invalid(path: &Path) -> impl FnOnce(crate::config_check::InvalidConfig) -> DebugError {
    move |source| DebugError::ConfigInvalid {
        path: path.to_path_buf(),
        source,
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value, DebugError> {
    let text = std::fs::read_to_string(path).map_err(|source| DebugError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| DebugError::ConfigJson {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads an HF CLIP `config.json` (`CLIPVisionConfig`, or `CLIPConfig` with `vision_config`).
///
/// # Errors
/// [`DebugError::Config`] when a field is missing or the activation is unsupported,
/// [`DebugError::ConfigJson`] when the file is not JSON, [`DebugError::ConfigInvalid`] for a
/// value no tower can be built from.
pub fn clip_config_from_hf_json(path: &Path) -> Result<ClipVisionConfig, DebugError> {
    let json = read_json(path)?;
    let vision = json.get("vision_config").unwrap_or(&json);
    let err = |message: String| DebugError::Config {
        path: path.to_path_buf(),
        message,
    };
    let field = |name: &str| -> Result<usize, DebugError> {
        vision
            .get(name)
            .and_then(serde_json::Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| err(format!("missing or non-integer field `{name}`")))
    };
    let mut config = ClipVisionConfig::new(
        field("image_size")?,
        field("patch_size")?,
        field("hidden_size")?,
        field("num_hidden_layers")?,
        field("num_attention_heads")?,
        field("intermediate_size")?,
    );
    if let Some(channels) = vision
        .get("num_channels")
        .and_then(serde_json::Value::as_u64)
    {
        config.num_channels = channels as usize;
    }
    if let Some(eps) = vision
        .get("layer_norm_eps")
        .and_then(serde_json::Value::as_f64)
    {
        config.layer_norm_eps = eps;
    }
    config.activation = match vision.get("hidden_act").and_then(|v| v.as_str()) {
        None | Some("quick_gelu") => ClipActivation::QuickGelu,
        Some("gelu") => ClipActivation::Gelu,
        Some(other) => return Err(err(format!("hidden_act `{other}` is not supported"))),
    };
    config.validate().map_err(config_invalid(path))?;
    Ok(config)
}

/// The burn SAM JSON's fields that have a default (`#[config(default)]`), per section: a file
/// may leave them out and gets [`SamConfig::vit_b`]'s, which are those defaults.
const SAM_DEFAULTED_FIELDS: [(&[&str], &[&str]); 3] = [
    (
        &["image_encoder"],
        &[
            "window_size",
            "out_chans",
            "in_chans",
            "mlp_ratio",
            "qkv_bias",
            "use_abs_pos",
            "use_rel_pos",
            "norm_eps",
        ],
    ),
    (
        &["mask_decoder"],
        &[
            "num_multimask_outputs",
            "iou_head_depth",
            "iou_head_hidden_dim",
        ],
    ),
    (
        &["mask_decoder", "transformer"],
        &["attention_downsample_rate", "norm_eps"],
    ),
];

/// segment-anything's `_build_sam` parameters (`build_sam.py`) and their defaults there
/// (`None`: required).
const SAM_BUILD_PARAMETERS: [(&str, Option<u64>); 7] = [
    ("encoder_embed_dim", None),
    ("encoder_depth", None),
    ("encoder_num_heads", None),
    ("encoder_global_attn_indexes", None),
    ("prompt_embed_dim", Some(256)),
    ("image_size", Some(1024)),
    ("vit_patch_size", Some(16)),
];

/// Reads a SAM `config.json`: `{"variant": "vit_h"|"vit_l"|"vit_b"}`, segment-anything's
/// build parameters (`{"encoder_embed_dim": 768, "encoder_depth": 12, "encoder_num_heads":
/// 12, "encoder_global_attn_indexes": [2, 5, 8, 11]}`, optionally `prompt_embed_dim`,
/// `image_size`, `vit_patch_size`), or the burn JSON of [`SamConfig`] with or without its
/// defaulted fields. The result is validated.
///
/// # Errors
/// [`DebugError::Config`] on an unknown variant or a missing or unknown build parameter,
/// [`DebugError::ConfigJson`] for a file that is not JSON or not burn JSON of [`SamConfig`],
/// [`DebugError::ConfigInvalid`] for a value no SAM can be built from.
pub fn sam_config_from_json(path: &Path) -> Result<SamConfig, DebugError> {
    let json = read_json(path)?;
    let err = |message: String| DebugError::Config {
        path: path.to_path_buf(),
        message,
    };
    let config = if let Some(variant) = json.get("variant") {
        match variant.as_str() {
            Some("vit_h") => SamConfig::vit_h(),
            Some("vit_l") => SamConfig::vit_l(),
            Some("vit_b") => SamConfig::vit_b(),
            other => return Err(err(format!("unknown SAM variant {other:?}"))),
        }
    } else if json.get("image_encoder").is_some() {
        let mut json = json;
        let defaults = serde_json::to_value(SamConfig::vit_b()).expect("plain config serialises");
        for (section, fields) in SAM_DEFAULTED_FIELDS {
            let pointer: String = section.iter().map(|s| format!("/{s}")).collect();
            let (Some(target), Some(default)) =
                (json.pointer_mut(&pointer), defaults.pointer(&pointer))
            else {
                continue;
            };
            if let Some(target) = target.as_object_mut() {
                for field in fields {
                    if !target.contains_key(*field) {
                        target.insert(field.to_string(), default[*field].clone());
                    }
                }
            }
        }
        serde_json::from_value(json).map_err(|source| DebugError::ConfigJson {
            path: path.to_path_buf(),
            source,
        })?
    } else {
        sam_from_build_parameters(&json).map_err(err)?
    };
    config.validate().map_err(config_invalid(path))?;
    Ok(config)
}

/// The SAM `_build_sam` builds from its parameters: ViT encoder with window 14, MLP ratio 4,
/// relative positions and LayerNorm eps 1e-6, output width = prompt width; prompt encoder with
/// 16 mask channels; mask decoder with 3 multimask outputs, a 2-layer two-way transformer
/// (8 heads, MLP 2048) and a 3-layer IoU head of 256.
fn sam_from_build_parameters(json: &serde_json::Value) -> Result<SamConfig, String> {
    let object = json
        .as_object()
        .ok_or("expected a JSON object".to_string())?;
    if let Some(unknown) = object
        .keys()
        .find(|k| !SAM_BUILD_PARAMETERS.iter().any(|(name, _)| name == k))
    {
        let names: Vec<&str> = SAM_BUILD_PARAMETERS.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "unknown field `{unknown}`: a SAM config.json is {{\"variant\": ..}}, the burn \
             SamConfig JSON (with \"image_encoder\"), or segment-anything's build parameters \
             ({})",
            names.join(", ")
        ));
    }
    let number = |name: &str| -> Result<usize, String> {
        let default = SAM_BUILD_PARAMETERS
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, d)| *d);
        match (object.get(name), default) {
            (Some(v), _) => v
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| format!("`{name}` must be a non-negative integer")),
            (None, Some(d)) => Ok(d as usize),
            (None, None) => Err(format!("missing field `{name}`")),
        }
    };
    let global_attn_indexes = object
        .get("encoder_global_attn_indexes")
        .ok_or("missing field `encoder_global_attn_indexes`".to_string())?
        .as_array()
        .and_then(|a| a.iter().map(|v| v.as_u64().map(|v| v as usize)).collect())
        .ok_or("`encoder_global_attn_indexes` must be a list of block indexes".to_string())?;
    let prompt_embed_dim = number("prompt_embed_dim")?;
    let image_size = number("image_size")?;
    let patch_size = number("vit_patch_size")?;
    if patch_size == 0 {
        return Err("`vit_patch_size` must be > 0".into());
    }
    let base = SamConfig::vit_b();
    Ok(SamConfig {
        image_encoder: SamImageEncoderConfig {
            img_size: image_size,
            patch_size,
            embed_dim: number("encoder_embed_dim")?,
            depth: number("encoder_depth")?,
            num_heads: number("encoder_num_heads")?,
            global_attn_indexes,
            out_chans: prompt_embed_dim,
            ..base.image_encoder
        },
        prompt_encoder: SamPromptEncoderConfig {
            embed_dim: prompt_embed_dim,
            image_embedding_size: [image_size / patch_size; 2],
            input_image_size: [image_size; 2],
            ..base.prompt_encoder
        },
        mask_decoder: SamMaskDecoderConfig {
            transformer_dim: prompt_embed_dim,
            transformer: TwoWayTransformerConfig {
                embedding_dim: prompt_embed_dim,
                ..base.mask_decoder.transformer
            },
            ..base.mask_decoder
        },
    })
}

fn expect_inputs(
    component: DebugComponent,
    inputs: &[PathBuf],
    range: std::ops::RangeInclusive<usize>,
    expected: &'static str,
) -> Result<(), DebugError> {
    if range.contains(&inputs.len()) {
        Ok(())
    } else {
        Err(DebugError::Inputs {
            component,
            expected,
            got: inputs.len(),
        })
    }
}

/// Runs `component` from `checkpoint_dir` on `inputs` (see the module table) and writes the
/// output to `output`; returns the output shape.
///
/// # Errors
/// [`DebugError`] for unreadable files, bad configs, weights that do not match, wrong input
/// counts, shapes or dtypes.
pub fn debug_forward(
    component: DebugComponent,
    checkpoint_dir: &Path,
    inputs: &[PathBuf],
    output: &Path,
    device: &Device,
) -> Result<Vec<usize>, DebugError> {
    let config_path = checkpoint_dir.join("config.json");
    let weights = find_weights(checkpoint_dir)?;
    let model_err = |message: String| DebugError::Model { component, message };
    let result: Tensor<4> = match component {
        DebugComponent::ClipVision => {
            expect_inputs(component, inputs, 1..=1, "1 (pixels)")?;
            let config = clip_config_from_hf_json(&config_path)?;
            let tower =
                load_clip_vision(config.init(device), &weights, ClipCheckpointLayout::HfClip)?;
            let features = tower
                .forward_features(float_tensor(&inputs[0], device)?, -2)
                .map_err(DebugError::ClipVision)?;
            features.patches.unsqueeze()
        }
        DebugComponent::Llama => {
            expect_inputs(component, inputs, 1..=2, "1 or 2 (ids, attention mask)")?;
            let config = LlamaConfig::from_hf_config_json(&config_path).map_err(|source| {
                DebugError::LlamaConfig {
                    path: config_path.clone(),
                    source: Box::new(source),
                }
            })?;
            let model = config
                .init(device)
                .load_hf_safetensors(&weights)
                .map_err(|e| DebugError::Llama(Box::new(e)))?;
            let ids = ids_array(&inputs[0])?;
            let vocab = config.vocab_size as i64;
            if let Some(bad) = ids.data.iter().find(|&&id| !(0..vocab).contains(&id)) {
                return Err(model_err(format!(
                    "token id {bad} outside the vocabulary of {vocab}"
                )));
            }
            let shape = [ids.shape[0], ids.shape[1]];
            let mask = match inputs.get(1) {
                Some(path) => {
                    let mask = ids_array(path)?;
                    if mask.shape != ids.shape {
                        return Err(model_err(format!(
                            "mask shape {:?} != ids shape {:?}",
                            mask.shape, ids.shape
                        )));
                    }
                    Some(Tensor::<2, Int>::from_data(
                        TensorData::new(mask.data, shape),
                        device,
                    ))
                }
                None => None,
            };
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.data, shape), device);
            model.forward(ids, mask, None).logits.unsqueeze()
        }
        DebugComponent::SamImageEncoder => {
            expect_inputs(component, inputs, 1..=1, "1 (pixels)")?;
            let config = sam_config_from_json(&config_path)?;
            let sam = Sam::load(&config, &weights, device)?;
            let pixels = float_tensor::<4>(&inputs[0], device)?;
            let img = sam.img_size();
            if pixels.dims()[1..] != [3, img, img] {
                return Err(model_err(format!(
                    "pixels {:?}, expected [B, 3, {img}, {img}]",
                    pixels.dims()
                )));
            }
            sam.image_encoder.forward(pixels)
        }
        DebugComponent::SamMaskDecoder => {
            expect_inputs(
                component,
                inputs,
                1..=2,
                "1 or 2 (image embedding, text embeddings)",
            )?;
            let config = sam_config_from_json(&config_path)?;
            let sam = Sam::load(&config, &weights, device)?;
            let embedding = float_tensor::<4>(&inputs[0], device)?;
            let dim = sam.prompt_encoder.embed_dim;
            let [gh, gw] = sam.prompt_encoder.image_embedding_size;
            if embedding.dims() != [1, dim, gh, gw] {
                return Err(model_err(format!(
                    "image embedding {:?}, expected [1, {dim}, {gh}, {gw}]",
                    embedding.dims()
                )));
            }
            let prompts = match inputs.get(1) {
                Some(path) => {
                    let text = float_tensor::<2>(path, device)?;
                    if text.dims()[1] != dim || text.dims()[0] == 0 {
                        return Err(model_err(format!(
                            "text embeddings {:?}, expected [n > 0, {dim}]",
                            text.dims()
                        )));
                    }
                    SamPrompts::text(text)
                }
                None => SamPrompts::default(),
            };
            let (sparse, dense) = sam.prompt_encoder.forward(prompts);
            let (masks, _) = sam.mask_decoder.forward(
                embedding,
                sam.prompt_encoder.get_dense_pe(),
                sparse,
                dense,
                false,
            );
            masks
        }
        DebugComponent::Legion => {
            expect_inputs(
                component,
                inputs,
                2..=3,
                "2 or 3 (CLIP pixels, ids, attention mask)",
            )?;
            let config =
                LegionConfig::load(&config_path).map_err(|source| DebugError::LegionConfig {
                    path: config_path.clone(),
                    source,
                })?;
            let clip_file = checkpoint_dir.join(CLIP_FILE);
            let clip = if clip_file.is_file() {
                ClipWeights::HfFile(&clip_file)
            } else {
                ClipWeights::InCheckpoint
            };
            let to_model = |e: LegionError| match e {
                LegionError::Weights(w) => DebugError::Weights(w),
                other => DebugError::Legion(Box::new(other)),
            };
            let model = config
                .init(device)
                .map_err(to_model)?
                .load_glamm(&weights, clip)
                .map_err(to_model)?;
            let pixels = float_tensor::<4>(&inputs[0], device)?;
            let ids = ids_array(&inputs[1])?;
            let mask = match inputs.get(2) {
                Some(path) => ids_array(path)?.data,
                None => vec![1; ids.data.len()],
            };
            let features = model.encode_images(pixels).map_err(to_model)?;
            let spliced = model
                .prepare_multimodal(features, &ids.data, &mask, None, ids.shape[1])
                .map_err(to_model)?;
            model
                .llm
                .forward_embeds(spliced.embeds, Some(spliced.attention_mask), None, None)
                .logits
                .unsqueeze()
        }
    };
    let dims = result.dims();
    // Drop the leading 1s added to fit every output into one rank.
    let rank = match component {
        DebugComponent::ClipVision | DebugComponent::Llama | DebugComponent::Legion => 3,
        DebugComponent::SamImageEncoder | DebugComponent::SamMaskDecoder => 4,
    };
    let shape = dims[4 - rank..].to_vec();
    let data: Vec<f32> = result
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|source| DebugError::Readback {
            component,
            source: Box::new(source),
        })?;
    write_npy_f32(output, &shape, &data)?;
    tracing::info!(%component, output = %output.display(), ?shape, "debug forward written");
    Ok(shape)
}
