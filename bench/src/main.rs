//! `mycel-bench <scenario> [--quick|--full]`: runs the benchmark, prints the
//! markdown table and writes `<out>/<timestamp>.json`, `.md` and one SVG
//! plot per protocol.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mycel_bench::client::Proto;
use mycel_bench::report;
use mycel_bench::run::{self, Options, Plan, Scenario};
use mycel_bench::setup::collector::OtlpProtocol;
use mycel_bench::setup::mycel::TraceExport;

#[derive(Debug, Parser)]
#[command(
    name = "mycel-bench",
    about = "Benchmark Mycel against direct, nginx and HAProxy on loopback",
    after_help = "Scenarios: all (everything below but tracing and pods), latency, throughput, handshake, tcp, close (a new connection per request), bulk (one large download), cp-scale, tracing, gateway (HTTPS fronts: the Mycel gateway with and without JWT and a rate limit, against nginx and the backend's own TLS), pods (two network namespaces per configuration, the sidecars on the transparent path; needs root)."
)]
struct Cli {
    /// What to measure.
    #[arg(value_enum, required_unless_present_any = ["render", "pod_load"])]
    scenario: Option<Scenario>,
    /// Re-render the markdown and SVG of an earlier JSON report, measure nothing.
    #[arg(long, value_name = "JSON")]
    render: Option<PathBuf>,
    /// Short runs (about 2 minutes of measuring for `all`, 30 s for
    /// `gateway`); the default.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Long runs, several alternating rounds.
    #[arg(long)]
    full: bool,
    /// Configurations to compare, in order (default for `tracing`:
    /// mycel,mycel-trace-live,mycel-trace-dead,mycel-trace-blackhole; for
    /// `gateway`: direct-tls,nginx-tls,gateway-tls,gateway-tls-jwt,gateway-tls-jwt-ratelimit;
    /// for `all`: the next list, then gateway's; for the others:
    /// direct,mycel,mycel-policy,mycel-routes,mycel-authz,nginx,haproxy).
    #[arg(long, value_delimiter = ',')]
    configs: Vec<String>,
    /// OTLP transport of the mycel-trace-* configurations.
    #[arg(long, value_enum, default_value = "http/protobuf")]
    otlp_protocol: OtlpProtocol,
    /// Span queue of each exporting proxy (OTEL_BSP_MAX_QUEUE_SIZE; default:
    /// the proxies' own, 2048).
    #[arg(long)]
    trace_queue: Option<usize>,
    /// Where mycel-controller, mycel-proxy and mycelctl are (default: beside
    /// this binary, i.e. target/release).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where results go (an ignored folder; runs quoted in docs/benchmarks.md
    /// are copied to bench/results by hand).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-results"))]
    out: PathBuf,
    /// Override the length of each open-loop measurement (milliseconds).
    #[arg(long)]
    duration_ms: Option<u64>,
    /// Only these open-loop rates (comma separated) for every protocol.
    #[arg(long, value_delimiter = ',')]
    rates: Vec<u64>,
    /// The control-plane plan of `cp-scale` instead of the mode's:
    /// SERVICES,ENDPOINTS_PER_SERVICE,PROXIES (e.g. 1000,10,1000 for
    /// 10,000 registering streams and 1,000 subscribing proxies).
    #[arg(long, value_name = "S,E,P", value_parser = parse_cp_size)]
    cp_size: Option<(usize, usize, usize)>,
    /// Internal: run one load inside a pod (the pod scenario starts the
    /// harness so, in the client pod's namespace) and print the result.
    #[arg(long, hide = true, value_name = "JSON")]
    pod_load: Option<String>,
}

/// `S,E,P`: three counts, each at least 1.
fn parse_cp_size(raw: &str) -> Result<(usize, usize, usize), String> {
    let parts: Vec<usize> = raw
        .split(',')
        .map(|p| p.trim().parse::<usize>().ok().filter(|n| *n > 0))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            format!("{raw:?}: want three positive counts, SERVICES,ENDPOINTS,PROXIES")
        })?;
    match parts[..] {
        [s, e, p] => Ok((s, e, p)),
        _ => Err(format!(
            "{raw:?}: want three counts, SERVICES,ENDPOINTS,PROXIES"
        )),
    }
}

fn timestamp(unix: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Writes `<base>.md` and one SVG per protocol next to the JSON.
fn write_views(report: &report::Report, base: &std::path::Path) -> anyhow::Result<()> {
    let md = report::markdown(report);
    println!("{md}");
    std::fs::write(base.with_extension("md"), &md)?;
    for proto in [Proto::Http1, Proto::H2, Proto::Grpc] {
        let plots = [
            ("latency", report::svg(report, proto)),
            ("gateway-latency", report::gateway_svg(report, proto)),
        ];
        for (what, svg) in plots {
            let Some(svg) = svg else { continue };
            let path = PathBuf::from(format!("{}-{what}-{}.svg", base.display(), proto.as_str()));
            std::fs::write(&path, svg)?;
            eprintln!("[bench] wrote {}", path.display());
        }
    }
    Ok(())
}

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    if let Some(spec) = &cli.pod_load {
        println!("{}", mycel_bench::pods::remote::child(spec).await?);
        return Ok(());
    }
    if let Some(json) = &cli.render {
        let text =
            std::fs::read(json).map_err(|e| anyhow::anyhow!("read {}: {e}", json.display()))?;
        let report: report::Report = serde_json::from_slice(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a bench report: {e}", json.display()))?;
        return write_views(&report, &json.with_extension(""));
    }
    let Some(scenario) = cli.scenario else {
        anyhow::bail!("give a scenario or --render");
    };
    let mut plan = if cli.full {
        Plan::full()
    } else {
        Plan::quick()
    }
    .for_scenario(scenario);
    // The overrides apply to the gateway part's grid and lengths too
    // (`all` measures it with them).
    if let Some(ms) = cli.duration_ms {
        plan.latency_duration = Duration::from_millis(ms);
        plan.throughput_duration = Duration::from_millis(ms);
        plan.handshake_duration = Duration::from_millis(ms);
        plan.warmup = Duration::from_millis(ms / 4);
        plan.gateway_latency_duration = Duration::from_millis(ms);
        plan.gateway_throughput_duration = Duration::from_millis(ms);
    }
    if let Some((services, endpoints, proxies)) = cli.cp_size {
        plan.cp.services = services;
        plan.cp.endpoints = endpoints;
        plan.cp.proxies = proxies;
    }
    let pod_run = cli.duration_ms.map(Duration::from_millis);
    if !cli.rates.is_empty() {
        for (_, rates) in plan.latency_grid.iter_mut().chain(&mut plan.gateway_grid) {
            *rates = cli.rates.clone();
        }
    }
    let configs = if cli.configs.is_empty() {
        scenario
            .default_configs()
            .iter()
            .map(|c| c.to_string())
            .collect()
    } else {
        cli.configs
    };
    let report = run::run(Options {
        scenario,
        plan,
        configs,
        bins: cli.bin_dir,
        trace: TraceExport {
            protocol: cli.otlp_protocol,
            queue: cli.trace_queue,
        },
        pod_run,
    })
    .await?;
    std::fs::create_dir_all(&cli.out)?;
    let base = cli.out.join(format!(
        "{}-{}-{}",
        timestamp(report.started_unix),
        report.scenario,
        report.mode
    ));
    let json = base.with_extension("json");
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("[bench] wrote {}", json.display());
    write_views(&report, &base)?;
    if !report.problems.is_empty() {
        anyhow::bail!("{} problem(s); see the report", report.problems.len());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mycel-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(main_inner(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mycel-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cp_size;

    #[test]
    fn cp_size_takes_three_positive_counts() {
        assert_eq!(parse_cp_size("1000,10,1000"), Ok((1000, 10, 1000)));
        for bad in ["", "1000,10", "1,2,3,4", "0,10,10", "a,b,c", "-1,2,3"] {
            let err = parse_cp_size(bad).unwrap_err();
            assert!(err.contains("SERVICES,ENDPOINTS"), "{bad:?}: {err}");
        }
    }
}
