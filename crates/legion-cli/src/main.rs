//! `legion`: the command line of legion-rs.
//!
//! Run `legion --help` for the command list; the README has the full reference.

mod analyze_cmd;
mod data_cmd;
mod debug_cmd;
mod eval_cmd;
mod progress;
mod refine_cmd;
mod serve_cmd;
mod train_cmd;
mod weights_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// LEGION: find, segment and explain artifacts in AI-generated images.
#[derive(Debug, Parser)]
#[command(name = "legion", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info`, `legion_data=debug`.
    #[arg(long, global = true, default_value = "warn", env = "LEGION_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dataset tools: check, stats, synth, import-folder.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Developer checks: run one component on a checkpoint in the reference naming (parity).
    Debug(debug_cmd::DebugCommand),
    /// Score predictions (masks, explanations, detection scores) against a SynthScars-layout GT.
    Eval(eval_cmd::EvalArgs),
    /// Merge `legion eval --out` reports into one comparison table (rows = methods).
    Tables(eval_cmd::TablesArgs),
    /// Serve LEGION over HTTP: POST an image to /analyze, get the JSON record and the overlay.
    Serve(serve_cmd::ServeArgs),
    /// Train LEGION from a TOML config (configs/tiny.toml trains on the shipped tiny data).
    Train(train_cmd::TrainArgs),
    /// Continue training a model bundle on new data (optionally mixed with the original).
    Finetune(train_cmd::FinetuneArgs),
    /// Convert a GLaMM / LEGION checkpoint (any layout, optional PEFT adapter and CLIP file) to
    /// the native model folder (config.json + model.bpk) that loads fast.
    Convert(weights_cmd::ConvertArgs),
    /// Write a native model folder back as GLaMM / LEGION safetensors (PyTorch naming/layout).
    Export(weights_cmd::ExportArgs),
    /// Score the trivial predictors (all-background, all-artifact, random) and print them beside
    /// the published rows.
    Baselines(eval_cmd::BaselinesArgs),
    /// Analyse images with a model: explanation, artifacts, overlay PNG, JSON record, HTML report.
    Analyze(analyze_cmd::AnalyzeArgs),
    /// Batch inference over a dataset, written in `legion eval`'s input format (resumable).
    Infer(analyze_cmd::InferArgs),
    /// Assemble the parts of `legion infer --shard K/N` into one output, as one run writes it.
    MergeShards(analyze_cmd::MergeShardsArgs),
    /// Image-level real/fake scores of the detection head (LegionForCls).
    Detect(analyze_cmd::DetectArgs),
    /// Refine an image: detect artifacts, repaint them with a generator, detect again.
    Refine(refine_cmd::RefineArgs),
    /// Generate from a prompt with a text-to-image model, let LEGION reflect on the image,
    /// rewrite the prompt from the reflection, generate again.
    Regenerate(refine_cmd::RegenerateArgs),
}

fn main() -> std::process::ExitCode {
    quiet_headless_gpu_probes();
    host_default_device();
    let cli = Cli::parse();
    // wgpu probes its OpenGL backend beside Vulkan and logs an ERROR when no GL driver loads
    // (any headless machine), even though the Vulkan adapter it then uses works: keep that
    // probe out of users' logs unless they ask for wgpu_hal's.
    let mut filter = cli.log.clone();
    if cfg!(feature = "wgpu") && !filter.contains("wgpu_hal") {
        filter.push_str(",wgpu_hal::gles::egl=off");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    legion_backend::flush_denormals();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            std::process::ExitCode::from(2)
        }
    }
}

/// In a headless session (no `XDG_RUNTIME_DIR`, no `WAYLAND_DISPLAY`), points
/// `WAYLAND_DISPLAY` at an absolute path that does not exist. Why: opening a wgpu device probes
/// for a Wayland display, and libwayland-client prints "error: XDG_RUNTIME_DIR is invalid or not
/// set in the environment." on stderr, several times per run, when that variable is missing;
/// with an absolute display path it looks there, finds nothing and stays quiet. Sessions with a
/// display are left alone.
fn quiet_headless_gpu_probes() {
    if cfg!(feature = "wgpu")
        && std::env::var_os("XDG_RUNTIME_DIR").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
    {
        // SAFETY: called first thing in `main`, before any other thread exists.
        unsafe { std::env::set_var("WAYLAND_DISPLAY", "/nonexistent/legion-headless") };
    }
}

/// Makes burn's default device the CPU (`BURN_DEVICE=flex`) unless the user set one. Why: every
/// tensor of ours is placed on the device the user chose, but burn itself materialises a
/// resumed run's optimizer state on `Device::default()` (`ModuleOptimizer::load_record`; the
/// state moves to each parameter's device on the next step), and with the `cuda` feature that
/// default is CUDA: a build with cuda then panicked resuming a run on wgpu or the CPU of a
/// machine without a CUDA driver. The host is always there.
fn host_default_device() {
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists.
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
}

/// `err` and its causes joined by `: `, each cause left out when the text so far already holds
/// it: the library errors print their cause in their own message (so a caller that shows only
/// `{err}` loses nothing) and also keep it as `source()`, which anyhow's `{:#}` would print twice.
fn error_chain(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.is_empty() {
            message = text;
        } else if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

fn run(cli: Cli) -> Result<std::process::ExitCode> {
    match cli.command {
        Command::Data(cmd) => data_cmd::run(cmd),
        Command::Debug(cmd) => debug_cmd::run(cmd),
        Command::Eval(args) => eval_cmd::run_eval(args),
        Command::Tables(args) => eval_cmd::run_tables(args),
        Command::Baselines(args) => eval_cmd::run_baselines(args),
        Command::Serve(args) => serve_cmd::run_serve(args),
        Command::Train(args) => train_cmd::run_train(args),
        Command::Finetune(args) => train_cmd::run_finetune(args),
        Command::Convert(args) => weights_cmd::run_convert(args),
        Command::Export(args) => weights_cmd::run_export(args),
        Command::Analyze(args) => analyze_cmd::run_analyze(args),
        Command::Infer(args) => analyze_cmd::run_infer_cmd(args),
        Command::MergeShards(args) => analyze_cmd::run_merge_shards(args),
        Command::Detect(args) => analyze_cmd::run_detect(args),
        Command::Refine(args) => refine_cmd::run(args),
        Command::Regenerate(args) => refine_cmd::run_regenerate(args),
    }
}
