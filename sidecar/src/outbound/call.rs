//! One request to a service under its traffic policy: an injected fault if
//! the policy asks for one, then tries (each: a balancer pick, a circuit
//! breaker permit, the send with its per-try timeout) until one succeeds,
//! the failure is not retriable, the tries or the retry budget run out, or
//! the request's deadline passes.
//!
//! The pieces it joins are pure and tested on their own
//! ([`super::balance`], [`super::retry`], [`super::breaker`]); this file only
//! decides in which order they apply.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use rand::Rng;

use super::balance::{request_hash, Outcome, Pick, PickInput};
use super::forward::ForwardError;
use super::plan::{Plan, PlanError};
use super::pool::{DialOptions, CONNECT_TIMEOUT};
use super::retry::{
    backoff, buffer_for_retry, effective_deadline, grpc_timeout, is_idempotent, retry_after,
    retry_delay, should_retry, try_timeout, Buffered, TryFailure, TryResult,
};
use super::Outbound;
use crate::core::directory::policy::{Algorithm, Fault, PolicyRules, RetryPolicy};
use crate::core::http::{hold, proxy_error, Body, Caller};
use crate::core::serve::ClientAddr;
use crate::metrics::{Direction, ErrorKind};

/// What is kept of a request to build it again for each try. Extensions
/// are not kept: the only one that matters (an upgrade) is never retried.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Head {
    fn request(&self, body: Body) -> Request<Body> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// What every try of one request shares.
struct Call<'a> {
    plan: &'a Plan,
    rules: &'a PolicyRules,
    service: &'a str,
    authority: &'a str,
    /// For ring hash and Maglev.
    hash: Option<u64>,
    deadline: Option<Instant>,
}

/// What the route rule that chose the service changes in how it is
/// called: its fault replaces the policy's, its request timeout the
/// policy's. Empty for a request sent to a service directly.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RuleOverrides<'a> {
    pub fault: Option<&'a Fault>,
    pub timeout: Option<Duration>,
}

/// Who sent a request and how it named the service: the listener it came
/// in on, what kind of caller it is (for error responses) and the
/// authority passed on to the server's app.
#[derive(Clone, Copy, Debug)]
pub(super) struct Origin<'a> {
    pub direction: Direction,
    pub caller: Caller,
    pub authority: &'a str,
}

/// How one try ended.
struct Tried {
    result: Result<Response<Body>, ForwardError>,
    endpoint: Option<SocketAddr>,
}

impl Tried {
    /// The try's result, with the endpoint and the retries before it noted
    /// on a response for the request's telemetry.
    fn noted(mut self, retries: u32) -> Self {
        if let Ok(res) = &mut self.result {
            let served = crate::observe::served(res);
            served.endpoint = self.endpoint;
            served.retries = retries;
        }
        self
    }
}

impl Outbound {
    /// Sends `req` to the service of `plan` (whose key is `service`) under
    /// the port's policy and returns the response the caller gets (the
    /// app's, or the proxy's own error response).
    pub(super) async fn call(
        &self,
        plan: &Plan,
        service: &str,
        req: Request<Body>,
        origin: Origin<'_>,
        rule: RuleOverrides<'_>,
    ) -> Response<Body> {
        let Origin {
            direction,
            caller,
            authority,
        } = origin;
        let rules = plan.rules();
        if let Some(fault) = rule.fault.or(rules.fault.as_ref()) {
            if let Some(res) = self.inject(fault, service, caller).await {
                return res;
            }
        }
        let started = Instant::now();
        let deadline = effective_deadline(
            started,
            rule.timeout.or(rules.timeouts.request),
            grpc_timeout(req.headers()),
        );
        let hash = match &rules.load_balancer.algorithm {
            Algorithm::RingHash { key, .. } | Algorithm::Maglev { key } => {
                let source = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
                request_hash(key, req.headers(), source)
            }
            _ => None,
        };
        let call = Call {
            plan,
            rules,
            service,
            authority,
            hash,
            deadline,
        };
        let tries = self.tries(&call, req);
        let result = match deadline {
            Some(at) => match tokio::time::timeout_at(at.into(), tries).await {
                Ok(r) => r,
                Err(_) => Err(ForwardError::Timeout {
                    what: "the request",
                    after: at.saturating_duration_since(started),
                }),
            },
            None => tries.await,
        };
        match result {
            Ok(res) => res,
            Err(e) => self.fail(direction, service, &e, caller),
        }
    }

    /// Applies the policy's fault: maybe a delay, then maybe an abort
    /// (returned as the response).
    async fn inject(&self, fault: &Fault, service: &str, caller: Caller) -> Option<Response<Body>> {
        let (delay, abort) = {
            let mut rng = rand::thread_rng();
            let mut roll = |percent: f64| rng.gen_range(0.0..100.0) < percent;
            (
                fault
                    .delay
                    .as_ref()
                    .filter(|d| roll(d.percent))
                    .map(|d| d.delay),
                fault
                    .abort
                    .as_ref()
                    .filter(|a| roll(a.percent))
                    .map(|a| a.status),
            )
        };
        if let Some(d) = delay {
            self.metrics.fault(service, "delay");
            tokio::time::sleep(d).await;
        }
        let status = abort.and_then(|s| StatusCode::from_u16(s).ok())?;
        self.metrics.fault(service, "abort");
        Some(proxy_error(
            status,
            ErrorKind::Fault,
            format!("fault injected by the traffic policy or route of {service}"),
            caller,
        ))
    }

    /// Every try of one request; the last response or error.
    async fn tries(
        &self,
        call: &Call<'_>,
        req: Request<Body>,
    ) -> Result<Response<Body>, ForwardError> {
        let service = call.service;
        let retry = call
            .rules
            .retry
            .as_ref()
            // The caller's connection is handed over on an upgrade.
            .filter(|_| !super::upgrade::wants_upgrade(&req, call.plan.port.protocol));
        let Some(policy) = retry else {
            return self.try_once(call, req, None).await.noted(0).result;
        };
        let (parts, body) = req.into_parts();
        let head = Head {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
        };
        // Bodies kept for retries share one bound, so many callers with big
        // bodies cannot make the proxy hold them all; past it a request is
        // sent once, as if its body were too large.
        let Some(_reserved) = self.retry_buffers.reserve(policy.max_body_bytes) else {
            tracing::debug!(%service, "retry buffers full; the request is sent once");
            return self
                .try_once(call, head.request(body), None)
                .await
                .noted(0)
                .result;
        };
        let replay = match buffer_for_retry(body, policy.max_body_bytes).await {
            Ok(Buffered::Replayable(r)) => r,
            Ok(Buffered::Streaming(body)) => {
                tracing::debug!(%service, limit = policy.max_body_bytes, "request body too large to keep; it is sent once");
                return self
                    .try_once(call, head.request(body), None)
                    .await
                    .noted(0)
                    .result;
            }
            Err(e) => return Err(ForwardError::Body(e)),
        };
        let budget = self.budgets.get(service, &policy.budget, Instant::now());
        budget.record_request(Instant::now());
        let mut avoid = None;
        let mut attempt = 1;
        loop {
            let tried = self
                .try_once(call, head.request(replay.body()), avoid)
                .await;
            if attempt >= policy.attempts {
                return tried.noted(attempt - 1).result;
            }
            let Some(wait) = self.retry_wait(policy, &head.method, &tried, attempt, call.deadline)
            else {
                return tried.noted(attempt - 1).result;
            };
            if !budget.try_retry(Instant::now()) {
                self.metrics.retry_budget_exhausted(service);
                tracing::debug!(%service, "retry budget spent; not retrying");
                return tried.noted(attempt - 1).result;
            }
            let reason = wait.1;
            self.metrics.retry(service, reason);
            tracing::debug!(%service, attempt, %reason, wait = ?wait.0, "retrying on another endpoint");
            drop(tried.result);
            tokio::time::sleep(wait.0).await;
            avoid = tried.endpoint;
            attempt += 1;
        }
    }

    /// How long to wait before the next try and why it is made, or None
    /// when the try's outcome is final.
    fn retry_wait(
        &self,
        policy: &RetryPolicy,
        method: &Method,
        tried: &Tried,
        attempt: u32,
        deadline: Option<Instant>,
    ) -> Option<(Duration, &'static str)> {
        let (result, failure) = match &tried.result {
            Ok(res) => (
                TryResult::Response {
                    status: res.status(),
                    headers: res.headers(),
                },
                None,
            ),
            Err(e) => {
                let f = e.try_failure()?;
                (TryResult::Failed(f), Some(f))
            }
        };
        let reason = should_retry(&policy.retry_on, result)?;
        // A request the endpoint never processed is safe to send again
        // whatever its method.
        let unprocessed = failure.is_some_and(TryFailure::request_unprocessed);
        if !(policy.non_idempotent || is_idempotent(method) || unprocessed) {
            return None;
        }
        let after = tried
            .result
            .as_ref()
            .ok()
            .and_then(|res| retry_after(res.headers(), SystemTime::now()));
        if after.is_some_and(|a| a > longest_retry_after(policy)) {
            // The server asks for a long pause: the caller gets the answer
            // and may wait itself, rather than a request held open here.
            return None;
        }
        let jittered = backoff(policy, attempt, &mut rand::thread_rng());
        let wait = retry_delay(jittered, after, Instant::now(), deadline)?;
        Some((wait, reason.as_str()))
    }

    /// One try: pick, permit, send within the per-try timeout, and tell the
    /// balancer how it went.
    async fn try_once(
        &self,
        call: &Call<'_>,
        req: Request<Body>,
        avoid: Option<SocketAddr>,
    ) -> Tried {
        let input = PickInput {
            hash: call.hash,
            local_zone: &self.zone,
            now: Instant::now(),
        };
        let Some(pick) = self.balancer.pick(
            call.service,
            &call.plan.endpoints,
            &call.rules.load_balancer,
            call.rules.outlier_detection.as_ref(),
            &input,
            avoid,
        ) else {
            return Tried {
                result: Err(PlanError::NoReadyEndpoints(call.service.to_string()).into()),
                endpoint: None,
            };
        };
        let endpoint = pick.endpoint.mesh_addr;
        let result = self.send_picked(call, pick, req).await;
        Tried {
            result,
            endpoint: Some(endpoint),
        }
    }

    async fn send_picked(
        &self,
        call: &Call<'_>,
        pick: Pick,
        req: Request<Body>,
    ) -> Result<Response<Body>, ForwardError> {
        let (rules, service) = (call.rules, call.service);
        let endpoint = pick.endpoint.clone();
        let (permit, _pending) = match &rules.circuit_breaker {
            Some(cb) => {
                let shed = |e: super::breaker::Overflow| {
                    self.metrics.overflow(service, e.limit.as_str());
                    ForwardError::Overflow(e)
                };
                let permit = self
                    .breakers
                    .request(service, cb, endpoint.mesh_addr)
                    .map_err(shed)?;
                let pending = if self.pool.has_live(endpoint.mesh_addr, &endpoint.identity) {
                    None
                } else {
                    Some(self.breakers.pending(service, cb).map_err(shed)?)
                };
                (Some(permit), pending)
            }
            None => (None, None),
        };
        let opts = DialOptions {
            connect_timeout: rules.timeouts.connect.unwrap_or(CONNECT_TIMEOUT),
            idle_timeout: rules.timeouts.idle,
        };
        let per_try = rules.retry.as_ref().and_then(|r| r.per_try_timeout);
        let send = self.send_to(&endpoint, &call.plan.port, call.authority, req, opts);
        let result =
            match try_timeout(per_try, call.deadline, Instant::now()) {
                Some(limit) if per_try.is_some() => tokio::time::timeout(limit, send)
                    .await
                    .unwrap_or(Err(ForwardError::Timeout {
                        what: "a try",
                        after: limit,
                    })),
                _ => send.await,
            };
        let outcome = match &result {
            Ok(res) => Outcome::of_status(res.status().as_u16()),
            Err(e) => match e.try_failure() {
                Some(TryFailure::Connect) => Outcome::ConnectFailure,
                Some(TryFailure::Timeout) => Outcome::Timeout,
                Some(TryFailure::RefusedStream | TryFailure::Reset) => Outcome::Reset,
                None => Outcome::Reset,
            },
        };
        pick.finish(outcome);
        // The request stays in flight for the breaker until its response
        // body ends.
        match (result, permit) {
            (Ok(res), Some(permit)) => Ok(res.map(|b| hold(b, permit))),
            (result, _) => result,
        }
    }
}

/// The longest `Retry-After` a retry waits for: the policy's longest
/// backoff, but at least a second.
fn longest_retry_after(policy: &RetryPolicy) -> Duration {
    policy.backoff_max.max(Duration::from_secs(1))
}

/// Total of request bodies kept for retries and mirrors at once (64 MiB).
pub(super) const RETRY_BUFFER_TOTAL: usize = 64 << 20;

impl ForwardError {
    /// The retriable failure this error is, if any.
    pub(super) fn try_failure(&self) -> Option<TryFailure> {
        match self {
            ForwardError::Dial { .. } => Some(TryFailure::Connect),
            ForwardError::Timeout { .. } => Some(TryFailure::Timeout),
            ForwardError::Request { source, .. } => Some(if refused_stream(source) {
                TryFailure::RefusedStream
            } else {
                TryFailure::Reset
            }),
            _ => None,
        }
    }
}

/// Whether the peer refused the stream before processing it (HTTP/2
/// REFUSED_STREAM), which makes any request safe to send again.
fn refused_stream(e: &hyper::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(h2) = c.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_retry_after_is_not_waited_for() {
        let mut p = crate::core::directory::policy::RetryPolicy {
            attempts: 3,
            per_try_timeout: None,
            retry_on: Default::default(),
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            budget: Default::default(),
            max_body_bytes: 0,
            non_idempotent: false,
        };
        assert_eq!(longest_retry_after(&p), Duration::from_secs(1));
        p.backoff_max = Duration::from_secs(5);
        assert_eq!(longest_retry_after(&p), Duration::from_secs(5));
    }

    #[test]
    fn head_rebuilds_the_same_request() {
        let head = Head {
            method: Method::PUT,
            uri: "http://catalog/items?x=1".parse().unwrap(),
            version: Version::HTTP_11,
            headers: HeaderMap::from_iter([(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            )]),
        };
        for _ in 0..2 {
            let req = head.request(crate::core::http::empty());
            assert_eq!(req.method(), Method::PUT);
            assert_eq!(req.uri(), "http://catalog/items?x=1");
            assert_eq!(req.headers()["content-type"], "text/plain");
        }
    }
}
