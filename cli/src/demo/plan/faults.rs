//! Faults the demo apps inject, chosen on `mycelctl demo`'s command line and
//! passed to each `mycel-demo` as its own flags (`--error-rate`,
//! `--latency-ms`, `--seed`, `--upstream-timeout-ms`).

use std::collections::BTreeMap;
use std::time::Duration;

/// Faults of one service's apps (every version of it).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fault {
    /// Fraction of requests failed with 503 / UNAVAILABLE, 0..=1.
    pub error_rate: f64,
    /// Added before every answer.
    pub latency: Duration,
}

/// Every fault of the demo; the default injects none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// By service (`ratings`, `reviews`, ...); absent means no fault.
    pub services: BTreeMap<&'static str, Fault>,
    /// Seed of every app's fault generator, for runs that repeat.
    pub seed: Option<u64>,
    /// How long an app waits for another service before giving up.
    pub upstream_timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an error rate: give a fraction between 0 and 1 (0.25 fails a quarter)")]
pub struct BadRate(pub String);

/// The clap value parser of the `--<service>-error-rate` flags.
pub fn parse_rate(raw: &str) -> Result<f64, BadRate> {
    match raw.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(BadRate(raw.to_string())),
    }
}

impl Faults {
    /// The `mycel-demo` flags for an app of `service`.
    pub fn app_args(&self, service: &str) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(f) = self.services.get(service) {
            if f.error_rate > 0.0 {
                args.extend(["--error-rate".to_string(), f.error_rate.to_string()]);
            }
            if !f.latency.is_zero() {
                args.extend(["--latency-ms".to_string(), millis(f.latency).to_string()]);
            }
        }
        if let Some(seed) = self.seed {
            args.extend(["--seed".to_string(), seed.to_string()]);
        }
        if let Some(t) = self.upstream_timeout {
            args.extend(["--upstream-timeout-ms".to_string(), millis(t).to_string()]);
        }
        args
    }

    /// One line per service with a fault, for the banner.
    pub fn describe(&self) -> Vec<String> {
        self.services
            .iter()
            .filter(|(_, f)| f.error_rate > 0.0 || !f.latency.is_zero())
            .map(|(service, f)| {
                let mut parts = Vec::new();
                if f.error_rate > 0.0 {
                    parts.push(format!("fails {}% of requests", f.error_rate * 100.0));
                }
                if !f.latency.is_zero() {
                    parts.push(format!(
                        "answers after {}",
                        humantime::format_duration(f.latency)
                    ));
                }
                format!("{service} {}", parts.join(", "))
            })
            .collect()
    }
}

/// Whole milliseconds, at least 1 for any non-zero duration.
fn millis(d: Duration) -> u128 {
    d.as_millis().max(u128::from(!d.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rate_table() {
        let cases = [
            ("0", Some(0.0)),
            ("0.5", Some(0.5)),
            ("1", Some(1.0)),
            ("1.5", None),
            ("-0.1", None),
            ("half", None),
            ("NaN", None),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_rate(raw).ok(), want, "{raw}");
        }
    }

    #[test]
    fn app_args_table() {
        let ratings = Fault {
            error_rate: 0.5,
            latency: Duration::ZERO,
        };
        let catalog = Fault {
            error_rate: 0.0,
            latency: Duration::from_millis(250),
        };
        let faults = Faults {
            services: [("ratings", ratings), ("catalog", catalog)].into(),
            seed: None,
            upstream_timeout: None,
        };
        let seeded = Faults {
            seed: Some(7),
            upstream_timeout: Some(Duration::from_secs(2)),
            ..faults.clone()
        };
        let cases: [(&Faults, &str, &[&str]); 6] = [
            (&Faults::default(), "ratings", &[]),
            (&faults, "ratings", &["--error-rate", "0.5"]),
            (&faults, "catalog", &["--latency-ms", "250"]),
            (&faults, "reviews", &[]),
            (
                &seeded,
                "ratings",
                &[
                    "--error-rate",
                    "0.5",
                    "--seed",
                    "7",
                    "--upstream-timeout-ms",
                    "2000",
                ],
            ),
            (
                &seeded,
                "frontend",
                &["--seed", "7", "--upstream-timeout-ms", "2000"],
            ),
        ];
        for (faults, service, want) in cases {
            assert_eq!(faults.app_args(service), want, "{service} {faults:?}");
        }
    }

    #[test]
    fn sub_millisecond_latency_is_not_dropped() {
        assert_eq!(millis(Duration::from_micros(10)), 1);
        assert_eq!(millis(Duration::ZERO), 0);
    }

    #[test]
    fn describe_names_only_faulty_services() {
        let faults = Faults {
            services: [
                (
                    "ratings",
                    Fault {
                        error_rate: 0.25,
                        latency: Duration::from_millis(100),
                    },
                ),
                ("catalog", Fault::default()),
            ]
            .into(),
            ..Faults::default()
        };
        assert_eq!(
            faults.describe(),
            ["ratings fails 25% of requests, answers after 100ms"]
        );
    }
}
