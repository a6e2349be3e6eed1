//! Every binary logs the same way (`mycel_telemetry`): JSON lines on
//! request, a bad setting named on stderr and never fatal. Checked on the
//! real binaries, since the set-up runs before anything else in them.

use std::process::Stdio;
use std::time::Duration;

use mycel_tests::process::bin;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Starts `program args` with `env`, returns its first `n` stderr lines
/// (at most 10 s), then kills it.
async fn first_lines(program: &str, args: &[&str], env: &[(&str, &str)], n: usize) -> Vec<String> {
    let mut child = tokio::process::Command::new(bin(program))
        .args(args)
        // Removed first: the test's own settings must not leak in.
        .env_remove("MYCEL_LOG")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while out.len() < n {
            match lines.next_line().await {
                Ok(Some(l)) => out.push(l),
                _ => break,
            }
        }
    })
    .await;
    let _ = child.kill().await;
    out
}

#[tokio::test]
async fn json_log_lines_are_one_object_each_with_level_target_and_fields() {
    let lines = first_lines(
        "mycel-demo",
        &["ratings", "--listen", "127.0.0.1:0"],
        &[("MYCEL_LOG_FORMAT", "json")],
        1,
    )
    .await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let v: serde_json::Value = serde_json::from_str(&lines[0]).expect("a JSON object per line");
    assert_eq!(v["level"], "INFO", "{v}");
    assert_eq!(v["target"], "mycel_demo::app", "{v}");
    assert_eq!(v["message"], "serving", "{v}");
    assert_eq!(v["service"], "ratings", "{v}");
    assert!(v["timestamp"].is_string(), "{v}");
}

#[tokio::test]
async fn bad_log_settings_are_named_and_the_program_runs_on_defaults() {
    let lines = first_lines(
        "mycel-demo",
        &["ratings", "--listen", "127.0.0.1:0"],
        &[("RUST_LOG", "[bad"), ("MYCEL_LOG_FORMAT", "xml")],
        4,
    )
    .await;
    assert_eq!(
        lines[..3],
        [
            r#"mycel-demo: RUST_LOG "[bad" is not a valid filter (invalid filter directive); ignored"#,
            r#"mycel-demo: using the default filter "info""#,
            r#"mycel-demo: MYCEL_LOG_FORMAT "xml" is not text or json; using text"#,
        ],
        "{lines:?}"
    );
    // ...and it runs, logging text at the default level.
    assert!(
        lines[3].contains(" INFO ") && lines[3].contains("serving"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn the_log_format_flag_wins_over_the_environment() {
    // The flag says json, the environment text: JSON it is.
    let lines = first_lines(
        "mycel-demo",
        &["ratings", "--listen", "127.0.0.1:0", "--log-format", "json"],
        &[("MYCEL_LOG_FORMAT", "text")],
        1,
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(lines.first().map_or("", String::as_str))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {lines:?}"));
    assert_eq!(v["message"], "serving", "{v}");

    // A global flag: after the subcommand too, and a bad value is refused
    // naming the flag.
    let lines = first_lines(
        "mycel-controller",
        &["token", "list", "--log-format=yaml"],
        &[],
        3,
    )
    .await;
    let text = lines.join("\n");
    assert!(
        text.contains("--log-format") && text.contains("yaml"),
        "{text}"
    );
}
