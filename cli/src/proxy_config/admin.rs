//! Where `proxy-config` reads a proxy's admin: dialled at HOST:PORT, or a
//! meshed pod's through the API server's pods/proxy subresource (found as
//! `cert inspect` finds it, [`crate::meshpod`]), so that no port has to be
//! forwarded.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use kube::Client;
use serde_json::Value;

use super::target::ProxyTarget;
use crate::demo::wait;
use crate::kubeconfig::TargetArgs;
use crate::meshpod::cluster::{self as meshpod, PodSource, Reached};

/// The most of a `/config_dump` read through the API server. A dump grows
/// with the services a proxy subscribes to (a few KB each); the cap keeps a
/// misbehaving pod from filling our memory through the API server.
const MAX_DUMP_BYTES: usize = 64 * 1024 * 1024;

pub enum Admin {
    Address {
        addr: SocketAddr,
        text: String,
    },
    Pod {
        client: Client,
        reached: Box<Reached>,
        timeout: Duration,
    },
}

impl Admin {
    /// Finds the proxy `target` names: resolves HOST:PORT, or finds the pod
    /// and checks that it runs a ready proxy.
    pub async fn open(
        target: &ProxyTarget,
        cluster: &TargetArgs,
        timeout: Duration,
    ) -> anyhow::Result<Admin> {
        match target {
            ProxyTarget::Address(text) => Ok(Admin::Address {
                addr: resolve(text).await?,
                text: text.clone(),
            }),
            ProxyTarget::Cluster(t) => {
                let client = meshpod::connect(&cluster.kube, timeout).await?;
                let namespace = cluster.namespace.as_deref();
                let reached = meshpod::reach(&client, namespace, t, timeout).await?;
                Ok(Admin::Pod {
                    client,
                    reached: Box::new(reached),
                    timeout,
                })
            }
        }
    }

    /// How the output names the proxy: its address, or its pod.
    pub fn name(&self) -> &str {
        match self {
            Admin::Address { text, .. } => text,
            Admin::Pod { reached, .. } => &reached.description,
        }
    }

    /// "the proxy at ADDR" or "the proxy of pod NS/NAME".
    pub fn phrase(&self) -> String {
        match self {
            Admin::Address { text, .. } => format!("the proxy at {text}"),
            Admin::Pod { reached, .. } => {
                let p = &reached.source;
                format!("the proxy of pod {}/{}", p.namespace, p.name)
            }
        }
    }

    pub fn pod(&self) -> Option<&PodSource> {
        match self {
            Admin::Address { .. } => None,
            Admin::Pod { reached, .. } => Some(&reached.source),
        }
    }

    /// The JSON the admin answers at `path`; an error unless it answered
    /// 200 with JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        match self {
            Admin::Address { addr, text } => get_direct(*addr, text, path).await,
            Admin::Pod {
                client,
                reached,
                timeout,
            } => {
                let port = reached.source.admin_port;
                let body = meshpod::get(client, &reached.pod, port, path, MAX_DUMP_BYTES, *timeout)
                    .await?;
                serde_json::from_str(&body).with_context(|| {
                    format!(
                        "{path} of {} is not JSON: is port {port} its Mycel proxy's admin?",
                        self.phrase()
                    )
                })
            }
        }
    }
}

async fn resolve(proxy: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(proxy)
        .await
        .with_context(|| format!("resolving {proxy}"))?
        .next()
        .with_context(|| format!("{proxy} resolves to no address"))
}

async fn get_direct(addr: SocketAddr, proxy: &str, path: &str) -> anyhow::Result<Value> {
    let answer = wait::get(addr, "localhost", path)
        .await
        .with_context(|| format!("cannot reach the proxy's admin at {proxy}"))?;
    let body: Value = serde_json::from_slice(&answer.body).with_context(|| {
        format!(
            "{proxy}{path} answered HTTP {} without JSON: is {proxy} a Mycel proxy's admin port?",
            answer.status
        )
    })?;
    if answer.status != 200 {
        let why = body["error"].as_str().unwrap_or("no reason given");
        bail!("{proxy}{path} answered HTTP {}: {why}", answer.status);
    }
    Ok(body)
}
