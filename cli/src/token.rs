//! `mycelctl token create`: a join token for one service account, printed
//! once on stdout; only its hash is kept in `<data-dir>/tokens.json`.

use std::path::Path;

use anyhow::Context;

pub fn create(data_dir: &Path, namespace: &str, service_account: &str) -> anyhow::Result<()> {
    let token = mycel_control_plane::ca::tokens::create_token(data_dir, namespace, service_account)
        .with_context(|| {
            format!(
                "creating a token for {namespace}/{service_account} in {}",
                data_dir.display()
            )
        })?;
    println!("{token}");
    Ok(())
}
