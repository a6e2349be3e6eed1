//! Compiles the benchmark's tiny gRPC contract with protox (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/bench.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
