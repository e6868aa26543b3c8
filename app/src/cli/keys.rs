//! `studio keys`: create, list and revoke API keys.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::database_url;

#[derive(Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    action: KeysAction,
    #[arg(long, global = true)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key and print it (only once: just its hash is stored).
    Create {
        #[arg(long)]
        name: String,
    },
    /// List keys (name, first characters, dates).
    List,
    /// Revoke a key by name.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

pub fn run(args: KeysArgs) -> Result<()> {
    let KeysArgs { action, database_url: db } = args;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let store = crate::store::Store::connect(&database_url(db)).await?;
        match action {
            KeysAction::Create { name } => {
                let key = store.create_key(&name).await?;
                println!("{key}");
                eprintln!("key '{name}' created; it is shown only now. Send it as 'Authorization: Bearer <key>'.");
            }
            KeysAction::List => {
                for k in store.list_keys().await? {
                    let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                    println!("{:<24} {}…  {state}", k.name, k.prefix);
                }
            }
            KeysAction::Revoke { name } => {
                store.revoke_key(&name).await?;
                eprintln!("key '{name}' revoked");
            }
        }
        anyhow::Ok(())
    })?;
    Ok(())
}
