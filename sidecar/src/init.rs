//! `mycel-proxy init`: the init-container program of transparent mode. It
//! programs the `nat` table of the network namespace it runs in so that the
//! pod's TCP goes through the sidecar without the app knowing.
//!
//! [`rules`] decides what to install (pure); [`apply`] installs or removes
//! it with `iptables-restore --noflush` in one atomic transaction (nf_tables backend first, legacy as fallback).

pub mod apply;
pub mod rules;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Parser;
use ipnet::Ipv4Net;

use apply::{ApplyError, Iptables, Runner};
use rules::{plan, CaptureConfig};

/// The subcommand's name: `mycel-proxy init [flags]`.
pub const SUBCOMMAND: &str = "init";

/// Default ports, shared with the sidecar's transparent listeners.
pub const DEFAULT_OUTBOUND_CAPTURE_PORT: u16 = 15001;
pub const DEFAULT_INBOUND_CAPTURE_PORT: u16 = 15008;
pub const DEFAULT_PROXY_UID: u32 = 1337;

/// Help headings of `init`.
mod heading {
    pub const CAPTURE: &str = "Capture";
    pub const EXCLUDE: &str = "Left alone";
    pub const ACTION: &str = "Action";
}

/// The flags of `mycel-proxy init` (a subcommand of the proxy's command line,
/// `config::command`).
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The sidecar's UID; its own traffic is never captured.
    #[arg(long, value_name = "UID", default_value_t = DEFAULT_PROXY_UID, help_heading = heading::CAPTURE)]
    proxy_uid: u32,
    /// Port of the sidecar's --transparent-outbound listener.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_OUTBOUND_CAPTURE_PORT,
          value_parser = clap::value_parser!(u16).range(1..), help_heading = heading::CAPTURE)]
    outbound_capture_port: u16,
    /// Port of the sidecar's --inbound-capture listener; 0 captures no inbound traffic.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_INBOUND_CAPTURE_PORT,
          help_heading = heading::CAPTURE)]
    inbound_capture_port: u16,
    /// The sidecar's mesh (mTLS) port, never captured inbound.
    #[arg(long, value_name = "PORT", default_value_t = 15006,
          value_parser = clap::value_parser!(u16).range(1..), help_heading = heading::EXCLUDE)]
    mesh_port: u16,
    /// The sidecar's admin port, never captured inbound (probes).
    #[arg(long, value_name = "PORT", default_value_t = 15000,
          value_parser = clap::value_parser!(u16).range(1..), help_heading = heading::EXCLUDE)]
    admin_port: u16,
    /// More inbound ports left alone (comma separated or repeated).
    #[arg(long, value_name = "PORT", value_delimiter = ',',
          value_parser = clap::value_parser!(u16).range(1..), help_heading = heading::EXCLUDE)]
    exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone (comma separated or repeated).
    #[arg(long, value_name = "PORT", value_delimiter = ',',
          value_parser = clap::value_parser!(u16).range(1..), help_heading = heading::EXCLUDE)]
    exclude_outbound_ports: Vec<u16>,
    /// Outbound destination networks left alone, IPv4 `a.b.c.d/n` (comma
    /// separated or repeated).
    #[arg(long, value_name = "CIDR", value_delimiter = ',', value_parser = ipv4_net,
          help_heading = heading::EXCLUDE)]
    exclude_outbound_cidrs: Vec<Ipv4Net>,
    /// Print the rules (iptables-restore format) and change nothing.
    #[arg(long, help_heading = heading::ACTION)]
    dry_run: bool,
    /// Remove every rule and chain this program installs.
    #[arg(long, conflicts_with = "dry_run", help_heading = heading::ACTION)]
    cleanup: bool,
    /// The iptables program to use instead of detecting one; its `-save` and
    /// `-restore` siblings (e.g. `iptables-nft-restore`) do the work.
    #[arg(long, value_name = "PATH", help_heading = heading::ACTION)]
    iptables: Option<PathBuf>,
}

/// A CIDR that is not an IPv4 network (ipnet's own message says only
/// "invalid IP address syntax").
#[derive(Debug, thiserror::Error)]
#[error("expected an IPv4 network a.b.c.d/n (n in 0..=32)")]
pub struct CidrError;

fn ipv4_net(raw: &str) -> Result<Ipv4Net, CidrError> {
    raw.parse().map_err(|_| CidrError)
}

/// `init` alone, for [`parse`].
#[derive(Debug, Parser)]
#[command(name = SUBCOMMAND, bin_name = "mycel-proxy init")]
struct Standalone {
    #[command(flatten)]
    args: InitArgs,
}

/// What goes wrong in `init`.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Cli(#[from] clap::Error),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// What a parsed command line asks for.
#[derive(Debug)]
pub struct InitCommand {
    pub capture: CaptureConfig,
    pub action: Action,
    pub iptables: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Apply,
    DryRun,
    Cleanup,
}

/// Parses `mycel-proxy init ...` (program name, then `init`, then flags);
/// the proxy itself parses `init` as a subcommand (`config::Invocation`).
pub fn parse(args: &[OsString]) -> Result<InitCommand, InitError> {
    Ok(Standalone::try_parse_from(args.iter().skip(1))?.args.into())
}

impl From<InitArgs> for InitCommand {
    fn from(a: InitArgs) -> Self {
        let inbound = (a.inbound_capture_port != 0).then_some(a.inbound_capture_port);
        let mut exclude_inbound = vec![a.mesh_port, a.admin_port];
        exclude_inbound.extend(a.exclude_inbound_ports);
        let action = match (a.dry_run, a.cleanup) {
            (true, _) => Action::DryRun,
            (_, true) => Action::Cleanup,
            _ => Action::Apply,
        };
        InitCommand {
            capture: CaptureConfig {
                outbound_port: a.outbound_capture_port,
                inbound_port: inbound,
                proxy_uid: a.proxy_uid,
                exclude_outbound_ports: a.exclude_outbound_ports,
                // Host bits dropped, as iptables itself lists the network.
                exclude_outbound_cidrs: a
                    .exclude_outbound_cidrs
                    .iter()
                    .map(Ipv4Net::trunc)
                    .collect(),
                exclude_inbound_ports: exclude_inbound,
            },
            action,
            iptables: a.iptables,
        }
    }
}

/// Carries out `cmd`; returns what to print on success.
pub fn execute(cmd: &InitCommand) -> Result<String, InitError> {
    let set = plan(&cmd.capture);
    if cmd.action == Action::DryRun {
        return Ok(set.render());
    }
    apply::check_privilege(Path::new("/proc/self/status"))?;
    let mut runner: Box<dyn Runner> = match &cmd.iptables {
        Some(p) => Box::new(Iptables::for_program(p)),
        None => Box::new(Iptables::detect()?),
    };
    match cmd.action {
        Action::Cleanup => {
            apply::cleanup(runner.as_mut())?;
            Ok("mycel-proxy init: rules removed\n".into())
        }
        _ => {
            apply::apply(runner.as_mut(), &set)?;
            Ok(format!(
                "mycel-proxy init: {} rules installed\n",
                set.rules.len() + set.jumps.len()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn parses_flags() {
        let cmd = parse(&args(
            "mycel-proxy init --proxy-uid 7 --exclude-outbound-ports 53,5432 --exclude-outbound-cidrs 10.0.0.0/8,192.168.1.7/16 --exclude-inbound-ports 9090 --dry-run",
        ))
        .unwrap();
        let cidrs: Vec<String> = cmd
            .capture
            .exclude_outbound_cidrs
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(cidrs, ["10.0.0.0/8", "192.168.0.0/16"]);
        assert_eq!(cmd.action, Action::DryRun);
        assert_eq!(cmd.capture.proxy_uid, 7);
        assert_eq!(cmd.capture.exclude_outbound_ports, vec![53, 5432]);
        assert_eq!(cmd.capture.exclude_inbound_ports, vec![15006, 15000, 9090]);
        assert_eq!(cmd.capture.inbound_port, Some(15008));
        let off = parse(&args("mycel-proxy init --inbound-capture-port 0 --cleanup")).unwrap();
        assert_eq!(off.capture.inbound_port, None);
        assert_eq!(off.action, Action::Cleanup);
    }

    #[test]
    fn bad_flags_are_named() {
        let cases = [
            (
                "mycel-proxy init --exclude-outbound-cidrs 10.0.0.0",
                "10.0.0.0",
            ),
            (
                "mycel-proxy init --exclude-outbound-cidrs 10.0.0.0/33",
                "'10.0.0.0/33' for '--exclude-outbound-cidrs <CIDR>': expected an IPv4 network",
            ),
            (
                "mycel-proxy init --outbound-capture-port 0",
                "'0' for '--outbound-capture-port <PORT>'",
            ),
            (
                "mycel-proxy init --exclude-outbound-ports 53,x",
                "'x' for '--exclude-outbound-ports <PORT>'",
            ),
            ("mycel-proxy init --dry-run --cleanup", "--cleanup"),
        ];
        for (line, want) in cases {
            let err = parse(&args(line)).unwrap_err().to_string();
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn dry_run_needs_no_privilege() {
        let cmd = parse(&args("mycel-proxy init --dry-run")).unwrap();
        let out = execute(&cmd).unwrap();
        assert!(out.contains("-A OUTPUT -p tcp -j MYCEL_OUTPUT"), "{out}");
    }
}
