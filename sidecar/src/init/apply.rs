//! Installing and removing a [`RuleSet`] with the `iptables` program, in
//! the network namespace this process runs in.
//!
//! Idempotent by construction: own chains are created if missing and then
//! flushed and refilled; a jump is appended only when `-C` says it is not
//! there. Commands run through [`Runner`] so the sequence is tested without
//! privileges.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::rules::{all_chains, all_jumps, Rule, RuleSet, TABLE};

/// Why the rules could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("changing the firewall needs the CAP_NET_ADMIN capability (run it as root or grant NET_ADMIN to the init container)")]
    NotPrivileged,
    #[error("no iptables program found (tried {0}); install the iptables package")]
    NoIptables(String),
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// The outcome of one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub success: bool,
    pub stderr: String,
}

/// Runs one `iptables` command (arguments after the program name).
pub trait Runner {
    fn run(&mut self, args: &[String]) -> Result<Outcome, ApplyError>;
}

/// The real `iptables` binary.
pub struct Iptables {
    pub program: PathBuf,
}

impl Iptables {
    /// nf_tables first (what current distributions and kube-proxy use),
    /// then the legacy backend, then whatever `iptables` is: the first one
    /// installed that can read the `nat` table here (a kernel without
    /// nf_tables fails that and falls back to legacy).
    pub fn detect() -> Result<Iptables, ApplyError> {
        let candidates = ["iptables-nft", "iptables-legacy", "iptables"];
        let mut last_failure = None;
        for name in candidates {
            let Some(program) = find_in_path(name) else {
                continue;
            };
            let mut ipt = Iptables { program };
            match ipt.run(&args(&["-S", "OUTPUT"])) {
                Ok(out) if out.success => return Ok(ipt),
                Ok(out) => last_failure = Some((name, out.stderr)),
                Err(e) => last_failure = Some((name, e.to_string())),
            }
        }
        match last_failure {
            Some((name, stderr)) => Err(ApplyError::Failed {
                command: format!("{name} -w -t nat -S OUTPUT"),
                stderr,
            }),
            None => Err(ApplyError::NoIptables(candidates.join(", "))),
        }
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Runner for Iptables {
    fn run(&mut self, args: &[String]) -> Result<Outcome, ApplyError> {
        let out = Command::new(&self.program)
            .args(args)
            .output()
            .map_err(|source| ApplyError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        Ok(Outcome {
            success: out.status.success(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn args(parts: &[&str]) -> Vec<String> {
    let mut v = vec!["-w".to_string(), "-t".to_string(), TABLE.to_string()];
    v.extend(parts.iter().map(|s| s.to_string()));
    v
}

fn rule_args(op: &str, rule: &Rule) -> Vec<String> {
    let mut v = args(&[op, rule.chain]);
    v.extend(rule.args.iter().cloned());
    v
}

fn must(runner: &mut dyn Runner, a: Vec<String>) -> Result<(), ApplyError> {
    let out = runner.run(&a)?;
    if out.success {
        Ok(())
    } else {
        Err(ApplyError::Failed {
            command: format!("iptables {}", a.join(" ")),
            stderr: out.stderr,
        })
    }
}

fn chain_exists(runner: &mut dyn Runner, chain: &str) -> Result<bool, ApplyError> {
    Ok(runner.run(&args(&["-S", chain]))?.success)
}

fn jump_exists(runner: &mut dyn Runner, jump: &Rule) -> Result<bool, ApplyError> {
    Ok(runner.run(&rule_args("-C", jump))?.success)
}

/// Installs `set`, replacing whatever an earlier run left in our chains.
pub fn apply(runner: &mut dyn Runner, set: &RuleSet) -> Result<(), ApplyError> {
    // A chain this run no longer uses (inbound capture turned off) goes,
    // jump first, so a re-run with other flags leaves exactly its rules.
    for jump in all_jumps() {
        if !set.jumps.contains(&jump) {
            remove_jump(runner, &jump)?;
        }
    }
    for chain in all_chains() {
        if !set.chains.contains(&chain) {
            remove_chain(runner, chain)?;
        }
    }
    for chain in &set.chains {
        if !chain_exists(runner, chain)? {
            must(runner, args(&["-N", chain]))?;
        }
        must(runner, args(&["-F", chain]))?;
    }
    for rule in &set.rules {
        must(runner, rule_args("-A", rule))?;
    }
    for jump in &set.jumps {
        if !jump_exists(runner, jump)? {
            must(runner, rule_args("-A", jump))?;
        }
    }
    Ok(())
}

/// Deletes every jump (however many copies) and chain of ours.
pub fn cleanup(runner: &mut dyn Runner) -> Result<(), ApplyError> {
    for jump in all_jumps() {
        remove_jump(runner, &jump)?;
    }
    for chain in all_chains() {
        remove_chain(runner, chain)?;
    }
    Ok(())
}

/// Copies added by hand or by other tools are removed too; bounded so a
/// misbehaving `iptables` cannot spin us.
fn remove_jump(runner: &mut dyn Runner, jump: &Rule) -> Result<(), ApplyError> {
    for _ in 0..64 {
        if !jump_exists(runner, jump)? {
            return Ok(());
        }
        must(runner, rule_args("-D", jump))?;
    }
    Ok(())
}

fn remove_chain(runner: &mut dyn Runner, chain: &str) -> Result<(), ApplyError> {
    if chain_exists(runner, chain)? {
        must(runner, args(&["-F", chain]))?;
        must(runner, args(&["-X", chain]))?;
    }
    Ok(())
}

/// Whether a `CapEff:` line of `/proc/self/status` grants CAP_NET_ADMIN
/// (capability 12). Pure, for the table test.
pub fn has_net_admin(proc_status: &str) -> Option<bool> {
    const CAP_NET_ADMIN: u32 = 12;
    let hex = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let bits = u64::from_str_radix(hex, 16).ok()?;
    Some(bits & (1 << CAP_NET_ADMIN) != 0)
}

/// Fails with [`ApplyError::NotPrivileged`] when this process cannot change
/// the firewall; an unreadable status file leaves the verdict to iptables.
pub fn check_privilege(status_file: &Path) -> Result<(), ApplyError> {
    match std::fs::read_to_string(status_file)
        .ok()
        .and_then(|s| has_net_admin(&s))
    {
        Some(false) => Err(ApplyError::NotPrivileged),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::init::rules::{plan, CaptureConfig};

    /// A pretend nat table: chains with their rules, answering the commands
    /// [`apply`] and [`cleanup`] use.
    #[derive(Default)]
    struct FakeTable {
        chains: std::collections::BTreeMap<String, Vec<String>>,
        log: Vec<String>,
    }

    impl FakeTable {
        fn new() -> Self {
            let mut t = FakeTable::default();
            for c in ["PREROUTING", "OUTPUT"] {
                t.chains.insert(c.into(), vec![]);
            }
            t
        }

        fn rule_count(&self) -> usize {
            self.chains.values().map(Vec::len).sum()
        }
    }

    impl Runner for FakeTable {
        fn run(&mut self, a: &[String]) -> Result<Outcome, ApplyError> {
            assert_eq!(&a[..3], ["-w", "-t", "nat"]);
            self.log.push(a[3..].join(" "));
            let (op, chain, rest) = (a[3].as_str(), a[4].clone(), a[5..].join(" "));
            let ok = match op {
                "-S" => self.chains.contains_key(&chain),
                "-N" => self.chains.insert(chain, vec![]).is_none(),
                "-F" => self.chains.get_mut(&chain).map(Vec::clear).is_some(),
                "-X" => self.chains.remove(&chain).is_some(),
                "-A" => self.chains.get_mut(&chain).map(|r| r.push(rest)).is_some(),
                "-C" => self.chains.get(&chain).is_some_and(|r| r.contains(&rest)),
                "-D" => match self.chains.get_mut(&chain) {
                    Some(r) => match r.iter().position(|x| *x == rest) {
                        Some(i) => {
                            r.remove(i);
                            true
                        }
                        None => false,
                    },
                    None => false,
                },
                other => panic!("unexpected {other}"),
            };
            Ok(Outcome {
                success: ok,
                stderr: if ok { String::new() } else { "no".into() },
            })
        }
    }

    fn cfg(inbound: Option<u16>) -> CaptureConfig {
        CaptureConfig {
            outbound_port: 15001,
            inbound_port: inbound,
            proxy_uid: 1337,
            exclude_outbound_ports: vec![],
            exclude_outbound_cidrs: vec![],
            exclude_inbound_ports: vec![15006],
        }
    }

    #[test]
    fn twice_is_one_rule_set_and_cleanup_removes_all() {
        let mut t = FakeTable::new();
        let set = plan(&cfg(Some(15008)));
        apply(&mut t, &set).unwrap();
        let once = t.chains.clone();
        assert_eq!(t.rule_count(), set.rules.len() + set.jumps.len());
        apply(&mut t, &set).unwrap();
        assert_eq!(t.chains, once);
        cleanup(&mut t).unwrap();
        let left: BTreeSet<&str> = t.chains.keys().map(String::as_str).collect();
        assert_eq!(left, BTreeSet::from(["OUTPUT", "PREROUTING"]));
        assert_eq!(t.rule_count(), 0);
        // Cleaning a clean table is fine.
        cleanup(&mut t).unwrap();
    }

    #[test]
    fn rerun_without_inbound_drops_the_inbound_chain() {
        let mut t = FakeTable::new();
        apply(&mut t, &plan(&cfg(Some(15008)))).unwrap();
        apply(&mut t, &plan(&cfg(None))).unwrap();
        assert!(!t.chains.contains_key("MYCEL_INBOUND"));
        assert!(t.chains["PREROUTING"].is_empty());
        assert_eq!(t.chains["OUTPUT"].len(), 1);
    }

    #[test]
    fn duplicated_jumps_are_all_removed() {
        let mut t = FakeTable::new();
        apply(&mut t, &plan(&cfg(None))).unwrap();
        let dup = t.chains["OUTPUT"][0].clone();
        t.chains.get_mut("OUTPUT").unwrap().push(dup);
        cleanup(&mut t).unwrap();
        assert!(t.chains["OUTPUT"].is_empty());
    }

    #[test]
    fn failures_name_the_command() {
        struct Refuse;
        impl Runner for Refuse {
            fn run(&mut self, _: &[String]) -> Result<Outcome, ApplyError> {
                Ok(Outcome {
                    success: false,
                    stderr: "Permission denied (you must be root)".into(),
                })
            }
        }
        let err = apply(&mut Refuse, &plan(&cfg(None)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("iptables -w -t nat -N MYCEL_OUTPUT") && err.contains("Permission denied"),
            "{err}"
        );
    }

    #[test]
    fn net_admin_from_proc_status() {
        let cases = [
            ("Name:\tx\nCapEff:\t000001ffffffffff\n", Some(true)),
            ("CapEff:\t0000000000000000\n", Some(false)),
            ("CapEff:\t0000000000001000\n", Some(true)),
            ("CapEff:\t0000000000000fff\n", Some(false)),
            ("CapEff:\tzz\n", None),
            ("Name:\tx\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(has_net_admin(text), want, "{text:?}");
        }
    }
}
