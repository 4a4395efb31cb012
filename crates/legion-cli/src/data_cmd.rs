//! `legion data ...`: check, stats, synth, import-folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use legion_data::check::{AREA_BUCKETS, CheckOptions, CheckReport, check};

use crate::progress::Bar;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Validate a SynthScars-layout dataset and print a summary; exits 1 when records are unusable.
    Check(CheckArgs),
    /// Distribution tables: refs per image, artifact-area histogram, content types, categories.
    Stats(StatsArgs),
    /// Generate the deterministic tiny SynthScars-layout dataset with planted artifacts.
    Synth(SynthArgs),
    /// Convert a generic folder (images/ + masks/ + explanations.jsonl) to the SynthScars layout.
    ImportFolder(ImportArgs),
    /// Train a small LLaMA-layout BPE tokenizer (with GLaMM's special tokens) on a dataset's
    /// captions, for tiny models that cannot use the 32k Vicuna vocabulary.
    Tokenizer(TokenizerArgs),
}

#[derive(Debug, Args)]
pub struct TokenizerArgs {
    /// Dataset root (SynthScars layout).
    #[arg(long)]
    data: PathBuf,
    /// Splits whose captions are the corpus (repeatable); held-out splits are left out so the
    /// vocabulary does not see the test text.
    #[arg(long = "split", default_values_t = [String::from("train")])]
    splits: Vec<String>,
    /// Total vocabulary size (bytes and special tokens included); the model's
    /// `llm.vocab_size` must be at least this.
    #[arg(long, default_value_t = 640)]
    vocab_size: usize,
    /// Output `tokenizer.json`.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Dataset root (holding train/ and test/, or SynthScars/).
    dir: PathBuf,
    /// Only these splits (repeatable); default: every split found.
    #[arg(long = "split")]
    splits: Vec<String>,
    /// Read image headers only instead of decoding every image (faster, misses corrupt bodies).
    #[arg(long)]
    headers_only: bool,
    /// Labels file (JSONL, see README); default: <dir>/labels.jsonl when present.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Print the full report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Print at most this many problems in text mode.
    #[arg(long, default_value_t = 50)]
    max_problems: usize,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Dataset root.
    dir: PathBuf,
    /// Only these splits (repeatable).
    #[arg(long = "split")]
    splits: Vec<String>,
    /// Labels file; default: <dir>/labels.jsonl when present.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output folder (must be empty or absent unless --force).
    #[arg(long, default_value = "data/synthscars-tiny")]
    out: PathBuf,
    /// Random seed; the same seed gives byte-identical files.
    #[arg(long)]
    seed: Option<u64>,
    /// Number of training images.
    #[arg(long, alias = "count")]
    train: Option<usize>,
    /// Number of test images.
    #[arg(long, alias = "test-count")]
    test: Option<usize>,
    /// Image side in pixels (32..=1024).
    #[arg(long, alias = "size")]
    image_size: Option<u32>,
    /// Fraction of images without artifact (zero refs).
    #[arg(long)]
    clean_fraction: Option<f64>,
    /// Most artifacts per image.
    #[arg(long)]
    max_artifacts: Option<usize>,
    /// Write into a non-empty output folder.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Folder with images/, masks/ and explanations.jsonl (see README, "Bring your own images").
    src: PathBuf,
    /// Output dataset root (SynthScars layout).
    #[arg(long)]
    out: PathBuf,
    /// Split name to write.
    #[arg(long, default_value = "train")]
    split: String,
}

pub fn run(cmd: DataCommand) -> Result<ExitCode> {
    match cmd {
        DataCommand::Check(args) => run_check(args),
        DataCommand::Stats(args) => run_stats(args),
        DataCommand::Synth(args) => run_synth(args),
        DataCommand::ImportFolder(args) => run_import(args),
        DataCommand::Tokenizer(args) => run_tokenizer(args),
    }
}

fn checked(
    dir: &Path,
    splits: &[String],
    labels: &Option<PathBuf>,
    decode: bool,
) -> Result<CheckReport> {
    let options = CheckOptions {
        splits: splits.to_vec(),
        decode_images: decode,
        labels: labels.clone(),
    };
    check(dir, &options, &Bar::default()).with_context(|| format!("checking {}", dir.display()))
}

fn run_check(args: CheckArgs) -> Result<ExitCode> {
    let report = checked(&args.dir, &args.splits, &args.labels, !args.headers_only)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("dataset {}", report.root.display());
        if let Some(l) = &report.labels {
            println!("labels  {}", l.display());
        }
        for s in &report.splits {
            println!(
                "{:>6}: {} records ({} usable, {} without artifact), {} refs ({} grounded in the caption)",
                s.split, s.records, s.usable_records, s.zero_ref_records, s.refs, s.grounded_refs
            );
            if !s.content_types.is_empty() {
                println!("        content types: {}", join_counts(&s.content_types));
            }
            if !s.categories.is_empty() {
                println!("        categories:    {}", join_counts(&s.categories));
            }
        }
        let problems: Vec<_> = report.splits.iter().flat_map(|s| &s.problems).collect();
        for p in problems.iter().take(args.max_problems) {
            let tag = if p.record_dropped { "error" } else { "warning" };
            println!("{tag}: {}: {}", p.location, p.message);
        }
        if problems.len() > args.max_problems {
            println!(
                "... {} more (use --json for all)",
                problems.len() - args.max_problems
            );
        }
        println!(
            "{} errors (records unusable), {} warnings (refs dropped)",
            report.error_count(),
            report.warning_count()
        );
    }
    Ok(if report.error_count() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn join_counts(map: &std::collections::BTreeMap<String, usize>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn run_stats(args: StatsArgs) -> Result<ExitCode> {
    let report = checked(&args.dir, &args.splits, &args.labels, false)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.splits)?);
        return Ok(ExitCode::SUCCESS);
    }
    for s in &report.splits {
        println!("== {} ({} usable records)", s.split, s.usable_records);
        println!("refs per image:");
        for (n, count) in &s.refs_per_image {
            println!("  {n:>3} | {count:>6} {}", bar(*count, s.usable_records));
        }
        println!(
            "artifact area (union of masks / image), mean {:.4}:",
            s.mean_area_fraction
        );
        for (i, count) in s.area_fraction_histogram.iter().enumerate() {
            let lo = AREA_BUCKETS[i];
            let hi = AREA_BUCKETS
                .get(i + 1)
                .map(|h| format!("{h:<5}"))
                .unwrap_or_else(|| "1    ".into());
            println!(
                "  [{lo:<5}, {hi}) | {count:>6} {}",
                bar(*count, s.usable_records)
            );
        }
        if !s.content_types.is_empty() {
            println!("content types: {}", join_counts(&s.content_types));
        }
        if !s.categories.is_empty() {
            println!("categories:    {}", join_counts(&s.categories));
        }
        let sizes: Vec<String> = s
            .image_sizes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("image sizes (HxW): {}", sizes.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn bar(count: usize, total: usize) -> String {
    "#".repeat((40 * count).div_ceil(total.max(1)))
}

fn run_synth(args: SynthArgs) -> Result<ExitCode> {
    use legion_data::synth::{SynthConfig, generate_with_progress};
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() && !args.force {
        anyhow::bail!(
            "{} is not empty; pass --force to write into it",
            args.out.display()
        );
    }
    let defaults = SynthConfig::default();
    let cfg = SynthConfig {
        seed: args.seed.unwrap_or(defaults.seed),
        train_count: args.train.unwrap_or(defaults.train_count),
        test_count: args.test.unwrap_or(defaults.test_count),
        image_size: args.image_size.unwrap_or(defaults.image_size),
        clean_fraction: args.clean_fraction.unwrap_or(defaults.clean_fraction),
        max_artifacts: args.max_artifacts.unwrap_or(defaults.max_artifacts),
    };
    let report = generate_with_progress(&args.out, &cfg, &Bar::default())
        .with_context(|| format!("generating into {}", args.out.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

fn run_import(args: ImportArgs) -> Result<ExitCode> {
    let report =
        legion_data::folder::import_folder(&args.src, &args.out, &args.split, &Bar::default())
            .with_context(|| format!("importing {}", args.src.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

fn run_tokenizer(args: TokenizerArgs) -> Result<ExitCode> {
    let mut corpus = Vec::new();
    for split in &args.splits {
        let layout = legion_data::layout::SplitLayout::find(&args.data, split)?;
        for record in legion_data::record::read_annotations(&layout.annotations)
            .with_context(|| format!("reading {}", layout.annotations.display()))?
        {
            let record = record.with_context(|| format!("in {}", layout.annotations.display()))?;
            corpus.push(record.caption);
        }
    }
    anyhow::ensure!(
        !corpus.is_empty(),
        "no captions in splits {:?} of {}",
        args.splits,
        args.data.display()
    );
    let tokenizer =
        legion_model::tokenizer_train::train_llama_like_tokenizer(&corpus, args.vocab_size)?;
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    tokenizer
        .inner()
        .save(&args.out, true)
        .map_err(anyhow::Error::from_boxed)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} tokens, trained on {} captions)",
        args.out.display(),
        tokenizer.vocab_size(),
        corpus.len()
    );
    Ok(ExitCode::SUCCESS)
}
