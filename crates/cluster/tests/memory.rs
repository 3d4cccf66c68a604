//! The in-process backend against the backend-neutral conformance suite.

use pitboss_cluster::conformance::{self, Cluster, Node};
use pitboss_cluster::memory::Hub;
use std::sync::Arc;

/// Nodes on one in-process hub.
struct MemoryCluster(Arc<Hub>);

#[async_trait::async_trait]
impl Cluster for MemoryCluster {
    async fn node(&self, id: &str) -> Node {
        let (bus, lease) = self.0.attach(id);
        Node {
            bus,
            lease,
            presence: self.0.presence(id),
        }
    }
}

fn cluster() -> Arc<dyn Cluster> {
    Arc::new(MemoryCluster(Hub::new()))
}

// One test per case, so that a failure names its behaviour.
macro_rules! conformance_tests {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                conformance::$case(cluster()).await;
            }
        )*

        #[test]
        fn every_conformance_case_has_a_test() {
            let tested = [$(stringify!($case)),*];
            for (name, _) in conformance::cases() {
                assert!(tested.contains(&name), "conformance case `{name}` has no test");
            }
        }
    };
}

conformance_tests!(
    bus_subscription_goes_live_with_lost,
    bus_reaches_every_other_node_in_order,
    bus_keeps_each_publishers_order,
    bus_carries_envelopes_intact,
    bus_overflow_fails_fast_and_is_recovered,
    lease_one_holder_among_contenders,
    lease_renewal_keeps_the_epoch,
    lease_lapses_after_ttl_without_renewal,
    lease_release_frees_it_at_once,
    lease_epochs_start_above_the_floor,
    lease_current_epoch_follows_the_ttl,
    presence_lists_the_latest_heartbeats,
    presence_expires_without_heartbeats,
    presence_leave_is_immediate,
);

/// The whole suite in one go, as another crate would run it.
#[tokio::test]
async fn run_all_passes() {
    conformance::run_all(|| async { cluster() }).await;
}
