//! The Mycel demo shop: `frontend` (HTML + JSON), `catalog`, `ratings`,
//! `orders` and `notifications` (REST/JSON) and `reviews` (gRPC, v1 without
//! stars, v2 asking ratings).
//!
//! A database per service: catalog and orders in PostgreSQL ([`pg`]),
//! ratings and notifications in Redis ([`kv`]), each in memory when not
//! given one. Orders publishes `OrderPlaced` to NATS JetStream through a
//! transactional outbox; catalog (stock) and notifications consume it
//! ([`events`]: at-least-once delivery, idempotent consumers). `mycel-demo
//! store KIND` ([`store`]) runs those servers for the local demo.
//!
//! Services reach each other only by service name: through their own
//! sidecar's explicit outbound proxy (`--proxy`, local mode), by that name
//! looked up in DNS (`--dns`, Kubernetes: the pod's sidecar captures the
//! connection to the Service), or, without a mesh, through `--direct
//! name=addr` overrides. Every service has fault knobs (latency,
//! error rate) and echoes the `x-mycel-peer-id` header its sidecar set, so a
//! caller can see which identity the mesh proved.
//!
//! `mycel-demo issuer` and `mycel-demo token` ([`issuer`]) are the shop's
//! identity provider in a cluster: the JWKS the gateway checks
//! `/api/orders` tokens against, and tokens signed with its key.
//!
//! `mycel-demo fetch URL` ([`fetch`]) is a small HTTP client, for checking
//! reachability from inside a pod whose image has no shell or curl.
//!
//! `app::run` / `app::run_with_listener` run one service in-process;
//! `proto::reviews` holds the generated gRPC client and server.

pub mod app;
pub mod catalog;
pub mod config;
pub mod events;
pub mod faults;
pub mod fetch;
pub mod frontend;
pub mod http;
pub mod issuer;
pub mod kv;
pub mod notifications;
pub mod orders;
pub mod pg;
pub mod proto;
pub mod ratings;
pub mod reviews;
pub mod store;
pub mod trace;
pub mod upstream;

pub use app::{run, run_with_listener};
pub use config::{ServiceConfig, ServiceKind, Version};

/// Header the server-side sidecar sets to the caller's SPIFFE ID.
pub const PEER_ID_HEADER: &str = "x-mycel-peer-id";
