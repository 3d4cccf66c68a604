//! Cluster mode: several `pitboss` nodes sharing a private Redis (bus, routing
//! lease, presence) and a PostgreSQL database (transcripts, queue, accounts), with
//! clients spread over the nodes while nodes, Redis and PostgreSQL fail.
//!
//! Every test compares full sequences: each side of a conversation must see every
//! entry exactly once, in order, gap-free on every connection, and the store must
//! hold every acknowledged message exactly once (see `common::cluster`).
#![allow(missing_docs)]

mod common;
use common::cluster::*;
use common::BIN;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a client that reconnected may take to be resumed.
const RESUME_WITHIN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------- helpers

/// A player starts a chat; returns the conversation's id (named first by
/// `resumed` with `last_seq` 0: a new one, or one just opened and still empty
/// that this tab joins). A `start` refused with `overloaded` (routing
/// moving between nodes) is retried, as the protocol tells clients to.
async fn start(player: &mut Peer) -> String {
    let begun = Instant::now();
    loop {
        let f = start_once(player).await;
        if f["type"] == "resumed" {
            assert_eq!(f["last_seq"], 0);
            return f["conversation"].as_str().unwrap().to_owned();
        }
        assert_eq!(
            f["code"], "overloaded",
            "{}: start refused: {f}",
            player.name
        );
        assert!(
            begun.elapsed() < SETTLE,
            "{}: start still refused after {SETTLE:?}: {f}",
            player.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One `start`: its answer, `resumed` or `error`.
async fn start_once(player: &mut Peer) -> Value {
    let mark = player.mark();
    assert!(player.send(json!({"type":"start"})).await);
    player
        .wait_frame(mark, "the new conversation", SETTLE, |f| {
            f["type"] == "resumed" || f["type"] == "error"
        })
        .await
}

/// The latest `queued` position a player was told for a conversation.
fn position(player: &Peer, conversation: &str) -> Option<u64> {
    player
        .frames
        .iter()
        .rev()
        .find(|f| f["type"] == "queued" && f["conversation"] == conversation)
        .and_then(|f| f["position"].as_u64())
}

/// The last offer of `conversation` an agent got after `since`, if it is still
/// open (no `offer_withdrawn` after it): its index in the agent's frames.
fn open_offer(agent: &Peer, since: usize, conversation: &str) -> Option<usize> {
    let frames = &agent.frames[since.min(agent.frames.len())..];
    let last = frames
        .iter()
        .rposition(|f| f["type"] == "offer" && f["conversation"] == conversation)?;
    let withdrawn = frames[last..]
        .iter()
        .any(|f| f["type"] == "offer_withdrawn" && f["conversation"] == conversation);
    (!withdrawn).then_some(since + last)
}

/// Offers of `conversation` withdrawn after `since`, as incidents.
fn withdrawals(agent: &Peer, since: usize, conversation: &str) -> Vec<String> {
    agent.frames[since.min(agent.frames.len())..]
        .iter()
        .filter(|f| f["type"] == "offer_withdrawn" && f["conversation"] == conversation)
        .map(|f| format!("{} on {}: {f}", agent.name, Cluster::name(agent.node)))
        .collect()
}

/// The agent (among `agents`) offered `conversation` after `since` accepts it, as
/// a console would: an offer withdrawn meanwhile (or an accept refused) means
/// waiting for the next offer. Waits until the agent has the transcript and the
/// player knows. Returns the agent's index; every withdrawn offer and refused
/// accept goes to `incidents` (nothing in these tests should withdraw an offer:
/// the agents stay connected and online, the players stay).
async fn assign(
    conversation: &str,
    player: &mut Peer,
    agents: &mut [Peer],
    since: &[usize],
    incidents: &mut Vec<String>,
) -> usize {
    let start = Instant::now();
    let mut since = since.to_vec();
    loop {
        let left = SETTLE.saturating_sub(start.elapsed());
        let mut refs: Vec<&mut Peer> = agents.iter_mut().collect();
        until(
            &format!("an open offer of {conversation}"),
            left,
            &mut refs,
            |a| {
                a.iter()
                    .enumerate()
                    .any(|(i, a)| open_offer(a, since[i], conversation).is_some())
            },
        )
        .await;
        let i = (0..agents.len())
            .find(|&i| open_offer(&agents[i], since[i], conversation).is_some())
            .unwrap();
        for (k, a) in agents.iter().enumerate() {
            for w in withdrawals(a, since[k], conversation) {
                if !incidents.contains(&w) {
                    incidents.push(w);
                }
            }
        }
        let offered_at = open_offer(&agents[i], since[i], conversation).unwrap();
        since = agents.iter().map(|a| a.mark()).collect();
        since[i] = offered_at + 1;
        if let Err(why) = accept(&mut agents[i], player, conversation).await {
            incidents.push(why);
            continue;
        }
        return i;
    }
}

/// The agent accepts an offer it has; waits until it is attached (`resumed`) and
/// the player got `assigned`. `Err` if the accept was refused or the offer
/// withdrawn first.
async fn accept(agent: &mut Peer, player: &mut Peer, conversation: &str) -> Result<(), String> {
    let mark = agent.mark();
    let pmark = player.mark();
    assert!(
        agent
            .send(json!({"type":"accept","conversation":conversation}))
            .await
    );
    let is_answer = |f: &Value| {
        f["conversation"] == conversation
            && ((f["type"] == "error" && f["frame"] == "accept") || f["type"] == "offer_withdrawn")
    };
    until(
        &format!("{} assigned {conversation}", agent.name),
        SETTLE,
        &mut [&mut *agent, &mut *player],
        |p| {
            p[0].find(mark, is_answer).is_some()
                || (p[0]
                    .find(mark, |f| {
                        f["type"] == "resumed" && f["conversation"] == conversation
                    })
                    .is_some()
                    && p[1]
                        .find(pmark, |f| {
                            f["type"] == "assigned" && f["conversation"] == conversation
                        })
                        .is_some())
        },
    )
    .await;
    match agent.find(mark, is_answer) {
        Some(f) => Err(format!(
            "{} on {}: accept answered by {f}",
            agent.name,
            Cluster::name(agent.node)
        )),
        None => Ok(()),
    }
}

/// Every message every peer sent has been acked.
fn all_acked(peers: &[&mut Peer]) -> bool {
    peers.iter().all(|p| p.unacked().is_empty())
}

/// Everyone in a test: players, agents, and who chats with whom.
struct Floor {
    players: Vec<Peer>,
    agents: Vec<Peer>,
    /// Conversation, player index, agent index (`None`: still queued).
    chats: Vec<(String, usize, Option<usize>)>,
    /// Conversations closed by the test.
    closed: Vec<String>,
    /// Offers withdrawn and accepts refused while the agents stayed online.
    incidents: Vec<String>,
}

impl Drop for Floor {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.incidents.is_empty() {
            eprintln!("---- incidents ----\n{}", self.incidents.join("\n"));
        }
    }
}

impl Floor {
    fn new(agents: Vec<Peer>) -> Floor {
        Floor {
            players: Vec::new(),
            agents,
            chats: Vec::new(),
            closed: Vec::new(),
            incidents: Vec::new(),
        }
    }

    /// At the end of a test: no offer was withdrawn from an agent who stayed
    /// online, no accept of an open offer was refused.
    fn no_incidents(&self) {
        assert!(
            self.incidents.is_empty(),
            "offers withdrawn or accepts refused though every agent stayed connected \
             and online:\n{}",
            self.incidents.join("\n")
        );
    }

    fn all(&mut self) -> Vec<&mut Peer> {
        self.players
            .iter_mut()
            .chain(self.agents.iter_mut())
            .collect()
    }

    /// The open conversations a peer takes part in (`agent`: an agent index).
    fn conversations(&self, peer: usize, agent: bool) -> Vec<String> {
        self.chats
            .iter()
            .filter(|(c, p, a)| {
                !self.closed.contains(c) && if agent { *a == Some(peer) } else { *p == peer }
            })
            .map(|(c, _, _)| c.clone())
            .collect()
    }

    /// A new player on node `node` starts a chat; an agent among those with a free
    /// slot accepts the offer (with `assign`), or the chat stays queued.
    async fn arrive(&mut self, cluster: &Cluster, node: usize, assign_it: bool) -> String {
        let i = self.players.len();
        let mut p = cluster.visitor(&format!("player-{i}"), node).await;
        let marks: Vec<usize> = self.agents.iter().map(|a| a.mark()).collect();
        let conv = start(&mut p).await;
        if assign_it {
            // An online agent serves it: it waits in the queue, not offline.
            let f = p
                .wait_frame(0, "queued or no_agents", SETTLE, |f| {
                    f["conversation"] == conv.as_str()
                        && (f["type"] == "queued" || f["type"] == "no_agents")
                })
                .await;
            assert_eq!(
                f["type"], "queued",
                "{}: an online agent serves general/en, yet `start` made the conversation \
                 offline: {f}",
                p.name
            );
        }
        self.players.push(p);
        let agent = if assign_it {
            Some(
                assign(
                    &conv,
                    &mut self.players[i],
                    &mut self.agents,
                    &marks,
                    &mut self.incidents,
                )
                .await,
            )
        } else {
            None
        };
        self.chats.push((conv.clone(), i, agent));
        conv
    }

    /// One message from each side of every open chat (and from every queued
    /// player), without waiting for acks.
    async fn round(&mut self, r: usize) {
        let chats = self.chats.clone();
        for (c, p, a) in chats.iter().filter(|(c, _, _)| !self.closed.contains(c)) {
            self.players[*p]
                .say(c, &format!("p{p}-{r}"), &format!("player {p}, round {r}"))
                .await;
            if let Some(a) = a {
                self.agents[*a]
                    .say(
                        c,
                        &format!("a{p}-{r}"),
                        &format!("agent {a} to player {p}, round {r}"),
                    )
                    .await;
            }
        }
    }

    /// Waits until every message sent so far has been acked.
    async fn acked(&mut self) {
        until("every message acked", SETTLE, &mut self.all(), all_acked).await;
    }

    /// The clients of node `dead` see their connections end, reconnect to the
    /// `targets` in turn (all at once, as real clients would), resume every
    /// conversation from the last `seq` they saw and resend what was not acked.
    /// Checks that agents are shown the conversations they own, and that every
    /// conversation is resumed within `RESUME_WITHIN` of reconnecting.
    async fn move_off(&mut self, cluster: &Cluster, dead: usize, targets: &[usize]) {
        let player_convs: Vec<Vec<String>> = (0..self.players.len())
            .map(|i| self.conversations(i, false))
            .collect();
        let agent_convs: Vec<Vec<String>> = (0..self.agents.len())
            .map(|i| self.conversations(i, true))
            .collect();
        let mut moving: Vec<(&mut Peer, Vec<String>)> = Vec::new();
        for (p, convs) in self.players.iter_mut().zip(player_convs) {
            if p.node == dead {
                moving.push((p, convs));
            }
        }
        for (a, convs) in self.agents.iter_mut().zip(agent_convs) {
            if a.node == dead {
                moving.push((a, convs));
            }
        }
        assert!(
            !moving.is_empty(),
            "{} held no clients",
            Cluster::name(dead)
        );
        {
            let mut gone: Vec<&mut Peer> = moving.iter_mut().map(|(p, _)| &mut **p).collect();
            until(
                "the clients of the lost node see their connections end",
                SETTLE,
                &mut gone,
                |p| p.iter().all(|p| p.closed.is_some()),
            )
            .await;
        }
        let addrs: Vec<(usize, String)> = targets.iter().map(|&t| (t, cluster.addr(t))).collect();
        let jobs = moving.iter_mut().enumerate().map(|(k, (peer, convs))| {
            let (node, addr) = addrs[k % addrs.len()].clone();
            async move { peer.rejoin(node, &addr, convs).await }
        });
        futures_util::future::join_all(jobs).await;
        let wanted: Vec<Vec<String>> = moving.iter().map(|(_, c)| c.clone()).collect();
        let mut peers: Vec<&mut Peer> = moving.into_iter().map(|(p, _)| p).collect();
        until("every moved client resumed", SETTLE, &mut peers, |p| {
            p.iter()
                .zip(&wanted)
                .all(|(p, w)| w.iter().all(|c| p.resumed_at.contains_key(c)))
        })
        .await;
        let slowest = peers
            .iter()
            .zip(&wanted)
            .flat_map(|(p, w)| w.iter().map(|c| p.resumed_at[c] - p.connected_at))
            .max();
        eprintln!(
            "{} clients of {} moved; slowest resume {slowest:?}",
            peers.len(),
            Cluster::name(dead)
        );
        for (p, w) in peers.iter().zip(&wanted) {
            for c in w {
                let took = p.resumed_at[c] - p.connected_at;
                assert!(
                    took <= RESUME_WITHIN,
                    "{} was resumed in {c} {took:?} after reconnecting to {}",
                    p.name,
                    Cluster::name(p.node)
                );
            }
            if p.is_agent {
                let mut listed: Vec<String> = p.welcome["conversations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["id"].as_str().unwrap().to_owned())
                    .collect();
                listed.sort();
                let mut own = w.clone();
                own.sort();
                assert_eq!(listed, own, "{}: welcome lists the chats it owns", p.name);
            }
        }
    }

    /// Every chat the test did not close is still active, owned by its agent (or
    /// still queued).
    async fn check_owners(&self, cluster: &Cluster, token: &str) {
        for (c, _, a) in &self.chats {
            let s = cluster.summary(c, token).await;
            let expected = match a {
                _ if self.closed.contains(c) => (json!("closed"), s["agent"].clone()),
                Some(a) => (json!("active"), json!(self.agents[*a].name)),
                None => (json!("queued"), Value::Null),
            };
            assert_eq!((s["state"].clone(), s["agent"].clone()), expected, "{c}");
        }
    }

    /// Reads each conversation's stored transcript, waits until each side has seen
    /// all of it, then checks exactly-once delivery on both sides.
    async fn verify(&mut self, cluster: &Cluster, token: &str) {
        self.acked().await;
        let mut stored = Vec::new();
        for (c, _, _) in &self.chats {
            stored.push(cluster.transcript(c, token).await);
        }
        let np = self.players.len();
        let ends: Vec<(String, usize, Option<usize>, u64)> = self
            .chats
            .iter()
            .zip(&stored)
            .map(|((c, p, a), s)| (c.clone(), *p, a.map(|a| np + a), s.len() as u64))
            .collect();
        until(
            "both sides of every chat caught up",
            SETTLE,
            &mut self.all(),
            |peers| {
                ends.iter().all(|(c, p, a, n)| {
                    peers[*p].last_seen(c) == *n && a.is_none_or(|a| peers[a].last_seen(c) == *n)
                })
            },
        )
        .await;
        let all: Vec<&Peer> = self.players.iter().chain(self.agents.iter()).collect();
        assert_eq!(violations(&all), Vec::<String>::new());
        for ((c, p, a), s) in self.chats.iter().zip(&stored) {
            let mut sides = vec![&self.players[*p]];
            if let Some(a) = a {
                sides.push(&self.agents[*a]);
            }
            check_exactly_once(c, s, &sides);
        }
    }
}

/// Runs `pitboss serve` with these arguments and environment; it must exit on its
/// own (non-zero). Returns its standard error.
fn serve_refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = common::tempdir();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .env_remove("PITBOSS_REDIS_URL")
        .env_remove("PITBOSS_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "`serve {args:?}` (env {env:?}) kept running:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "`serve {args:?}` succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ------------------------------------------------------------------------ tests

#[test]
fn redis_and_database_urls_are_given_together_or_not_at_all() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 4] = [
        (&["--redis-url", "redis://127.0.0.1:9/"], &[]),
        (
            &["--database-url", "postgres://postgres@127.0.0.1:9/x"],
            &[],
        ),
        (&[], &[("PITBOSS_REDIS_URL", "redis://127.0.0.1:9/")]),
        (
            &[],
            &[("PITBOSS_DATABASE_URL", "postgres://postgres@127.0.0.1:9/x")],
        ),
    ];
    for (args, env) in cases {
        let err = serve_refused(args, env);
        assert!(
            err.contains("--redis-url") && err.contains("--database-url"),
            "the message names both flags ({args:?} {env:?}): {err}"
        );
    }
}

/// Two tabs of one player on two nodes press `start` at the same moment, round
/// after round (a new player each round): both tabs end up in one conversation,
/// and a third tab is told of one open conversation. Each node looks for an open
/// one in the store before creating its own, so without the store's per-player
/// check both would create one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_on_two_nodes_starting_at_once_share_one_conversation() {
    let cluster = Cluster::start(Setup::nodes(2)).await;
    for round in 0..8 {
        let name = format!("tabs-{round}");
        let mut first = cluster.visitor(&name, 0).await;
        let token = first.visitor_token().expect("visitor token");
        let mut second = cluster.visitor_with(&name, Some(&token), 1).await;
        let (a, b) = tokio::join!(start(&mut first), start(&mut second));
        assert_eq!(
            a, b,
            "round {round}: the two tabs were given two conversations"
        );
        let third = cluster.visitor_with(&name, Some(&token), round % 2).await;
        let open = third.welcome["conversations"].as_array().expect("list");
        assert_eq!(open.len(), 1, "round {round}: {open:?}");
        assert_eq!(open[0]["id"], a.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_crosses_nodes_and_a_third_node_resumes_it() {
    let cluster = Cluster::start(Setup::nodes(3)).await;
    cluster.add_agent("ayla", 3, false);
    cluster.add_agent("boss", 1, true);
    let token = cluster.login("ayla").await;
    let boss = cluster.login("boss").await;
    let mut floor = Floor::new(vec![cluster.agent("ayla", &token, 1).await]);
    let conv = floor.arrive(&cluster, 0, true).await;
    let (player, agent) = (&mut floor.players[0], &mut floor.agents[0]);

    // Typing crosses nodes, both ways.
    let (pm, am) = (player.mark(), agent.mark());
    agent
        .send(json!({"type":"typing","conversation":conv,"active":true}))
        .await;
    player
        .send(json!({"type":"typing","conversation":conv,"active":true}))
        .await;
    let t = player
        .wait_frame(pm, "the agent's typing", SETTLE, |f| f["type"] == "typing")
        .await;
    assert_eq!(
        (&t["from"]["id"], &t["active"]),
        (&json!("ayla"), &json!(true))
    );
    let t = agent
        .wait_frame(am, "the player's typing", SETTLE, |f| f["type"] == "typing")
        .await;
    assert_eq!(t["from"]["role"], "player");

    // Messages both ways, interleaved, without waiting for acks.
    for r in 0..20 {
        floor.round(r).await;
    }
    floor.verify(&cluster, &boss).await;
    for p in floor.players.iter().chain(floor.agents.iter()) {
        for (_, id, _) in &p.sent {
            assert_eq!(p.acks[id].len(), 1, "{id} acked once: {:?}", p.acks[id]);
            assert_eq!(p.acks[id][0]["duplicate"], false);
        }
    }
    let (player, agent) = (&mut floor.players[0], &mut floor.agents[0]);
    let stored = cluster.transcript(&conv, &boss).await;
    assert_eq!(stored.len(), 41, "joined + 40 messages");

    // The player reconnects, to a third node, and resumes from 0: the whole
    // transcript, in order.
    let token = player.visitor_token().unwrap();
    player.hang_up().await;
    let mut again = cluster.visitor_with("deniz", Some(&token), 2).await;
    let listed: Vec<&Value> = again.welcome["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(listed.len(), 1, "welcome lists the open conversation");
    assert_eq!(listed[0]["id"], conv.as_str());
    assert_eq!(listed[0]["last_seq"], 41);
    again.resume(&conv, 0).await;
    again
        .wait("the replay", SETTLE, |p| p.resumed_at.contains_key(&conv))
        .await;
    let replayed: Vec<(Value, Value, Value)> = again.messages[&conv]
        .iter()
        .map(|m| (m["seq"].clone(), m["text"].clone(), m["client_id"].clone()))
        .collect();
    let expected: Vec<(Value, Value, Value)> = stored
        .iter()
        .map(|m| (m["seq"].clone(), m["text"].clone(), m["client_id"].clone()))
        .collect();
    assert_eq!(replayed, expected);

    // And it is live there: the agent's next message arrives once.
    agent.say(&conv, "a-last", "still here").await;
    again
        .wait("the live message on node 3", SETTLE, |p| {
            p.last_seen(&conv) == 42
        })
        .await;
    assert_eq!(again.messages[&conv].last().unwrap()["client_id"], "a-last");
    assert_eq!(violations(&[&again]), Vec::<String>::new());
    floor.no_incidents();
}

/// The other running nodes than `dead`.
fn others(cluster: &Cluster, dead: usize) -> Vec<usize> {
    (0..cluster.nodes.len())
        .filter(|&i| i != dead && cluster.running(i))
        .collect()
}

/// The agent owning the first open chat closes it; the head of the queue (the
/// oldest queued chat) must be offered to that agent (the only free slot) and is
/// accepted; the other queued players move up one place, keeping their order.
async fn free_a_slot(floor: &mut Floor, queue: &mut Vec<String>) {
    let (conv, _, agent) = floor
        .chats
        .iter()
        .find(|(c, _, a)| a.is_some() && !floor.closed.contains(c))
        .cloned()
        .unwrap();
    let agent = agent.unwrap();
    let head = queue.remove(0);
    let head_player = floor.chats.iter().find(|(c, _, _)| *c == head).unwrap().1;
    let marks: Vec<usize> = floor.agents.iter().map(|a| a.mark()).collect();
    let am = floor.agents[agent].mark();
    assert!(
        floor.agents[agent]
            .send(json!({"type":"close","conversation":conv,"reason":"resolved"}))
            .await
    );
    floor.agents[agent]
        .wait_frame(am, "closed", SETTLE, |f| {
            f["type"] == "closed" && f["conversation"] == conv.as_str()
        })
        .await;
    floor.closed.push(conv);
    let got = assign(
        &head,
        &mut floor.players[head_player],
        &mut floor.agents,
        &marks,
        &mut floor.incidents,
    )
    .await;
    assert_eq!(
        got, agent,
        "the freed slot's agent was offered the head of the queue"
    );
    let k = floor.chats.iter().position(|(c, _, _)| *c == head).unwrap();
    floor.chats[k].2 = Some(agent);
    let waiting: Vec<(usize, String)> = queue
        .iter()
        .map(|c| {
            (
                floor.chats.iter().find(|(x, _, _)| x == c).unwrap().1,
                c.clone(),
            )
        })
        .collect();
    let mut peers = floor.all();
    until(
        "the queue moved up by one, in order",
        SETTLE,
        &mut peers,
        |p| {
            waiting
                .iter()
                .enumerate()
                .all(|(k, (i, c))| position(p[*i], c) == Some(k as u64 + 1))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_routing_node_then_of_another_loses_nothing() {
    let mut cluster = Cluster::start(Setup::nodes(3)).await;
    let logins = ["a1", "a2", "a3"];
    for login in logins {
        cluster.add_agent(login, 5, false);
    }
    cluster.add_agent("boss", 1, true);
    let boss = cluster.login("boss").await;
    let mut agents = Vec::new();
    for (i, login) in logins.iter().enumerate() {
        let token = cluster.login(login).await;
        agents.push(cluster.agent(login, &token, i).await);
    }
    let mut floor = Floor::new(agents);
    // 15 chats fill the three agents (5 each); players sit on the node after
    // their agent's, mostly.
    for i in 0..15 {
        floor.arrive(&cluster, (i + 1) % 3, true).await;
    }
    let mut queue = Vec::new();
    for i in 15..20 {
        let c = floor.arrive(&cluster, i % 3, false).await;
        let k = queue.len() as u64 + 1;
        floor.players[i]
            .wait(&format!("queued at {k}"), SETTLE, |p| {
                position(p, &c) == Some(k)
            })
            .await;
        queue.push(c);
    }
    let across = floor
        .chats
        .iter()
        .filter(|(_, p, a)| a.is_some_and(|a| floor.agents[a].node != floor.players[*p].node))
        .count();
    assert!(across >= 8, "most chats cross nodes: {across} of 15");
    for r in 0..3 {
        floor.round(r).await;
    }
    floor.acked().await;

    // Live traffic, and the routing node dies mid-round.
    let leader = cluster.wait_leader(None).await;
    floor.round(3).await;
    cluster.kill(leader);
    let rest = others(&cluster, leader);
    floor.move_off(&cluster, leader, &rest).await;
    let new_leader = cluster.wait_leader(Some(leader)).await;
    for r in 4..7 {
        floor.round(r).await;
    }
    floor.verify(&cluster, &boss).await;
    floor.check_owners(&cluster, &boss).await;
    // The new leader routes: a freed slot goes to the head of the queue.
    free_a_slot(&mut floor, &mut queue).await;
    floor.round(7).await;
    floor.verify(&cluster, &boss).await;

    // The dead node comes back; then a node that holds clients but does not route
    // dies too.
    cluster.restart(leader);
    let victim = others(&cluster, new_leader)
        .into_iter()
        .find(|&i| i != leader)
        .unwrap();
    floor.round(8).await;
    cluster.kill(victim);
    let rest = others(&cluster, victim);
    floor.move_off(&cluster, victim, &rest).await;
    assert_eq!(
        cluster.wait_leader(None).await,
        new_leader,
        "routing stays where it was"
    );
    for r in 9..11 {
        floor.round(r).await;
    }
    // The routing node says which node was lost, once its heartbeat ran out.
    let lost = format!("left={}", Cluster::name(victim));
    let begun = Instant::now();
    while !cluster.nodes[new_leader].logs().contains(&lost) {
        assert!(
            begun.elapsed() < SETTLE,
            "{}",
            cluster.nodes[new_leader].logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    free_a_slot(&mut floor, &mut queue).await;
    floor.verify(&cluster, &boss).await;
    floor.check_owners(&cluster, &boss).await;
    floor.no_incidents();
}

/// A node killed and started again under its own name is answered by the routing
/// node at once: its new requests are not taken for the ones its earlier process
/// sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_and_restarted_under_its_name_is_routed_for_at_once() {
    let mut cluster = Cluster::start(Setup::nodes(2)).await;
    let leader = cluster.wait_leader(None).await;
    let other = 1 - leader;
    // Each start is at least one request from the node to the routing node.
    for i in 0..3 {
        let mut player = cluster.visitor(&format!("before-{i}"), other).await;
        start(&mut player).await;
    }
    cluster.kill(other);
    cluster.restart(other);
    wait_ready(&cluster, other, 200).await;
    assert_eq!(cluster.wait_leader(None).await, leader, "routing stays");
    for i in 0..3 {
        let mut player = cluster.visitor(&format!("after-{i}"), other).await;
        let f = start_once(&mut player).await;
        assert_eq!(f["type"], "resumed", "start {i} after the restart: {f}");
    }

    // An account added while the nodes run, working on the routing node: the
    // player's node, which never saw it, still names the agent by display name.
    cluster.add_agent_in("late", "vip", 1);
    let token = cluster.nodes[leader].login("late").await;
    let mut agent = cluster.agent("late", &token, leader).await;
    let mut player = cluster.visitor("vip-player", other).await;
    let (mark, pmark) = (agent.mark(), player.mark());
    assert!(
        player
            .send(json!({"type":"start","department":"vip"}))
            .await
    );
    let offer = agent
        .wait_frame(mark, "the offer", SETTLE, |f| f["type"] == "offer")
        .await;
    let conversation = offer["conversation"].as_str().unwrap().to_owned();
    accept(&mut agent, &mut player, &conversation)
        .await
        .expect("accepted");
    let assigned = player
        .find(pmark, |f| f["type"] == "assigned")
        .expect("assigned");
    assert_eq!(assigned["agent"]["name"], "Agent late", "{assigned}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_loses_nothing_and_routing_comes_back() {
    let mut cluster = Cluster::start(Setup::nodes(2)).await;
    cluster.add_agent("ayla", 3, false);
    cluster.add_agent("boss", 1, true);
    let boss = cluster.login("boss").await;
    let token = cluster.login("ayla").await;
    let mut floor = Floor::new(vec![cluster.agent("ayla", &token, 1).await]);
    let conv = floor.arrive(&cluster, 0, true).await;
    for r in 0..3 {
        floor.round(r).await;
    }
    floor.verify(&cluster, &boss).await;

    // Redis dies. Both sides keep writing: the store is PostgreSQL, so every
    // message is still acked by its own node.
    cluster.redis.kill();
    for r in 3..8 {
        floor.round(r).await;
    }
    floor.acked().await;
    let stored = cluster.transcript(&conv, &boss).await;
    let end = stored.len() as u64;

    // Redis comes back empty: within 5 s each side has the other's messages, in
    // order, once (the nodes recover them from the store).
    cluster.redis.restart();
    let back = Instant::now();
    let took = until(
        "both sides caught up after Redis returned",
        SETTLE,
        &mut floor.all(),
        |p| p.iter().all(|p| p.last_seen(&conv) == end),
    )
    .await;
    assert!(
        took <= Duration::from_secs(5),
        "the messages written while Redis was down arrived {took:?} after it returned"
    );
    floor.verify(&cluster, &boss).await;

    // Routing works again: a new player (on the agent's node, then on the other)
    // is offered to the agent, who has free slots.
    floor.arrive(&cluster, 1, true).await;
    floor.arrive(&cluster, 0, true).await;
    eprintln!("routing back {:?} after Redis returned", back.elapsed());
    floor.round(8).await;
    floor.verify(&cluster, &boss).await;
    floor.no_incidents();
}

/// Two nodes; the one agent, ayla, on the node that does not route, and a player
/// on `player_node` (given the routing node's index); returns once ayla sees the
/// player's offer, with the routing node's index.
async fn offered_beside_routing(
    player_node: fn(usize) -> usize,
) -> (Cluster, usize, Peer, Peer, String) {
    let cluster = Cluster::start(Setup::nodes(2)).await;
    let leader = cluster.wait_leader(None).await;
    cluster.add_agent("ayla", 3, false);
    let token = cluster.login("ayla").await;
    let mut agent = cluster.agent("ayla", &token, 1 - leader).await;
    let mut player = cluster.visitor("player-0", player_node(leader)).await;
    let since = agent.mark();
    let conv = start(&mut player).await;
    agent
        .wait_frame(since, "the offer", SETTLE, |f| {
            f["type"] == "offer" && f["conversation"] == conv.as_str()
        })
        .await;
    (cluster, leader, agent, player, conv)
}

/// Two nodes; a player on the leader is offered to the one agent, on the other
/// node, who sees the offer; then Redis is killed and comes back empty.
async fn offered_as_redis_restarts_empty() -> (Cluster, Peer, Peer, String) {
    let (mut cluster, _, agent, player, conv) = offered_beside_routing(|leader| leader).await;
    cluster.redis.kill();
    cluster.redis.restart();
    (cluster, agent, player, conv)
}

/// An agent who accepts an offer just as Redis comes back empty (routing starts
/// over on a new term, presence is refilling, the bus reconnecting) gets the
/// conversation: the agent's node asks again while routing answers `overloaded`,
/// and the new routing node honours the earlier offer once presence lists the
/// agent, instead of refusing an offer the agent saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_accepted_while_redis_restarts_empty_is_honoured() {
    let (_cluster, mut agent, mut player, conv) = offered_as_redis_restarts_empty().await;
    if let Err(why) = accept(&mut agent, &mut player, &conv).await {
        panic!("the accept of an offer the agent saw was refused: {why}");
    }
}

/// Likewise, a decline of that offer is honoured: the offer is withdrawn and the
/// new routing node keeps the conversation from the agent for the cooldown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_declined_while_redis_restarts_empty_is_declined() {
    let (_cluster, mut agent, mut player, conv) = offered_as_redis_restarts_empty().await;
    let mark = agent.mark();
    assert!(
        agent
            .send(json!({"type":"decline","conversation":conv}))
            .await
    );
    let answer = agent
        .wait_frame(mark, "the answer to the decline", SETTLE, |f| {
            f["conversation"] == conv.as_str()
                && ((f["type"] == "error" && f["frame"] == "decline")
                    || (f["type"] == "offer_withdrawn" && f["reason"] == "declined"))
        })
        .await;
    assert_eq!(
        answer["type"], "offer_withdrawn",
        "decline refused: {answer}"
    );
    // The only agent declined: the player waits, and is not offered to her again
    // at once (the decline's cooldown holds on the new routing node).
    let after = agent.mark();
    not_offered_again(&mut agent, after, &mut [&mut player], &conv).await;
}

/// Watches for 2 s (pumping every peer): the agent gets no new offer of
/// `conversation` after `since`, and the player (the first of `players`) is
/// neither assigned nor closed: the decline's cooldown holds.
async fn not_offered_again(
    agent: &mut Peer,
    since: usize,
    players: &mut [&mut Peer],
    conversation: &str,
) {
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(2) {
        agent.pump();
        for p in players.iter_mut() {
            p.pump();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        agent
            .find(since, |f| f["type"] == "offer"
                && f["conversation"] == conversation)
            .is_none(),
        "offered again within the decline's cooldown: {}",
        agent.describe()
    );
    let player = &players[0];
    assert!(
        player
            .find(0, |f| f["type"] == "closed" || f["type"] == "assigned")
            .is_none(),
        "{}",
        player.describe()
    );
}

/// A decline outlives the routing node that handled it: the node that takes over
/// rebuilds the queue from the store with the decline's cooldown, so the agent is
/// not offered the conversation again at once, while routing goes on for others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_outlives_the_routing_node() {
    let (mut cluster, leader, mut agent, mut player, conv) =
        offered_beside_routing(|leader| 1 - leader).await;
    let stays = 1 - leader;
    let mark = agent.mark();
    assert!(
        agent
            .send(json!({"type":"decline","conversation":conv}))
            .await
    );
    agent
        .wait_frame(mark, "the decline's answer", SETTLE, |f| {
            f["type"] == "offer_withdrawn"
                && f["conversation"] == conv.as_str()
                && f["reason"] == "declined"
        })
        .await;
    // The decline is on record once answered: kill routing at once.
    let after = agent.mark();
    cluster.kill(leader);
    assert_eq!(cluster.wait_leader(Some(leader)).await, stays);

    // Routing works on the new node: a second player is offered to the agent.
    let mut other = cluster.visitor("player-1", stays).await;
    let second = start(&mut other).await;
    agent
        .wait_frame(after, "the second player's offer", SETTLE, |f| {
            f["type"] == "offer" && f["conversation"] == second.as_str()
        })
        .await;
    not_offered_again(&mut agent, after, &mut [&mut player, &mut other], &conv).await;
}

/// A transfer to a department that waits when the routing node dies goes on
/// waiting on the new one, with its note: the department's agent who comes
/// online afterwards is offered it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_transfer_outlives_the_routing_node() {
    let (mut cluster, leader, mut agent, mut player, conv) =
        offered_beside_routing(|leader| 1 - leader).await;
    let stays = 1 - leader;
    cluster.add_agent_in("boris", "payments", 1);
    // Boris, of payments, is online on the routing node: the transfer is offered
    // to him, and both his connection and the routing node die with it open.
    let token = cluster.login("boris").await;
    let mut first = cluster.agent("boris", &token, leader).await;
    if let Err(why) = accept(&mut agent, &mut player, &conv).await {
        panic!("{why}");
    }
    let mark = agent.mark();
    assert!(
        agent
            .send(json!({"type":"transfer","conversation":conv,"to":{"department":"payments"},"note":"Deposit of 200 EUR missing"}))
            .await
    );
    agent
        .wait_frame(mark, "the pending transfer", SETTLE, |f| {
            f["type"] == "transfer_update"
                && f["conversation"] == conv.as_str()
                && f["outcome"] == "pending"
        })
        .await;
    first
        .wait_frame(0, "the first offer", SETTLE, |f| {
            f["type"] == "offer" && f["conversation"] == conv.as_str()
        })
        .await;
    cluster.kill(leader);
    assert_eq!(cluster.wait_leader(Some(leader)).await, stays);

    let mut boris = cluster.agent("boris", &token, stays).await;
    let offer = boris
        .wait_frame(0, "the transfer's offer", SETTLE, |f| {
            f["type"] == "offer" && f["conversation"] == conv.as_str()
        })
        .await;
    assert_eq!(offer["transfer"]["from"]["id"], "ayla", "{offer}");
    assert_eq!(
        offer["transfer"]["note"], "Deposit of 200 EUR missing",
        "{offer}"
    );
    assert_eq!(offer["department"], "payments", "{offer}");
}

/// A transfer to a named agent that is pending when the routing node dies is
/// offered again by the new one, with its note, as its receiver is online: the
/// receiver accepts and the owner hears so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_an_agent_is_offered_again_by_the_new_routing_node() {
    let (mut cluster, leader, mut agent, mut player, conv) =
        offered_beside_routing(|leader| 1 - leader).await;
    let stays = 1 - leader;
    cluster.add_agent_in("boris", "payments", 1);
    let token = cluster.login("boris").await;
    let mut boris = cluster.agent("boris", &token, stays).await;
    if let Err(why) = accept(&mut agent, &mut player, &conv).await {
        panic!("{why}");
    }
    let mark = agent.mark();
    let offered = boris.mark();
    assert!(
        agent
            .send(json!({"type":"transfer","conversation":conv,"to":{"agent":"boris"},"note":"VIP, deposit pending"}))
            .await
    );
    boris
        .wait_frame(offered, "the transfer's offer", SETTLE, |f| {
            f["type"] == "offer" && f["conversation"] == conv.as_str()
        })
        .await;
    let again = boris.mark();
    cluster.kill(leader);
    assert_eq!(cluster.wait_leader(Some(leader)).await, stays);

    let offer = boris
        .wait_frame(again, "the transfer offered again", SETTLE, |f| {
            f["type"] == "offer" && f["conversation"] == conv.as_str()
        })
        .await;
    assert_eq!(offer["transfer"]["from"]["id"], "ayla", "{offer}");
    assert_eq!(offer["transfer"]["note"], "VIP, deposit pending", "{offer}");
    if let Err(why) = accept(&mut boris, &mut player, &conv).await {
        panic!("{why}");
    }
    let update = agent
        .wait_frame(mark, "the transfer's outcome", SETTLE, |f| {
            f["type"] == "transfer_update"
                && f["conversation"] == conv.as_str()
                && f["outcome"] != "pending"
        })
        .await;
    assert_eq!(update["outcome"], "accepted", "{update}");
}

/// An accept that no routing node answers (the routing node frozen, then replaced
/// as its lease runs out) is answered within the 5 s a routed command may take
/// in all: the agent is never left waiting longer, whatever the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accept_the_routing_node_cannot_answer_is_answered_within_five_seconds() {
    let (cluster, leader, mut agent, _player, conv) =
        offered_beside_routing(|leader| 1 - leader).await;
    cluster.stop(leader);
    let mark = agent.mark();
    let asked = Instant::now();
    assert!(
        agent
            .send(json!({"type":"accept","conversation":conv}))
            .await
    );
    let answer = agent
        .wait_frame(
            mark,
            "the answer to the accept",
            Duration::from_secs(30),
            |f| {
                f["conversation"] == conv.as_str()
                    && ((f["type"] == "error" && f["frame"] == "accept")
                        || f["type"] == "assigned"
                        || f["type"] == "offer_withdrawn")
            },
        )
        .await;
    let took = asked.elapsed();
    cluster.resume(leader);
    // 5 s, and a little for a loaded machine to deliver the answer.
    assert!(
        took <= Duration::from_millis(6_500),
        "answered after {took:?}: {answer}"
    );
    if answer["type"] == "error" {
        assert_eq!(answer["code"], "overloaded", "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_by_redis_catches_up_from_the_store() {
    // A subscriber more than 32 KiB behind is disconnected by Redis at once.
    let cluster = Cluster::start(Setup {
        redis_args: [
            "--client-output-buffer-limit",
            "pubsub",
            "32kb",
            "16kb",
            "1",
        ]
        .map(String::from)
        .to_vec(),
        ..Setup::nodes(2)
    })
    .await;
    let leader = cluster.wait_leader(None).await;
    let behind = 1 - leader;
    cluster.add_agent("ayla", 6, false);
    cluster.add_agent("boss", 1, true);
    let boss = cluster.login("boss").await;
    let token = cluster.login("ayla").await;
    let mut floor = Floor::new(vec![cluster.agent("ayla", &token, behind).await]);
    for _ in 0..6 {
        floor.arrive(&cluster, leader, true).await;
    }
    let line = "x".repeat(3900);
    let from = cluster.log_len(behind);

    // Players stream 4 KB messages; the agent's node freezes for 2 s meanwhile.
    let streaming = Instant::now();
    let mut stopped = false;
    let mut resumed = false;
    let mut n = 0;
    while streaming.elapsed() < Duration::from_secs(5) {
        if !stopped && streaming.elapsed() >= Duration::from_millis(1000) {
            cluster.stop(behind);
            stopped = true;
        }
        if stopped && !resumed && streaming.elapsed() >= Duration::from_millis(3000) {
            cluster.resume(behind);
            resumed = true;
        }
        let chats = floor.chats.clone();
        for (c, p, _) in &chats {
            floor.players[*p]
                .say(c, &format!("p{p}-s{n}"), &format!("{n} {line}"))
                .await;
            floor.players[*p].pump();
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(resumed);
    floor.verify(&cluster, &boss).await;
    assert!(
        cluster.redis.log().contains("output buffer limits"),
        "Redis did not cut the frozen node off; the test did not test anything"
    );
    let resyncs = cluster.log_since(behind, from, "resynchronised with the store");
    assert!(
        !resyncs.is_empty(),
        "{} never resynchronised after being cut off",
        Cluster::name(behind)
    );
    eprintln!("{n} rounds of 6 messages; {} resyncs", resyncs.len());
    floor.no_incidents();
}

/// Waits for the answer to a send of `client_id` after `since`: its ack or an
/// error naming it. `None` if neither came within `limit`.
async fn answer(peer: &mut Peer, since: usize, client_id: &str, limit: Duration) -> Option<Value> {
    let start = Instant::now();
    loop {
        peer.pump();
        if let Some(f) = peer.find(since, |f| {
            (f["type"] == "ack" || f["type"] == "error") && f["client_id"] == client_id
        }) {
            return Some(f);
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends the same message again, one attempt at a time, until it is acked.
async fn retry_until_acked(
    peer: &mut Peer,
    conversation: &str,
    client_id: &str,
    text: &str,
) -> Value {
    let start = Instant::now();
    loop {
        let mark = peer.mark();
        peer.say(conversation, client_id, text).await;
        match answer(peer, mark, client_id, SETTLE).await {
            Some(f) if f["type"] == "ack" => return f,
            Some(f) => assert_eq!(f["code"], "overloaded", "{}: {f}", peer.name),
            None => panic!("{}: no answer to a resend of {client_id}", peer.name),
        }
        assert!(
            start.elapsed() < SETTLE,
            "{}: {client_id} still refused {SETTLE:?} after the database returned",
            peer.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A chat between a player on node-1 and an agent on node-2, on a cluster with a
/// PostgreSQL server of its own; returns the cluster, the floor and the
/// supervisor's token.
async fn chat_on_own_postgres() -> (Cluster, Floor, String, String) {
    let cluster = Cluster::start(Setup {
        own_postgres: true,
        ..Setup::nodes(2)
    })
    .await;
    cluster.add_agent("ayla", 3, false);
    cluster.add_agent("boss", 1, true);
    let boss = cluster.login("boss").await;
    let token = cluster.login("ayla").await;
    let mut floor = Floor::new(vec![cluster.agent("ayla", &token, 1).await]);
    let conv = floor.arrive(&cluster, 0, true).await;
    for r in 0..3 {
        floor.round(r).await;
    }
    floor.verify(&cluster, &boss).await;
    (cluster, floor, boss, conv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_refuses_sends_then_takes_the_retries_once() {
    let (mut cluster, mut floor, boss, conv) = chat_on_own_postgres().await;
    let before = cluster.transcript(&conv, &boss).await;

    cluster.postgres.as_mut().unwrap().stop();
    // Nothing can be durable now: no ack (an `overloaded` error, or silence). The
    // writer gives up on a connection after 10 s.
    let limit = Duration::from_secs(12);
    let mut refused = Vec::new();
    for (who, side) in [("player", true), ("agent", false)] {
        let peer = if side {
            &mut floor.players[0]
        } else {
            &mut floor.agents[0]
        };
        let id = format!("{who}-during");
        let mark = peer.mark();
        peer.say(
            &conv,
            &id,
            &format!("the {who} writes while the database is down"),
        )
        .await;
        let got = answer(peer, mark, &id, limit).await;
        eprintln!("{who}'s send while PostgreSQL was stopped: {got:?}");
        match got {
            Some(f) if f["type"] == "error" => {
                assert_eq!(f["code"], "overloaded", "{f}");
                refused.push(id);
            }
            Some(f) => panic!("acked while PostgreSQL was stopped: {f}"),
            None => {}
        }
    }

    // A session that cannot be checked, or whose conversations cannot be read,
    // is not refused as if it were forged, nor welcomed as if it had none: the
    // client is told to come back, and keeps its token.
    let visitor = floor.players[0].visitor_token().expect("a visitor token");
    let (me, agent, player) = tokio::join!(
        async {
            let url = cluster.nodes[0].url("/api/me");
            let res = reqwest::Client::new().get(url).bearer_auth(&boss).send();
            res.await.map(|r| r.status().as_u16()).ok()
        },
        hello_answer(&cluster, 1, json!({"kind":"agent","token":boss})),
        hello_answer(&cluster, 0, json!({"kind":"visitor","token":visitor})),
    );
    assert_eq!(me, Some(503), "GET /api/me with the store down");
    let overloaded = (json!("error"), json!("overloaded"), Some(1013));
    assert_eq!(agent, overloaded, "an agent's hello with the store down");
    assert_eq!(
        player, overloaded,
        "a returning visitor's hello with the store down"
    );

    cluster.postgres.as_mut().unwrap().start();
    for (who, side) in [("player", true), ("agent", false)] {
        let peer = if side {
            &mut floor.players[0]
        } else {
            &mut floor.agents[0]
        };
        let id = format!("{who}-during");
        let text = format!("the {who} writes while the database is down");
        let ack = retry_until_acked(peer, &conv, &id, &text).await;
        if refused.contains(&id) {
            assert_eq!(
                peer.acks[&id].len(),
                1,
                "refused, then acked exactly once: {:?}",
                peer.acks[&id]
            );
            assert_eq!(
                ack["duplicate"], false,
                "the refused attempt stored nothing"
            );
        }
    }
    // Nothing acked before the outage was lost or renumbered.
    let after = cluster.transcript(&conv, &boss).await;
    assert_eq!(after[..before.len()], before[..]);
    // Service resumes: chat both ways, and a new player is routed.
    floor.round(3).await;
    floor.verify(&cluster, &boss).await;
    floor.arrive(&cluster, 1, true).await;
    floor.round(4).await;
    floor.verify(&cluster, &boss).await;
    floor.no_incidents();
}

/// An agent's grace period ending while the database is down: the requeue cannot be
/// stored, and it is tried again within seconds once the database is back, not
/// after a whole new grace period (the player has waited through one already).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeue_the_database_refused_is_tried_again_within_seconds() {
    let grace = Duration::from_secs(20);
    let mut cluster = Cluster::start(Setup {
        own_postgres: true,
        node_args: ["--agent-grace-secs", "20"].map(String::from).to_vec(),
        ..Setup::nodes(1)
    })
    .await;
    cluster.add_agent("ayla", 3, false);
    let token = cluster.login("ayla").await;
    let mut floor = Floor::new(vec![cluster.agent("ayla", &token, 0).await]);
    let conv = floor.arrive(&cluster, 0, true).await;
    floor.round(0).await;

    let mark = floor.players[0].mark();
    floor.agents[0].hang_up().await;
    cluster.postgres.as_mut().unwrap().stop();
    let refused = "requeue not stored; will retry";
    let deadline = Instant::now() + grace + SETTLE;
    while cluster.log_lines(0, refused).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no refused requeue logged within {:?}",
            grace + SETTLE
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        floor.players[0]
            .find(mark, |f| f["type"] == "message" && f["event"] == "requeued")
            .is_none(),
        "a requeue reported while the database was down"
    );

    cluster.postgres.as_mut().unwrap().start();
    let back = Instant::now();
    let player = &mut floor.players[0];
    player
        .wait_frame(mark, "the requeued event", grace / 2, |f| {
            f["type"] == "message" && f["event"] == "requeued" && f["conversation"] == conv.as_str()
        })
        .await;
    eprintln!("requeued {:?} after the database came back", back.elapsed());
    player
        .wait_frame(mark, "its place at the head of the queue", SETTLE, |f| {
            f["type"] == "queued" && f["conversation"] == conv.as_str() && f["position"] == 1
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hung_holds_sends_unacked_until_it_resumes() {
    let (mut cluster, mut floor, boss, conv) = chat_on_own_postgres().await;
    let before = cluster.transcript(&conv, &boss).await;

    let pg = cluster.postgres.as_mut().unwrap();
    pg.hang();
    assert!(
        pg.hung().len() > 1,
        "the postmaster and its children are stopped"
    );
    // A probe of a node whose store hangs is answered, not held.
    let asked = Instant::now();
    assert_eq!(
        readyz(&cluster, 0).await,
        503,
        "/readyz with the store hung"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "/readyz took {:?}",
        asked.elapsed()
    );
    let text = "the player writes while the database hangs";
    let mark = floor.players[0].mark();
    floor.players[0].say(&conv, "during", text).await;
    // Three seconds of a hung database: no ack (an `overloaded` error is fine).
    let got = answer(
        &mut floor.players[0],
        mark,
        "during",
        Duration::from_secs(3),
    )
    .await;
    eprintln!("the send while PostgreSQL hung: {got:?}");
    if let Some(f) = got {
        assert_eq!(
            (&f["type"], &f["code"]),
            (&json!("error"), &json!("overloaded")),
            "answered while PostgreSQL hung: {f}"
        );
    }
    cluster.postgres.as_mut().unwrap().unhang();

    // The client retries the same client id once the database is back.
    let player = &mut floor.players[0];
    let ack = retry_until_acked(player, &conv, "during", text).await;
    let acks = &player.acks["during"];
    eprintln!("acks of the send made while PostgreSQL hung: {acks:?}");
    assert!(
        acks.iter().all(|a| a["seq"] == ack["seq"]),
        "every ack names one entry: {acks:?}"
    );
    assert_eq!(
        acks.iter().filter(|a| a["duplicate"] == false).count(),
        1,
        "stored once: {acks:?}"
    );
    let after = cluster.transcript(&conv, &boss).await;
    assert_eq!(after[..before.len()], before[..]);
    floor.round(3).await;
    floor.verify(&cluster, &boss).await;
    floor.arrive(&cluster, 1, true).await;
    floor.round(4).await;
    floor.verify(&cluster, &boss).await;
    floor.no_incidents();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_keeps_every_conversation_owner_and_message() {
    let mut cluster = Cluster::start(Setup::nodes(3)).await;
    let logins = ["a1", "a2", "a3"];
    for login in logins {
        cluster.add_agent(login, 2, false);
    }
    cluster.add_agent("boss", 1, true);
    let boss = cluster.login("boss").await;
    let mut agents = Vec::new();
    for (i, login) in logins.iter().enumerate() {
        let token = cluster.login(login).await;
        agents.push(cluster.agent(login, &token, i).await);
    }
    let mut floor = Floor::new(agents);
    for i in 0..6 {
        floor.arrive(&cluster, (i + 1) % 3, true).await;
    }
    floor.round(0).await;
    floor.acked().await;

    let mut r = 1;
    for node in 0..3 {
        // Traffic in flight as the node is told to stop.
        floor.round(r).await;
        r += 1;
        let (status, took) = cluster.terminate(node).await;
        assert!(
            status.success(),
            "{} exited with {status:?}",
            Cluster::name(node)
        );
        assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
        {
            let mut leaving: Vec<&mut Peer> =
                floor.all().into_iter().filter(|p| p.node == node).collect();
            until("the node's clients told to go", SETTLE, &mut leaving, |p| {
                p.iter().all(|p| p.closed.is_some())
            })
            .await;
            for p in &leaving {
                assert_eq!(p.closed, Some(Some(1012)), "{}: close code", p.name);
            }
        }
        let rest = others(&cluster, node);
        floor.move_off(&cluster, node, &rest).await;
        cluster.restart(node);
        floor.round(r).await;
        r += 1;
        floor.acked().await;
    }
    floor.verify(&cluster, &boss).await;
    // Every conversation is still open, with the agent who owned it before.
    floor.check_owners(&cluster, &boss).await;
    floor.no_incidents();
}

/// An agent's account removed while every node was down: the node that takes
/// routing over at the restart puts the agent's chat back at the head of the
/// queue, on the record and for the player.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_whose_agent_was_removed_while_the_cluster_was_down_is_requeued() {
    let mut cluster = Cluster::start(Setup::nodes(2)).await;
    cluster.add_agent("ayla", 1, false);
    cluster.add_agent("boss", 1, true);
    let token = cluster.login("ayla").await;
    let mut floor = Floor::new(vec![cluster.agent("ayla", &token, 1).await]);
    let conv = floor.arrive(&cluster, 0, true).await;
    floor.round(0).await;
    floor.acked().await;
    let visitor = floor.players[0].visitor_token().expect("visitor token");
    floor.no_incidents();
    drop(floor);

    cluster.kill(0);
    cluster.kill(1);
    let (ok, _, err) = cluster.nodes[0].agent_command(&["remove", "ayla"]);
    assert!(ok, "agent remove: {err}");
    cluster.restart(0);
    cluster.restart(1);
    let leader = cluster.wait_leader(None).await;

    let boss = cluster.login("boss").await;
    let begun = Instant::now();
    let detail = loop {
        let detail = cluster.nodes[leader]
            .get_json(&format!("/api/conversations/{conv}"), &boss)
            .await;
        if detail["conversation"]["state"] == "queued" {
            break detail;
        }
        assert!(
            begun.elapsed() < SETTLE,
            "the removed agent's chat is still {} after {SETTLE:?}",
            detail["conversation"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(detail["conversation"]["agent"].is_null(), "{detail}");
    let requeues: Vec<&Value> = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "requeued")
        .collect();
    assert_eq!(requeues.len(), 1, "one requeue: {detail}");
    assert_eq!(requeues[0]["agent"], "ayla", "{}", requeues[0]);
    assert_eq!(
        requeues[0]["detail"]["reason"], "account_removed",
        "{}",
        requeues[0]
    );

    // The player, back on the other node, finds it queued, with the event in the
    // transcript and a position in line.
    let other = 1 - leader;
    let mut player = cluster
        .visitor_with("player-0", Some(&visitor), other)
        .await;
    let listed = common::listed(&player.welcome, &conv);
    assert_eq!(listed["state"], "queued", "{listed}");
    player.resume(&conv, 0).await;
    player
        .wait("the replay", SETTLE, |p| p.resumed_at.contains_key(&conv))
        .await;
    let events: Vec<&Value> = player.messages[&conv]
        .iter()
        .filter(|m| m["event"] == "requeued")
        .collect();
    assert_eq!(events.len(), 1, "{:?}", player.messages[&conv]);
    assert_eq!(violations(&[&player]), Vec::<String>::new());
}

/// An agent with consoles on two nodes signs out on one: both close with 4003,
/// the chat they owned goes back to the queue at once, for another agent, and
/// their session token is refused on both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_on_one_node_closes_every_console_and_hands_the_chats_back() {
    let cluster = Cluster::start(Setup::nodes(2)).await;
    cluster.add_agent("ayla", 1, false);
    cluster.add_agent("boris", 1, false);
    let token = cluster.login("ayla").await;
    let mut floor = Floor::new(vec![cluster.agent("ayla", &token, 1).await]);
    let conv = floor.arrive(&cluster, 0, true).await;
    let mut other_tab = cluster.agent("ayla", &token, 0).await;
    let boris_token = cluster.login("boris").await;
    let mut boris = cluster.agent("boris", &boris_token, 0).await;

    let (player, ayla) = (&mut floor.players[0], &mut floor.agents[0]);
    let mark = player.mark();
    assert!(ayla.send(json!({"type":"sign_out"})).await);
    ayla.wait("ayla's console closed", SETTLE, |p| p.closed.is_some())
        .await;
    assert_eq!(ayla.closed, Some(Some(4003)));
    other_tab
        .wait("her other console closed", SETTLE, |p| p.closed.is_some())
        .await;
    assert_eq!(other_tab.closed, Some(Some(4003)));
    player
        .wait_frame(mark, "the requeued event", SETTLE, |f| {
            f["type"] == "message" && f["event"] == "requeued"
        })
        .await;
    if let Err(why) = accept(&mut boris, player, &conv).await {
        panic!("{why}");
    }
    let detail = cluster.nodes[0]
        .get_json(&format!("/api/conversations/{conv}"), &boris_token)
        .await;
    assert_eq!(detail["conversation"]["agent"], "boris", "{detail}");
    let reasons: Vec<&Value> = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "requeued")
        .map(|e| &e["detail"]["reason"])
        .collect();
    assert_eq!(reasons, [&json!("signed_out")], "{detail}");

    // The session itself ended, on every node: the token is refused everywhere.
    for node in 0..2 {
        let res = reqwest::Client::new()
            .get(format!("http://{}/api/me", cluster.addr(node)))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET /api/me");
        assert_eq!(res.status(), 401, "node {node}");
    }
}

/// Whether an agent got a definite answer about `conversation` after `since`:
/// `assigned`, or a refused accept, or a withdrawn offer.
fn settled(agent: &Peer, since: usize, conversation: &str) -> bool {
    agent
        .find(since, |f| {
            f["conversation"] == conversation
                && (f["type"] == "assigned"
                    || f["type"] == "offer_withdrawn"
                    || (f["type"] == "error" && f["frame"] == "accept"))
        })
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_racing_for_one_player_assign_it_once() {
    let cluster = Cluster::start(Setup::nodes(3)).await;
    let leader = cluster.wait_leader(None).await;
    let (nx, ny, np) = (leader, (leader + 1) % 3, (leader + 2) % 3);
    cluster.add_agent("xavi", 1, false);
    cluster.add_agent("yuki", 1, false);
    cluster.add_agent("boss", 1, true);
    let boss = cluster.login("boss").await;
    let (tx, ty) = (cluster.login("xavi").await, cluster.login("yuki").await);
    // X, on the routing node, is offered the player's chat; Y comes online after.
    let mut x = cluster.agent("xavi", &tx, nx).await;
    let mut player = cluster.visitor("player", np).await;
    let conv = start(&mut player).await;
    x.wait_frame(0, "the first offer", SETTLE, |f| {
        f["type"] == "offer" && f["conversation"] == conv.as_str()
    })
    .await;
    let mut y = cluster.agent("yuki", &ty, ny).await;

    // The routing node freezes past its lease: another node routes, and (X's
    // node being silent) offers the chat to Y.
    cluster.stop(nx);
    let frozen = Instant::now();
    let new_leader = cluster.wait_leader(Some(nx)).await;
    y.wait_frame(0, "the second offer", SETTLE, |f| {
        f["type"] == "offer" && f["conversation"] == conv.as_str()
    })
    .await;
    eprintln!(
        "{} routes {:?} after the freeze",
        Cluster::name(new_leader),
        frozen.elapsed()
    );

    // Both accept what they were offered at the same moment, as X's node wakes.
    let (mx, my, mp) = (x.mark(), y.mark(), player.mark());
    x.send(json!({"type":"accept","conversation":conv})).await;
    y.send(json!({"type":"accept","conversation":conv})).await;
    cluster.resume(nx);
    until(
        "both agents answered, the player assigned",
        SETTLE,
        &mut [&mut x, &mut y, &mut player],
        |p| {
            settled(p[0], mx, &conv)
                && settled(p[1], my, &conv)
                && p[2]
                    .find(mp, |f| {
                        f["type"] == "assigned" && f["conversation"] == conv.as_str()
                    })
                    .is_some()
        },
    )
    .await;
    let assigned = |p: &Peer, since: usize| {
        p.frames[since..]
            .iter()
            .filter(|f| f["type"] == "assigned" && f["conversation"] == conv.as_str())
            .count()
    };
    let (ax, ay) = (assigned(&x, mx), assigned(&y, my));
    assert_eq!(
        ax + ay,
        1,
        "exactly one agent assigned (xavi {ax}, yuki {ay})\n{}\n{}",
        x.describe(),
        y.describe()
    );
    let (winner, loser) = if ax == 1 {
        (&mut x, &mut y)
    } else {
        (&mut y, &mut x)
    };
    let player_assigned: Vec<Value> = player
        .frames
        .iter()
        .filter(|f| f["type"] == "assigned")
        .cloned()
        .collect();
    assert_eq!(
        player_assigned.len(),
        1,
        "the player is assigned once: {player_assigned:?}"
    );
    assert_eq!(player_assigned[0]["agent"]["id"], winner.name.as_str());
    let s = cluster.summary(&conv, &boss).await;
    assert_eq!(
        (&s["state"], &s["agent"]),
        (&json!("active"), &json!(winner.name))
    );
    let stored = cluster.transcript(&conv, &boss).await;
    let joined = stored.iter().filter(|e| e["event"] == "joined").count();
    assert_eq!(joined, 1, "one joined event: {stored:?}");

    // The winner chats with the player across nodes; the loser is free again and
    // is offered the next player.
    let loser_since = if ax == 1 { my } else { mx };
    let loser_answer = loser
        .find(loser_since, |f| {
            f["conversation"] == conv.as_str()
                && (f["type"] == "offer_withdrawn" || f["type"] == "error")
        })
        .unwrap_or_default();
    let loser_name = loser.name.clone();
    winner.say(&conv, "w-1", "hello from the winner").await;
    player.say(&conv, "p-1", "hello back").await;
    until(
        "the chat goes on",
        SETTLE,
        &mut [&mut *winner, &mut player],
        |p| {
            p.iter()
                .all(|p| p.last_seen(&conv) == stored.len() as u64 + 2)
        },
    )
    .await;
    let stored = cluster.transcript(&conv, &boss).await;
    check_exactly_once(&conv, &stored, &[&player, &*winner]);
    let lm = loser.mark();
    let mut next = cluster.visitor("next", new_leader).await;
    let next_conv = start(&mut next).await;
    loser
        .wait_frame(lm, "an offer of the next player", SETTLE, |f| {
            f["type"] == "offer" && f["conversation"] == next_conv.as_str()
        })
        .await;
    assert_eq!(violations(&[&x, &y, &player, &next]), Vec::<String>::new());
    eprintln!("{loser_name} lost the race: {loser_answer}");
}

/// An agent who just connected to a node is online at once (that node tells the
/// router before `welcome`); the node's presence heartbeat listing the agent
/// follows within a tick or so. A pause of that node shorter than the presence ttl
/// (here 0.8 s of 1.5 s, the node staying alive in presence throughout) must not
/// take the agent offline meanwhile: a player who starts then is queued and
/// offered to the agent, and the offer is not withdrawn. (Without the pause the
/// same race hits an agent's first 200 ms or so, at random.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_who_just_connected_is_not_taken_offline_by_older_presence() {
    let cluster = Cluster::start(Setup::nodes(2)).await;
    let leader = cluster.wait_leader(None).await;
    let other = 1 - leader;
    // A node heartbeats on its next tick after a connection; the pause must catch
    // it before that, which a few attempts (each a fresh agent) make sure of.
    let mut caught = None;
    for k in 0..5 {
        let login = format!("fresh{k}");
        cluster.add_agent_in(&login, &format!("desk{k}"), 2);
        let token = cluster.login(&login).await;
        let agent = cluster.agent(&login, &token, other).await;
        cluster.stop(other);
        let paused = Instant::now();
        let (entries, _) = cluster.presence(other).await.expect("presence of the node");
        if !entries.contains(&format!("agent:online:{login}")) {
            caught = Some((k, agent, paused));
            break;
        }
        cluster.resume(other);
    }
    let (k, mut agent, paused) = caught.expect("a pause before the heartbeat, in 5 attempts");
    // The router reconciles presence every heartbeat (0.5 s, on 0.2 s ticks).
    while paused.elapsed() < Duration::from_millis(700) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, alive_for) = cluster.presence(other).await.unwrap();
    let mut player = cluster.visitor("player", leader).await;
    let pm = player.mark();
    player
        .send(json!({"type":"start","department":format!("desk{k}")}))
        .await;
    let answer = player
        .wait_frame(pm, "queued or no_agents", SETTLE, |f| {
            f["type"] == "queued" || f["type"] == "no_agents"
        })
        .await;
    while paused.elapsed() < Duration::from_millis(800) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.resume(other);
    assert!(
        alive_for > 0,
        "precondition: {} still alive in presence when the player started",
        Cluster::name(other)
    );
    assert_eq!(
        answer["type"],
        "queued",
        "{} is connected and online on {} (alive in presence for {alive_for} ms more), \
         yet `start` answered {answer}",
        agent.name,
        Cluster::name(other)
    );
    let conv = answer["conversation"].as_str().unwrap().to_owned();
    let mut incidents = Vec::new();
    let since = [0];
    let mut agents = [agent];
    assign(&conv, &mut player, &mut agents, &since, &mut incidents).await;
    agent = agents.into_iter().next().unwrap();
    assert_eq!(incidents, Vec::<String>::new(), "offers withdrawn");
    assert_eq!(violations(&[&agent, &player]), Vec::<String>::new());
}

/// Presence: an agent whose node dies is offline for routing within three
/// heartbeats; their conversation stays theirs for the grace period, then waits at
/// the head of the queue (ahead of a player who was already waiting); a queued
/// player whose node died and who does not come back is marked abandoned, while a
/// queued player still connected elsewhere keeps waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_agents_go_offline_then_lose_their_chats_and_its_players_are_abandoned() {
    let grace = Duration::from_secs(3);
    let abandon = Duration::from_secs(2);
    let setup = Setup {
        node_args: ["--agent-grace-secs", "3", "--abandon-after-secs", "2"]
            .map(String::from)
            .to_vec(),
        ..Setup::nodes(2)
    };
    let mut cluster = Cluster::start(setup).await;
    let leader = cluster.wait_leader(None).await;
    let doomed = 1 - leader;
    cluster.add_agent("full", 1, false);
    cluster.add_agent("gone", 1, false);
    cluster.add_agent("boss", 1, true);
    let boss = cluster.login("boss").await;

    // `full` (on the routing node) and `gone` (on the other) each take one chat.
    let token = cluster.login("full").await;
    let mut full = cluster.agent("full", &token, leader).await;
    let mut p0 = cluster.visitor("p0", leader).await;
    let c0 = start(&mut p0).await;
    accept(&mut full, &mut p0, &c0).await.unwrap();
    let token = cluster.login("gone").await;
    let mut gone = cluster.agent("gone", &token, doomed).await;
    let mut p1 = cluster.visitor("p1", leader).await;
    let c1 = start(&mut p1).await;
    accept(&mut gone, &mut p1, &c1).await.unwrap();

    // Both are full: p2 (on the routing node) and p3 (on the doomed node) wait.
    let mut p2 = cluster.visitor("p2", leader).await;
    let c2 = start(&mut p2).await;
    p2.wait("p2 first in line", SETTLE, |p| position(p, &c2) == Some(1))
        .await;
    let mut p3 = cluster.visitor("p3", doomed).await;
    let c3 = start(&mut p3).await;
    p3.wait("p3 second in line", SETTLE, |p| position(p, &c3) == Some(2))
        .await;

    cluster.kill(doomed);
    let killed = Instant::now();
    let node = &cluster.nodes[leader];
    let deadline = killed + SETTLE;
    loop {
        let agents = node.get_json("/api/agents", &boss).await;
        let status = agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == "gone")
            .map(|a| a["status"].clone());
        if status == Some(json!("offline")) {
            break;
        }
        assert!(Instant::now() < deadline, "gone is still {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let offline_after = killed.elapsed();
    // Three heartbeats of presence ttl, plus one heartbeat for the routing node
    // to look, plus a tick.
    assert!(
        offline_after <= LEASE_TTL + Duration::from_millis(700),
        "gone went offline {offline_after:?} after its node died"
    );
    assert_eq!(
        cluster.summary(&c1, &boss).await["agent"],
        "gone",
        "still theirs"
    );

    // After the grace period, c1 waits at the head of the queue, ahead of p2.
    let mut peers = [&mut p1, &mut p2];
    until(
        "c1 requeued at the head, p2 second",
        grace + SETTLE,
        &mut peers,
        |p| position(p[0], &c1) == Some(1) && position(p[1], &c2) == Some(2),
    )
    .await;
    assert!(
        killed.elapsed() >= grace,
        "requeued after {:?}, before the grace period",
        killed.elapsed()
    );
    let summary = cluster.summary(&c1, &boss).await;
    assert_eq!(summary["state"], "queued", "{summary}");

    // p3's node died and p3 did not come back: abandoned. p2 stays queued.
    let deadline = Instant::now() + abandon + SETTLE;
    loop {
        let s = cluster.summary(&c3, &boss).await;
        if s["state"] == "closed" {
            break;
        }
        assert!(Instant::now() < deadline, "c3 not abandoned: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = cluster.transcript(&c3, &boss).await;
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "closed"
                && e["text"] == "The player left before an agent was free."),
        "{events:?}"
    );
    assert_eq!(cluster.summary(&c2, &boss).await["state"], "queued");

    // `full` frees a slot: the head of the queue (c1) is offered first.
    let mark = full.mark();
    assert!(full.send(json!({"type":"close","conversation":c0})).await);
    full.wait_frame(mark, "the offer of c1", SETTLE, |f| {
        f["type"] == "offer" && f["conversation"] == c1.as_str()
    })
    .await;
    assert!(full
        .find(mark, |f| f["type"] == "offer"
            && f["conversation"] == c2.as_str())
        .is_none());
}

/// `GET /readyz` of node `i`: its status code.
/// What a fresh connection to node `i` gets for a `hello` with `auth`: the first
/// frame's type and code, and the close code if the node closes it (a `welcome`
/// is answer enough).
async fn hello_answer(cluster: &Cluster, i: usize, auth: Value) -> (Value, Value, Option<u16>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{}/ws", cluster.addr(i));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let hello = json!({"type":"hello","protocol":1,"auth":auth});
    ws.send(Message::Text(hello.to_string().into()))
        .await
        .expect("send hello");
    let mut first = Value::Null;
    let mut close = None;
    let _ = tokio::time::timeout(Duration::from_secs(45), async {
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Text(t) if first.is_null() => {
                    first = serde_json::from_str(&t).expect("JSON");
                    if first["type"] == "welcome" {
                        break;
                    }
                }
                Message::Close(f) => {
                    close = f.map(|f| u16::from(f.code));
                    break;
                }
                _ => {}
            }
        }
    })
    .await;
    (first["type"].clone(), first["code"].clone(), close)
}

async fn readyz(cluster: &Cluster, i: usize) -> u16 {
    match reqwest::get(cluster.nodes[i].url("/readyz")).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Polls `/readyz` of node `i` until it answers `status`.
async fn wait_ready(cluster: &Cluster, i: usize, status: u16) {
    let begun = Instant::now();
    while readyz(cluster, i).await != status {
        assert!(
            begun.elapsed() < SETTLE,
            "/readyz of {} is not {status} after {SETTLE:?}",
            Cluster::name(i)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_refuses_new_players_until_it_returns() {
    let mut cluster = Cluster::start(Setup::nodes(1)).await;
    cluster.add_agent("ayla", 3, false);
    cluster.add_agent("boss", 1, true);
    let boss = cluster.login("boss").await;
    let token = cluster.login("ayla").await;
    let mut agents = vec![cluster.agent("ayla", &token, 0).await];
    let mut player = cluster.visitor("pat", 0).await;
    let player_id = player.welcome["you"]["id"].as_str().unwrap().to_owned();

    // Without Redis the node cannot route: it says so on /readyz, and a `start`
    // is refused by that same rule at once (not after waiting for a router that
    // cannot answer), with the documented code, every time it is tried.
    cluster.redis.kill();
    wait_ready(&cluster, 0, 503).await;
    for _ in 0..3 {
        let mark = player.mark();
        assert!(player.send(json!({"type":"start"})).await);
        let f = player
            .wait_frame(mark, "an answer to start", SETTLE, |f| {
                f["type"] == "error" || f["type"] == "resumed" || f["type"] == "queued"
            })
            .await;
        assert_eq!(f["type"], "error", "{f}");
        assert_eq!(f["code"], "overloaded", "{f}");
        assert_eq!(f["frame"], "start", "{f}");
        assert!(
            f["message"]
                .as_str()
                .is_some_and(|m| m.contains("no new conversations") && m.contains("redis")),
            "refused by the readiness rule: {f}"
        );
    }
    // Nothing was stored for the player meanwhile.
    let (status, body) = cluster.nodes[0]
        .get(&format!("/api/players/{player_id}/conversations"), &boss)
        .await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["conversations"], json!([]), "{body}");

    // Redis returns (empty): the node is ready again and takes the player, who is
    // routed to the agent.
    cluster.redis.restart();
    wait_ready(&cluster, 0, 200).await;
    let since = vec![agents[0].mark()];
    let conversation = start(&mut player).await;
    let mut incidents = Vec::new();
    assign(
        &conversation,
        &mut player,
        &mut agents,
        &since,
        &mut incidents,
    )
    .await;
    assert!(agents[0].say(&conversation, "a1", "hello again").await);
    agents[0]
        .wait("the ack", SETTLE, |a| a.acked("a1").is_some())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_store_is_down_refuses_new_players_until_it_returns() {
    let mut cluster = Cluster::start(Setup {
        own_postgres: true,
        ..Setup::nodes(1)
    })
    .await;
    cluster.add_agent("ayla", 3, false);
    let token = cluster.login("ayla").await;
    let mut agents = vec![cluster.agent("ayla", &token, 0).await];
    let mut player = cluster.visitor("pat", 0).await;

    // PostgreSQL stops. Every `start` is refused with `overloaded` (at first
    // perhaps by the failing write itself); once the node's store probe has
    // failed for long enough, by the readiness rule, without touching the store.
    cluster.postgres.as_mut().unwrap().stop();
    wait_ready(&cluster, 0, 503).await;
    let begun = Instant::now();
    loop {
        let mark = player.mark();
        assert!(player.send(json!({"type":"start"})).await);
        let f = player
            .wait_frame(mark, "an answer to start", SETTLE, |f| {
                f["type"] == "error" || f["type"] == "resumed" || f["type"] == "queued"
            })
            .await;
        assert_eq!(f["type"], "error", "a player taken without a store: {f}");
        assert_eq!(f["code"], "overloaded", "{f}");
        if f["message"]
            .as_str()
            .is_some_and(|m| m.contains("no new conversations") && m.contains("store"))
        {
            break;
        }
        assert!(
            begun.elapsed() < 2 * SETTLE,
            "the readiness rule never refused the start: {f}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cluster.postgres.as_mut().unwrap().start();
    wait_ready(&cluster, 0, 200).await;
    let since = vec![agents[0].mark()];
    let conversation = start(&mut player).await;
    let mut incidents = Vec::new();
    assign(
        &conversation,
        &mut player,
        &mut agents,
        &since,
        &mut incidents,
    )
    .await;
}

/// Two live nodes of one name would share a presence record and a hold on the
/// routing lease: the second is refused at start-up, naming the name. A node that
/// comes back under its own name after a crash, while its last heartbeat is still
/// listed, waits that heartbeat out and starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_name_is_refused_while_a_live_node_has_it() {
    let mut cluster = Cluster::start(Setup::nodes(1)).await;
    let dir = common::tempdir();
    let redis_url = cluster.redis.url();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--node", "node-1"])
        .args([
            "--redis-url",
            &redis_url,
            "--database-url",
            &cluster.database_url,
        ])
        .args(["--heartbeat-secs", HEARTBEAT_SECS, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second node-1 started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already named \"node-1\""),
        "the refusal names the name: {err}"
    );
    assert!(
        cluster.nodes[0].healthy().await,
        "the first node-1 carries on"
    );

    cluster.kill(0);
    assert!(
        cluster.presence(0).await.is_some_and(|(_, left)| left > 0),
        "still listed"
    );
    cluster.restart(0);
    cluster.wait_leader(None).await;
    assert!(
        cluster.nodes[0].logs().contains("waiting"),
        "{}",
        cluster.nodes[0].logs()
    );
}

/// `pitboss_queue_length` of node `i` for the `general` department.
async fn queue_length(cluster: &Cluster, i: usize) -> Option<f64> {
    let page = reqwest::get(cluster.nodes[i].url("/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let series = "pitboss_queue_length{department=\"general\"} ";
    page.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

/// The queue's length is the routing node's to report: a node that loses
/// routing (frozen past its lease, then thawed) reports 0, so that a sum over
/// nodes counts each waiting player once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_routing_reports_no_queue() {
    let cluster = Cluster::start(Setup::nodes(2)).await;
    cluster.add_agent("ayla", 1, false);
    let token = cluster.login("ayla").await;
    let leader = cluster.wait_leader(None).await;
    let other = 1 - leader;
    let mut ayla = cluster.agent("ayla", &token, other).await;
    let mut first = cluster.visitor("first", other).await;
    let conv = start(&mut first).await;
    if let Err(why) = accept(&mut ayla, &mut first, &conv).await {
        panic!("{why}");
    }
    // Ayla is full: the second player waits.
    let mut second = cluster.visitor("second", other).await;
    start(&mut second).await;
    let begun = Instant::now();
    while queue_length(&cluster, leader).await != Some(1.0) {
        assert!(
            begun.elapsed() < SETTLE,
            "the routing node counts the waiting player"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    cluster.stop(leader);
    assert_eq!(cluster.wait_leader(Some(leader)).await, other);
    cluster.resume(leader);
    let begun = Instant::now();
    loop {
        let counts = (
            queue_length(&cluster, leader).await,
            queue_length(&cluster, other).await,
        );
        if counts == (Some(0.0), Some(1.0)) {
            break;
        }
        assert!(
            begun.elapsed() < SETTLE,
            "old and new routing node report {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// PostgreSQL restarted (as for maintenance): every connection the node kept, the
/// writer's and the idle readers', died with the old server. Once `/readyz` is 200
/// again, the first write of each kind succeeds: a supervisor's transcript read
/// (whose audit record goes through the writer), a message in an existing chat, and
/// a new visitor's `start`. Each is the first write after its own restart, so each
/// meets a writer connection that is already dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_writes_after_a_postgres_restart_succeed() {
    let mut cluster = Cluster::start(Setup {
        own_postgres: true,
        ..Setup::nodes(1)
    })
    .await;
    cluster.add_agent("ayla", 3, false);
    cluster.add_agent("boss", 1, true);
    let boss = cluster.login("boss").await;
    let token = cluster.login("ayla").await;
    let mut floor = Floor::new(vec![cluster.agent("ayla", &token, 0).await]);
    let conv = floor.arrive(&cluster, 0, true).await;
    floor.round(0).await;
    floor.acked().await;

    for step in ["transcript", "message", "start"] {
        let pg = cluster.postgres.as_mut().unwrap();
        pg.stop();
        pg.start();
        wait_ready(&cluster, 0, 200).await;
        let back = Instant::now();
        match step {
            "transcript" => {
                let path = format!("/api/conversations/{conv}/transcript");
                let (status, body) = cluster.nodes[0].get(&path, &boss).await;
                assert_eq!(
                    status, 200,
                    "the first transcript read after a restart: {body}"
                );
            }
            "message" => {
                let player = &mut floor.players[0];
                let mark = player.mark();
                assert!(player.say(&conv, "after-restart", "still here?").await);
                let got = answer(player, mark, "after-restart", SETTLE).await;
                let f = got.expect("an answer to the first message after a restart");
                assert_eq!(f["type"], "ack", "the first message after a restart: {f}");
            }
            _ => {
                let mut newcomer = cluster.visitor("newcomer", 0).await;
                let f = start_once(&mut newcomer).await;
                assert_eq!(f["type"], "resumed", "the first start after a restart: {f}");
                let conversation = f["conversation"].as_str().unwrap().to_owned();
                newcomer
                    .wait_frame(0, "queued or no_agents", SETTLE, |f| {
                        f["conversation"] == conversation.as_str()
                            && (f["type"] == "queued" || f["type"] == "no_agents")
                    })
                    .await;
            }
        }
        eprintln!(
            "{step}: answered {:?} after /readyz was 200",
            back.elapsed()
        );
    }
    floor.verify(&cluster, &boss).await;
}

/// An agent routing set away (an offer left unanswered) on a node that does not
/// lead is still away after the leader is lost: their node announces the status
/// routing gave them, and the new router starts from it rather than offering
/// them chats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_set_away_by_routing_stays_away_after_a_failover() {
    let mut cluster = Cluster::start(Setup {
        node_args: vec!["--offer-timeout-secs".into(), "1".into()],
        ..Setup::nodes(2)
    })
    .await;
    cluster.add_agent("ayla", 1, false);
    cluster.add_agent("sam", 1, true);
    let leader = cluster.wait_leader(None).await;
    let other = 1 - leader;
    let token = cluster.login("ayla").await;
    let mut ayla = cluster.agent("ayla", &token, other).await;
    let mark = ayla.mark();
    let mut player = cluster.visitor("player", other).await;
    assert!(player.send(json!({"type":"start"})).await);
    ayla.wait_frame(mark, "away after the unanswered offer", SETTLE, |f| {
        f["type"] == "status" && f["status"] == "away"
    })
    .await;

    cluster.kill(leader);
    assert_eq!(cluster.wait_leader(Some(leader)).await, other);
    let sam = cluster.login("sam").await;
    let status = || async {
        let agents = cluster.nodes[other].get_json("/api/agents", &sam).await;
        agents["agents"]
            .as_array()
            .and_then(|list| list.iter().find(|a| a["id"] == "ayla"))
            .map(|a| a["status"].clone())
            .unwrap_or(Value::Null)
    };
    // The new router has heard the nodes' presence well within this.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status().await, json!("away"));
    ayla.pump();
    let mark = ayla.mark();
    tokio::time::sleep(Duration::from_secs(2)).await;
    ayla.pump();
    assert_eq!(
        ayla.find(mark, |f| f["type"] == "offer"),
        None,
        "no chat offered to an agent who is away"
    );
}
