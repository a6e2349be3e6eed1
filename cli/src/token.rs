//! `mycelctl token create|list|revoke`: join tokens in
//! `<data-dir>/tokens.json` (hashes only; a new token is printed once).

use anyhow::Context;
use mycel_control_plane::ca::tokens::cli::{self, TokenCommand};

pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    let what = match &command {
        TokenCommand::Create {
            namespace,
            service_account,
            ..
        } => format!("creating a token for {namespace}/{service_account}"),
        TokenCommand::List { .. } => "listing tokens".to_string(),
        TokenCommand::Revoke { id, .. } => format!("revoking token {id}"),
    };
    cli::run(command).context(what)
}
