//! `legion debug`: developer tools for comparing components with the PyTorch reference.
//!
//! ```text
//! legion debug forward sam-image-encoder --checkpoint ckpt/sam --input in.npy --output out.npy
//! legion debug forward legion --checkpoint ckpt/legion --input clip.npy --input ids.npy --output logits.npy
//! ```
//!
//! The work is done by `legion_model::debug` (its module docs list each component's
//! `config.json`, weights and inputs); this module only parses the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use legion_backend::DeviceSpec;
use legion_model::debug::{DebugComponent, debug_forward};

/// `legion debug ...`
#[derive(Debug, Args)]
pub struct DebugCommand {
    #[command(subcommand)]
    pub command: DebugSubcommand,
}

/// The debug tools.
#[derive(Debug, Subcommand)]
pub enum DebugSubcommand {
    /// Run one component on .npy inputs and write its output as .npy.
    Forward(ForwardArgs),
}

/// Arguments of `legion debug forward`.
#[derive(Debug, Args)]
pub struct ForwardArgs {
    /// Component: clip-vision, llama, sam-image-encoder, sam-mask-decoder or legion.
    #[arg(value_parser = parse_component)]
    pub component: DebugComponent,
    /// Directory with config.json and the weights (model.safetensors or the only *.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Input .npy files, in the component's order (repeat the flag).
    #[arg(long = "input", required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output .npy file (f32).
    #[arg(long)]
    pub output: PathBuf,
    /// Device: cpu, wgpu, wgpu:N or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn parse_component(s: &str) -> Result<DebugComponent, legion_model::debug::DebugError> {
    s.parse()
}

/// Runs `legion debug`.
///
/// # Errors
/// Any failure of the component run, with the files named.
pub fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    match cmd.command {
        DebugSubcommand::Forward(args) => {
            let spec: DeviceSpec = args.device.parse()?;
            let device = spec.device()?;
            let shape = debug_forward(
                args.component,
                &args.checkpoint,
                &args.inputs,
                &args.output,
                &device,
            )
            .with_context(|| {
                format!(
                    "debug forward {} from {}",
                    args.component,
                    args.checkpoint.display()
                )
            })?;
            println!("wrote {} {:?}", args.output.display(), shape);
            Ok(ExitCode::SUCCESS)
        }
    }
}
