//! `mycel-demo <frontend|catalog|reviews|ratings|orders> --listen ADDR [...]`, or
//! `mycel-demo fetch URL [...]`.

use std::process::ExitCode;

use anyhow::Context;
use mycel_api::report::Program;
use mycel_demo::config::{parse_args, Invocation, ServiceConfig};

const PROGRAM: Program = Program {
    name: "mycel-demo",
    log_env: mycel_demo::config::ENVIRONMENT[0].0,
    default_log: "info",
};

fn main() -> ExitCode {
    PROGRAM.main(
        // `-v`/`--verbose` only changes how a fatal error is reported, so
        // the apps' own flags never see it.
        |args| {
            Ok(parse_args(
                args.into_iter().filter(|a| a != "-v" && a != "--verbose"),
            )?)
        },
        run,
    )
}

#[tokio::main]
async fn run(invocation: Invocation) -> anyhow::Result<()> {
    match invocation {
        Invocation::Serve(cli) => {
            let config = ServiceConfig::try_from(cli).context("bad flags")?;
            mycel_demo::run(config).await
        }
        Invocation::Fetch(args) => Ok(mycel_demo::fetch::run(&args).await?),
    }
}
