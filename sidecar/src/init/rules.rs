//! The iptables rules of transparent capture, as data. Pure: every rule
//! `mycel-proxy init` would install comes from [`plan`], so the table test
//! below is the specification.

use std::fmt;

/// Chains this program owns in the `nat` table; nothing else is touched
/// apart from one jump from each built-in chain.
pub const CHAIN_OUTPUT: &str = "MYCEL_OUTPUT";
pub const CHAIN_INBOUND: &str = "MYCEL_INBOUND";
pub const TABLE: &str = "nat";

/// What to capture, from the init flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Where the sidecar's transparent outbound listener is.
    pub outbound_port: u16,
    /// Where the sidecar's inbound capture listener is; `None` captures
    /// no inbound traffic.
    pub inbound_port: Option<u16>,
    /// Traffic of this UID (the proxy's own) is never captured, or it
    /// would loop back into the proxy.
    pub proxy_uid: u32,
    /// Destination ports outbound traffic keeps (e.g. a database reached
    /// outside the mesh).
    pub exclude_outbound_ports: Vec<u16>,
    /// Destination networks outbound traffic keeps, as `a.b.c.d/n`.
    pub exclude_outbound_cidrs: Vec<ipnet::Ipv4Net>,
    /// Local ports inbound traffic keeps: the mesh port, admin, probes.
    pub exclude_inbound_ports: Vec<u16>,
}

/// One `iptables -t nat` invocation's arguments after the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub chain: &'static str,
    pub args: Vec<String>,
}

impl Rule {
    fn new(chain: &'static str, args: &[&str]) -> Rule {
        Rule {
            chain,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl fmt::Display for Rule {
    /// `-A CHAIN args…`, the form `iptables-save` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-A {} {}", self.chain, self.args.join(" "))
    }
}

/// Everything to install: own chains with their rules, and the jumps into
/// them from the built-in chains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    pub chains: Vec<&'static str>,
    pub rules: Vec<Rule>,
    pub jumps: Vec<Rule>,
}

impl RuleSet {
    /// The rule set as `iptables-restore` input, for `--dry-run`.
    pub fn render(&self) -> String {
        let mut out = format!("*{TABLE}\n");
        for c in &self.chains {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        for r in self.rules.iter().chain(&self.jumps) {
            out.push_str(&format!("{r}\n"));
        }
        out.push_str("COMMIT\n");
        out
    }
}

/// Every chain [`plan`] can create, for cleanup whatever the flags were.
pub fn all_chains() -> [&'static str; 2] {
    [CHAIN_OUTPUT, CHAIN_INBOUND]
}

/// The jumps [`plan`] can add, for cleanup whatever the flags were.
pub fn all_jumps() -> [Rule; 2] {
    [
        Rule::new("OUTPUT", &["-p", "tcp", "-j", CHAIN_OUTPUT]),
        Rule::new("PREROUTING", &["-p", "tcp", "-j", CHAIN_INBOUND]),
    ]
}

/// The rules for `cfg`. Order matters: exclusions return before the final
/// redirect.
pub fn plan(cfg: &CaptureConfig) -> RuleSet {
    let mut rules = Vec::new();
    let out = CHAIN_OUTPUT;
    let uid = cfg.proxy_uid.to_string();
    // The proxy's own connections (to peers, the controller, the app).
    rules.push(Rule::new(
        out,
        &["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"],
    ));
    // Local traffic inside the pod stays local.
    rules.push(Rule::new(out, &["-o", "lo", "-j", "RETURN"]));
    rules.push(Rule::new(out, &["-d", "127.0.0.0/8", "-j", "RETURN"]));
    for cidr in &cfg.exclude_outbound_cidrs {
        rules.push(Rule::new(out, &["-d", &cidr.to_string(), "-j", "RETURN"]));
    }
    for port in &cfg.exclude_outbound_ports {
        rules.push(Rule::new(
            out,
            &["-p", "tcp", "--dport", &port.to_string(), "-j", "RETURN"],
        ));
    }
    rules.push(Rule::new(
        out,
        &[
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            &cfg.outbound_port.to_string(),
        ],
    ));
    let [out_jump, in_jump] = all_jumps();
    let mut chains = vec![CHAIN_OUTPUT];
    let mut jumps = vec![out_jump];

    if let Some(inbound) = cfg.inbound_port {
        let inn = CHAIN_INBOUND;
        let mut excluded: Vec<u16> = cfg.exclude_inbound_ports.clone();
        excluded.sort_unstable();
        excluded.dedup();
        for port in excluded {
            rules.push(Rule::new(
                inn,
                &["-p", "tcp", "--dport", &port.to_string(), "-j", "RETURN"],
            ));
        }
        rules.push(Rule::new(
            inn,
            &[
                "-p",
                "tcp",
                "-j",
                "REDIRECT",
                "--to-ports",
                &inbound.to_string(),
            ],
        ));
        chains.push(CHAIN_INBOUND);
        jumps.push(in_jump);
    }
    RuleSet {
        chains,
        rules,
        jumps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> CaptureConfig {
        CaptureConfig {
            outbound_port: 15001,
            inbound_port: Some(15008),
            proxy_uid: 1337,
            exclude_outbound_ports: vec![],
            exclude_outbound_cidrs: vec![],
            exclude_inbound_ports: vec![15006, 15000],
        }
    }

    #[test]
    fn rule_sets() {
        let cases: Vec<(CaptureConfig, &str)> = vec![
            (
                base(),
                "*nat
:MYCEL_OUTPUT - [0:0]
:MYCEL_INBOUND - [0:0]
-A MYCEL_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A MYCEL_OUTPUT -o lo -j RETURN
-A MYCEL_OUTPUT -d 127.0.0.0/8 -j RETURN
-A MYCEL_OUTPUT -p tcp -j REDIRECT --to-ports 15001
-A MYCEL_INBOUND -p tcp --dport 15000 -j RETURN
-A MYCEL_INBOUND -p tcp --dport 15006 -j RETURN
-A MYCEL_INBOUND -p tcp -j REDIRECT --to-ports 15008
-A OUTPUT -p tcp -j MYCEL_OUTPUT
-A PREROUTING -p tcp -j MYCEL_INBOUND
COMMIT
",
            ),
            (
                CaptureConfig {
                    inbound_port: None,
                    proxy_uid: 0,
                    exclude_outbound_ports: vec![5432, 53],
                    exclude_outbound_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
                    ..base()
                },
                "*nat
:MYCEL_OUTPUT - [0:0]
-A MYCEL_OUTPUT -m owner --uid-owner 0 -j RETURN
-A MYCEL_OUTPUT -o lo -j RETURN
-A MYCEL_OUTPUT -d 127.0.0.0/8 -j RETURN
-A MYCEL_OUTPUT -d 10.0.0.0/8 -j RETURN
-A MYCEL_OUTPUT -p tcp --dport 5432 -j RETURN
-A MYCEL_OUTPUT -p tcp --dport 53 -j RETURN
-A MYCEL_OUTPUT -p tcp -j REDIRECT --to-ports 15001
-A OUTPUT -p tcp -j MYCEL_OUTPUT
COMMIT
",
            ),
            (
                CaptureConfig {
                    exclude_inbound_ports: vec![15006, 15006],
                    ..base()
                },
                "*nat
:MYCEL_OUTPUT - [0:0]
:MYCEL_INBOUND - [0:0]
-A MYCEL_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A MYCEL_OUTPUT -o lo -j RETURN
-A MYCEL_OUTPUT -d 127.0.0.0/8 -j RETURN
-A MYCEL_OUTPUT -p tcp -j REDIRECT --to-ports 15001
-A MYCEL_INBOUND -p tcp --dport 15006 -j RETURN
-A MYCEL_INBOUND -p tcp -j REDIRECT --to-ports 15008
-A OUTPUT -p tcp -j MYCEL_OUTPUT
-A PREROUTING -p tcp -j MYCEL_INBOUND
COMMIT
",
            ),
        ];
        for (cfg, want) in cases {
            assert_eq!(plan(&cfg).render(), want, "{cfg:?}");
        }
    }

    #[test]
    fn planned_jumps_are_among_those_cleaned_up() {
        let set = plan(&base());
        for j in &set.jumps {
            assert!(all_jumps().contains(j), "{j}");
        }
        for c in &set.chains {
            assert!(all_chains().contains(c), "{c}");
        }
    }
}
