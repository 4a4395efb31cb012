//! `legion train` and `legion finetune`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use legion_train::distributed::{Collective, SingleProcess, launcher_world_size};
use legion_train::evaluation::{EvalSummary, TaskEval};
use legion_train::learner::LogObserver;
use legion_train::{StepRecord, TrainConfig, TrainObserver, TrainSummary, train_with};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training config (TOML), e.g. configs/tiny.toml.
    #[arg(long, default_value = "configs/tiny.toml")]
    config: PathBuf,
    /// Override a config field, `section.field=value` (repeatable), e.g. `--set optim.lr=3e-4`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue from the newest checkpoint in the run's out_dir.
    #[arg(long)]
    resume: bool,
    /// Devices for data parallelism, comma-separated (`cpu,cpu`, `cuda:0,cuda:1`); overrides
    /// run.devices. With --distributed, the devices of each process.
    #[arg(long)]
    devices: Option<String>,
    #[command(flatten)]
    distributed: DistributedArgs,
}

/// How several processes train one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Distributed {
    /// One rank per process of `mpirun -np N` / `srun` (needs the `mpi` feature).
    Mpi,
}

#[derive(Debug, Args)]
pub struct DistributedArgs {
    /// Train data-parallel across the processes of an MPI launch (`mpirun -np N legion train
    /// --distributed mpi`, or `srun`): each process takes its slice of every batch, gradients
    /// are summed over the processes, rank 0 writes. run.batch_size must be divisible by N.
    #[arg(long, value_enum)]
    distributed: Option<Distributed>,
}

#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// Model bundle to start from (a `final/` folder of `legion train`, or `legion convert`'s
    /// output).
    #[arg(long)]
    from: PathBuf,
    /// New data: a SynthScars-layout dataset (convert the folder format first with
    /// `legion data import-folder`).
    #[arg(long)]
    data: PathBuf,
    /// Fine-tuning config (TOML).
    #[arg(long, default_value = "configs/finetune.toml")]
    config: PathBuf,
    /// Mix in the original data from this dataset...
    #[arg(long)]
    mix: Option<PathBuf>,
    /// ...at this fraction of the training samples.
    #[arg(long, default_value_t = 0.0)]
    mix_ratio: f64,
    /// Output folder (overrides run.out_dir).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override a config field (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue from the newest checkpoint in the run's out_dir.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    distributed: DistributedArgs,
}

/// Progress bar with the loss terms, learning rate, speed and ETA.
struct BarObserver {
    bar: Mutex<Option<ProgressBar>>,
}

impl TrainObserver for BarObserver {
    fn on_start(&self, first_step: u64, total_steps: u64) {
        let bar = ProgressBar::new(total_steps);
        bar.set_style(
            ProgressStyle::with_template("train [{bar:30}] {pos}/{len} {msg} {per_sec} ETA {eta}")
                .expect("static template is valid")
                .progress_chars("=> "),
        );
        bar.set_position(first_step);
        bar.enable_steady_tick(Duration::from_millis(500));
        *self.bar.lock().expect("bar lock") = Some(bar);
    }

    fn on_step(&self, r: &StepRecord) {
        if let Some(bar) = self.bar.lock().expect("bar lock").as_ref() {
            bar.set_message(format!(
                "loss {:.4} (ce {:.3} bce {:.3} dice {:.3}) lr {:.2e}",
                r.loss, r.ce, r.bce, r.dice, r.lr
            ));
            bar.set_position(r.step);
            // Without a terminal the bar is hidden: print a line every 10% for logs.
            if bar.is_hidden() && (r.step.is_multiple_of((r.total_steps / 10).max(1)) || r.skipped)
            {
                eprintln!(
                    "step {}/{}: loss {:.4} (ce {:.4} bce {:.4} dice {:.4}) lr {:.2e} grad-norm {:.3}{}",
                    r.step,
                    r.total_steps,
                    r.loss,
                    r.ce,
                    r.bce,
                    r.dice,
                    r.lr,
                    r.grad_norm,
                    if r.skipped { " SKIPPED" } else { "" }
                );
            }
        }
    }

    fn on_message(&self, message: &str) {
        match self.bar.lock().expect("bar lock").as_ref() {
            Some(bar) if !bar.is_hidden() => bar.println(message),
            _ => eprintln!("{message}"),
        }
    }
}

fn print_summary(summary: &TrainSummary) {
    println!(
        "trained {} steps in {:.1} s ({:.2} steps/s this session; {} skipped, {} bad samples \
         dropped); trainable parameters {} of {}",
        summary.steps,
        summary.train_seconds,
        summary.steps_per_second,
        summary.skipped_steps,
        summary.dropped_samples,
        summary.parameters.0,
        summary.parameters.1
    );
    if summary.ranks > 1 {
        println!(
            "{} processes; gradient all-reduce (host-staged) {:.2} ms per step",
            summary.ranks,
            summary.allreduce_seconds_per_step * 1e3
        );
    }
    let row = |name: &str, e: &EvalSummary| {
        println!(
            "| {name:<22} | {:>6.2} | {:>6.2} | {:>7.2} | {:>11.2} |",
            e.miou, e.f1, e.rouge_l, e.masks_per_image
        );
    };
    fn segment(scores: &Option<TaskEval>) -> Option<&EvalSummary> {
        match scores {
            Some(TaskEval::Segment(scores)) => Some(scores),
            _ => None,
        }
    }
    let (before, after) = (segment(&summary.before), segment(&summary.after));
    if let Some(reference) = after.or(before) {
        println!();
        println!(
            "held-out split ({} images, per-image mean x100, paper convention):",
            reference.images
        );
        println!("| model                  |   mIoU |     F1 | ROUGE-L | masks/image |");
        println!("|------------------------|--------|--------|---------|-------------|");
        println!(
            "| {:<22} | {:>6.2} | {:>6.2} | {:>7} | {:>11} |",
            "all-background", reference.background_miou, reference.background_f1, "-", "0.00"
        );
        if let Some(e) = before {
            row("untrained (same init)", e);
        }
        if let Some(e) = after {
            row("trained", e);
        }
        for (name, scores) in [("untrained", before), ("trained", after)] {
            if let Some(kinds) = scores.and_then(|e| e.kinds.as_ref()) {
                println!();
                println!(
                    "{name}: the first phrase names the planted kind of artifact on {:.1}% of {} images",
                    kinds.accuracy, kinds.images
                );
                print!("{}", kinds.table());
            }
        }
    }
    for (name, scores) in [("untrained", &summary.before), ("trained", &summary.after)] {
        match scores {
            Some(TaskEval::Detect(scores)) => println!("held-out, {name}: {}", scores.one_line()),
            Some(TaskEval::Clip(scores)) => println!("held-out, {name}: {}", scores.one_line()),
            _ => {}
        }
    }
    println!();
    println!("model:   {}", summary.final_model.display());
    println!(
        "logs:    {}  (loss_curve.html, loss_curve.png, summary.json)",
        summary.out_dir.join("metrics.jsonl").display()
    );
}

fn run_with(config: TrainConfig, resume: bool, distributed: &DistributedArgs) -> Result<ExitCode> {
    match distributed.distributed {
        None => {
            if let Some(ranks) = launcher_world_size()
                && ranks > 1
            {
                bail!(
                    "started by an MPI launcher with {ranks} processes but without \
                     --distributed mpi: each would train alone into the same out_dir"
                );
            }
            run_as(config, resume, &SingleProcess)
        }
        Some(Distributed::Mpi) => run_mpi(config, resume),
    }
}

/// Trains as one rank of `comm`: rank 0 draws the progress and prints the summary.
fn run_as(config: TrainConfig, resume: bool, comm: &dyn Collective) -> Result<ExitCode> {
    if comm.rank() != 0 {
        train_with(&config, resume, &LogObserver, comm)?;
        return Ok(ExitCode::SUCCESS);
    }
    let observer = BarObserver {
        bar: Mutex::new(None),
    };
    let result = train_with(&config, resume, &observer, comm);
    if let Some(bar) = observer.bar.lock().expect("bar lock").take() {
        bar.finish_and_clear();
    }
    let summary = result?;
    print_summary(&summary);
    Ok(ExitCode::SUCCESS)
}

/// One rank of an MPI job. An error on any rank ends every rank (`MPI_Abort`) after printing
/// it, so that no process waits for a dead one.
#[cfg(feature = "mpi")]
fn run_mpi(config: TrainConfig, resume: bool) -> Result<ExitCode> {
    use legion_train::distributed::mpi::MpiCollective;
    let comm = MpiCollective::init().context("starting MPI")?;
    match run_as(config, resume, &comm) {
        Err(e) if comm.size() > 1 => {
            eprintln!(
                "error: rank {} of {}: {e:#}\nerror: stopping all {} processes of the job",
                comm.rank(),
                comm.size(),
                comm.size()
            );
            comm.abort(2)
        }
        result => result,
    }
}

#[cfg(not(feature = "mpi"))]
fn run_mpi(_config: TrainConfig, _resume: bool) -> Result<ExitCode> {
    bail!(
        "--distributed mpi: this legion was built without MPI support; build it with \
         `cargo build --release -p legion-cli --features mpi` (needs an MPI library and \
         libclang, e.g. Debian's libopenmpi-dev and libclang-dev)"
    )
}

pub fn run_train(args: TrainArgs) -> Result<ExitCode> {
    let mut overrides = args.overrides;
    if let Some(devices) = args.devices {
        let list: Vec<String> = devices
            .split(',')
            .map(|d| format!("\"{}\"", d.trim()))
            .collect();
        overrides.push(format!("run.devices=[{}]", list.join(",")));
    }
    let config = TrainConfig::load(&args.config, &overrides)
        .with_context(|| format!("loading {}", args.config.display()))?;
    run_with(config, args.resume, &args.distributed)
}

pub fn run_finetune(args: FinetuneArgs) -> Result<ExitCode> {
    let mut overrides = vec![
        format!("model.init={}", toml_string(&args.from)),
        format!("data.root={}", toml_string(&args.data)),
    ];
    if let Some(mix) = &args.mix {
        overrides.push(format!("data.mix_root={}", toml_string(mix)));
        overrides.push(format!("data.mix_ratio={}", args.mix_ratio));
    }
    if let Some(out) = &args.out {
        overrides.push(format!("run.out_dir={}", toml_string(out)));
    }
    overrides.extend(args.overrides);
    let config = TrainConfig::load(&args.config, &overrides)
        .with_context(|| format!("loading {}", args.config.display()))?;
    run_with(config, args.resume, &args.distributed)
}

fn toml_string(path: &std::path::Path) -> String {
    toml_quote(&path.display().to_string())
}

fn toml_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
