//! What the router's operations cost as the line grows.
//!
//! Builds a desk whose agents are all busy (so the line only grows), in two
//! departments and four languages, and times, at each line length asked for:
//!
//! - `arrival`: a new player enqueued, then their position (what the desk sends
//!   them at once);
//! - `abandon`: a waiting player leaves (the newest arrivals, one by one);
//! - `churn`: one owned conversation released, the offer its slot produces
//!   accepted (the line moves by one);
//! - `decline`: an offer declined and re-offered, then the decline's cooldown
//!   ended by a tick;
//! - `positions`: every waiting player's position (each queue update);
//! - `queue_for`: one agent's view of the line, first 100 (each queue update, per
//!   online agent).
//!
//! ```sh
//! cargo bench -p pitboss-routing --bench router -- --lengths 1000,5000,15000
//! ```
//!
//! Options: `--lengths L,L,...` (default 1000,5000,15000), `--ops N` (timed
//! operations of each kind per length, default 200).

use pitboss_protocol::{AgentId, AgentStatus, ConversationId};
use pitboss_routing::{AgentProfile, Decision, Millis, Request, Router, RoutingConfig};
use std::hint::black_box;
use std::time::Instant;

const DEPARTMENTS: [&str; 2] = ["payments", "games"];
const LANGUAGES: [&str; 4] = ["en", "tr", "az", "ru"];
const AGENTS: usize = 40;
const CAPACITY: u32 = 3;

struct Desk {
    router: Router,
    now: Millis,
    arrivals: u64,
    owned: Vec<ConversationId>,
}

impl Desk {
    fn new() -> Self {
        let mut desk = Desk {
            router: Router::new(RoutingConfig::default()),
            now: 1_000_000,
            arrivals: 0,
            owned: Vec::new(),
        };
        for i in 0..AGENTS {
            let agent = AgentId(format!("agent-{i:03}"));
            let profile = AgentProfile {
                languages: vec![
                    LANGUAGES[i % 4].to_owned(),
                    LANGUAGES[(i + 1) % 4].to_owned(),
                ],
                departments: vec![DEPARTMENTS[i % 2].to_owned()],
                capacity: CAPACITY,
            };
            desk.router.upsert_agent(agent.clone(), profile, desk.now);
            let ds = desk
                .router
                .set_status(&agent, AgentStatus::Online, desk.now)
                .expect("known agent");
            desk.carry_out(ds);
        }
        // Some closed chats, so that estimates are figures.
        for department in DEPARTMENTS {
            for i in 0..20 {
                desk.router
                    .record_handle_time(department, 240_000 + i * 1_000);
            }
        }
        desk
    }

    fn request(&self) -> Request {
        let n = self.arrivals as usize;
        Request {
            department: DEPARTMENTS[n % 2].to_owned(),
            language: LANGUAGES[(n / 2) % 4].to_owned(),
            tier: u8::from(n.is_multiple_of(10)),
        }
    }

    /// Accepts every offer at once, as agents who answer immediately would.
    fn carry_out(&mut self, decisions: Vec<Decision>) {
        let mut pending = decisions;
        while let Some(d) = pending.pop() {
            if let Decision::Offer {
                conversation,
                agent,
                ..
            } = d
            {
                let more = self
                    .router
                    .accept(conversation, &agent, self.now)
                    .expect("fresh offer");
                self.owned.push(conversation);
                pending.extend(more);
            }
        }
    }

    fn arrive(&mut self) -> ConversationId {
        self.now += 7;
        self.arrivals += 1;
        let id = ConversationId::new();
        let ds = self
            .router
            .enqueue(id, self.request(), self.now)
            .expect("new conversation");
        black_box(self.router.position(id));
        self.carry_out(ds);
        id
    }

    fn churn(&mut self) {
        self.now += 11;
        let oldest = self.owned.remove(0);
        let ds = self.router.release(oldest, self.now);
        self.carry_out(ds);
    }

    /// Releases an owned conversation and declines the offer its slot produces,
    /// then lets the cooldown end; the conversation is re-offered and accepted.
    fn decline(&mut self) {
        self.now += 13;
        let oldest = self.owned.remove(0);
        let ds = self.router.release(oldest, self.now);
        let offer = ds.iter().find_map(|d| match d {
            Decision::Offer {
                conversation,
                agent,
                ..
            } => Some((*conversation, agent.clone())),
            _ => None,
        });
        let Some((conversation, agent)) = offer else {
            return;
        };
        let ds = self
            .router
            .decline(conversation, &agent, self.now)
            .expect("open offer");
        self.carry_out(ds);
        self.now += RoutingConfig::default().decline_cooldown_ms + 1;
        let ds = self.router.tick(self.now);
        self.carry_out(ds);
    }
}

fn time<F: FnMut()>(ops: usize, mut f: F) -> f64 {
    let start = Instant::now();
    for _ in 0..ops {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / ops as f64
}

fn main() {
    let mut lengths = vec![1_000usize, 5_000, 15_000];
    let mut ops = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--lengths" => {
                lengths = args
                    .next()
                    .expect("--lengths L,L,...")
                    .split(',')
                    .map(|l| l.parse().expect("a number"))
                    .collect();
            }
            "--ops" => ops = args.next().and_then(|n| n.parse().ok()).expect("--ops N"),
            "--bench" => {}
            other => panic!("unknown option {other}"),
        }
    }
    println!(
        "line length  arrival µs  abandon µs  churn µs  decline µs  positions µs  queue_for µs"
    );
    for length in lengths {
        let mut desk = Desk::new();
        while desk.router.queue().len() < length {
            desk.arrive();
        }
        let agent = AgentId("agent-000".into());
        // Each timed kind leaves the line as long as it found it.
        let mut arrived = Vec::with_capacity(ops);
        let arrival = time(ops, || arrived.push(desk.arrive()));
        let abandon = time(ops, || {
            let id = arrived.pop().expect("one per op");
            desk.now += 3;
            black_box(desk.router.release(id, desk.now));
        });
        let churn = time(ops, || {
            desk.churn();
            desk.arrive();
        });
        let decline = time(ops, || {
            desk.decline();
            desk.arrive();
        });
        let positions = time(ops, || {
            black_box(desk.router.positions());
        });
        let queue_for = time(ops, || {
            black_box(desk.router.queue_for(&agent, 100));
        });
        println!(
            "{length:>11}  {arrival:>10.1}  {abandon:>10.1}  {churn:>8.1}  {decline:>10.1}  {positions:>12.1}  {queue_for:>12.1}"
        );
    }
}
