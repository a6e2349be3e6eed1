//! Reference pages of the command lines (`docs/reference/<binary>.md`),
//! rendered from each binary's clap definition so that they cannot drift
//! from the flags. Every binary has a test that renders its page and
//! compares it with the committed file ([`check`]); with
//! `MYCEL_UPDATE_DOCS=1` the test writes the file instead.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Command};

/// The environment variable that makes [`check`] write the page.
pub const UPDATE_ENV: &str = "MYCEL_UPDATE_DOCS";

/// An environment variable a binary reads: name and meaning.
pub type EnvVar = (&'static str, &'static str);

/// What a binary's page is made of.
pub struct Page<'a> {
    pub command: Command,
    /// Environment variables the binary reads.
    pub env: &'a [EnvVar],
    /// The test command that renders the page, for the "regenerate" hint.
    pub test: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error(
        "{} does not match the flags; run `{UPDATE_ENV}=1 {test}` to regenerate it",
        path.display()
    )]
    Stale { path: PathBuf, test: String },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Compares the rendered page with the file at `path`, or writes it when
/// [`UPDATE_ENV`] is set.
pub fn check(path: &Path, page: Page<'_>) -> Result<(), DocError> {
    let test = page.test.to_string();
    let rendered = render(page);
    if std::env::var_os(UPDATE_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        let write = |source| DocError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        return std::fs::write(path, rendered).map_err(write);
    }
    match std::fs::read_to_string(path) {
        Ok(committed) if committed == rendered => Ok(()),
        _ => Err(DocError::Stale {
            path: path.to_path_buf(),
            test,
        }),
    }
}

/// The page as markdown.
pub fn render(page: Page<'_>) -> String {
    let mut cmd = page.command;
    cmd.build();
    let name = cmd.get_name().to_string();
    let mut out = String::new();
    let _ = writeln!(out, "# `{name}`\n");
    let _ = writeln!(
        out,
        "<!-- Generated from the clap definition by `{}`; do not edit. \
         `{UPDATE_ENV}=1` rewrites it. -->\n",
        page.test
    );
    command(&mut out, &mut cmd, &name, true);
    if !page.env.is_empty() {
        let _ = writeln!(out, "## Environment\n");
        let _ = writeln!(out, "| variable | meaning |\n|---|---|");
        for (var, meaning) in page.env {
            let _ = writeln!(out, "| `{var}` | {} |", cell(meaning));
        }
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

fn has_subcommands(cmd: &Command) -> bool {
    cmd.get_subcommands().any(|s| s.get_name() != "help")
}

/// One command's section, then its subcommands'.
fn command(out: &mut String, cmd: &mut Command, path: &str, root: bool) {
    if !root {
        let _ = writeln!(out, "## `{path}`\n");
    }
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        let _ = writeln!(out, "{}\n", about.to_string().trim());
    }
    let usage = cmd.render_usage().to_string();
    let _ = writeln!(out, "```text\n{}\n```\n", usage.trim_end());
    if root {
        let helps = if has_subcommands(cmd) {
            format!("; `{path} help [COMMAND]` prints the same")
        } else {
            String::new()
        };
        let version = if cmd
            .get_arguments()
            .any(|a| matches!(a.get_action(), ArgAction::Version))
        {
            format!("; `{path} --version` prints the version")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "Every command takes `-h` (summary) and `--help` (all of it){helps}{version}.\n"
        );
    }

    let subs: Vec<(String, String)> = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help" && !s.is_hide_set())
        .map(|s| {
            let about = s.get_about().map(|a| a.to_string()).unwrap_or_default();
            (s.get_name().to_string(), about)
        })
        .collect();
    if !subs.is_empty() {
        let _ = writeln!(out, "| command | what |\n|---|---|");
        for (sub, about) in &subs {
            let _ = writeln!(out, "| `{path} {sub}` | {} |", cell(about));
        }
        out.push('\n');
    }

    // Groups in the order clap shows them: positionals, then options
    // without a heading, then each heading in order of first use.
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for arg in cmd.get_arguments() {
        if is_help_or_version(arg) || arg.is_hide_set() || (!root && arg.is_global_set()) {
            continue;
        }
        let heading = match arg.get_help_heading() {
            Some(h) => h.to_string(),
            None if arg.is_positional() => "Arguments".to_string(),
            None => "Options".to_string(),
        };
        let row = row(arg);
        match groups.iter_mut().find(|(h, _)| *h == heading) {
            Some((_, rows)) => rows.push(row),
            None => groups.push((heading, vec![row])),
        }
    }
    groups.sort_by_key(|(h, _)| match h.as_str() {
        "Arguments" => 0,
        "Options" => 1,
        _ => 2,
    });
    for (heading, rows) in groups {
        let _ = writeln!(out, "### {heading}\n");
        let _ = writeln!(out, "| flag | default | what |\n|---|---|---|");
        for r in rows {
            let _ = writeln!(out, "{r}");
        }
        out.push('\n');
    }

    for sub in cmd.get_subcommands_mut() {
        if sub.get_name() == "help" || sub.is_hide_set() {
            continue;
        }
        let sub_path = format!("{path} {}", sub.get_name());
        command(out, sub, &sub_path, false);
    }
}

/// The flags clap adds itself; the page says once what they do.
fn is_help_or_version(arg: &clap::Arg) -> bool {
    matches!(
        arg.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    )
}

fn row(arg: &clap::Arg) -> String {
    let takes_value = arg.get_action().takes_values();
    let value = if takes_value {
        match arg.get_value_names() {
            Some(names) => names
                .iter()
                .map(|n| format!("<{n}>"))
                .collect::<Vec<_>>()
                .join(" "),
            None => format!("<{}>", arg.get_id().as_str().to_uppercase()),
        }
    } else {
        String::new()
    };
    let flag = match (arg.get_short(), arg.get_long()) {
        _ if arg.is_positional() => value.clone(),
        (Some(s), Some(l)) => format!("-{s}, --{l} {value}"),
        (None, Some(l)) => format!("--{l} {value}"),
        (Some(s), None) => format!("-{s} {value}"),
        (None, None) => value.clone(),
    };
    let default = if takes_value {
        arg.get_default_values()
            .iter()
            .map(|v| format!("`{}`", v.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        String::new()
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(help) = arg.get_long_help().or(arg.get_help()) {
        parts.push(
            help.to_string()
                .trim_end()
                .trim_end_matches('.')
                .to_string(),
        );
    }
    if takes_value && !arg.is_hide_possible_values_set() {
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| match v.get_help() {
                Some(h) => format!("`{}` ({})", v.get_name(), lower_first(&h.to_string())),
                None => format!("`{}`", v.get_name()),
            })
            .collect();
        if !values.is_empty() {
            parts.push(format!("One of: {}", values.join(", ")));
        }
    }
    if arg.is_required_set() {
        parts.push("Required".into());
    }
    if matches!(arg.get_action(), ArgAction::Append) {
        parts.push("Repeatable".into());
    }
    let what = parts.join(". ");
    format!(
        "| `{}` | {default} | {} |",
        flag.trim_end().replace('|', "\\|"),
        cell(&what)
    )
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Text for one table cell: one line, `|` escaped, and `<`/`>` outside
/// code spans escaped so markdown does not take them for HTML.
fn cell(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::new();
    for (i, part) in flat.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 1 {
            out.push_str(part);
        } else {
            out.push_str(&part.replace('<', "&lt;").replace('>', "&gt;"));
        }
    }
    out.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_defaults_and_subcommands_are_listed() {
        let cmd = Command::new("tool")
            .about("A tool")
            .arg(
                clap::Arg::new("port")
                    .long("port")
                    .value_name("PORT")
                    .default_value("80")
                    .help("Port to use <n>"),
            )
            .arg(
                clap::Arg::new("tag")
                    .long("tag")
                    .action(ArgAction::Append)
                    .help_heading("Tags")
                    .help("A tag, `a|b`"),
            )
            .subcommand(Command::new("run").about("Run it"));
        let page = render(Page {
            command: cmd,
            env: &[("TOOL_LOG", "log filter")],
            test: "cargo test",
        });
        for want in [
            "# `tool`",
            "| `--port <PORT>` | `80` | Port to use &lt;n&gt; |",
            "### Tags",
            "| `--tag <TAG>` |  | A tag, `a\\|b`. Repeatable |",
            "| `tool run` | Run it |",
            "## `tool run`",
            "| `TOOL_LOG` | log filter |",
            "`tool help [COMMAND]`",
        ] {
            assert!(page.contains(want), "{want:?} not in:\n{page}");
        }
    }
}
