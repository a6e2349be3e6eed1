//! The examples in `examples/` run as their README says, so they cannot rot.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mycel_tests::mesh::next_ip;
use mycel_tests::process::processes_mentioning;
use mycel_tests::{bin, skip};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn has(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn local_example_meshes_two_apps_and_cleans_up() {
    if !skip::require(
        "python3 and curl (examples/local/run.sh uses them)",
        has("python3") && has("curl"),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = bin("mycel-proxy").parent().unwrap().to_path_buf();
    let (hello, client) = (next_ip(), next_ip());
    let grpc = mycel_tests::ports::free_block(2);
    let out = dir.path().join("run.log");
    let mut child = Command::new("bash")
        .arg(repo_root().join("examples/local/run.sh"))
        .args(["--check", "--bin-dir"])
        .arg(&bin_dir)
        .env("HELLO_IP", hello.to_string())
        .env("CLIENT_IP", client.to_string())
        .env("CONTROLLER_PORT", grpc.to_string())
        .env("CONTROLLER_ADMIN_PORT", (grpc + 1).to_string())
        .env("TMPDIR", dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.path().join("run.err")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            // SIGTERM lets the script's trap stop what it started.
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            std::thread::sleep(Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = format!(
        "{}{}",
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(dir.path().join("run.err")).unwrap_or_default()
    );
    let status = status.unwrap_or_else(|| panic!("run.sh --check did not finish in 120 s:\n{log}"));
    assert!(status.success(), "run.sh --check failed ({status}):\n{log}");
    assert!(
        log.contains("hello from hello; caller: spiffe://cluster.local/ns/demo/sa/client"),
        "{log}"
    );
    // The script removes its temporary directory (made under TMPDIR) on exit.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("mycel-local."))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let needle = dir.path().display().to_string();
    let running = processes_mentioning(&needle);
    assert!(running.is_empty(), "processes left behind: {running:#?}");
}
