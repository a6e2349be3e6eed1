//! `mycelctl top`: the busiest edges and routes, measured again and again
//! and printed as plain text (no terminal control beyond clearing the
//! screen when stdout is a terminal), for a bounded number of rounds.

use std::io::IsTerminal;

use anyhow::bail;

use super::{measure, proxies, render, Scope};

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// Rounds to show before exiting (each one window long).
    #[arg(long, value_name = "N", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub iterations: u32,
    /// Rows per table.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub rows: u16,
}

pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    let clear = std::io::stdout().is_terminal();
    for round in 1..=args.iterations {
        // Re-listed every round: proxies come and go.
        let proxies = proxies(&args.scope).await?;
        if proxies.is_empty() {
            bail!("no meshed proxies found{}", render::where_(&args.scope));
        }
        let report = measure(&args.scope, &proxies).await?;
        if clear {
            print!("\x1b[2J\x1b[H");
        }
        let rows = usize::from(args.rows);
        println!(
            "mycelctl top: round {round}/{}, window {:.1}s, {} proxies",
            args.iterations,
            report.window_secs,
            proxies.len()
        );
        println!("\nBUSIEST EDGES");
        print!("{}", render::edges(&report, rows));
        println!("\nBUSIEST ROUTES");
        print!("{}", render::routes(&report, rows));
        println!();
    }
    Ok(())
}
