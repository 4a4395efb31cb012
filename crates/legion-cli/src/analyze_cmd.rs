//! `legion analyze`, `legion infer` and `legion detect`: run a model on images.
//!
//! ```text
//! legion analyze IMAGE_OR_DIR... --checkpoint runs/tiny/final --out analysis/ [--html report.html]
//! legion infer --data data/synthscars-tiny --checkpoint runs/tiny/final --out pred/
//! legion eval --gt data/synthscars-tiny --masks pred/masks --explanations pred/explanations.jsonl
//! legion detect IMAGE_OR_DIR... --detector det/ [--label 0|1] [--out scores.csv]
//! ```
//! The work is in `legion_infer`; this module parses flags and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use legion_backend::DeviceSpec;
use legion_data::perturb::Perturbation;
use legion_infer::Analyzer;
use legion_infer::analyze::{file_stem, write_analysis};
use legion_infer::detect::Detector;
use legion_infer::html::{ReportEntry, analysis_report, write_html};
use legion_infer::infer::{InferOptions, dataset_images, run_infer};
use legion_infer::input::{expand_inputs, prepare_all};
use legion_infer::shard::{Shard, merge_shards};

use crate::progress::Bar;
use crate::weights_cmd::DTypeArg;

/// Model flags shared by the inference commands.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model bundle directory (bundle.json, config.json, model.bpk, tokenizer.json), as
    /// written by `legion train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Device: cpu, wgpu, wgpu:N or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Most generated tokens per answer (LEGION: 512).
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Longest side of the SAM input (default: the bundle's; LEGION infers at 1024).
    #[arg(long)]
    pub sam_size: Option<u32>,
    /// Float dtype the weights are held and computed in (default: as stored in the bundle;
    /// `f32` on a bf16 bundle doubles its memory and computes exactly as f32 training did).
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
}

impl ModelArgs {
    /// Loads the bundle with the flags applied.
    pub fn load(&self) -> anyhow::Result<Analyzer> {
        let device = self.device.parse::<DeviceSpec>()?.device()?;
        let mut analyzer = Analyzer::load_as(&self.checkpoint, device, self.dtype.map(Into::into))
            .with_context(|| format!("loading model {}", self.checkpoint.display()))?;
        analyzer.generation.max_new_tokens = self.max_new_tokens;
        if let Some(size) = self.sam_size {
            if size == 0 || size > analyzer.preprocessor.sam.pad_size {
                bail!(
                    "--sam-size {size} must be in 1..={} (the SAM canvas of this model)",
                    analyzer.preprocessor.sam.pad_size
                );
            }
            analyzer.preprocessor.sam.longest_side = size;
        }
        Ok(analyzer)
    }
}

/// Arguments of `legion analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Images, or folders of images (.jpg, .jpeg, .png, .webp).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output folder: <stem>.json (record with RLE masks and polygons) and <stem>.overlay.png.
    #[arg(long, default_value = "analysis")]
    pub out: PathBuf,
    /// Also write a self-contained HTML report (images inlined) to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Images per model call.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Print the records as JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `legion analyze`.
pub fn run_analyze(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let paths = expand_inputs(&args.images)?;
    if paths.is_empty() {
        bail!("no image found in the given paths");
    }
    let analyzer = args.model.load()?;
    let bar = Bar::default();
    use legion_data::Progress;
    bar.start("analyze", paths.len() as u64);
    let mut entries = Vec::new();
    let mut failed = 0usize;
    for chunk in paths.chunks(args.batch_size.max(1)) {
        let prepared = prepare_all(chunk, &analyzer.preprocessor);
        let mut ok = Vec::new();
        for (path, p) in chunk.iter().zip(prepared) {
            match p {
                Ok(p) => ok.push(p),
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    failed += 1;
                }
            }
        }
        let records = analyzer.analyze_batch(&ok.iter().collect::<Vec<_>>())?;
        for (image, record) in ok.into_iter().zip(records) {
            let (files, overlay) =
                write_analysis(&args.out, &file_stem(&image.path), &record, &image.rgb)?;
            bar.advance(1);
            if args.json {
                println!("{}", serde_json::to_string(&record)?);
            } else {
                println!("{}", image.path.display());
                println!("  explanation: {}", record.explanation);
                if record.artifacts.is_empty() {
                    println!("  no artifact found");
                }
                for a in &record.artifacts {
                    println!(
                        "  {}. {} [category: {}] area {} px, score {:.3}: {}",
                        a.index,
                        a.label(),
                        a.category.as_deref().unwrap_or("n/a"),
                        a.area,
                        a.score,
                        a.explanation.as_deref().unwrap_or("")
                    );
                }
                println!(
                    "  wrote {} and {}",
                    files.json.display(),
                    files.overlay.display()
                );
            }
            entries.push(ReportEntry {
                record,
                image: image.rgb,
                overlay,
            });
        }
    }
    bar.finish();
    if let Some(html) = &args.html {
        let title = format!("LEGION analysis ({} images)", entries.len());
        write_html(html, &analysis_report(&title, &entries)?)?;
        if !args.json {
            println!("report: {}", html.display());
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Arguments of `legion infer`.
#[derive(Debug, Args)]
pub struct InferArgs {
    /// A SynthScars-layout dataset (its `<split>/images`), or a folder of images.
    #[arg(long)]
    pub data: PathBuf,
    /// Split of a SynthScars-layout dataset.
    #[arg(long, default_value = "test")]
    pub split: String,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output folder: masks/<stem>.png, explanations.jsonl, records/<stem>.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Images per model call.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Start over instead of skipping images already done in --out.
    #[arg(long)]
    pub no_resume: bool,
    /// Degrade every image after decoding, before the model sees it (robustness evaluation,
    /// the LEGION paper's Table 10; recorded in <out>/infer.json and in `legion eval` reports):
    /// `jpeg:Q` = JPEG round trip at quality Q (1-100; IJG tables, 4:2:0, like Pillow's
    /// `save(quality=Q)`); `noise:SIGMA` = add Gaussian noise of std SIGMA grey levels on the
    /// 0-255 scale, clip to 0-255, truncate (`noise:25.5` = 0.1 of the range; the reference
    /// code's unscaled default equals `noise:6502.5`); `blur:K` = Gaussian blur with an odd K x K
    /// kernel, sigma from K as `cv2.GaussianBlur(img, (K, K), 0)`, reflect-101 border,
    /// truncated (the reference: blur:5).
    #[arg(long, value_name = "KIND:VALUE")]
    pub perturb: Option<String>,
    /// Seed of `--perturb noise:...`; each image's noise depends on this seed and its file name
    /// only (not on order, batch size or resume).
    #[arg(long, default_value_t = legion_data::perturb::DEFAULT_PERTURB_SEED)]
    pub perturb_seed: u64,
    /// Run only part K of N (0-based) of the images, into <out>/shards/K-of-N (resumable per
    /// shard); `legion merge-shards` assembles the parts into <out> as one run writes it. The
    /// partition is whole batches of --batch-size (keep it the same for every part). Under
    /// `mpirun`/`srun` (with the `mpi` feature) and without this flag, each rank runs its part
    /// and rank 0 merges.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
}

/// Arguments of `legion merge-shards`.
#[derive(Debug, Args)]
pub struct MergeShardsArgs {
    /// The dataset the shards ran on (as given to `legion infer --data`).
    #[arg(long)]
    pub data: PathBuf,
    /// Its split.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// The `--out` of the shards (holding shards/K-of-N/).
    #[arg(long)]
    pub out: PathBuf,
    /// How many shards (N of --shard K/N).
    #[arg(long)]
    pub shards: usize,
}

/// Runs `legion merge-shards`.
pub fn run_merge_shards(args: MergeShardsArgs) -> anyhow::Result<ExitCode> {
    if args.shards == 0 {
        bail!("--shards must be at least 1");
    }
    let images = dataset_images(&args.data, &args.split)?;
    merge_and_report(&images, &args.data, &args.split, &args.out, args.shards)
}

/// Merges the shards and prints what was merged; exit 1 when an image has no prediction.
fn merge_and_report(
    images: &[PathBuf],
    data: &std::path::Path,
    split: &str,
    out: &std::path::Path,
    shards: usize,
) -> anyhow::Result<ExitCode> {
    let summary = merge_shards(images, out, shards)
        .with_context(|| format!("merging the shards under {}", out.display()))?;
    println!(
        "merged {shards} shards: {} of {} images -> {}",
        summary.merged,
        summary.total,
        out.display()
    );
    for path in &summary.missing {
        eprintln!("missing (failed or not run): {}", path.display());
    }
    print_score_hint(data, split, out);
    Ok(if summary.missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_score_hint(data: &std::path::Path, split: &str, out: &std::path::Path) {
    println!(
        "score with: legion eval --gt {} --split {split} --masks {} --explanations {}",
        data.display(),
        out.join("masks").display(),
        out.join("explanations.jsonl").display()
    );
}

/// Runs `legion infer`: all images, the part `--shard` names, or (under an MPI launcher,
/// with the `mpi` feature) this rank's part followed by rank 0's merge.
pub fn run_infer_cmd(args: InferArgs) -> anyhow::Result<ExitCode> {
    // Parse before loading the model: a bad spec fails in milliseconds.
    perturbation(&args)?;
    let images = dataset_images(&args.data, &args.split)?;
    if args.shard.is_none()
        && let Some(ranks) = legion_train::distributed::launcher_world_size()
        && ranks > 1
    {
        return run_infer_ranks(args, images);
    }
    let code = infer_part(&args, &images, args.shard)?;
    if args.shard.is_none() {
        print_score_hint(&args.data, &args.split, &args.out);
    }
    Ok(code)
}

/// The `--perturb` spec, parsed.
fn perturbation(args: &InferArgs) -> anyhow::Result<Option<Perturbation>> {
    Ok(args
        .perturb
        .as_deref()
        .map(str::parse::<Perturbation>)
        .transpose()
        .context("--perturb")?)
}

/// Analyses `shard` of `images` (all of them without one) and prints what was done.
fn infer_part(
    args: &InferArgs,
    images: &[PathBuf],
    shard: Option<Shard>,
) -> anyhow::Result<ExitCode> {
    let (part, out) = match shard {
        Some(shard) => (shard.select(images, args.batch_size), shard.dir(&args.out)),
        None => (images.to_vec(), args.out.clone()),
    };
    let analyzer = args.model.load()?;
    let options = InferOptions {
        batch_size: args.batch_size,
        resume: !args.no_resume,
        perturbation: perturbation(args)?,
        perturb_seed: args.perturb_seed,
    };
    if let Some(p) = &options.perturbation {
        eprintln!("perturbation {p}: {}", p.describe());
    }
    let summary = run_infer(&analyzer, &part, &out, &options, &Bar::default())?;
    println!(
        "{}{} images: {} analysed, {} already done, {} failed -> {}",
        shard.map(|s| format!("shard {s}: ")).unwrap_or_default(),
        summary.total,
        summary.analysed,
        summary.skipped,
        summary.failed.len(),
        out.display()
    );
    for (path, reason) in &summary.failed {
        eprintln!("failed: {}: {reason}", path.display());
    }
    if let Some(shard) = shard {
        println!(
            "when every shard is done: legion merge-shards --data {} --split {} --out {} \
             --shards {}",
            args.data.display(),
            args.split,
            args.out.display(),
            shard.count
        );
    }
    Ok(if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Each rank of the MPI job runs its shard; rank 0 merges once all are done.
#[cfg(feature = "mpi")]
fn run_infer_ranks(args: InferArgs, images: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    use legion_train::distributed::Collective;
    use legion_train::distributed::mpi::MpiCollective;
    let comm = MpiCollective::init().context("starting MPI")?;
    let shard = Shard {
        index: comm.rank(),
        count: comm.size(),
    };
    let part = infer_part(&args, &images, Some(shard));
    let part = match part {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: rank {}: {e:#}; stopping every rank", comm.rank());
            comm.abort(2);
        }
    };
    if let Err(e) = comm.barrier() {
        eprintln!("error: rank {}: {e}; stopping every rank", comm.rank());
        comm.abort(2);
    }
    if comm.rank() != 0 {
        return Ok(part);
    }
    let merged = merge_and_report(&images, &args.data, &args.split, &args.out, shard.count)?;
    Ok(if part == ExitCode::SUCCESS {
        merged
    } else {
        part
    })
}

/// Without the `mpi` feature, an MPI launcher would start independent full runs that write
/// the same folder: refuse.
#[cfg(not(feature = "mpi"))]
fn run_infer_ranks(_args: InferArgs, _images: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    bail!(
        "started by an MPI launcher with several processes, but this legion was built without \
         the `mpi` feature: each process would analyse every image into the same folder. Give \
         each process --shard K/N, or build with `--features mpi`"
    )
}

/// Arguments of `legion detect`.
#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Images, or folders of images.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Detector directory (detector.json + model.bpk, from `legion train` with task = "detect").
    #[arg(long, conflicts_with = "glamm")]
    pub detector: Option<PathBuf>,
    /// A reference `LegionForCls` safetensors file (CLIP ViT-L/14-336 + head).
    #[arg(long)]
    pub glamm: Option<PathBuf>,
    /// Device: cpu, wgpu, wgpu:N or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Images per model call.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Ground-truth label of every image (1 real, 0 fake), written as a column so
    /// `legion eval --scores` can score the file.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub label: Option<u8>,
    /// Write the scores to this .csv or .jsonl file (else print CSV).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `legion detect`.
pub fn run_detect(args: DetectArgs) -> anyhow::Result<ExitCode> {
    let device = args.device.parse::<DeviceSpec>()?.device()?;
    let detector = match (&args.detector, &args.glamm) {
        (Some(dir), _) => Detector::load(dir, device)
            .with_context(|| format!("loading detector {}", dir.display()))?,
        (None, Some(file)) => Detector::from_glamm(file, device)
            .with_context(|| format!("loading {}", file.display()))?,
        (None, None) => bail!("give --detector DIR or --glamm FILE"),
    };
    let paths = expand_inputs(&args.images)?;
    let results = detector.score_files(&paths, args.batch_size, &Bar::default());
    let jsonl = args
        .out
        .as_ref()
        .is_some_and(|p| p.extension().is_some_and(|e| e == "jsonl"));
    let mut text = String::new();
    if !jsonl {
        text.push_str(if args.label.is_some() {
            "image,label,score,prediction\n"
        } else {
            "image,score,prediction\n"
        });
    }
    let mut failed = 0;
    for (path, result) in paths.iter().zip(results) {
        match result {
            Ok(s) => {
                if jsonl {
                    let mut v = serde_json::to_value(&s)?;
                    if let Some(label) = args.label {
                        v["label"] = label.into();
                    }
                    text.push_str(&format!("{v}\n"));
                } else {
                    let label = args.label.map(|l| format!("{l},")).unwrap_or_default();
                    let image = if s.image.contains([',', '"']) {
                        format!("\"{}\"", s.image.replace('"', "\"\""))
                    } else {
                        s.image.clone()
                    };
                    text.push_str(&format!("{image},{label}{:.6},{}\n", s.score, s.prediction));
                }
            }
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                failed += 1;
            }
        }
    }
    match &args.out {
        Some(out) => {
            std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {} scores to {}", paths.len() - failed, out.display());
        }
        None => print!("{text}"),
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
