//! `studio models`: the installed models and their shapes.

pub fn run() {
    let dir = inference::models_dir();
    let models = inference::installed_models(&dir);
    if models.is_empty() {
        println!("no models in {}: run scripts/fetch-models.sh", dir.display());
    }
    for (name, path) in models {
        match inference::ModelFiles::inspect(&path) {
            Ok((files, tok)) => println!(
                "{name:<16} {:<7} {:>2} layers  vocab {:>7}  context {:>6}  {}",
                files.config.architecture(),
                files.config.num_layers(),
                tok.vocab_size(),
                files.config.context_length(),
                path.display()
            ),
            Err(e) => println!("{name:<16} unreadable: {e}"),
        }
    }
}
