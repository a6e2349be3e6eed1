//! `mycelctl token create|list|revoke`: join tokens in
//! `<data-dir>/tokens.json` (hashes only; a new token is printed once).

use anyhow::Context;
use mycel_tokens::cli::{self, TokenCommand};

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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// The names in a manifest's `[dependencies]` table (not dev or build).
    fn dependencies(manifest: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut inside = false;
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                inside = line == "[dependencies]";
                continue;
            }
            if inside && !line.is_empty() && !line.starts_with('#') {
                let name = line.split(['=', '.']).next().unwrap_or("").trim();
                out.push(name.to_string());
            }
        }
        out
    }

    /// The directory of a workspace crate, from `[workspace.dependencies]`.
    fn crate_dir(root: &Path, workspace: &str, name: &str) -> Option<PathBuf> {
        let line = workspace
            .lines()
            .find(|l| l.split('=').next().is_some_and(|n| n.trim() == name))?;
        let path = line.split("path = \"").nth(1)?.split('"').next()?;
        Some(root.join(path))
    }

    /// `mycelctl token` reads the store through mycel-tokens: neither it nor
    /// any crate of the workspace the binary links pulls in the controller.
    #[test]
    fn mycelctl_does_not_link_the_control_plane() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let mut todo = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
        let mut seen = Vec::new();
        while let Some(dir) = todo.pop() {
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            for dep in dependencies(&manifest) {
                assert_ne!(
                    dep,
                    "mycel-control-plane",
                    "{} links the control plane",
                    dir.display()
                );
                if dep.starts_with("mycel-") && !seen.contains(&dep) {
                    todo.extend(crate_dir(&root, &workspace, &dep));
                    seen.push(dep);
                }
            }
        }
        assert!(seen.iter().any(|d| d == "mycel-tokens"), "{seen:?}");
    }
}
