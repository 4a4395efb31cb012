//! `legion convert` and `legion export`: checkpoints in and out.
//!
//! ```text
//! legion convert CHECKPOINT --out DIR [--preset legion-7b | --config config.json]
//!                [--clip CLIP.safetensors] [--adapter PEFT_DIR] [--tokenizer FILE|DIR]
//!                [--dtype f32|bf16|f16] [--allow-missing RE]... [--allow-unexpected RE]... [--force]
//! legion export MODEL_DIR --out FILE.safetensors [--no-clip] [--dtype f32|bf16|f16] [--force]
//! ```
//!
//! `convert` reads a GLaMM / LEGION checkpoint in any layout the loader accepts (one file, HF
//! folder, sharded with index, `.bin`), optionally CLIP from a separate HF file and a PEFT LoRA
//! adapter merged on top, and writes a native folder (`config.json` + `model.bpk`, plus the
//! `tokenizer.json` when one is found or given). `export` writes a native folder back as one
//! safetensors file in the GLaMM naming and PyTorch layout (`scripts/check_export.py` compares
//! it with the original in Python).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::builder::PossibleValuesParser;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use legion_backend::Device;
use legion_model::legion::{
    ClipWeights, ConvertRequest, ExportOptions, LegionConfig, convert_glamm_to_native,
    export_glamm_safetensors, load_native,
};
use legion_model::tokenizer::{LegionTokenizer, resolve_tokenizer_json};
use legion_model::weights::{Allowances, FloatDType, FloatDTypePolicy, LoadOptions};

/// Float dtype of the written weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    /// 32-bit float.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl From<DTypeArg> for FloatDType {
    fn from(d: DTypeArg) -> Self {
        match d {
            DTypeArg::F32 => FloatDType::F32,
            DTypeArg::Bf16 => FloatDType::BF16,
            DTypeArg::F16 => FloatDType::F16,
        }
    }
}

/// Arguments of `legion convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// GLaMM / LEGION checkpoint: a .safetensors / .bin file, an index JSON, or an HF folder.
    pub checkpoint: PathBuf,
    /// Output folder (native format: config.json + model.bpk [+ tokenizer.json]).
    #[arg(long)]
    pub out: PathBuf,
    /// Model size preset, one of `LegionConfig::PRESETS` (ignored with --config).
    #[arg(long, default_value = "legion-7b",
          value_parser = PossibleValuesParser::new(LegionConfig::PRESETS.map(|(name, _)| name)))]
    pub preset: String,
    /// A LegionConfig JSON (burn Config JSON) instead of a preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// CLIP vision weights from this HF file (openai/clip-vit-large-patch14-336), as merged
    /// GLaMM / LEGION checkpoints need (they carry no vision tower).
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) to merge.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// tokenizer.json (or a folder with one) to copy; default: the checkpoint folder's.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Do not look for a tokenizer.
    #[arg(long, conflicts_with = "tokenizer")]
    pub no_tokenizer: bool,
    /// Float dtype of the written weights (default: f32).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DTypeArg,
    /// Model tensors (burn path regex) allowed to stay unloaded.
    #[arg(long = "allow-missing", value_name = "RE")]
    pub allow_missing: Vec<String>,
    /// File tensors (remapped key regex) allowed to be ignored.
    #[arg(long = "allow-unexpected", value_name = "RE")]
    pub allow_unexpected: Vec<String>,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `legion export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Native model folder (what `legion convert` writes).
    pub model: PathBuf,
    /// Output safetensors file (GLaMM / LEGION naming, PyTorch layout).
    #[arg(long)]
    pub out: PathBuf,
    /// Leave out the CLIP tower (model.vision_tower.*), as GLaMM's merged checkpoints do.
    #[arg(long)]
    pub no_clip: bool,
    /// Float dtype of the written tensors (default: the model's).
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

fn config_of(args: &ConvertArgs) -> anyhow::Result<LegionConfig> {
    match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a LegionConfig JSON", path.display()))
        }
        None => LegionConfig::preset(&args.preset).with_context(|| {
            format!(
                "unknown preset `{}` ({})",
                args.preset,
                LegionConfig::preset_names()
            )
        }),
    }
}

/// The tokenizer.json to copy, if any: `--tokenizer`, else the checkpoint folder's.
fn tokenizer_of(args: &ConvertArgs) -> anyhow::Result<Option<PathBuf>> {
    if args.no_tokenizer {
        return Ok(None);
    }
    let candidate = match &args.tokenizer {
        Some(path) => path.clone(),
        None => {
            let dir = if args.checkpoint.is_dir() {
                args.checkpoint.clone()
            } else {
                args.checkpoint
                    .parent()
                    .unwrap_or(Path::new("."))
                    .to_path_buf()
            };
            if !dir.join("tokenizer.json").is_file() && !dir.join("tokenizer.model").is_file() {
                tracing::warn!(dir = %dir.display(), "no tokenizer next to the checkpoint; none copied");
                return Ok(None);
            }
            dir
        }
    };
    let json = resolve_tokenizer_json(&candidate)
        .with_context(|| "finding the tokenizer (pass --no-tokenizer to convert without one)")?;
    // Must be a LEGION tokenizer (GLaMM's added tokens), not merely a file.
    LegionTokenizer::from_file(&json)
        .with_context(|| format!("checking tokenizer {}", json.display()))?;
    Ok(Some(json))
}

/// Runs `legion convert`.
///
/// # Errors
/// Any unreadable input, strict-loading mismatch, adapter mismatch or write failure.
pub fn run_convert(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    let config = config_of(&args)?;
    // Checked before the (long) conversion.
    let tokenizer = tokenizer_of(&args)?;
    let allow = Allowances::from_patterns(&args.allow_missing, &args.allow_unexpected)?;
    let clip = match &args.clip {
        Some(path) => ClipWeights::HfFile(path),
        None => ClipWeights::InCheckpoint,
    };
    let mut metadata = BTreeMap::from([
        ("source".to_string(), args.checkpoint.display().to_string()),
        ("dtype".to_string(), format!("{:?}", args.dtype)),
    ]);
    if let Some(clip) = &args.clip {
        metadata.insert("clip".into(), clip.display().to_string());
    }
    if let Some(adapter) = &args.adapter {
        metadata.insert("adapter".into(), adapter.display().to_string());
    }
    // Hidden when stderr is not a terminal.
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .expect("static template is valid")
        .progress_chars("=> "),
    );
    bar.set_message("writing");
    let progress_bar = bar.clone();
    let request = ConvertRequest {
        checkpoint: &args.checkpoint,
        clip,
        adapter: args.adapter.as_deref(),
        allow: &allow,
        options: LoadOptions {
            float_dtype: FloatDTypePolicy::Cast(args.dtype.into()),
            ..LoadOptions::default()
        },
        out: &args.out,
        metadata: &metadata,
        overwrite: args.force,
        progress: Some(Arc::new(move |done, total| {
            progress_bar.set_length(total);
            progress_bar.set_position(done);
        })),
    };
    // One tensor at a time: the model is never in memory (peak RSS about one tensor).
    let converted = convert_glamm_to_native(&config, &request)
        .with_context(|| format!("converting {}", args.checkpoint.display()))?;
    bar.finish_and_clear();
    let report = &converted.load;
    eprintln!(
        "converted {} tensors from {} file(s) of {} (file dtypes {:?}, {} cast to {:?})",
        report.applied,
        report.files,
        args.checkpoint.display(),
        report.file_dtypes,
        report.converted,
        args.dtype
    );
    if let Some(clip) = &args.clip {
        eprintln!(
            "CLIP vision tower (vision_tower.*) taken from {}",
            clip.display()
        );
    }
    if !report.allowed_missing.is_empty() {
        eprintln!(
            "left at their initial values, as allowed: {}",
            report.allowed_missing.join(", ")
        );
    }
    if let Some(adapter_report) = &converted.adapter {
        eprintln!(
            "merged {} LoRA pairs and replaced {} tensors from {}",
            adapter_report.merged.len(),
            adapter_report.replaced.len(),
            adapter_report.path.display()
        );
    }
    let files = converted.files;
    if let Some(json) = tokenizer {
        let dst = args.out.join("tokenizer.json");
        if dst.exists() && !args.force {
            bail!("{} exists (pass --force to replace it)", dst.display());
        }
        std::fs::copy(&json, &dst)
            .with_context(|| format!("copying {} to {}", json.display(), dst.display()))?;
        // With its tokenizer the folder is a complete model bundle (analyze, infer, finetune).
        let meta = legion_model::bundle::BundleMeta::new(
            &config,
            format!("legion convert {}", args.checkpoint.display()),
        );
        let meta_path = args.out.join(legion_model::bundle::BUNDLE_META_FILE);
        std::fs::write(&meta_path, serde_json::to_string_pretty(&meta)?)
            .with_context(|| format!("writing {}", meta_path.display()))?;
        if let Err(e) = legion_model::bundle::ModelBundle::read_config(&args.out) {
            // Still a valid native folder (export works), but not usable for inference.
            std::fs::remove_file(&meta_path)
                .with_context(|| format!("removing {}", meta_path.display()))?;
            eprintln!(
                "warning: {} is not a usable model bundle (no bundle.json written): {e}",
                args.out.display()
            );
        }
    }
    println!(
        "wrote {} ({} parameters, {:.2} GB) and {}",
        files.weights.display(),
        converted.parameters,
        converted.bytes as f64 / 1e9,
        files.config.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `legion export`.
///
/// # Errors
/// An unreadable native folder or a write failure.
pub fn run_export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let device = Device::flex();
    let (model, _) = load_native(&args.model, &device, FloatDTypePolicy::KeepFile)
        .with_context(|| format!("loading native model {}", args.model.display()))?;
    let options = ExportOptions {
        skip_vision_tower: args.no_clip,
        float_dtype: args.dtype.map(Into::into),
        overwrite: args.force,
    };
    let report = export_glamm_safetensors(&model, &args.out, &options)
        .with_context(|| format!("exporting to {}", args.out.display()))?;
    println!(
        "wrote {} ({} tensors, GLaMM naming)",
        report.path.display(),
        report.keys.len()
    );
    Ok(ExitCode::SUCCESS)
}
