//! A meshed pod's proxy in a cluster, as `cert inspect` and `proxy-config`
//! reach it: the target on the command line (`deploy/NAME`, `pod/NAME`, a
//! pod's NAME with -n) names a pod ([`target`], pure), which is found
//! through the API server and must run a ready proxy ([`cluster`]); its
//! admin is then read through the API server ([`crate::podcerts`]).

pub mod cluster;
pub mod target;
