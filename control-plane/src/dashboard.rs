//! The web dashboard on the admin port (`--dashboard`, off by default):
//! `/dashboard` is a page (HTML, JS and CSS compiled in, nothing fetched
//! from elsewhere) that polls `/dashboard/data`, a JSON view of the
//! services and live edges (rps, success rate, p99, computed by
//! `mycel_api::stats` from the proxies' `/metrics`) and of every proxy
//! (identity, certificate time left, config version, ACK state).
//!
//! The proxies are scraped on demand, never more often than every
//! [`MIN_INTERVAL`], a bounded number at a time and each with a timeout;
//! concurrent page loads share one scrape. The addresses scraped are the
//! ones proxies declared ([`crate::registry::admin_scrape_addr`]) and are
//! used for nothing else.

mod scrape;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use mycel_api::stats::{self, ProxyInfo, ProxyWindow, Report, Sample};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::admin::Reply;
use crate::registry::{now_rfc3339, ProxyRecord, ProxyRegistry};

/// Scrapes are at least this far apart; page loads in between get the
/// last report.
pub const MIN_INTERVAL: Duration = Duration::from_secs(2);
/// A previous scrape older than this makes a poor window (a rate averaged
/// over minutes): the next request takes two fresh scrapes instead.
const STALE: Duration = Duration::from_secs(60);
/// The first window, when there is no previous scrape.
const FIRST_WINDOW: Duration = Duration::from_secs(1);

const INDEX_HTML: &str = include_str!("dashboard/assets/index.html");
const APP_JS: &str = include_str!("dashboard/assets/app.js");
const STYLE_CSS: &str = include_str!("dashboard/assets/style.css");

pub struct Dashboard {
    registry: Arc<ProxyRegistry>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Last scrape of each proxy, by proxy ID.
    previous: BTreeMap<String, Scraped>,
    last: Option<(Instant, Arc<Data>)>,
}

#[derive(Clone)]
struct Scraped {
    samples: Vec<Sample>,
    at: Instant,
}

/// The `/dashboard/data` document.
#[derive(Clone, Debug, Serialize)]
pub struct Data {
    pub generated_at: String,
    #[serde(flatten)]
    pub report: Report,
    pub proxies: Vec<ProxyView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProxyView {
    pub proxy_id: String,
    pub workload: String,
    pub namespace: String,
    pub spiffe_id: String,
    pub mode: String,
    pub admin_addr: Option<SocketAddr>,
    pub connected_since: String,
    /// Seconds until the proxy's certificate expires: what the proxy
    /// reports in its metrics, else the certificate it connected with.
    pub cert_expires_in_secs: Option<i64>,
    /// A digest of every resource version the proxy ACKed: equal on two
    /// proxies holding the same config.
    pub config_version: String,
    pub acked_resources: usize,
    /// `ACK` or `NACK` (the last response it rejected, with `last_nack`).
    pub ack_state: &'static str,
    pub last_nack: Option<String>,
    /// Why its metrics could not be read, if they could not.
    pub scrape_error: Option<String>,
}

impl Dashboard {
    pub fn new(registry: Arc<ProxyRegistry>) -> Self {
        Self {
            registry,
            state: Mutex::new(State::default()),
        }
    }

    /// The current data, scraping if the last is older than
    /// [`MIN_INTERVAL`].
    pub async fn data(&self) -> Arc<Data> {
        let mut state = self.state.lock().await;
        if let Some((at, data)) = &state.last {
            if at.elapsed() < MIN_INTERVAL {
                return data.clone();
            }
        }
        let records = self.registry.snapshot();
        let targets: Vec<(String, SocketAddr)> = records
            .iter()
            .filter_map(|r| r.admin_addr.map(|a| (r.proxy_id.clone(), a)))
            .collect();
        let fresh = |p: &Scraped| p.at.elapsed() < STALE;
        let have_window = targets
            .iter()
            .any(|(id, _)| state.previous.get(id).is_some_and(fresh));
        if !have_window {
            state.previous = scrape_into(&targets).await.0;
            tokio::time::sleep(FIRST_WINDOW).await;
        }
        let (now, errors) = scrape_into(&targets).await;
        let mut windows = Vec::new();
        for r in &records {
            let (Some(before), Some(after)) =
                (state.previous.get(&r.proxy_id), now.get(&r.proxy_id))
            else {
                continue;
            };
            if !fresh(before) {
                continue;
            }
            windows.push(ProxyWindow {
                proxy: info(r),
                before: before.samples.clone(),
                after: after.samples.clone(),
                elapsed: after.at.saturating_duration_since(before.at),
            });
        }
        let report = stats::compute(&windows);
        let proxies = records
            .iter()
            .map(|r| view(r, now.get(&r.proxy_id), errors.get(&r.proxy_id)))
            .collect();
        let data = Arc::new(Data {
            generated_at: now_rfc3339(),
            report,
            proxies,
        });
        state.previous = now;
        state.last = Some((Instant::now(), data.clone()));
        data
    }
}

/// Scrapes every target; the successes by proxy ID, and the errors.
async fn scrape_into(
    targets: &[(String, SocketAddr)],
) -> (BTreeMap<String, Scraped>, BTreeMap<String, String>) {
    let mut ok = BTreeMap::new();
    let mut errors = BTreeMap::new();
    for (id, result) in scrape::all(targets).await {
        match result {
            Ok(samples) => {
                ok.insert(
                    id,
                    Scraped {
                        samples,
                        at: Instant::now(),
                    },
                );
            }
            Err(e) => {
                errors.insert(id, e);
            }
        }
    }
    (ok, errors)
}

fn info(r: &ProxyRecord) -> ProxyInfo {
    ProxyInfo {
        proxy_id: r.proxy_id.clone(),
        workload: r.workload.clone(),
        namespace: r.namespace.clone(),
        spiffe_id: r.spiffe_id.clone(),
        mode: r.mode.clone(),
    }
}

fn view(r: &ProxyRecord, scraped: Option<&Scraped>, error: Option<&String>) -> ProxyView {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let reported = scraped.and_then(|s| {
        s.samples
            .iter()
            .find(|x| x.name.ends_with("cert_expiry_timestamp_seconds") && x.value.is_finite())
            .map(|x| x.value as i64)
    });
    let from_chain = r.leaf_chain.first().and_then(|der| {
        x509_parser::parse_x509_certificate(der)
            .ok()
            .map(|(_, c)| c.validity().not_after.timestamp())
    });
    ProxyView {
        proxy_id: r.proxy_id.clone(),
        workload: r.workload.clone(),
        namespace: r.namespace.clone(),
        spiffe_id: r.spiffe_id.clone(),
        mode: r.mode.clone(),
        admin_addr: r.admin_addr,
        connected_since: r.connected_since.clone(),
        cert_expires_in_secs: reported.or(from_chain).map(|t| t - now),
        config_version: config_version(&r.acked),
        acked_resources: r.acked.len(),
        ack_state: if r.last_nack.is_some() { "NACK" } else { "ACK" },
        last_nack: r
            .last_nack
            .as_ref()
            .map(|n| format!("{} ({})", n.error, n.at)),
        scrape_error: error.cloned(),
    }
}

/// FNV-1a over the sorted `(resource, version)` pairs: short, stable
/// across controller restarts, and equal for equal configs.
fn config_version(acked: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in acked {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{:08x}", h >> 32)
}

/// Whether `path` is the dashboard's.
pub fn owns(path: &str) -> bool {
    path == "/dashboard" || path.starts_with("/dashboard/")
}

/// Answers a dashboard request; `None` dashboard means it is off.
pub async fn reply(dashboard: Option<&Dashboard>, method: &Method, path: &str) -> Reply {
    let Some(d) = dashboard else {
        return asset(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "the dashboard is off; start the controller with --dashboard\n",
        );
    };
    if method != Method::GET && method != Method::HEAD {
        return asset(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET is supported\n",
        );
    }
    match path {
        "/dashboard" | "/dashboard/" => {
            asset(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML)
        }
        "/dashboard/app.js" => asset(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS),
        "/dashboard/style.css" => asset(StatusCode::OK, "text/css; charset=utf-8", STYLE_CSS),
        "/dashboard/data" => {
            let data = d.data().await;
            match serde_json::to_string(&*data) {
                Ok(body) => asset(StatusCode::OK, "application/json", body),
                Err(e) => asset(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    format!("cannot encode: {e}\n"),
                ),
            }
        }
        _ => asset(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found; try /dashboard or /dashboard/data\n",
        ),
    }
}

fn asset(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Reply {
    Reply {
        status,
        content_type,
        body: body.into(),
    }
}

#[cfg(test)]
mod tests;
