//! Gateway API routing (HTTPRoute, GRPCRoute) of one request among the
//! routes of its parent: which rule takes it ([`select`]), which backend of
//! the rule ([`pick_backend`]), what the rule's filters do to it
//! ([`apply_request_filters`], [`apply_response_filters`]) and which
//! mirrors get a copy ([`mirror_targets`]).
//!
//! Pure: random rolls come in as arguments, so every rule of the spec is a
//! table test. The parent is a Service (GAMMA: the client sidecar routes
//! requests to that Service) or the ingress gateway; the only difference
//! is that the gateway passes the request's host, which GAMMA ignores.

mod backend;
mod filter;
mod matching;

/// Shared with the gateway's prefix routes, so both follow one rule.
pub(crate) use matching::prefix_matches;
#[cfg(test)]
mod tests;

pub use backend::{mirror_targets, pick_backend, total_weight};
pub use filter::{apply_request_filters, apply_response_filters, FilterOutcome, RedirectResponse};

use http::Request;

use crate::core::directory::routes::{
    GatewaySocket, Route, RouteKind, RouteMatch, RouteRule, ServiceRoutes,
};
use matching::{host_rank, Rank, RequestView};

/// A static, so that a rule without matches can lend one as long as the
/// routes live (a borrowed `const` would be a temporary).
static MATCH_ALL: RouteMatch = RouteMatch::ALL;

/// The rule a request takes, and the match of the rule that took it
/// (filters need it: `ReplacePrefixMatch` replaces what the match's prefix
/// matched).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Selected<'a> {
    pub route: &'a Route,
    pub rule: &'a RouteRule,
    /// Position of the rule in the route, for logs and metrics.
    pub rule_index: usize,
    /// Equal to [`RouteMatch::ALL`] for a rule that lists no matches.
    pub matched: &'a RouteMatch,
}

/// The rule of `routes` that takes `req`, sent to port `port` of the
/// parent. `host` (without port) is the request's host for the gateway,
/// which checks route hostnames; `None` for GAMMA, which does not.
/// `socket` is the gateway socket the request came in on: a route attached
/// only to listeners of the other protocol is no candidate (`None` for
/// GAMMA, which has no sockets: every route is).
///
/// gRPC requests (`content-type: application/grpc*`) are matched against
/// GRPCRoutes first, then against HTTPRoutes if none matches; other
/// requests only against HTTPRoutes. The two kinds are never ranked
/// against each other, as the spec forbids merging them.
///
/// Among the matches that hold, the spec's precedence decides (see
/// `matching::Rank`); on a tie the earliest route wins (routes come
/// oldest first), then the earliest rule of that route, as the spec says.
///
/// The path is matched as the request carries it: the gateway normalizes
/// it before calling this (`gateway::route::normalize_path`); a sidecar
/// matches what its app sent. `None` means no rule matches: the gateway
/// answers 404.
pub fn select<'a, B>(
    routes: &'a ServiceRoutes,
    port: u16,
    req: &Request<B>,
    host: Option<&str>,
    socket: Option<GatewaySocket>,
) -> Option<Selected<'a>> {
    let view = RequestView::of(req);
    let on = Candidates { port, host, socket };
    if crate::core::http::is_grpc(req.headers()) {
        if let Some(found) = best(routes, RouteKind::Grpc, &on, &view) {
            return Some(found);
        }
    }
    best(routes, RouteKind::Http, &on, &view)
}

/// What decides whether a route is a candidate at all, before its matches.
struct Candidates<'h> {
    port: u16,
    host: Option<&'h str>,
    socket: Option<GatewaySocket>,
}

impl Candidates<'_> {
    fn takes(&self, route: &Route) -> bool {
        (route.ports.is_empty() || route.ports.contains(&self.port))
            && self.socket.is_none_or(|s| route.listener.serves(s))
    }
}

/// The highest ranked match among routes of `kind`; the first one found
/// keeps a tie, and routes, rules and matches are visited in order.
fn best<'a>(
    routes: &'a ServiceRoutes,
    kind: RouteKind,
    on: &Candidates<'_>,
    req: &RequestView<'_>,
) -> Option<Selected<'a>> {
    let mut found: Option<(Rank, Selected<'a>)> = None;
    for route in &routes.routes {
        if route.kind != kind || !on.takes(route) {
            continue;
        }
        let Some(host) = host_rank(&route.hostnames, on.host) else {
            continue;
        };
        for (rule_index, rule) in route.rules.iter().enumerate() {
            let matches = if rule.matches.is_empty() {
                std::slice::from_ref(&MATCH_ALL)
            } else {
                &rule.matches
            };
            for m in matches {
                if !req.satisfies(m) {
                    continue;
                }
                let rank = Rank::of(host, kind, m);
                if found.as_ref().is_none_or(|(best, _)| rank > *best) {
                    found = Some((
                        rank,
                        Selected {
                            route,
                            rule,
                            rule_index,
                            matched: m,
                        },
                    ));
                }
            }
        }
    }
    found.map(|(_, selected)| selected)
}
