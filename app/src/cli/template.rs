//! `studio template`: check, render and run template files (the prompts/ format) without a server.

use anyhow::Result;
use clap::Subcommand;
use inference::{EngineConfig, GenerateRequest, SamplingParams};

use crate::templates::TokenIds;

#[derive(Subcommand)]
pub enum TemplateAction {
    /// Check template files: parse and validate, report line and field of any error.
    Check { files: Vec<std::path::PathBuf> },
    /// Print the exact prompt a template file renders to.
    Render {
        file: std::path::PathBuf,
        /// A variable, as name=value (repeatable).
        #[arg(long = "var")]
        vars: Vec<String>,
    },
    /// Render a template file and run it on a model with the file's parameters.
    Run {
        file: std::path::PathBuf,
        #[arg(long = "var")]
        vars: Vec<String>,
        #[arg(long, default_value = "gemma3-270m")]
        model: String,
        /// Also run every example as a test: its input in place of the first variable,
        /// the other examples as the few shots; prints expected vs got.
        #[arg(long)]
        examples: bool,
    },
}

fn parse_vars(vars: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    vars.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--var expects name=value, got {kv:?}"))
        })
        .collect()
}

/// Generates greedily (or with the file's parameters) for one rendered prompt.
/// The version's prompt for the loaded model (chat versions through its chat template).
fn render(
    engine: &inference::Engine,
    model: &str,
    spec: &crate::templates::VersionSpec,
    vars: &std::collections::BTreeMap<String, String>,
) -> Result<crate::templates::Rendered> {
    Ok(crate::serving::chat::render_version(engine.tokenizer(), model, spec, vars)?)
}

fn run_rendered(
    engine: &mut inference::Engine,
    spec: &crate::templates::VersionSpec,
    rendered: &crate::templates::Rendered,
) -> Result<String> {
    let (ids, _) = rendered.token_ids(engine.tokenizer())?;
    let p = &spec.parameters;
    // The file's output constraint holds here as on its endpoint.
    let constraint = match crate::templates::output::constraint_spec(spec)? {
        Some((field, c)) => Some(engine.constraints().compile(&c).map_err(|e| anyhow::anyhow!("{field}: {e}"))?),
        None => None,
    };
    let req = GenerateRequest {
        prompt_tokens: ids,
        max_tokens: p.max_tokens,
        sampling: SamplingParams {
            temperature: p.temperature,
            top_p: p.top_p,
            top_k: p.top_k,
            repetition_penalty: p.repetition_penalty,
            seed: p.seed,
            ..Default::default()
        },
        stop: p.stop.clone(),
        ignore_eos: false,
        forced: Vec::new(),
        constraint,
        soft_prompt: None,
    };
    let out = engine.generate(req, |_| {})?;
    Ok(out.text)
}

pub fn run(action: TemplateAction) -> Result<()> {
    match action {
        TemplateAction::Check { files } => {
            let mut bad = 0;
            for f in &files {
                match crate::templates::library::read(f) {
                    Ok(t) => println!("ok   {} ({}, {} examples)", f.display(), t.name, t.examples.len()),
                    Err(e) => {
                        bad += 1;
                        println!("FAIL {e}");
                    }
                }
            }
            if bad > 0 {
                anyhow::bail!("{bad} of {} files failed", files.len());
            }
        }
        TemplateAction::Render { file, vars } => {
            let t = crate::templates::library::read(&file).map_err(anyhow::Error::msg)?;
            print!("{}", t.spec().render(&parse_vars(&vars)?)?.text());
        }
        TemplateAction::Run { file, vars, model, examples } => {
            let t = crate::templates::library::read(&file).map_err(anyhow::Error::msg)?;
            let spec = t.spec();
            let mut engine = inference::load_engine(&model, 1, EngineConfig::default())?;
            if !vars.is_empty() {
                let rendered = render(&engine, &model, &spec, &parse_vars(&vars)?)?;
                println!("{}", run_rendered(&mut engine, &spec, &rendered)?);
            }
            if examples {
                // Leave-one-out: each example is the input, the others are the shots.
                let var = spec.variables().first().cloned().ok_or_else(|| anyhow::anyhow!("no variable"))?;
                let mut right = 0;
                for i in 0..spec.examples.len() {
                    let mut shots = spec.clone();
                    let held = shots.examples.remove(i);
                    let vars = std::collections::BTreeMap::from([(var.clone(), held.input.clone())]);
                    let prompt = render(&engine, &model, &shots, &vars)?;
                    let got = run_rendered(&mut engine, &shots, &prompt)?;
                    let ok = got.trim() == held.output.trim();
                    right += ok as usize;
                    println!("{} expected {:?} got {:?}", if ok { "=" } else { "x" }, held.output, got.trim());
                }
                println!("{right}/{} examples reproduced (leave-one-out)", spec.examples.len());
            }
        }
    }
    Ok(())
}
