//! The certificates of the followed Gateway's HTTPS listeners, as the
//! controller pushed them (`GATEWAY_CERTIFICATES`), already checked by
//! `discovery`: the gateway serves them after its `--tls-cert` files.
//!
//! They hold private keys, and the snapshot they live in is shown by
//! `/config_dump` and may be debug-printed: both show the source, the DNS
//! names and the expiry of each certificate, never the key.

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::core::server_cert::ServerCert;

/// Every certificate of one Gateway, in the controller's order (listener
/// order; the first holder of a name keeps it). Empty: none.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GatewayCertificates {
    pub certificates: Vec<GatewayCertificate>,
}

/// One certificate and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayCertificate {
    /// `<namespace>/<name>` of the Secret holding it.
    pub source: String,
    /// Its `Debug` shows names and expiry only.
    pub cert: ServerCert,
}

impl Serialize for GatewayCertificate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("GatewayCertificate", 3)?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("names", &self.cert.names)?;
        st.serialize_field("not_after_unix", &self.cert.not_after_unix)?;
        st.end()
    }
}
