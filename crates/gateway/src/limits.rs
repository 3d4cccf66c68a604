//! Abuse limits of one node keyed on who is asking: per client address
//! (WebSocket connections open, connection attempts per minute, visitor tokens
//! issued per minute, failed logins per minute) and per player (chat messages and typing indicators per
//! minute, over all of the player's connections). Nodes do not share these
//! counts: behind a load balancer each node enforces its own (sharing them would
//! cost a Redis round trip per frame).

use crate::GatewayConfig;
use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use pitboss_protocol::PlayerId;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The counters and rate limiters, keyed on the client address.
pub struct AddressLimits {
    open: OpenCounts,
    connects: DefaultKeyedRateLimiter<IpAddr>,
    visitors: DefaultKeyedRateLimiter<IpAddr>,
    login_failures: LoginFailures,
}

impl std::fmt::Debug for AddressLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressLimits")
            .field("max_open", &self.open.max)
            .field("addresses_open", &self.open.open.len())
            .finish_non_exhaustive()
    }
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).expect("nonzero"))
}

impl AddressLimits {
    /// Limits as configured.
    pub fn new(config: &GatewayConfig) -> Self {
        Self {
            open: OpenCounts::new(config.max_connections_per_address.max(1)),
            connects: RateLimiter::keyed(per_minute(config.connects_per_minute_per_address)),
            visitors: RateLimiter::keyed(per_minute(config.visitors_per_minute_per_address)),
            login_failures: LoginFailures::new(config.login_failures_per_minute_per_address),
        }
    }

    /// Counts a connection attempt; `false`: over the per-minute budget.
    pub fn connect_allowed(&self, addr: IpAddr) -> bool {
        self.connects.check_key(&addr).is_ok()
    }

    /// Counts a visitor token about to be issued; `false`: over the budget.
    pub fn visitor_allowed(&self, addr: IpAddr) -> bool {
        self.visitors.check_key(&addr).is_ok()
    }

    /// Whether `addr` may try a login now; `Err(wait)`: it failed too often
    /// lately, and its next attempt is not even checked before `wait` has passed.
    pub fn login_allowed(&self, addr: IpAddr) -> Result<(), Duration> {
        self.login_failures.allowed(addr, Instant::now())
    }

    /// Counts a failed login from `addr`. Successful logins spend nothing, so a
    /// whole office behind one address signs in at the start of a shift.
    pub fn login_failed(&self, addr: IpAddr) {
        self.login_failures.failed(addr, Instant::now());
    }

    /// Reserves an open-connection slot for `addr`, released when the guard is
    /// dropped; `None`: the address already holds as many as it may.
    pub fn open(&self, addr: IpAddr) -> Option<OpenGuard> {
        self.open.open(addr)
    }

    /// Connections `addr` holds open now.
    pub fn open_count(&self, addr: IpAddr) -> usize {
        self.open.count(addr)
    }

    /// Forgets rate-limiter entries whose budget is full again (call now and then).
    pub fn sweep(&self) {
        self.connects.retain_recent();
        self.connects.shrink_to_fit();
        self.visitors.retain_recent();
        self.visitors.shrink_to_fit();
        self.login_failures.sweep(Instant::now());
        self.open.sweep();
    }

    /// Addresses tracked by the rate limiters (for tests).
    pub fn tracked(&self) -> usize {
        self.connects.len() + self.visitors.len() + self.login_failures.by_address.len()
    }
}

/// Failed logins per address: a bucket of `per_minute` attempts that refills
/// evenly over a minute. Unlike the rate limiters above, it can be asked whether
/// an attempt would be allowed without spending one, since only failures spend.
struct LoginFailures {
    /// Attempts left (fractional, as it refills) and when that was reckoned.
    by_address: DashMap<IpAddr, (f64, Instant)>,
    per_minute: f64,
}

impl LoginFailures {
    fn new(per_minute: u32) -> Self {
        Self {
            by_address: DashMap::new(),
            per_minute: f64::from(per_minute.max(1)),
        }
    }

    /// What is left of `addr`'s budget at `now`.
    fn left(&self, addr: IpAddr, now: Instant) -> f64 {
        let entry = self.by_address.get(&addr).map(|e| *e);
        entry.map_or(self.per_minute, |e| self.refilled(e, now))
    }

    /// A budget reckoned at some time, refilled up to `now`.
    fn refilled(&self, (left, at): (f64, Instant), now: Instant) -> f64 {
        let refill = now.saturating_duration_since(at).as_secs_f64() * self.per_minute / 60.0;
        (left + refill).min(self.per_minute)
    }

    fn allowed(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let left = self.left(addr, now);
        if left >= 1.0 {
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            (1.0 - left) * 60.0 / self.per_minute,
        ))
    }

    fn failed(&self, addr: IpAddr, now: Instant) {
        let full = (self.per_minute, now);
        let mut entry = self.by_address.entry(addr).or_insert(full);
        let left = self.refilled(*entry, now);
        *entry = ((left - 1.0).max(0.0), now);
    }

    /// Forgets the addresses whose budget is full again.
    fn sweep(&self, now: Instant) {
        self.by_address
            .retain(|_, e| self.refilled(*e, now) < self.per_minute);
        self.by_address.shrink_to_fit();
    }
}

/// Rate limits keyed on the player (a visitor's id or a verified player's id),
/// shared by all of that player's connections to this node, so that opening
/// more tabs does not multiply what a bot may send. Agents are not limited here.
pub struct PlayerLimits {
    /// Chat messages (`send`) per player.
    messages: DefaultKeyedRateLimiter<PlayerId>,
    /// Typing indicators per player.
    typing: DefaultKeyedRateLimiter<PlayerId>,
}

impl std::fmt::Debug for PlayerLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlayerLimits")
            .field("tracked", &self.tracked())
            .finish_non_exhaustive()
    }
}

fn per_minute_with_burst(n: u32, burst: u32) -> Quota {
    per_minute(n).allow_burst(NonZeroU32::new(burst.max(1)).expect("nonzero"))
}

impl PlayerLimits {
    /// Limits as configured.
    pub fn new(config: &GatewayConfig) -> Self {
        Self {
            messages: RateLimiter::keyed(per_minute_with_burst(
                config.player_messages_per_minute,
                config.player_message_burst,
            )),
            typing: RateLimiter::keyed(per_minute_with_burst(
                config.player_typing_per_minute,
                config.player_typing_burst,
            )),
        }
    }

    /// Counts a chat message of `player`; `false`: over the budget.
    pub fn message_allowed(&self, player: &PlayerId) -> bool {
        self.messages.check_key(player).is_ok()
    }

    /// Counts a typing indicator of `player`; `false`: over the budget.
    pub fn typing_allowed(&self, player: &PlayerId) -> bool {
        self.typing.check_key(player).is_ok()
    }

    /// Forgets players whose budgets are full again (call now and then): a stream
    /// of fresh visitor ids costs memory only while each one's budget refills.
    pub fn sweep(&self) {
        self.messages.retain_recent();
        self.messages.shrink_to_fit();
        self.typing.retain_recent();
        self.typing.shrink_to_fit();
    }

    /// Players tracked by the rate limiters (for tests and debugging).
    pub fn tracked(&self) -> usize {
        self.messages.len() + self.typing.len()
    }
}

/// How many things (connections) each address holds open, capped per address.
#[derive(Clone)]
pub(crate) struct OpenCounts {
    max: usize,
    open: Arc<DashMap<IpAddr, usize>>,
}

impl OpenCounts {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::new(DashMap::new()),
        }
    }

    /// Reserves a slot for `addr`, released when the guard is dropped; `None`:
    /// the address already holds as many as it may.
    pub(crate) fn open(&self, addr: IpAddr) -> Option<OpenGuard> {
        let mut count = self.open.entry(addr).or_insert(0);
        if *count >= self.max {
            let zero = *count == 0;
            drop(count);
            if zero {
                self.open.remove_if(&addr, |_, n| *n == 0);
            }
            return None;
        }
        *count += 1;
        Some(OpenGuard {
            map: self.open.clone(),
            addr,
        })
    }

    /// What `addr` holds open now.
    pub(crate) fn count(&self, addr: IpAddr) -> usize {
        self.open.get(&addr).map(|n| *n).unwrap_or(0)
    }

    /// Forgets addresses that hold nothing and gives the memory back.
    fn sweep(&self) {
        self.open.retain(|_, n| *n > 0);
        self.open.shrink_to_fit();
    }
}

/// One open connection of an address; decrements its count when dropped.
pub struct OpenGuard {
    map: Arc<DashMap<IpAddr, usize>>,
    addr: IpAddr,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.map.remove_if_mut(&self.addr, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_open: usize, per_minute: u32) -> AddressLimits {
        AddressLimits::new(&GatewayConfig {
            max_connections_per_address: max_open,
            connects_per_minute_per_address: per_minute,
            visitors_per_minute_per_address: per_minute,
            login_failures_per_minute_per_address: per_minute,
            ..GatewayConfig::default()
        })
    }

    #[test]
    fn open_connections_are_capped_per_address_and_released() {
        let l = limits(2, 10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let g1 = l.open(a).unwrap();
        let _g2 = l.open(a).unwrap();
        assert!(l.open(a).is_none());
        let _gb = l.open(b).expect("another address has its own budget");
        drop(g1);
        let g3 = l.open(a).expect("a slot was freed");
        assert_eq!(l.open_count(a), 2);
        drop(g3);
        drop(_g2);
        assert_eq!(l.open_count(a), 0);
        assert!(!l.open.open.contains_key(&a), "zero entries are removed");
    }

    #[test]
    fn player_rates_are_per_player_and_swept() {
        let l = PlayerLimits::new(&GatewayConfig {
            player_messages_per_minute: 60,
            player_message_burst: 3,
            player_typing_per_minute: 60,
            player_typing_burst: 2,
            ..GatewayConfig::default()
        });
        let a = PlayerId("v-a".into());
        let b = PlayerId("v-b".into());
        assert!((0..3).all(|_| l.message_allowed(&a)));
        assert!(!l.message_allowed(&a));
        assert!(l.message_allowed(&b), "another player has their own budget");
        assert!((0..2).all(|_| l.typing_allowed(&a)));
        assert!(!l.typing_allowed(&a));
        assert!(l.tracked() > 0);
        l.sweep(); // entries still refilling stay
        assert!(!l.message_allowed(&a));
    }

    #[test]
    fn rates_are_per_address_and_swept() {
        let l = limits(10, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert!((0..3).all(|_| l.connect_allowed(a)));
        assert!(!l.connect_allowed(a));
        assert!(l.connect_allowed(b));
        assert!((0..3).all(|_| l.visitor_allowed(a)));
        assert!(!l.visitor_allowed(a));
        for _ in 0..3 {
            assert_eq!(l.login_allowed(a), Ok(()));
            l.login_failed(a);
        }
        let wait = l
            .login_allowed(a)
            .expect_err("three failures spend a budget of three");
        assert!(
            wait <= Duration::from_secs(20) && wait > Duration::from_secs(19),
            "{wait:?}"
        );
        let later = Instant::now() + Duration::from_secs(20);
        assert_eq!(
            l.login_failures.allowed(a, later),
            Ok(()),
            "one attempt back after 20 s"
        );
        assert_eq!(
            l.login_allowed(b),
            Ok(()),
            "another address has its own budget"
        );
        assert!(l.tracked() > 0);
        l.sweep(); // entries still inside their window stay
        assert!(!l.connect_allowed(a));
    }
}
