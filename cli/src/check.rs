//! `mycelctl check`: is the mesh installed and healthy in this cluster?
//! Each check is one line with a mark (`[ok]`, `[warn]`, `[FAIL]`), what was
//! found and, unless it passed, a hint saying what to do; any failure makes
//! the exit status non-zero, a warning does not. `--pre` asks only whether an install can go
//! ahead; `--proxy` adds every meshed Pod's proxy. The judgments are pure
//! functions (`verdict`), the API calls live in `cluster`.

mod cluster;
pub mod verdict;

use anyhow::bail;
use serde::Serialize;

use crate::kubeconfig::KubeArgs;
use verdict::Check;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Only what an install needs: the API server is reachable and recent
    /// enough, and you may create what the chart creates.
    #[arg(long, conflicts_with = "proxy")]
    pub pre: bool,
    /// Also check that every meshed Pod runs a ready proxy holding a valid
    /// certificate for its service account.
    #[arg(long)]
    pub proxy: bool,
    /// Namespace Mycel is installed in.
    #[arg(long, value_name = "NS", default_value = "mycel-system")]
    pub namespace: String,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per check, with a mark and a hint.
    Text,
    /// A JSON document: {"ok": bool, "checks": [{name, status, ok, detail, hint}]}.
    Json,
}

#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    checks: &'a [Check],
}

pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let checks = cluster::gather(&args).await;
    let failed = checks.iter().filter(|c| !c.ok).count();
    match args.output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&Report {
                ok: failed == 0,
                checks: &checks,
            })?
        ),
        Format::Text => {
            for c in &checks {
                println!("{}", verdict::line(c));
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} checks failed", checks.len());
    }
    Ok(())
}
