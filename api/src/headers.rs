//! Header names of the mesh's HTTP contract between sidecars and apps.
//!
//! Plain `&str` constants so every crate (proxy, demo apps, tests) can use
//! them without sharing an HTTP library version.

/// Set by the server sidecar on requests to the app: the caller's verified
/// SPIFFE ID. Any copy sent by a client is removed first.
pub const PEER_ID: &str = "x-mycel-peer-id";

/// Client sidecar → server sidecar: the app port the request is for. Removed
/// before the app sees the request.
pub const DST_PORT: &str = "mycel-dst-port";

/// Client sidecar → server sidecar: `h2` when the app port speaks HTTP/2.
pub const APP_PROTOCOL: &str = "mycel-app-protocol";

/// On responses the proxy made itself (not the app): the kind of error, e.g.
/// `unavailable`, `forbidden`, `header-too-large`. Lets callers tell a mesh
/// failure from an application answer.
pub const PROXY_ERROR: &str = "mycel-proxy-error";
