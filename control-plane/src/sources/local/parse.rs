//! mesh.yaml parsing and validation: Kubernetes-style documents, of which
//! this version reads `kind: Service`. The whole file is valid or rejected;
//! every error names the document (1-based) and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use mycel_api::names::{self, NameKind};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use crate::model::{Protocol, Service, ServicePort};

/// Why a mesh config was rejected. The file name is added by the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("document {document}: {message}")]
    Document { document: usize, message: String },
    #[error("document {document}: {field}: {message}")]
    Field {
        document: usize,
        field: String,
        message: String,
    },
    #[error("document {document}: service {key} is already declared in document {first}")]
    Duplicate {
        document: usize,
        first: usize,
        key: String,
    },
}

/// Parses every document of a mesh config into services.
pub fn parse_mesh_config(text: &str) -> Result<Vec<Service>, ParseError> {
    let mut services = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = Value::deserialize(doc).map_err(|e| ParseError::Yaml(e.to_string()))?;
        if value.is_null() {
            continue; // empty document, e.g. a trailing `---`
        }
        let svc = parse_document(document, &value)?;
        let key = svc.key().to_string();
        if let Some(first) = seen.insert(key.clone(), document) {
            return Err(ParseError::Duplicate {
                document,
                first,
                key,
            });
        }
        services.push(svc);
    }
    Ok(services)
}

/// Reads fields of one document, naming the failing one.
struct Doc {
    document: usize,
}

impl Doc {
    fn err(&self, field: &str, message: impl Into<String>) -> ParseError {
        ParseError::Field {
            document: self.document,
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn map<'a>(&self, v: &'a Value, field: &str) -> Result<&'a Mapping, ParseError> {
        v.as_mapping()
            .ok_or_else(|| self.err(field, format!("must be a mapping, found {}", kind_of(v))))
    }

    fn opt<'a>(&self, m: &'a Mapping, key: &str) -> Option<&'a Value> {
        m.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, v: &Value, field: &str) -> Result<String, ParseError> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.err(field, format!("must be a string, found {}", kind_of(v))))
    }

    fn port(&self, v: &Value, field: &str) -> Result<u16, ParseError> {
        let n = v.as_i64().ok_or_else(|| {
            self.err(
                field,
                format!("must be a port number, found {}", kind_of(v)),
            )
        })?;
        u16::try_from(n)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| self.err(field, format!("{n} is not a port number (1-65535)")))
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// RFC 1123 label: what Kubernetes requires of namespaces and port names.
pub fn is_dns_label(s: &str) -> bool {
    names::validate(NameKind::Namespace, s).is_ok()
}

/// RFC 1035 label: what Kubernetes requires of service names.
pub fn is_service_name(s: &str) -> bool {
    is_dns_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

fn parse_document(document: usize, value: &Value) -> Result<Service, ParseError> {
    let d = Doc { document };
    let root = value.as_mapping().ok_or_else(|| ParseError::Document {
        document,
        message: format!("must be a mapping, found {}", kind_of(value)),
    })?;
    let kind = match d.opt(root, "kind") {
        Some(v) => d.string(v, "kind")?,
        None => return Err(d.err("kind", "is missing")),
    };
    if kind != "Service" {
        return Err(ParseError::Document {
            document,
            message: format!("unsupported kind {kind:?} (this version reads kind: Service)"),
        });
    }
    match d.opt(root, "apiVersion") {
        Some(v) if d.string(v, "apiVersion")? == "v1" => {}
        Some(v) => {
            return Err(d.err(
                "apiVersion",
                format!(
                    "must be v1 for kind Service, found {:?}",
                    v.as_str().unwrap_or("")
                ),
            ))
        }
        None => return Err(d.err("apiVersion", "is missing")),
    }

    let meta = d.map(
        d.opt(root, "metadata")
            .ok_or_else(|| d.err("metadata", "is missing"))?,
        "metadata",
    )?;
    let name = d.string(
        d.opt(meta, "name")
            .ok_or_else(|| d.err("metadata.name", "is missing"))?,
        "metadata.name",
    )?;
    if !is_service_name(&name) {
        return Err(d.err(
            "metadata.name",
            format!("{name:?} is not a valid service name (lowercase letters, digits and '-', starting with a letter, at most 63)"),
        ));
    }
    let namespace = match d.opt(meta, "namespace") {
        Some(v) => d.string(v, "metadata.namespace")?,
        None => "default".to_string(),
    };
    if !is_dns_label(&namespace) {
        return Err(d.err(
            "metadata.namespace",
            format!("{namespace:?} is not a valid namespace (lowercase letters, digits and '-', at most 63)"),
        ));
    }

    let spec = d.map(
        d.opt(root, "spec")
            .ok_or_else(|| d.err("spec", "is missing"))?,
        "spec",
    )?;
    let selector = parse_selector(&d, spec)?;
    let vips = parse_vips(&d, spec)?;
    let ports = parse_ports(&d, spec)?;
    Ok(Service {
        name,
        namespace,
        selector,
        ports,
        vips,
    })
}

fn parse_selector(d: &Doc, spec: &Mapping) -> Result<BTreeMap<String, String>, ParseError> {
    let mut selector = BTreeMap::new();
    if let Some(v) = d.opt(spec, "selector") {
        for (k, v) in d.map(v, "spec.selector")? {
            let key = d.string(k, "spec.selector")?;
            let field = format!("spec.selector.{key}");
            if key.is_empty() || key.len() > 317 {
                return Err(d.err(&field, "label keys must be 1 to 317 characters"));
            }
            // Kubernetes lets label values be written unquoted as numbers or booleans.
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(d.err(
                        &field,
                        format!("must be a string, found {}", kind_of(other)),
                    ))
                }
            };
            if value.len() > 63 {
                return Err(d.err(&field, "label values must be at most 63 characters"));
            }
            selector.insert(key, value);
        }
    }
    Ok(selector)
}

fn parse_vips(d: &Doc, spec: &Mapping) -> Result<Vec<IpAddr>, ParseError> {
    let mut raw: Vec<(String, String)> = Vec::new();
    if let Some(v) = d.opt(spec, "clusterIP") {
        raw.push(("spec.clusterIP".into(), d.string(v, "spec.clusterIP")?));
    }
    if let Some(v) = d.opt(spec, "clusterIPs") {
        let seq = v
            .as_sequence()
            .ok_or_else(|| d.err("spec.clusterIPs", "must be a list of IP addresses"))?;
        for (i, ip) in seq.iter().enumerate() {
            let field = format!("spec.clusterIPs[{i}]");
            raw.push((field.clone(), d.string(ip, &field)?));
        }
    }
    let mut vips = Vec::new();
    for (field, s) in raw {
        // "None" marks a headless service, "" an unset one: neither has a VIP.
        if s.is_empty() || s == "None" {
            continue;
        }
        let ip: IpAddr = s
            .parse()
            .map_err(|_| d.err(&field, format!("{s:?} is not an IP address")))?;
        if !vips.contains(&ip) {
            vips.push(ip);
        }
    }
    Ok(vips)
}

fn parse_ports(d: &Doc, spec: &Mapping) -> Result<Vec<ServicePort>, ParseError> {
    let seq = match d.opt(spec, "ports") {
        Some(v) => v
            .as_sequence()
            .ok_or_else(|| d.err("spec.ports", "must be a list"))?,
        None => {
            return Err(d.err(
                "spec.ports",
                "is missing (a service needs at least one port)",
            ))
        }
    };
    if seq.is_empty() {
        return Err(d.err("spec.ports", "is empty (a service needs at least one port)"));
    }
    let mut ports = Vec::new();
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, p) in seq.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let m = d.map(p, &at)?;
        let name = match d.opt(m, "name") {
            Some(v) => d.string(v, &format!("{at}.name"))?,
            None if seq.len() > 1 => {
                return Err(d.err(
                    &format!("{at}.name"),
                    "is required when a service has more than one port",
                ))
            }
            None => String::new(),
        };
        if !name.is_empty() && !is_dns_label(&name) {
            return Err(d.err(
                &format!("{at}.name"),
                format!("{name:?} is not a valid port name"),
            ));
        }
        if !name.is_empty() && !names.insert(name.clone()) {
            return Err(d.err(
                &format!("{at}.name"),
                format!("port name {name:?} is used twice"),
            ));
        }
        let port = d.port(
            d.opt(m, "port")
                .ok_or_else(|| d.err(&format!("{at}.port"), "is missing"))?,
            &format!("{at}.port"),
        )?;
        if !numbers.insert(port) {
            return Err(d.err(
                &format!("{at}.port"),
                format!("port {port} is declared twice"),
            ));
        }
        let target_port = match d.opt(m, "targetPort") {
            Some(Value::String(s)) => {
                return Err(d.err(
                    &format!("{at}.targetPort"),
                    format!("{s:?}: named target ports are not supported, give a number"),
                ))
            }
            Some(v) => d.port(v, &format!("{at}.targetPort"))?,
            None => port,
        };
        let protocol = match d.opt(m, "appProtocol") {
            Some(v) => {
                let s = d.string(v, &format!("{at}.appProtocol"))?;
                Protocol::parse(&s).ok_or_else(|| {
                    d.err(
                        &format!("{at}.appProtocol"),
                        format!("{s:?} is not one of http, http2, grpc, tcp"),
                    )
                })?
            }
            None => Protocol::Http,
        };
        if let Some(v) = d.opt(m, "protocol") {
            let s = d.string(v, &format!("{at}.protocol"))?;
            if s != "TCP" {
                return Err(d.err(
                    &format!("{at}.protocol"),
                    format!("{s:?} is not supported (only TCP)"),
                ));
            }
        }
        ports.push(ServicePort {
            name,
            port,
            target_port,
            protocol,
        });
    }
    Ok(ports)
}

#[cfg(test)]
mod tests;
