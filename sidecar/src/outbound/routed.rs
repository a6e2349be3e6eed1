//! A request to a port of a service that routes attach to (GAMMA): the
//! route engine ([`super::route`]) picks the rule and the backend, the
//! rule's filters rewrite the request (or answer it with a redirect), the
//! backend service is called under its own traffic policy, and mirrors get
//! a copy that never touches the caller's response.
//!
//! A backend is reached directly, never through its own routes: a route to
//! the parent itself (a rule that only adds a header) would otherwise loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use rand::Rng;

use super::call::{Origin, RuleOverrides};
use super::forward::ForwardError;
use super::plan::{Destination, Plan, PlanError};
use super::retry::{buffer_for_retry, Buffered, ReplayBody};
use super::route::{self, FilterOutcome};
use super::Outbound;
use crate::core::budget::ByteBudget;
use crate::core::directory::gateway_policy::GatewayPolicy;
use crate::core::directory::routes::{
    Backend, Filter, GatewaySocket, Mirror, RouteRule, ServiceRoutes,
};
use crate::core::directory::Protocol;
use crate::core::http::{empty, proxy_error, Body, Caller};
use crate::metrics::{Direction, ErrorKind};

/// The largest request body copied to mirrors; a larger request is sent to
/// its backend unmirrored (and counted), so a mirror never makes the proxy
/// hold a big upload.
pub(super) const MIRROR_BODY_LIMIT: usize = 64 * 1024;
/// Mirror copies in flight at once across the proxy; past it copies are
/// skipped, so a slow mirror target cannot pile up work.
pub(super) const MIRRORS_IN_FLIGHT: usize = 128;
/// How long a mirror copy may take before it is abandoned.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest GatewayPolicy body limit under which a body of unknown length
/// is read whole before it is forwarded; above it the body streams and is
/// cut off at the limit (the backend may then have seen part of it).
const BUFFERED_BODY_LIMIT: u64 = 1024 * 1024;
/// How long reading such a body may take: a client trickling it holds a
/// buffer no longer than this.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Room for bodies read whole under a body limit, across every request
/// of the proxy (32 MiB): past it a body streams and is cut off at its
/// limit instead, so many slow uploads cannot make the proxy hold them
/// all for the read timeout.
pub(super) const HELD_BODY_TOTAL: usize = 32 << 20;

/// A request body of unknown length under a policy's body limit.
enum Limited {
    /// Read whole, within the limit (and holding its room in the budget
    /// until it is dropped).
    Held(Body),
    /// Streaming, cut off past the limit; the flag says it was.
    Streaming(Body, Arc<std::sync::atomic::AtomicBool>),
    Refused(StatusCode, &'static str),
}

/// `body` read whole when the limit is small enough to hold and `budget`
/// has room for it; otherwise streamed with the limit enforced as it goes.
async fn limit_body(body: Body, max: u64, budget: &ByteBudget) -> Limited {
    let reserved = usize::try_from(max)
        .ok()
        .filter(|_| max <= BUFFERED_BODY_LIMIT)
        .and_then(|bytes| budget.reserve(bytes));
    let Some(reserved) = reserved else {
        if max <= BUFFERED_BODY_LIMIT {
            tracing::debug!(
                limit = max,
                "held request bodies at their total; this one streams"
            );
        }
        let (body, over) = crate::core::http::cap_body(body, max);
        return Limited::Streaming(body, over);
    };
    match read_limited(body, max).await {
        Ok(body) => Limited::Held(crate::core::http::hold(body, reserved)),
        Err((status, detail)) => Limited::Refused(status, detail),
    }
}

/// `body` read whole, at most `max` bytes; else the status to answer.
/// Trailers are dropped (a client's request trailers are not carried
/// through a limit that must hold the body).
async fn read_limited(mut body: Body, max: u64) -> Result<Body, (StatusCode, &'static str)> {
    use http_body_util::BodyExt;
    let read = async {
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|_| (StatusCode::BAD_REQUEST, "the request body broke off"))?;
            if let Ok(data) = frame.into_data() {
                if (buf.len() + data.len()) as u64 > max {
                    return Err((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body over the route's limit",
                    ));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(crate::core::http::boxed(http_body_util::Full::new(
            buf.freeze(),
        )))
    };
    tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .unwrap_or(Err((
            StatusCode::REQUEST_TIMEOUT,
            "the request body came too slowly",
        )))
}

/// Why a routed request has nowhere to go.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no route of {parent} matches {method} {path}")]
    NoMatch {
        /// `reviews.shop port 9080`, `gateway shop-gw.shop`.
        parent: String,
        method: http::Method,
        path: String,
    },
    /// Gateway API: a rule without usable backends answers 500.
    #[error("rule {rule} of route {route} has no backend with a weight")]
    NoBackend { route: String, rule: usize },
    /// A mesh sidecar has no guard: the policy's checks would not run.
    #[error("route {route} carries GatewayPolicy {policy}, which only a gateway enforces")]
    Unguarded { route: String, policy: String },
    #[error("backend {backend} of route {route}: {source}")]
    Backend {
        route: String,
        backend: String,
        source: PlanError,
    },
}

impl RouteError {
    fn status(&self) -> StatusCode {
        match self {
            RouteError::NoMatch { .. } => StatusCode::NOT_FOUND,
            RouteError::NoBackend { .. } | RouteError::Unguarded { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            // A backend that does not exist (or lacks the port) is the
            // route's mistake: 500, as the Gateway API asks; one that exists
            // but cannot be reached now is unavailable.
            RouteError::Backend { source, .. } => match source {
                PlanError::UnknownService(_)
                | PlanError::NoSuchPort { .. }
                | PlanError::AmbiguousPort { .. }
                | PlanError::NoPorts(_)
                | PlanError::BadHost(_)
                | PlanError::BadAuthority(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => source.status(),
            },
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            RouteError::NoMatch { .. }
            | RouteError::NoBackend { .. }
            | RouteError::Unguarded { .. } => ErrorKind::NoRoute,
            RouteError::Backend { source, .. } => source.kind(),
        }
    }
}

/// The routes a request is matched against, and what of the request they
/// look at beyond the request itself.
#[derive(Clone, Copy, Debug)]
pub struct Parent<'a> {
    /// `<name>.<namespace>` of the Service or Gateway.
    pub key: &'a str,
    pub routes: &'a ServiceRoutes,
    /// The port of the parent Service the request was sent to; 0 for a
    /// Gateway, whose routes name no ports.
    pub port: u16,
    /// The request's host (lowercase, no port), checked against route
    /// hostnames: the gateway's; None for a Service (GAMMA), whose
    /// routes apply whatever name the caller used.
    pub host: Option<&'a str>,
    /// The gateway socket the request came in on (said by the listener
    /// that accepted it): only routes attached to listeners of its
    /// protocol are candidates. None for a Service, which has no sockets.
    pub socket: Option<GatewaySocket>,
}

impl Parent<'_> {
    fn describe(&self) -> String {
        match (self.host, self.socket) {
            (None, _) => format!("{} port {}", self.key, self.port),
            (Some(_), Some(socket)) => format!("gateway {} ({})", self.key, socket.scheme()),
            (Some(_), None) => format!("gateway {}", self.key),
        }
    }
}

/// What enforces the GatewayPolicies of the rules a request takes: the
/// gateway's. Called before the filters of the rule (and of the backend)
/// that carry the policy, with the request as the client sent it.
pub trait PolicyGuard: Send + Sync {
    fn admit<'a>(
        &'a self,
        policy: &'a Arc<GatewayPolicy>,
        parts: &'a mut Parts,
    ) -> Pin<Box<dyn Future<Output = Admission> + Send + 'a>>;
}

/// A [`PolicyGuard`]'s answer.
pub enum Admission {
    /// Go on.
    Pass(Passed),
    /// Answer this instead: a CORS preflight, or a refusal (401, 403,
    /// 413, 429, 503).
    Answer(Response<Body>),
}

/// What a passed request goes on with.
#[derive(Default)]
pub struct Passed {
    /// Set on the response (rate-limit state, CORS).
    pub response_headers: HeaderMap,
    /// The request body may carry at most this many bytes; past them the
    /// request is cut off and answered 413.
    pub max_body: Option<u64>,
    /// Sees the backend's response (after the rule's response filters,
    /// before `response_headers`) and gives the one to send: the response
    /// cache keeps a copy there.
    pub respond: Option<ResponseHook>,
}

pub type ResponseHook = Box<dyn FnOnce(Response<Body>) -> Response<Body> + Send>;

impl Passed {
    /// Another guard's pass on top of this one: the later headers win,
    /// the smaller body limit holds.
    fn merge(&mut self, other: Passed) {
        // Every value of a name the later pass sets replaces the earlier
        // ones (`keys` then `get_all`: a plain walk yields only the first
        // value of each name with it).
        for name in other.response_headers.keys() {
            self.response_headers.remove(name);
            for value in other.response_headers.get_all(name) {
                self.response_headers.append(name.clone(), value.clone());
            }
        }
        self.max_body = match (self.max_body, other.max_body) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.respond = match (self.respond.take(), other.respond) {
            (Some(first), Some(then)) => Some(Box::new(move |res| then(first(res)))),
            (a, b) => a.or(b),
        };
    }
}

/// A routed request's answer and the backend service it went to, if it
/// got that far (the metric label of a gateway's requests).
pub struct Routed {
    pub response: Response<Body>,
    pub backend: Option<String>,
}

impl Outbound {
    /// Sends `req`, addressed to a routed port of `plan`'s service, where
    /// its routes say.
    pub(super) async fn call_routed(
        self: &Arc<Self>,
        direction: Direction,
        plan: &Plan,
        authority: &str,
        req: Request<Body>,
        caller: Caller,
    ) -> Response<Body> {
        let key = plan.service.key();
        let parent = Parent {
            key: &key,
            routes: &plan.routes,
            port: plan.port.port,
            host: None,
            socket: None,
        };
        self.route(direction, parent, authority, req, caller, None)
            .await
            .response
    }

    /// Sends `req` where `parent`'s routes say: the rule that takes it,
    /// its GatewayPolicies (checked by `guard`) and filters, a backend by
    /// weight, that backend's service under its own policy, the response
    /// filters.
    pub(crate) async fn route(
        self: &Arc<Self>,
        direction: Direction,
        parent: Parent<'_>,
        authority: &str,
        req: Request<Body>,
        caller: Caller,
        guard: Option<&dyn PolicyGuard>,
    ) -> Routed {
        let unrouted = |response| Routed {
            response,
            backend: None,
        };
        let Some(selected) =
            route::select(parent.routes, parent.port, &req, parent.host, parent.socket)
        else {
            let e = RouteError::NoMatch {
                parent: parent.describe(),
                method: req.method().clone(),
                path: req.uri().path().to_string(),
            };
            return unrouted(self.route_fail(direction, parent.key, &e, caller));
        };
        let (route, rule) = (selected.route, selected.rule);
        // An upgrade hands the caller's connection over: it cannot be
        // copied, so it is never mirrored.
        let upgrading = super::upgrade::wants_upgrade(&req, Protocol::Http);
        let (mut parts, body) = req.into_parts();
        let mut passed = Passed::default();
        if let Err(res) = self
            .guard(
                direction,
                parent.key,
                &route.name,
                &rule.filters,
                guard,
                &mut parts,
                &mut passed,
                caller,
            )
            .await
        {
            return unrouted(res);
        }
        if let FilterOutcome::Redirect(r) =
            route::apply_request_filters(&rule.filters, &mut parts, selected.matched)
        {
            return unrouted(redirect(r));
        }
        let roll = rand::thread_rng().gen_range(0..route::total_weight(rule).max(1));
        let Some(backend) = route::pick_backend(rule, roll) else {
            let e = RouteError::NoBackend {
                route: route.name.clone(),
                rule: selected.rule_index,
            };
            return unrouted(self.route_fail(direction, parent.key, &e, caller));
        };
        if let Err(res) = self
            .guard(
                direction,
                parent.key,
                &route.name,
                &backend.filters,
                guard,
                &mut parts,
                &mut passed,
                caller,
            )
            .await
        {
            return unrouted(res);
        }
        if let FilterOutcome::Redirect(r) =
            route::apply_request_filters(&backend.filters, &mut parts, selected.matched)
        {
            return unrouted(redirect(r));
        }
        // A Gateway's routes name every backend's port (the controller
        // requires it); a Service's may leave it to the request's.
        let port = backend.port.or((parent.port != 0).then_some(parent.port));
        let dest = Destination {
            host: backend.service_key.clone(),
            service_key: backend.service_key.clone(),
            port,
        };
        let target = match self.resolve(&dest).await {
            Ok(target) => target,
            Err(source) => {
                let e = RouteError::Backend {
                    route: route.name.clone(),
                    backend: backend.service_key.clone(),
                    source,
                };
                return unrouted(self.route_fail(direction, parent.key, &e, caller));
            }
        };
        // A rewritten host is the authority the backend is called with.
        let authority = rewritten_authority(rule, backend, &parts)
            .unwrap_or(authority)
            .to_string();
        // The guard refused a declared length over the limit; a body of
        // unknown length small enough to hold is read whole first (room
        // permitting), so an oversized one is refused before the backend
        // sees any of it; a larger one streams and is cut off past the
        // limit.
        let declared = parts.headers.contains_key(header::CONTENT_LENGTH);
        let limit = passed.max_body.filter(|_| !declared);
        let mut over_limit = None;
        let body = match limit {
            None => body,
            Some(max) => match limit_body(body, max, &self.held_bodies).await {
                Limited::Held(body) => body,
                Limited::Streaming(body, over) => {
                    over_limit = Some(over);
                    body
                }
                Limited::Refused(status, detail) => {
                    self.metrics.error(direction, ErrorKind::BodyTooLarge);
                    let res = proxy_error(status, ErrorKind::BodyTooLarge, detail, caller);
                    return unrouted(res);
                }
            },
        };
        let body = if upgrading {
            Ok(body)
        } else {
            self.mirror(rule, backend, &parts, body, port).await
        };
        let body = match body {
            Ok(body) => body,
            Err(e) => return unrouted(self.fail(direction, parent.key, &e, caller)),
        };
        let overrides = RuleOverrides {
            fault: fault_of(&rule.filters).or(fault_of(&backend.filters)),
            timeout: rule.timeout,
        };
        let origin = Origin {
            direction,
            caller,
            authority: &authority,
        };
        let req = Request::from_parts(parts, body);
        let mut res = self
            .call(&target, &backend.service_key, req, origin, overrides)
            .await;
        if over_limit.is_some_and(|o| o.load(std::sync::atomic::Ordering::Acquire)) {
            // The cut body made the call fail; the caller sent too much.
            self.metrics.error(direction, ErrorKind::BodyTooLarge);
            res = proxy_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::BodyTooLarge,
                "request body over the route's limit",
                caller,
            );
        }
        route::apply_response_filters(&rule.filters, res.headers_mut());
        route::apply_response_filters(&backend.filters, res.headers_mut());
        if let Some(respond) = passed.respond {
            res = respond(res);
        }
        let policy_headers = passed.response_headers;
        for name in policy_headers.keys() {
            // The backend's own Vary stays: the gateway's adds to it.
            if name != header::VARY {
                res.headers_mut().remove(name);
            }
            for value in policy_headers.get_all(name) {
                res.headers_mut().append(name.clone(), value.clone());
            }
        }
        crate::observe::served(&mut res).route = Some(route.name.clone());
        Routed {
            response: res,
            backend: Some(backend.service_key.clone()),
        }
    }

    /// Runs the GatewayPolicies among `filters` through `guard`, in order;
    /// the first refusal is the answer. Without a guard a policy is never
    /// skipped: the request is refused.
    #[allow(clippy::too_many_arguments)]
    async fn guard(
        &self,
        direction: Direction,
        parent: &str,
        route: &str,
        filters: &[Filter],
        guard: Option<&dyn PolicyGuard>,
        parts: &mut Parts,
        passed: &mut Passed,
        caller: Caller,
    ) -> Result<(), Response<Body>> {
        for filter in filters {
            let Filter::GatewayPolicy(policy) = filter else {
                continue;
            };
            let Some(guard) = guard else {
                let e = RouteError::Unguarded {
                    route: route.to_string(),
                    policy: policy.name.clone(),
                };
                return Err(self.route_fail(direction, parent, &e, caller));
            };
            match guard.admit(policy, parts).await {
                Admission::Pass(p) => passed.merge(p),
                Admission::Answer(res) => return Err(res),
            }
        }
        Ok(())
    }

    fn route_fail(
        &self,
        direction: Direction,
        service: &str,
        e: &RouteError,
        caller: Caller,
    ) -> Response<Body> {
        tracing::warn!(?direction, %service, error = %e, "request not routed");
        self.metrics.error(direction, e.kind());
        proxy_error(e.status(), e.kind(), e, caller)
    }

    /// Starts the copies the rule's and backend's mirrors ask for and
    /// returns the body the primary request goes on with. Copies need the
    /// body whole: a body larger than [`MIRROR_BODY_LIMIT`] (or one that
    /// finds no room in the shared body buffers) is sent on unmirrored.
    async fn mirror(
        self: &Arc<Self>,
        rule: &RouteRule,
        backend: &Backend,
        parts: &Parts,
        body: Body,
        port: Option<u16>,
    ) -> Result<Body, ForwardError> {
        let roll = rand::thread_rng().gen_range(0..100);
        let mut targets = route::mirror_targets(&rule.filters, roll);
        targets.extend(route::mirror_targets(&backend.filters, roll));
        if targets.is_empty() {
            return Ok(body);
        }
        let Some(reserved) = self.retry_buffers.reserve(MIRROR_BODY_LIMIT) else {
            self.count_mirrors(&targets, "busy");
            return Ok(body);
        };
        let replay = match buffer_for_retry(body, MIRROR_BODY_LIMIT).await? {
            Buffered::Replayable(replay) => replay,
            Buffered::Streaming(body) => {
                self.count_mirrors(&targets, "body_too_large");
                return Ok(body);
            }
        };
        let reserved = Arc::new(reserved);
        for m in targets {
            let Ok(slot) = self.mirrors.clone().try_acquire_owned() else {
                self.metrics.mirror(&m.service_key, "busy");
                continue;
            };
            self.metrics.mirror(&m.service_key, "sent");
            let copy = MirrorCopy {
                head: clone_head(parts),
                body: replay.clone(),
                target: m.clone(),
                port,
            };
            let (outbound, reserved) = (self.clone(), reserved.clone());
            tokio::spawn(async move {
                let _hold = (slot, reserved);
                let _ = tokio::time::timeout(MIRROR_TIMEOUT, outbound.send_copy(copy)).await;
            });
        }
        Ok(replay.body())
    }

    fn count_mirrors(&self, targets: &[&Mirror], result: &'static str) {
        for m in targets {
            self.metrics.mirror(&m.service_key, result);
        }
    }

    /// Sends one mirror copy and drops whatever comes back.
    async fn send_copy(&self, copy: MirrorCopy) {
        let dest = Destination {
            host: copy.target.service_key.clone(),
            service_key: copy.target.service_key.clone(),
            port: copy.target.port.or(copy.port),
        };
        let plan = match self.resolve(&dest).await {
            Ok(plan) => plan,
            Err(e) => {
                tracing::debug!(mirror = %dest.service_key, error = %e, "mirror copy not sent");
                return;
            }
        };
        let authority = copy
            .head
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(copy.head.uri.authority().map(|a| a.as_str()))
            .unwrap_or(&dest.service_key)
            .to_string();
        let caller = Caller::of(&copy.head.headers, false);
        let req = Request::from_parts(copy.head, copy.body.body());
        // The copy is counted under its own service like any request; its
        // answer goes nowhere.
        let origin = Origin {
            direction: Direction::Outbound,
            caller,
            authority: &authority,
        };
        let res = self
            .call(
                &plan,
                &dest.service_key,
                req,
                origin,
                RuleOverrides::default(),
            )
            .await;
        self.metrics.request(
            Direction::Outbound,
            &dest.service_key,
            res.status().as_u16(),
        );
    }
}

struct MirrorCopy {
    head: Parts,
    body: ReplayBody,
    target: Mirror,
    /// The primary request's port, for a mirror that names none.
    port: Option<u16>,
}

/// A copy of a request head (extensions are left out: they hold the
/// caller's connection state, which a copy must not carry).
fn clone_head(parts: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}

fn fault_of(filters: &[Filter]) -> Option<&crate::core::directory::policy::Fault> {
    filters.iter().find_map(|f| match f {
        Filter::Fault(fault) => Some(fault),
        _ => None,
    })
}

/// The authority after a URL rewrite that set a hostname, if one did.
fn rewritten_authority<'a>(
    rule: &RouteRule,
    backend: &Backend,
    parts: &'a Parts,
) -> Option<&'a str> {
    let rewrites_host = rule
        .filters
        .iter()
        .chain(&backend.filters)
        .any(|f| matches!(f, Filter::UrlRewrite(u) if u.hostname.is_some()));
    if !rewrites_host {
        return None;
    }
    parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(header::HOST)?.to_str().ok())
}

fn redirect(r: route::RedirectResponse) -> Response<Body> {
    let mut res = Response::new(empty());
    *res.status_mut() = r.status;
    res.headers_mut().insert(header::LOCATION, r.location);
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_later_pass_keeps_every_value_and_the_smaller_body_limit() {
        let mut first = Passed {
            response_headers: headers(&[("vary", "origin"), ("ratelimit-remaining", "9")]),
            max_body: Some(4096),
            respond: None,
        };
        first.merge(Passed {
            response_headers: headers(&[
                ("ratelimit-remaining", "2"),
                ("x-multi", "a"),
                ("x-multi", "b"),
            ]),
            max_body: Some(1024),
            respond: None,
        });
        let h = &first.response_headers;
        assert_eq!(h["ratelimit-remaining"], "2", "the later pass wins");
        assert_eq!(h.get_all("x-multi").iter().count(), 2, "{h:?}");
        assert_eq!(h["vary"], "origin");
        assert_eq!(first.max_body, Some(1024));
    }

    /// A body that sends `first` and then nothing until its sender is
    /// dropped: a slow chunked upload.
    fn trickle(first: &'static [u8]) -> (Body, tokio::sync::mpsc::Sender<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let stream = async_stream_body(first, async move {
            let _ = rx.recv().await;
        });
        (stream, tx)
    }

    fn async_stream_body(
        first: &'static [u8],
        stall: impl Future<Output = ()> + Send + Sync + 'static,
    ) -> Body {
        use futures::StreamExt;
        let head = futures::stream::once(async move {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from_static(
                first,
            )))
        });
        let tail = futures::stream::once(stall).filter_map(|()| async { None });
        crate::core::http::boxed(http_body_util::StreamBody::new(head.chain(tail)))
    }

    #[tokio::test]
    async fn slow_chunked_uploads_cannot_hold_more_than_the_body_budget() {
        const LIMIT: u64 = 64 * 1024;
        let budget = ByteBudget::new(2 * LIMIT as usize);
        // Two uploads trickle in and hold the whole budget while they do.
        let mut senders = Vec::new();
        let mut reading = Vec::new();
        for _ in 0..2 {
            let (body, tx) = trickle(b"some bytes");
            senders.push(tx);
            let budget = budget.clone();
            reading.push(tokio::spawn(async move {
                limit_body(body, LIMIT, &budget).await
            }));
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            while budget.available() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the slow uploads reserve their room");
        // A third is not held: it streams, its limit enforced as it goes.
        let (body, _tx) = trickle(b"more");
        assert!(matches!(
            limit_body(body, LIMIT, &budget).await,
            Limited::Streaming(..)
        ));
        // The first upload finishes: its body holds the room until it is
        // forwarded (dropped), then the room comes back.
        drop(senders.remove(0));
        let held = reading.remove(0).await.unwrap();
        let Limited::Held(body) = held else {
            panic!("a finished upload within the limit is held");
        };
        assert_eq!(budget.available(), 0, "held until forwarded");
        drop(body);
        assert_eq!(budget.available(), LIMIT as usize);
        let body = async_stream_body(b"small", async {});
        assert!(matches!(
            limit_body(body, LIMIT, &budget).await,
            Limited::Held(_)
        ));
    }
}
