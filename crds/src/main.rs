//! `mycel-crds`: writes the CRD manifests generated from the Rust types to
//! `crds/generated/` and `helm/mycel/crds/`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match mycel_crds::generate::write_all(&mycel_crds::generate::repo_root()) {
        Ok(paths) => {
            for p in paths {
                println!("wrote {}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
