//! The delta bookkeeping of one discovery stream, free of I/O: what the
//! proxy holds, what each nonce carried, and what it ACKed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{ProxyView, Resource, ResourceKey};

/// Responses a proxy has not answered are remembered up to this many, so a
/// proxy that never ACKs cannot grow the controller's memory.
const MAX_PENDING: usize = 64;

/// One response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub nonce: String,
    pub resources: Vec<Arc<Resource>>,
    pub removed: Vec<ResourceKey>,
}

/// Each key a response carried, with its version (None = removed).
type SentRecord = Vec<(ResourceKey, Option<String>)>;

/// A response the proxy has not answered yet.
#[derive(Debug)]
struct Pending {
    nonce: String,
    record: SentRecord,
    sent_at: Instant,
    kind: &'static str,
}

/// What the proxy answered: how long after the response was made, and the
/// metric's `type` label of what it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub elapsed: Duration,
    pub kind: &'static str,
}

/// The `type` label of a response: its one resource kind, "mixed" when it
/// carried several kinds, "empty" when nothing (the first answer to a proxy
/// already in sync). A closed set, so the label cannot grow with the mesh.
fn response_kind(record: &SentRecord) -> &'static str {
    let mut kinds = record.iter().map(|(k, _)| k.kind);
    let Some(first) = kinds.next() else {
        return "empty";
    };
    if kinds.all(|k| k == first) {
        first.as_str()
    } else {
        "mixed"
    }
}

#[derive(Debug, Default)]
pub struct Session {
    /// What the proxy holds, as far as the controller knows: what it
    /// declared in Hello, then what was sent.
    held: HashMap<ResourceKey, String>,
    /// Per nonce: each key sent, with its version (None = removed).
    pending: VecDeque<Pending>,
    acked: BTreeMap<ResourceKey, String>,
    sent_any: bool,
}

impl Session {
    /// `known` is what the proxy says it already holds (reconnect).
    pub fn new(known: impl IntoIterator<Item = (ResourceKey, String)>) -> Self {
        let held: HashMap<ResourceKey, String> = known.into_iter().collect();
        let acked = held.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Self {
            held,
            acked,
            ..Self::default()
        }
    }

    /// The response that brings the proxy to `view`, if one is needed. The
    /// first call always answers, so a proxy knows it is in sync even when
    /// it already held everything.
    pub fn delta(&mut self, view: &ProxyView, nonce: impl FnOnce() -> String) -> Option<Delta> {
        let resources: Vec<Arc<Resource>> = view
            .resources
            .values()
            .filter(|r| self.held.get(&r.key) != Some(&r.version))
            .cloned()
            .collect();
        let mut removed: Vec<ResourceKey> = self
            .held
            .keys()
            .filter(|k| !view.resources.contains_key(*k))
            .cloned()
            .collect();
        removed.sort();
        if resources.is_empty() && removed.is_empty() && self.sent_any {
            return None;
        }
        self.sent_any = true;
        let nonce = nonce();
        let mut record = Vec::with_capacity(resources.len() + removed.len());
        for r in &resources {
            self.held.insert(r.key.clone(), r.version.clone());
            record.push((r.key.clone(), Some(r.version.clone())));
        }
        for k in &removed {
            self.held.remove(k);
            record.push((k.clone(), None));
        }
        let kind = response_kind(&record);
        self.pending.push_back(Pending {
            nonce: nonce.clone(),
            record,
            // Made right before it is queued on the stream, so the time to
            // the answer includes any wait behind a slow proxy's backlog.
            sent_at: Instant::now(),
            kind,
        });
        while self.pending.len() > MAX_PENDING {
            self.pending.pop_front();
        }
        Some(Delta {
            nonce,
            resources,
            removed,
        })
    }

    fn take_pending(&mut self, nonce: &str) -> Option<(SentRecord, Answered)> {
        let pos = self.pending.iter().position(|p| p.nonce == nonce)?;
        let p = self.pending.remove(pos)?;
        let answered = Answered {
            elapsed: p.sent_at.elapsed(),
            kind: p.kind,
        };
        Some((p.record, answered))
    }

    /// Records an ACK; None for a nonce this stream does not know.
    pub fn ack(&mut self, nonce: &str) -> Option<Answered> {
        let (record, answered) = self.take_pending(nonce)?;
        for (key, version) in record {
            match version {
                Some(v) => self.acked.insert(key, v),
                None => self.acked.remove(&key),
            };
        }
        Some(answered)
    }

    /// Records a NACK: the proxy kept its previous config, so what it
    /// ACKed before stays, and what it holds is rolled back to that for
    /// every key of the rejected response, so the next delta sends those
    /// keys again (the good resources of a rejected response are not lost
    /// once the bad one is fixed); None for an unknown nonce.
    pub fn nack(&mut self, nonce: &str) -> Option<Answered> {
        let (record, answered) = self.take_pending(nonce)?;
        for (key, _) in record {
            match self.acked.get(&key) {
                Some(v) => self.held.insert(key, v.clone()),
                None => self.held.remove(&key),
            };
        }
        Some(answered)
    }

    pub fn acked(&self) -> &BTreeMap<ResourceKey, String> {
        &self.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ResourceBody, ServiceKey};

    fn res(name: &str, version: &str) -> Arc<Resource> {
        Arc::new(Resource {
            key: ResourceKey::service(&ServiceKey::new(name, "ns").unwrap()),
            version: version.into(),
            body: ResourceBody::NotFound,
        })
    }

    fn view(rs: &[Arc<Resource>]) -> ProxyView {
        ProxyView {
            resources: rs.iter().map(|r| (r.key.clone(), r.clone())).collect(),
        }
    }

    fn names(d: &Delta) -> Vec<(String, String)> {
        d.resources
            .iter()
            .map(|r| (r.key.name.clone(), r.version.clone()))
            .collect()
    }

    #[test]
    fn first_delta_sends_everything_then_only_changes() {
        let mut s = Session::new([]);
        let d = s
            .delta(&view(&[res("a", "1"), res("b", "1")]), || "n1".into())
            .unwrap();
        assert_eq!(d.nonce, "n1");
        assert_eq!(names(&d).len(), 2);
        assert!(s
            .delta(&view(&[res("a", "1"), res("b", "1")]), || "n2".into())
            .is_none());
        let d = s
            .delta(&view(&[res("a", "2"), res("b", "1")]), || "n3".into())
            .unwrap();
        assert_eq!(names(&d), [("a.ns".to_string(), "2".to_string())]);
        assert!(d.removed.is_empty());
    }

    #[test]
    fn known_resources_are_not_resent_but_first_answer_still_comes() {
        let a = res("a", "1");
        let mut s = Session::new([(a.key.clone(), "1".to_string())]);
        let d = s
            .delta(&view(std::slice::from_ref(&a)), || "n".into())
            .unwrap();
        assert!(d.resources.is_empty() && d.removed.is_empty());
        assert_eq!(s.acked()[&a.key], "1");
        assert!(s.delta(&view(&[a]), || "m".into()).is_none());
    }

    #[test]
    fn known_but_stale_resources_are_sent_and_unknown_ones_removed() {
        let a = res("a", "2");
        let gone = res("gone", "1");
        let mut s = Session::new([
            (a.key.clone(), "1".to_string()),
            (gone.key.clone(), "1".to_string()),
        ]);
        let d = s
            .delta(&view(std::slice::from_ref(&a)), || "n".into())
            .unwrap();
        assert_eq!(names(&d), [("a.ns".to_string(), "2".to_string())]);
        assert_eq!(d.removed, vec![gone.key.clone()]);
    }

    #[test]
    fn removal_is_sent_once() {
        let mut s = Session::new([]);
        s.delta(&view(&[res("a", "1"), res("b", "1")]), || "1".into());
        let d = s.delta(&view(&[res("a", "1")]), || "2".into()).unwrap();
        assert!(d.resources.is_empty());
        assert_eq!(d.removed.len(), 1);
        assert!(s.delta(&view(&[res("a", "1")]), || "3".into()).is_none());
    }

    #[test]
    fn ack_records_versions_and_removals() {
        let mut s = Session::new([]);
        s.delta(&view(&[res("a", "1"), res("b", "1")]), || "1".into());
        assert!(s.ack("1").is_some());
        assert_eq!(s.acked().len(), 2);
        s.delta(&view(&[res("a", "2")]), || "2".into());
        assert!(s.ack("2").is_some());
        assert_eq!(
            s.acked().values().cloned().collect::<Vec<_>>(),
            ["2".to_string()]
        );
        assert!(s.ack("2").is_none(), "a nonce is acked once");
        assert!(s.ack("unknown").is_none());
    }

    #[test]
    fn nack_keeps_previous_acks() {
        let mut s = Session::new([]);
        s.delta(&view(&[res("a", "1")]), || "1".into());
        s.ack("1");
        s.delta(&view(&[res("a", "2")]), || "2".into());
        assert!(s.nack("2").is_some());
        assert_eq!(s.acked().values().next().unwrap(), "1");
        assert!(s.nack("2").is_none());
        // What the proxy rejected is sent again on the next delta.
        let d = s.delta(&view(&[res("a", "2")]), || "3".into()).unwrap();
        assert_eq!(names(&d), [("a.ns".to_string(), "2".to_string())]);
    }

    #[test]
    fn nack_resends_the_good_resources_of_the_rejected_response() {
        let mut s = Session::new([]);
        s.delta(&view(&[res("keep", "1")]), || "1".into());
        s.ack("1");
        // One response carries a good new resource and a bad one, and
        // removes `keep`; the proxy rejects it whole.
        s.delta(&view(&[res("good", "1"), res("bad", "1")]), || "2".into());
        assert!(s.nack("2").is_some());
        // The bad resource is fixed: the good one and the removal come
        // again, not just the fix.
        let d = s
            .delta(&view(&[res("good", "1"), res("bad", "2")]), || "3".into())
            .unwrap();
        assert_eq!(
            names(&d),
            [
                ("bad.ns".to_string(), "2".to_string()),
                ("good.ns".to_string(), "1".to_string())
            ]
        );
        assert_eq!(d.removed, vec![res("keep", "1").key.clone()]);
        assert!(s.ack("3").is_some());
        assert_eq!(s.acked().len(), 2);
    }

    #[test]
    fn pending_is_bounded() {
        let mut s = Session::new([]);
        for i in 0..(MAX_PENDING + 10) {
            s.delta(&view(&[res("a", &i.to_string())]), || i.to_string());
        }
        assert_eq!(s.pending.len(), MAX_PENDING);
        assert!(s.ack("0").is_none());
        assert!(s.ack(&(MAX_PENDING + 9).to_string()).is_some());
    }

    #[test]
    fn answers_carry_their_latency_and_resource_kind() {
        let mut s = Session::new([]);
        let svc = ServiceKey::new("a", "ns").unwrap();
        let endpoints = Arc::new(Resource {
            key: ResourceKey::endpoints(&svc),
            version: "1".into(),
            body: ResourceBody::NotFound,
        });
        s.delta(&view(&[res("a", "1")]), || "1".into());
        std::thread::sleep(Duration::from_millis(5));
        let a = s.ack("1").unwrap();
        assert_eq!(a.kind, "service");
        assert!(a.elapsed >= Duration::from_millis(5), "{a:?}");
        s.delta(&view(&[res("a", "1"), endpoints.clone()]), || "2".into());
        assert_eq!(s.nack("2").unwrap().kind, "endpoints");
        // The NACK rolled the endpoints back, so they are sent again, now
        // next to a changed service: two kinds in one response.
        s.delta(&view(&[res("a", "2"), endpoints]), || "3".into());
        assert_eq!(s.ack("3").unwrap().kind, "mixed");
    }

    #[test]
    fn an_in_sync_first_answer_is_empty() {
        let a = res("a", "1");
        let mut s = Session::new([(a.key.clone(), "1".to_string())]);
        s.delta(&view(&[a]), || "n".into());
        assert_eq!(s.ack("n").unwrap().kind, "empty");
    }
}
