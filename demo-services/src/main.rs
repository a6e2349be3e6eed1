//! `mycel-demo <frontend|catalog|reviews|ratings|orders|notifications> --listen ADDR [...]`,
//! `mycel-demo fetch URL [...]`, `mycel-demo store KIND --dir DIR --listen ADDR`,
//! `mycel-demo issuer --key-dir DIR --listen ADDR` or `mycel-demo token --key-dir DIR`.

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
        Invocation::Issuer(args) => Ok(mycel_demo::issuer::serve(&args).await?),
        Invocation::Token(args) => {
            println!("{}", mycel_demo::issuer::token(&args)?);
            Ok(())
        }
        Invocation::Store(args) => {
            // The server's own status (or 3 for a missing binary) is the
            // answer the launcher supervises, so it is passed on as it is.
            let code = match mycel_demo::store::run(&args).await {
                Ok(code) => code,
                Err(mycel_demo::store::StoreError::Missing(m)) => {
                    mycel_demo::store::report_missing(&m)
                }
                Err(e) => return Err(e.into()),
            };
            std::process::exit(code)
        }
    }
}
