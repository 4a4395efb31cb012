//! `legion refine`: LEGION as a controller for image refinement (detect -> prompt -> repaint
//! -> detect again), every round recorded. The loop is `legion_infer::refine`.
//!
//! ```text
//! legion refine image.png --checkpoint runs/tiny/final --out refine/ --rounds 3
//! legion refine image.png --checkpoint C --out refine/ \
//!     --generator-cmd 'python scripts/refine/sdxl_inpaint.py --image {image} --mask {mask} --prompt {prompt} --out {out}'
//! ```
//!
//! `legion regenerate`: the reference's regeneration mode (text-to-image -> LEGION's reflection
//! -> rewritten prompt -> generate again); the loop is `legion_infer::regenerate`.
//!
//! ```text
//! legion regenerate --prompt "a dog on a beach" --checkpoint C --out regen/ \
//!     --t2i-cmd 'python sd35.py --prompt {prompt} --seed 42 --out {out}' \
//!     --rewriter-cmd 'python ask_llm.py {instruction}' --scorer-cmd 'python hps.py {image}'
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use legion_infer::generator::{
    BuiltinInpainter, CommandGenerator, CommandScorer, Generator, HttpGenerator,
};
use legion_infer::inpaint::InpaintConfig;
use legion_infer::refine::{REFERENCE_PROMPT, RefineOptions, RoundFindings, StopReason, refine};
use legion_infer::regenerate::{
    CommandRewriter, CommandTextToImage, PromptRewriter, RegenerateOptions, RuleRewriter,
    regenerate,
};

use crate::analyze_cmd::ModelArgs;

/// Arguments of `legion refine`.
#[derive(Debug, Args)]
pub struct RefineArgs {
    /// The image to refine.
    pub image: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output folder (round_NN/, rounds.jsonl, summary.json, strip.png, report.html, final.png).
    #[arg(long, default_value = "refine")]
    pub out: PathBuf,
    /// Most repaint rounds (K).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Mask dilation radius in pixels (reference: 5x5 kernel x 5 iterations = 10).
    #[arg(long, default_value_t = 10)]
    pub dilate: usize,
    /// Prompt template; {explanation} and {phrase} are replaced.
    #[arg(long, default_value = REFERENCE_PROMPT)]
    pub prompt_template: String,
    /// External generator: a shell command template with {image} {mask} {prompt} {out}
    /// (replaced by shell-quoted values). Default: the built-in classical inpainter.
    #[arg(long, conflicts_with = "generator_url")]
    pub generator_cmd: Option<String>,
    /// External generator: an http:// endpoint taking {"image","mask","prompt"} (base64 PNGs)
    /// and answering a PNG or {"image": base64 PNG}.
    #[arg(long)]
    pub generator_url: Option<String>,
    /// Timeout of one endpoint call, seconds.
    #[arg(long, default_value_t = 600)]
    pub generator_timeout: u64,
    /// Diffusion sweeps of the built-in inpainter.
    #[arg(long, default_value_t = 100)]
    pub inpaint_iterations: usize,
    /// Per-round image score (e.g. HPSv2): shell command template with {image}; its last
    /// stdout line must be a number.
    #[arg(long)]
    pub scorer_cmd: Option<String>,
    /// Stop when the detected artifact area is at most this many pixels.
    #[arg(long, default_value_t = 0)]
    pub min_area: u64,
    /// A round improves when the artifact ratio drops by more than this fraction of the image.
    #[arg(long, default_value_t = 0.0)]
    pub min_improvement: f64,
    /// Stop after this many rounds in a row without improvement.
    #[arg(long, default_value_t = 1)]
    pub patience: usize,
    /// Use the generator's whole output instead of pasting it through the mask.
    #[arg(long)]
    pub no_keep_unmasked: bool,
}

/// Runs `legion refine`.
pub fn run(args: RefineArgs) -> anyhow::Result<ExitCode> {
    let image = legion_data::image_io::decode_rgb(&args.image)?;
    let mut analyzer = args.model.load()?;
    let mut generator: Box<dyn Generator> = match (&args.generator_cmd, &args.generator_url) {
        (Some(template), _) => Box::new(CommandGenerator {
            template: template.clone(),
        }),
        (None, Some(url)) => Box::new(HttpGenerator {
            url: url.clone(),
            timeout: Duration::from_secs(args.generator_timeout),
        }),
        (None, None) => Box::new(BuiltinInpainter {
            config: InpaintConfig {
                iterations: args.inpaint_iterations,
            },
        }),
    };
    let scorer = args.scorer_cmd.as_ref().map(|t| CommandScorer {
        template: t.clone(),
    });
    let options = RefineOptions {
        max_rounds: args.rounds,
        dilate_radius: args.dilate,
        prompt_template: args.prompt_template.clone(),
        min_area: args.min_area,
        min_improvement: args.min_improvement,
        patience: args.patience,
        keep_unmasked: !args.no_keep_unmasked,
    };
    let name = legion_infer::analyze::file_name(&args.image);
    let summary = refine(
        &name,
        &image,
        &mut analyzer,
        generator.as_mut(),
        scorer.as_ref(),
        &options,
        &args.out,
    )
    .with_context(|| format!("refining {}", args.image.display()))?;
    println!("generator: {}", summary.generator);
    println!("round  artifacts  area_px  ratio%   score");
    for r in &summary.rounds {
        print_round(r.round, &r.findings, "");
    }
    print_outcome(
        summary.stop_reason,
        summary.best_round,
        &summary.final_image,
        &args.out,
    );
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `legion regenerate`.
#[derive(Debug, Args)]
pub struct RegenerateArgs {
    /// The user's prompt.
    #[arg(long)]
    pub prompt: String,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output folder (round_NN/, rounds.jsonl, summary.json, strip.png, report.html, final.png).
    #[arg(long, default_value = "regenerate")]
    pub out: PathBuf,
    /// Most generations (the reference runs 3).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Text-to-image model: a shell command template with {prompt} {round} {out} (replaced by
    /// shell-quoted values); it must write a PNG to {out}.
    #[arg(long)]
    pub t2i_cmd: String,
    /// Prompt rewriter (an LLM): a shell command template with {instruction}; its stdout must
    /// hold the new prompt between <START> and <END>. Default: the built-in rules (the user's
    /// prompt plus `no <phrase>` per detected artifact).
    #[arg(long)]
    pub rewriter_cmd: Option<String>,
    /// Most words of a rewritten prompt.
    #[arg(long, default_value_t = 50)]
    pub word_limit: usize,
    /// Per-round image score (e.g. HPSv2.1; the best round is the highest score): shell command
    /// template with {image}; its last stdout line must be a number.
    #[arg(long)]
    pub scorer_cmd: Option<String>,
}

/// Runs `legion regenerate`.
pub fn run_regenerate(args: RegenerateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let mut analyzer = args.model.load()?;
    let mut generator = CommandTextToImage {
        template: args.t2i_cmd.clone(),
    };
    let mut rewriter: Box<dyn PromptRewriter> = match &args.rewriter_cmd {
        Some(template) => Box::new(CommandRewriter {
            template: template.clone(),
        }),
        None => Box::new(RuleRewriter),
    };
    let scorer = args.scorer_cmd.as_ref().map(|t| CommandScorer {
        template: t.clone(),
    });
    let options = RegenerateOptions {
        max_rounds: args.rounds,
        word_limit: args.word_limit,
    };
    let summary = regenerate(
        "generated.png",
        &args.prompt,
        &mut analyzer,
        &mut generator,
        rewriter.as_mut(),
        scorer.as_ref(),
        &options,
        &args.out,
    )
    .with_context(|| format!("regenerating \"{}\"", args.prompt))?;
    println!("generator: {}", summary.generator);
    println!("rewriter: {}", summary.rewriter);
    println!("round  artifacts  area_px  ratio%   score  prompt");
    for r in &summary.rounds {
        print_round(r.round, &r.findings, &r.prompt);
    }
    print_outcome(
        summary.stop_reason,
        summary.best_round,
        &summary.final_image,
        &args.out,
    );
    Ok(ExitCode::SUCCESS)
}

/// One row of a controller loop's round table.
fn print_round(round: usize, findings: &RoundFindings, prompt: &str) {
    let score = findings
        .external_score
        .map_or_else(|| "-".into(), |s| format!("{s:.4}"));
    println!(
        "{round:>5}  {:>9}  {:>7}  {:>6.2}  {score:>6}  {prompt}",
        findings.artifacts,
        findings.artifact_area,
        100.0 * findings.artifact_ratio
    );
}

/// The closing lines of a controller loop's output.
fn print_outcome(stop: StopReason, best_round: usize, final_image: &Path, out: &Path) {
    println!(
        "stopped: {stop:?}; best round {best_round} -> {}",
        final_image.display()
    );
    println!("records: {} (strip.png, report.html)", out.display());
}
