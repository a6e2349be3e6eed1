//! Installing and removing a [`RuleSet`] in the network namespace this
//! process runs in, as one atomic `iptables-restore --noflush` transaction.
//!
//! The table is read once (`iptables-save -t nat`); [`script`] (pure) turns
//! what is there and what is wanted into restore input: own chains declared
//! (which creates or flushes them) and refilled, stale or duplicated jumps
//! deleted, missing jumps appended, chains no longer wanted deleted. Either
//! the whole change lands or none of it, so a failure never leaves a pod
//! half captured. Programs run through [`Runner`] so the sequence is tested
//! without privileges.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::rules::{all_chains, RuleSet, TABLE};

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

/// Reads and atomically changes the `nat` table.
pub trait Runner {
    /// The table as `iptables-save -t nat` prints it.
    fn save(&mut self) -> Result<String, ApplyError>;
    /// Feeds `script` to `iptables-restore --noflush`.
    fn restore(&mut self, script: &str) -> Result<(), ApplyError>;
}

/// One iptables backend: its `-save` and `-restore` programs.
pub struct Iptables {
    pub save: PathBuf,
    pub restore: PathBuf,
}

impl Iptables {
    /// The save/restore pair that belongs to an `iptables` program path
    /// (`/usr/sbin/iptables-nft` → `iptables-nft-save`, `iptables-nft-restore`).
    pub fn for_program(program: &Path) -> Iptables {
        let with = |suffix: &str| {
            let mut name = program.file_name().unwrap_or_default().to_os_string();
            name.push(suffix);
            program.with_file_name(name)
        };
        Iptables {
            save: with("-save"),
            restore: with("-restore"),
        }
    }

    /// nf_tables first (what current distributions and kube-proxy use),
    /// then the legacy backend, then whatever `iptables` is: the first one
    /// installed that can read the `nat` table here (a kernel without
    /// nf_tables fails that and falls back to legacy).
    pub fn detect() -> Result<Iptables, ApplyError> {
        let candidates = ["iptables-nft", "iptables-legacy", "iptables"];
        let mut last_failure = None;
        for name in candidates {
            let Some(save) = find_in_path(&format!("{name}-save")) else {
                continue;
            };
            let mut ipt = Iptables::for_program(&save.with_file_name(name));
            match ipt.save() {
                Ok(_) => return Ok(ipt),
                Err(e) => last_failure = Some(e),
            }
        }
        Err(last_failure.unwrap_or_else(|| {
            ApplyError::NoIptables(
                candidates
                    .iter()
                    .map(|c| format!("{c}-save"))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        }))
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn command_line(program: &Path, args: &[&str]) -> String {
    std::iter::once(program.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Runner for Iptables {
    fn save(&mut self) -> Result<String, ApplyError> {
        let args = ["-t", TABLE];
        let out = Command::new(&self.save)
            .args(args)
            .output()
            .map_err(|source| ApplyError::Spawn {
                program: self.save.display().to_string(),
                source,
            })?;
        if !out.status.success() {
            return Err(ApplyError::Failed {
                command: command_line(&self.save, &args),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn restore(&mut self, script: &str) -> Result<(), ApplyError> {
        // -w: wait for the xtables lock rather than fail next to kube-proxy.
        let args = ["--noflush", "-w"];
        let spawn_err = |source| ApplyError::Spawn {
            program: self.restore.display().to_string(),
            source,
        };
        let mut child = Command::new(&self.restore)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ApplyError::Failed {
                command: format!("{} <<EOF\n{script}EOF", command_line(&self.restore, &args)),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}

/// What `iptables-save -t nat` shows of ours: which of our chains exist and
/// every rule (in saved form, without `-A`) of any chain that jumps to one.
#[derive(Debug, Default, PartialEq, Eq)]
struct Present {
    chains: Vec<String>,
    jumps: Vec<(String, String)>,
}

fn present(saved: &str) -> Present {
    let ours = all_chains();
    let mut p = Present::default();
    let mut in_nat = false;
    for line in saved.lines().map(str::trim) {
        if let Some(table) = line.strip_prefix('*') {
            in_nat = table == TABLE;
            continue;
        }
        if !in_nat {
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if ours.contains(&name) {
                p.chains.push(name.to_string());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            let target = spec.rsplit_once("-j ").map(|(_, t)| t.trim());
            let jumps_to_ours = target.is_some_and(|t| ours.contains(&t));
            if jumps_to_ours && !ours.contains(&chain) {
                p.jumps.push((chain.to_string(), spec.to_string()));
            }
        }
    }
    p
}

/// The restore input that turns the table `saved` into one holding exactly
/// `wanted` of ours (nothing of ours for `None`). Pure, for the table test.
pub fn script(saved: &str, wanted: Option<&RuleSet>) -> String {
    let have = present(saved);
    let wanted_chains: Vec<&str> = wanted.map(|w| w.chains.clone()).unwrap_or_default();
    let mut out = format!("*{TABLE}\n");
    // Declaring a chain creates it, or flushes it when it exists (even with
    // --noflush), so ours are refilled from scratch; chains to delete must
    // be empty first, so they are declared too.
    for chain in wanted_chains.iter().copied().chain(
        have.chains
            .iter()
            .map(String::as_str)
            .filter(|c| !wanted_chains.contains(c)),
    ) {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    // Keep the first copy of each wanted jump; delete every other jump to
    // our chains (copies added by hand, or of a chain no longer wanted).
    let mut kept: Vec<String> = Vec::new();
    for (chain, spec) in &have.jumps {
        let line = format!("-A {chain} {spec}");
        let is_wanted = wanted.is_some_and(|w| w.jumps.iter().any(|j| j.to_string() == line));
        if is_wanted && !kept.contains(&line) {
            kept.push(line);
        } else {
            out.push_str(&format!("-D {chain} {spec}\n"));
        }
    }
    for chain in have
        .chains
        .iter()
        .filter(|c| !wanted_chains.contains(&c.as_str()))
    {
        out.push_str(&format!("-X {chain}\n"));
    }
    if let Some(w) = wanted {
        for rule in &w.rules {
            out.push_str(&format!("{rule}\n"));
        }
        for jump in w.jumps.iter().filter(|j| !kept.contains(&j.to_string())) {
            out.push_str(&format!("{jump}\n"));
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// Installs `set`, replacing whatever an earlier run left in our chains.
pub fn apply(runner: &mut dyn Runner, set: &RuleSet) -> Result<(), ApplyError> {
    let saved = runner.save()?;
    runner.restore(&script(&saved, Some(set)))
}

/// Deletes every jump (however many copies) and chain of ours.
pub fn cleanup(runner: &mut dyn Runner) -> Result<(), ApplyError> {
    let saved = runner.save()?;
    runner.restore(&script(&saved, None))
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

    /// A pretend nat table that prints itself as `iptables-save` would and
    /// applies restore input all or nothing, as the kernel does.
    #[derive(Clone, Default)]
    struct FakeTable {
        chains: std::collections::BTreeMap<String, Vec<String>>,
        restores: usize,
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

        fn run_line(&mut self, line: &str) -> Result<(), String> {
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap().to_string();
                self.chains.entry(name).or_default().clear();
                return Ok(());
            }
            let (op, rest) = line.split_once(' ').unwrap();
            let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
            let rules = self
                .chains
                .get_mut(chain)
                .ok_or(format!("no chain {chain}"))?;
            match op {
                "-A" => rules.push(spec.to_string()),
                "-D" => {
                    let i = rules.iter().position(|r| r == spec).ok_or("no such rule")?;
                    rules.remove(i);
                }
                "-X" => {
                    if !rules.is_empty() {
                        return Err(format!("chain {chain} not empty"));
                    }
                    let referenced = self
                        .chains
                        .values()
                        .flatten()
                        .any(|r| r.ends_with(&format!("-j {chain}")));
                    if referenced {
                        return Err(format!("chain {chain} still referenced"));
                    }
                    self.chains.remove(chain);
                }
                other => return Err(format!("unexpected {other}")),
            }
            Ok(())
        }
    }

    impl Runner for FakeTable {
        fn save(&mut self) -> Result<String, ApplyError> {
            let mut out = "# saved\n*nat\n".to_string();
            for name in self.chains.keys() {
                out.push_str(&format!(":{name} - [0:0]\n"));
            }
            for (name, rules) in &self.chains {
                for r in rules {
                    out.push_str(&format!("-A {name} {r}\n"));
                }
            }
            out.push_str("COMMIT\n");
            Ok(out)
        }

        fn restore(&mut self, script: &str) -> Result<(), ApplyError> {
            self.restores += 1;
            let mut next = self.clone();
            let lines: Vec<&str> = script.lines().collect();
            assert_eq!(lines.first(), Some(&"*nat"), "{script}");
            assert_eq!(lines.last(), Some(&"COMMIT"), "{script}");
            for line in &lines[1..lines.len() - 1] {
                next.run_line(line).map_err(|stderr| ApplyError::Failed {
                    command: format!("restore line {line:?}"),
                    stderr,
                })?;
            }
            *self = next;
            Ok(())
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
    fn each_run_is_one_atomic_restore() {
        let mut t = FakeTable::new();
        apply(&mut t, &plan(&cfg(Some(15008)))).unwrap();
        apply(&mut t, &plan(&cfg(None))).unwrap();
        cleanup(&mut t).unwrap();
        assert_eq!(t.restores, 3);
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
        apply(&mut t, &plan(&cfg(None))).unwrap();
        assert_eq!(t.chains["OUTPUT"].len(), 1, "a re-run keeps one copy");
        let again = t.chains["OUTPUT"][0].clone();
        t.chains.get_mut("OUTPUT").unwrap().push(again);
        cleanup(&mut t).unwrap();
        assert!(t.chains["OUTPUT"].is_empty());
    }

    #[test]
    fn other_rules_are_left_alone() {
        let mut t = FakeTable::new();
        t.chains
            .get_mut("OUTPUT")
            .unwrap()
            .push("-d 198.18.0.9/32 -j RETURN".into());
        apply(&mut t, &plan(&cfg(Some(15008)))).unwrap();
        cleanup(&mut t).unwrap();
        assert_eq!(t.chains["OUTPUT"], ["-d 198.18.0.9/32 -j RETURN"]);
    }

    #[test]
    fn script_reads_only_the_nat_table() {
        let saved = "*filter\n:MYCEL_OUTPUT - [0:0]\n-A OUTPUT -j MYCEL_OUTPUT\nCOMMIT\n*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
        assert_eq!(script(saved, None), "*nat\nCOMMIT\n");
    }

    #[test]
    fn failures_name_the_command() {
        struct Refuse;
        impl Runner for Refuse {
            fn save(&mut self) -> Result<String, ApplyError> {
                Ok("*nat\nCOMMIT\n".into())
            }
            fn restore(&mut self, script: &str) -> Result<(), ApplyError> {
                Err(ApplyError::Failed {
                    command: format!("iptables-restore --noflush -w <<EOF\n{script}EOF"),
                    stderr: "Permission denied (you must be root)".into(),
                })
            }
        }
        let err = apply(&mut Refuse, &plan(&cfg(None)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("iptables-restore --noflush")
                && err.contains(":MYCEL_OUTPUT - [0:0]")
                && err.contains("Permission denied"),
            "{err}"
        );
    }

    #[test]
    fn save_and_restore_programs_follow_the_backend() {
        let ipt = Iptables::for_program(Path::new("/usr/sbin/iptables-nft"));
        assert_eq!(ipt.save, Path::new("/usr/sbin/iptables-nft-save"));
        assert_eq!(ipt.restore, Path::new("/usr/sbin/iptables-nft-restore"));
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
