//! An in-process router between the nodes of a test group that can drop, delay and partition.
//!
//! Owns the registry of [`PeerService`]s by node id and the fault settings. Promises: every
//! request and response goes through a bincode round trip (as on TCP), a blocked link answers
//! `Unreachable`, and a lost request or response surfaces as `Timeout` at the caller's deadline
//! (the request may have been processed: "outcome unknown", as on a real network).

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use rand::Rng;

use super::PeerRequest;
use super::PeerResponse;
use super::PeerService;
use super::PeerTransport;
use super::TransportError;
use crate::types::NodeId;

#[derive(Default)]
struct RouterState {
    services: HashMap<NodeId, PeerService>,
    /// Directed links (from, to) that deliver nothing.
    blocked: HashSet<(NodeId, NodeId)>,
    loss_probability: f64,
    delay_min_ms: u64,
    delay_max_ms: u64,
}

/// The in-memory network of a test group.
#[derive(Clone, Default)]
pub struct MemoryRouter {
    state: Arc<Mutex<RouterState>>,
}

impl MemoryRouter {
    pub fn new() -> Self {
        MemoryRouter::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut RouterState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The transport node `from` uses to reach the others.
    pub fn transport_for(&self, from: NodeId) -> Arc<dyn PeerTransport> {
        Arc::new(MemoryTransport {
            router: self.clone(),
            from,
        })
    }

    /// Makes node `id` reachable through `service`.
    pub fn register(&self, id: NodeId, service: PeerService) {
        self.with(|s| s.services.insert(id, service));
    }

    /// Makes node `id` unreachable, as if its process died.
    pub fn unregister(&self, id: NodeId) {
        self.with(|s| s.services.remove(&id));
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&self, id: NodeId, all: &[NodeId]) {
        self.with(|s| {
            for other in all.iter().copied().filter(|o| *o != id) {
                s.blocked.insert((id, other));
                s.blocked.insert((other, id));
            }
        });
    }

    /// Cuts every link between nodes of different groups.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        self.with(|s| {
            for (i, a) in groups.iter().enumerate() {
                for (j, b) in groups.iter().enumerate() {
                    if i != j {
                        for x in a.iter() {
                            for y in b.iter() {
                                s.blocked.insert((*x, *y));
                            }
                        }
                    }
                }
            }
        });
    }

    /// Cuts the directed link `from -> to` only.
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.with(|s| s.blocked.insert((from, to)));
    }

    /// Restores every link and removes loss and delay.
    pub fn heal(&self) {
        self.with(|s| {
            s.blocked.clear();
            s.loss_probability = 0.0;
            s.delay_min_ms = 0;
            s.delay_max_ms = 0;
        });
    }

    /// Each request and each response is lost with this probability.
    pub fn set_loss(&self, probability: f64) {
        self.with(|s| s.loss_probability = probability.clamp(0.0, 1.0));
    }

    /// Each delivery is delayed uniformly in `[min_ms, max_ms]`.
    pub fn set_delay_ms(&self, min_ms: u64, max_ms: u64) {
        self.with(|s| {
            s.delay_min_ms = min_ms;
            s.delay_max_ms = max_ms.max(min_ms);
        });
    }
}

struct MemoryTransport {
    router: MemoryRouter,
    from: NodeId,
}

enum Fate {
    Blocked,
    Lost,
    Deliver(Option<PeerService>, Duration),
}

impl MemoryTransport {
    fn fate(&self, from: NodeId, to: NodeId, need_service: bool) -> Fate {
        self.router.with(|s| {
            let service = s.services.get(&to).cloned();
            if s.blocked.contains(&(from, to)) || (need_service && service.is_none()) {
                return Fate::Blocked;
            }
            let mut rng = rand::thread_rng();
            if s.loss_probability > 0.0 && rng.gen_bool(s.loss_probability) {
                return Fate::Lost;
            }
            let delay = if s.delay_max_ms > 0 {
                rng.gen_range(s.delay_min_ms..=s.delay_max_ms)
            } else {
                0
            };
            Fate::Deliver(service, Duration::from_millis(delay))
        })
    }
}

impl PeerTransport for MemoryTransport {
    fn call(
        &self,
        target: NodeId,
        _target_addr: &str,
        request: PeerRequest,
        deadline: Duration,
    ) -> BoxFuture<'static, Result<PeerResponse, TransportError>> {
        let request_fate = self.fate(self.from, target, true);
        let response_fate = self.fate(target, self.from, false);
        let timeout_ms = deadline.as_millis() as u64;
        let encoded = super::wire::encode_request_to_vec(request);
        Box::pin(async move {
            let timeout = TransportError::Timeout { target, timeout_ms };
            let started = tokio::time::Instant::now();
            let (service, delay) = match request_fate {
                Fate::Blocked => {
                    return Err(TransportError::Unreachable {
                        target,
                        reason: "link blocked".into(),
                    })
                }
                Fate::Lost => {
                    tokio::time::sleep(deadline).await;
                    return Err(timeout);
                }
                Fate::Deliver(service, delay) => {
                    (service.expect("checked when need_service"), delay)
                }
            };
            let encoded = encoded.map_err(|reason| TransportError::Remote { target, reason })?;
            let request = super::wire::decode_request(encoded.into())
                .map_err(|reason| TransportError::Remote { target, reason })?;
            tokio::time::sleep(delay.min(deadline)).await;
            let Ok(response) = tokio::time::timeout(
                deadline.saturating_sub(started.elapsed()),
                service.handle(request),
            )
            .await
            else {
                return Err(timeout);
            };
            match response_fate {
                Fate::Deliver(_, delay) => {
                    tokio::time::sleep(delay).await;
                    if started.elapsed() > deadline {
                        return Err(timeout);
                    }
                    let bytes =
                        bincode::serialize(&response).map_err(|e| TransportError::Remote {
                            target,
                            reason: e.to_string(),
                        })?;
                    bincode::deserialize(&bytes).map_err(|e| TransportError::Remote {
                        target,
                        reason: e.to_string(),
                    })
                }
                Fate::Blocked | Fate::Lost => {
                    tokio::time::sleep(deadline.saturating_sub(started.elapsed())).await;
                    Err(timeout)
                }
            }
        })
    }
}
