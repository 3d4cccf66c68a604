//! In-process implementations of the bus, the lease and presence. One [`Hub`]
//! stands for the shared backend; every node in the process attaches to it. A single
//! node alone on a hub is the embedded default: nobody else to tell, a lease nobody
//! contests. Its limit: it spans one process only.

use crate::{
    Bus, BusHandler, ClusterError, Envelope, Epoch, Lease, NodeId, NodePresence, Presence,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Events a node may have queued for delivery before further ones are dropped
/// (and the receiver told, through [`BusHandler::lost`], to recover).
pub const NODE_QUEUE: usize = 4096;

/// The shared side of the in-process bus and lease.
#[derive(Default)]
pub struct Hub {
    /// The attached nodes' inboxes. A std mutex: held only to copy the list, never
    /// across an await.
    nodes: Mutex<Vec<AttachedNode>>,
    /// Holder, epoch and expiry of the one lease.
    lease: Mutex<LeaseState>,
    /// Each node's last heartbeat: its agents and when it expires. A std mutex held
    /// for a copy or an insert only. Bounded by the number of nodes: expired entries
    /// are removed whenever presence is read.
    presence: Mutex<BTreeMap<NodeId, (Vec<String>, Instant)>>,
}

/// A node's id, its inbox, and its count of events it lost to a full inbox.
type AttachedNode = (NodeId, mpsc::Sender<Envelope>, Arc<AtomicU64>);

#[derive(Default)]
struct LeaseState {
    holder: Option<NodeId>,
    epoch: u64,
    expires: Option<Instant>,
}

impl Hub {
    /// A fresh hub with no nodes.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Attaches a node; returns its bus and its lease handle.
    pub fn attach(self: &Arc<Self>, node: impl Into<NodeId>) -> (Arc<MemoryBus>, Arc<MemoryLease>) {
        let node = node.into();
        let (tx, rx) = mpsc::channel(NODE_QUEUE);
        let lost = Arc::new(AtomicU64::new(0));
        self.nodes
            .lock()
            .expect("hub lock poisoned")
            .push((node.clone(), tx, lost.clone()));
        let bus = Arc::new(MemoryBus {
            hub: self.clone(),
            node: node.clone(),
            inbox: Mutex::new(Some(rx)),
            handler: OnceLock::new(),
            lost,
            dropped: AtomicU64::new(0),
        });
        let lease = Arc::new(MemoryLease {
            hub: self.clone(),
            node,
            floor: AtomicU64::new(0),
        });
        (bus, lease)
    }

    /// A node's presence handle. Separate from [`Hub::attach`] so that callers that
    /// need no presence keep their two-handle form.
    pub fn presence(self: &Arc<Self>, node: impl Into<NodeId>) -> Arc<MemoryPresence> {
        Arc::new(MemoryPresence {
            hub: self.clone(),
            node: node.into(),
        })
    }
}

/// One node's handle on the in-process bus.
pub struct MemoryBus {
    hub: Arc<Hub>,
    node: NodeId,
    /// Taken by `subscribe`, which moves it into the delivery task.
    inbox: Mutex<Option<mpsc::Receiver<Envelope>>>,
    handler: OnceLock<Arc<dyn BusHandler>>,
    /// Set by publishers when this node's inbox was full; the delivery task turns
    /// it into a `lost()` call.
    lost: Arc<AtomicU64>,
    dropped: AtomicU64,
}

impl Bus for MemoryBus {
    fn node(&self) -> &NodeId {
        &self.node
    }

    fn publish(&self, topic: &str, payload: Arc<str>) -> Result<(), ClusterError> {
        let targets: Vec<_> = self
            .hub
            .nodes
            .lock()
            .expect("hub lock poisoned")
            .iter()
            .filter(|(n, _, _)| *n != self.node)
            .map(|(_, tx, lost)| (tx.clone(), lost.clone()))
            .collect();
        for (tx, lost) in targets {
            let envelope = Envelope {
                from: self.node.clone(),
                topic: topic.to_owned(),
                payload: payload.clone(),
            };
            if tx.try_send(envelope).is_err() {
                // A full inbox means that node fell behind: it is told to recover
                // instead of this publisher waiting for it.
                lost.fetch_add(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn subscribe(&self, handler: Arc<dyn BusHandler>) {
        if self.handler.set(handler.clone()).is_err() {
            return;
        }
        let Some(mut rx) = self.inbox.lock().expect("bus lock poisoned").take() else {
            return;
        };
        let lost = self.lost.clone();
        tokio::spawn(async move {
            // The subscription is live from here: whatever was dropped before is
            // covered by this one call, like the Redis bus after it subscribes.
            lost.swap(0, Ordering::Relaxed);
            handler.lost();
            while let Some(envelope) = rx.recv().await {
                if lost.swap(0, Ordering::Relaxed) > 0 {
                    handler.lost();
                }
                handler.deliver(envelope);
            }
        });
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One node's handle on the in-process lease.
pub struct MemoryLease {
    hub: Arc<Hub>,
    node: NodeId,
    /// Set by [`Lease::raise_epoch_floor`]: a new term of this handle starts above it.
    floor: AtomicU64,
}

#[async_trait::async_trait]
impl Lease for MemoryLease {
    async fn acquire_or_renew(&self, ttl_ms: u64) -> Result<Option<Epoch>, ClusterError> {
        let now = Instant::now();
        let mut lease = self.hub.lease.lock().expect("lease lock poisoned");
        let free = match (&lease.holder, lease.expires) {
            (None, _) => true,
            (Some(_), Some(expires)) if expires <= now => true,
            _ => false,
        };
        if free {
            lease.holder = Some(self.node.clone());
            lease.epoch = lease.epoch.max(self.floor.load(Ordering::Relaxed)) + 1;
        } else if lease.holder.as_deref() != Some(self.node.as_str()) {
            return Ok(None);
        }
        lease.expires = Some(now + Duration::from_millis(ttl_ms));
        Ok(Some(Epoch(lease.epoch)))
    }

    async fn release(&self) -> Result<(), ClusterError> {
        let mut lease = self.hub.lease.lock().expect("lease lock poisoned");
        if lease.holder.as_deref() == Some(self.node.as_str()) {
            lease.holder = None;
            lease.expires = None;
        }
        Ok(())
    }

    fn current_epoch(&self) -> Option<Epoch> {
        let lease = self.hub.lease.lock().expect("lease lock poisoned");
        match (&lease.holder, lease.expires) {
            (Some(holder), Some(expires)) if *holder == self.node && expires > Instant::now() => {
                Some(Epoch(lease.epoch))
            }
            _ => None,
        }
    }

    fn raise_epoch_floor(&self, floor: Epoch) {
        self.floor.fetch_max(floor.0, Ordering::Relaxed);
    }
}

/// One node's handle on in-process presence.
pub struct MemoryPresence {
    hub: Arc<Hub>,
    node: NodeId,
}

#[async_trait::async_trait]
impl Presence for MemoryPresence {
    async fn heartbeat(&self, agents_online: Vec<String>, ttl_ms: u64) -> Result<(), ClusterError> {
        let expires = Instant::now() + Duration::from_millis(ttl_ms);
        self.hub
            .presence
            .lock()
            .expect("presence lock poisoned")
            .insert(self.node.clone(), (agents_online, expires));
        Ok(())
    }

    async fn alive(&self) -> Result<Vec<NodePresence>, ClusterError> {
        let now = Instant::now();
        let mut presence = self.hub.presence.lock().expect("presence lock poisoned");
        presence.retain(|_, (_, expires)| *expires > now);
        // A BTreeMap iterates in node order, which is the order the trait promises.
        Ok(presence
            .iter()
            .map(|(node, (agents, _))| NodePresence {
                node: node.clone(),
                agents: agents.clone(),
            })
            .collect())
    }

    async fn leave(&self) -> Result<(), ClusterError> {
        self.hub
            .presence
            .lock()
            .expect("presence lock poisoned")
            .remove(&self.node);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(Mutex<Vec<String>>, AtomicU64);
    impl BusHandler for Collect {
        fn deliver(&self, envelope: Envelope) {
            self.0.lock().unwrap().push(envelope.payload.to_string());
        }
        fn lost(&self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn events_reach_other_nodes_in_order_and_not_the_publisher() {
        let hub = Hub::new();
        let (a, _) = hub.attach("a");
        let (b, _) = hub.attach("b");
        let seen_a = Arc::new(Collect(Mutex::new(vec![]), AtomicU64::new(0)));
        let seen_b = Arc::new(Collect(Mutex::new(vec![]), AtomicU64::new(0)));
        a.subscribe(seen_a.clone());
        b.subscribe(seen_b.clone());
        for i in 0..100 {
            a.publish("t", Arc::from(i.to_string())).unwrap();
        }
        for _ in 0..100 {
            if seen_b.0.lock().unwrap().len() == 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let expected: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        assert_eq!(*seen_b.0.lock().unwrap(), expected);
        assert!(seen_a.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_full_inbox_drops_and_tells_the_receiver_to_recover() {
        let hub = Hub::new();
        let (a, _) = hub.attach("a");
        let (b, _) = hub.attach("b");
        // b has not subscribed yet, so nothing drains its inbox.
        for i in 0..(NODE_QUEUE + 10) {
            a.publish("t", Arc::from(i.to_string())).unwrap();
        }
        assert_eq!(a.dropped(), 10);
        let seen = Arc::new(Collect(Mutex::new(vec![]), AtomicU64::new(0)));
        b.subscribe(seen.clone());
        for _ in 0..200 {
            if seen.0.lock().unwrap().len() == NODE_QUEUE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(seen.0.lock().unwrap().len(), NODE_QUEUE);
        assert_eq!(seen.1.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn one_lease_holder_at_a_time_and_epochs_grow() {
        let hub = Hub::new();
        let (_, la) = hub.attach("a");
        let (_, lb) = hub.attach("b");
        let ea = la.acquire_or_renew(50).await.unwrap();
        assert_eq!(ea, Some(Epoch(1)));
        assert_eq!(lb.acquire_or_renew(50).await.unwrap(), None);
        assert_eq!(la.acquire_or_renew(50).await.unwrap(), Some(Epoch(1)));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(lb.acquire_or_renew(50).await.unwrap(), Some(Epoch(2)));
        assert_eq!(la.acquire_or_renew(50).await.unwrap(), None);
        lb.release().await.unwrap();
        assert_eq!(la.acquire_or_renew(50).await.unwrap(), Some(Epoch(3)));
    }
}
