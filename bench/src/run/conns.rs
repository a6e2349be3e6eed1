//! The loopback scenarios about connections: `close` (a new connection
//! per request) and `bulk` (one large download on one connection).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{log_run, rotated, Plan, Usage};
use crate::client::{self, Proto, Target};
use crate::load::{self, RunResult, Shape};
use crate::report::pods::BulkRow;
use crate::report::{Report, ThroughputRow};
use crate::setup::Setup;
use crate::stats;

/// HTTP/1.1 closed loop with a new connection per request, at
/// `plan.close_concurrency`, alternating in rounds; each configuration's
/// rounds merged into one row.
pub(super) async fn close(plan: &Plan, setups: &[Setup], usage: &mut Usage, report: &mut Report) {
    let mut merged: BTreeMap<usize, RunResult> = BTreeMap::new();
    let conns = plan.close_concurrency;
    for round in 0..plan.rounds.max(1) {
        for i in rotated(setups.len(), round) {
            let s = &setups[i];
            let Some(target) = s.targets.get(&Proto::Http1) else {
                continue;
            };
            let shape = Shape::new_conn_per_request(conns);
            let before = usage.snapshot(s);
            let duration = plan.throughput_duration;
            match load::closed_loop(Proto::Http1, target, shape, duration, 50_000_000).await {
                Ok(r) => {
                    usage.account(s, &before, r.ok + r.errors, false);
                    log_run("close ", s, Proto::Http1, conns as u64, &r);
                    match merged.get_mut(&i) {
                        Some(m) => m.absorb(r),
                        None => {
                            merged.insert(i, r);
                        }
                    }
                }
                Err(e) => report.problems.push(format!("close {}: {e}", s.name)),
            }
        }
    }
    for (i, r) in merged {
        report.close.push(ThroughputRow {
            config: setups[i].name.into(),
            proto: Proto::Http1,
            connections: conns,
            rps: r.achieved_rps(),
            ok: r.ok,
            errors: r.errors,
            first_error: r.first_error,
            error_kinds: r.error_kinds,
            latency: stats::summarize(&r.hist),
            ratio_to_direct: None,
        });
    }
}

/// One HTTP/1.1 download of `plan.download_bytes` from the backend's
/// `/bulk/<n>` through each configuration, per round.
pub(super) async fn bulk(plan: &Plan, setups: &[Setup], usage: &Usage, report: &mut Report) {
    let mut rows: Vec<BulkRow> = setups
        .iter()
        .map(|s| BulkRow {
            config: s.name.into(),
            bytes: plan.download_bytes,
            ..BulkRow::default()
        })
        .collect();
    for round in 0..plan.rounds.max(1) {
        for i in rotated(setups.len(), round) {
            let s = &setups[i];
            let Some(target) = s.targets.get(&Proto::Http1) else {
                continue;
            };
            // The gateway's HTTPS fronts are not part of this scenario.
            if target.tls.is_some() {
                continue;
            }
            let target = Target {
                path: format!("/bulk/{}", plan.download_bytes),
                ..target.clone()
            };
            let before = usage.snapshot(s);
            match client::download(&target, plan.download_bytes, Duration::from_secs(120)).await {
                Ok(d) => {
                    let after = usage.snapshot(s);
                    let cpu: f64 = after
                        .iter()
                        .zip(&before)
                        .map(|(a, b)| a.cpu_s - b.cpu_s)
                        .sum();
                    rows[i].cpu_s += cpu;
                    rows[i].downloaded += plan.download_bytes;
                    eprintln!(
                        "[bench] bulk   {:8} round {round}: {:.0} MB/s",
                        s.name, d.mb_per_s
                    );
                    rows[i].rounds_mb_per_s.push(d.mb_per_s);
                }
                Err(e) => {
                    rows[i].errors += 1;
                    rows[i].first_error.get_or_insert(e.to_string());
                    report
                        .problems
                        .push(format!("bulk {} round {round}: {e}", s.name));
                }
            }
        }
    }
    report.bulk.extend(
        rows.into_iter()
            .filter(|r| !r.rounds_mb_per_s.is_empty() || r.errors > 0),
    );
}
