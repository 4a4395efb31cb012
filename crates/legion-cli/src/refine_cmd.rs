//! `legion refine`: LEGION as a controller for image refinement (detect -> prompt -> repaint
//! -> detect again), every round recorded. The loop is `legion_infer::refine`.
//!
//! ```text
//! legion refine image.png --checkpoint runs/tiny/final --out refine/ --rounds 3
//! legion refine image.png --checkpoint C --out refine/ \
//!     --generator-cmd 'python scripts/refine/sdxl_inpaint.py --image {image} --mask {mask} --prompt {prompt} --out {out}'
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use legion_infer::generator::{
    BuiltinInpainter, CommandGenerator, CommandScorer, Generator, HttpGenerator,
};
use legion_infer::inpaint::InpaintConfig;
use legion_infer::refine::{REFERENCE_PROMPT, RefineOptions, refine};

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
        println!(
            "{:>5}  {:>9}  {:>7}  {:>6.2}  {}",
            r.round,
            r.artifacts,
            r.artifact_area,
            100.0 * r.artifact_ratio,
            r.external_score
                .map(|s| format!("{s:.4}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    println!(
        "stopped: {:?}; best round {} -> {}",
        summary.stop_reason,
        summary.best_round,
        summary.final_image.display()
    );
    println!("records: {} (strip.png, report.html)", args.out.display());
    Ok(ExitCode::SUCCESS)
}
