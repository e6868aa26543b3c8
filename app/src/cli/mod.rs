//! The `studio` command line: one file per subcommand.

pub mod bench;
pub mod bench_serve;
pub mod eval;
pub mod generate;
pub mod keys;
pub mod models;
pub mod serve;
pub mod template;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "studio", version, about = "Self-hosted prompt-engineering studio on a tensor-parallel GPT engine")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Multiply with candle's quantized kernels (the weights read again for every row)
    /// instead of the batched kernel that reads them once for the whole batch.
    #[arg(long, global = true)]
    candle_matmul: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streamed to stdout.
    Generate(generate::GenerateArgs),
    /// Serve the OpenAI-compatible API.
    Serve(serve::ServeArgs),
    /// Manage API keys (once one exists, /v1 and /api require `Authorization: Bearer`).
    Keys(keys::KeysArgs),
    /// Work with template files (the prompts/ format) without a server.
    Template {
        #[command(subcommand)]
        action: template::TemplateAction,
    },
    /// Load-test a server: tokens/s by concurrency, few-shot TTFT with and without the
    /// prefix cache, short-completion requests/min.
    BenchServe(bench_serve::BenchServeArgs),
    /// Evaluate a template file over a test set, or pick its few-shot examples.
    Eval {
        #[command(subcommand)]
        action: eval::EvalAction,
    },
    /// List installed models.
    Models,
    /// Benchmark load time, prefill and decode throughput.
    Bench(bench::BenchArgs),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> Result<()> {
    let cli = Cli::parse();
    inference::tp::set_batched_matmul(!cli.candle_matmul);
    match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Keys(args) => keys::run(args),
        Command::Template { action } => template::run(action),
        Command::BenchServe(args) => bench_serve::run_cmd(args),
        Command::Eval { action } => eval::run(action),
        Command::Models => {
            models::run();
            Ok(())
        }
        Command::Bench(args) => bench::run(args),
    }
}

/// `--database-url`, else `$DATABASE_URL`, else the SQLite file under `data/`.
pub fn database_url(arg: Option<String>) -> String {
    arg.unwrap_or_else(crate::store::database_url_from_env)
}
