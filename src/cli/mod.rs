//! `fewstep` subcommands (native only).

mod bench;

use clap::{Parser, Subcommand};

use crate::gpu::{Gpu, GpuOptions};

/// fewstep: diffusion models distilled to a few sampling steps, on any GPU through wgpu.
///
/// Environment: FEWSTEP_BACKEND (vulkan, metal, dx12, gl) and FEWSTEP_ADAPTER (part of an
/// adapter's name) choose the GPU; FEWSTEP_KERNELS=tiled|subgroup forces a GEMM kernel family.
#[derive(Parser)]
#[command(name = "fewstep", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the GPU adapter, backend, driver, features and the limits that matter.
    Info,
    /// Measure speed; prints a table, or one JSON object per line with --json.
    Bench(bench::BenchArgs),
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

pub(crate) fn open_gpu() -> anyhow::Result<Gpu> {
    Ok(Gpu::new_blocking(GpuOptions::from_env())?)
}

fn info() -> anyhow::Result<()> {
    let gpu = open_gpu()?;
    print!("{}", gpu.describe());
    Ok(())
}
