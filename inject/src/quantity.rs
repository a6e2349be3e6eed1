//! Enough of Kubernetes quantities to compare a request with a limit: the
//! API server refuses a pod whose request is above its limit, and the user
//! should learn which annotation did it.

use crate::annotations::{self, Overrides};
use crate::config::Resources;
use crate::InjectError;

/// The value as a float (exact enough to order two quantities).
fn value(q: &str) -> Option<f64> {
    let q = q.strip_prefix('+').unwrap_or(q);
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let n: f64 = if number == "." {
        return None;
    } else {
        number.parse().ok()?
    };
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp => 10f64.powi(exp.get(1..)?.parse().ok()?),
    };
    Some(n * factor)
}

/// A request set by annotation must not exceed the limit it ends up with.
pub fn check_request_below_limit(o: &Overrides, defaults: &Resources) -> Result<(), InjectError> {
    let pairs = [
        (
            annotations::PROXY_CPU_REQUEST,
            annotations::PROXY_CPU_LIMIT,
            o.cpu_request.as_ref().or(defaults.cpu_request.as_ref()),
            o.cpu_limit.as_ref().or(defaults.cpu_limit.as_ref()),
        ),
        (
            annotations::PROXY_MEMORY_REQUEST,
            annotations::PROXY_MEMORY_LIMIT,
            o.memory_request
                .as_ref()
                .or(defaults.memory_request.as_ref()),
            o.memory_limit.as_ref().or(defaults.memory_limit.as_ref()),
        ),
    ];
    for (req_key, limit_key, request, limit) in pairs {
        let (Some(request), Some(limit)) = (request, limit) else {
            continue;
        };
        if let (Some(r), Some(l)) = (value(request), value(limit)) {
            if r > l {
                return Err(InjectError::Annotation {
                    annotation: req_key,
                    value: request.clone(),
                    reason: format!(
                        "the request is above the proxy's limit {limit}; set {limit_key} too"
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_order_as_kubernetes_does() {
        assert!(value("500m").unwrap() < value("1").unwrap());
        assert!(value("1Gi").unwrap() > value("1G").unwrap());
        assert!(value("128Mi").unwrap() < value("256Mi").unwrap());
        assert_eq!(value("1e3"), Some(1000.0));
        assert_eq!(value("x"), None);
    }
}
