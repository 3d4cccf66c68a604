// The shared protocol client (static/client.js) against a scripted socket: what it
// sends, what it hands to the UI, how it reconnects. The end-to-end tests drive the
// same file against a real server.

import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import vm from "node:vm";
import { STATIC_DIR, sleep } from "./helpers.mjs";

const SOURCE = readFileSync(join(STATIC_DIR, "client.js"), "utf8");

/** A WebSocket whose other end is the test. */
class FakeSocket {
  constructor(url) {
    this.url = url;
    this.sent = [];
    FakeSocket.all.push(this);
    setTimeout(() => this.onopen && this.onopen(), 0);
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code = 1000) {
    if (this.closed) return;
    this.closed = true;
    setTimeout(() => this.onclose && this.onclose({ code }), 0);
  }
  /** A frame from the server. */
  recv(frame) { this.onmessage({ data: JSON.stringify(frame) }); }
  /** The server (or the network) ends the connection. */
  drop(code = 1006) { this.closed = true; this.onclose({ code }); }
  types() { return this.sent.map((f) => f.type); }
}
FakeSocket.all = [];

function load() {
  const context = vm.createContext({ setTimeout, clearTimeout, setInterval, clearInterval, console, crypto: globalThis.crypto });
  context.self = context;
  vm.runInContext(SOURCE, context, { filename: "client.js" });
  return context.Pitboss.Client;
}

const Client = load();
const plain = (v) => JSON.parse(JSON.stringify(v)); // objects from the script's realm
const running = [];
afterEach(() => { while (running.length) running.pop().stop(); });
const WELCOME = { type: "welcome", protocol: 1, you: { role: "player", id: "v:1" }, conversations: [], limits: { frames_per_second: 20, burst_frames: 40 } };

async function connected(opts = {}) {
  FakeSocket.all = [];
  const calls = [];
  const events = [];
  const client = new Client({
    url: "ws://chat.test/ws",
    WebSocket: FakeSocket,
    minDelay: 5,
    maxDelay: 20,
    auth: async (info) => { calls.push(info); return opts.auth ? opts.auth(info) : { kind: "visitor" }; },
    storage: opts.storage,
  });
  running.push(client);
  for (const type of ["message", "ack", "failed", "state", "auth_failed", "reset"]) client.on(type, (f) => events.push([type, f]));
  client.start();
  const ws = await until(() => FakeSocket.all[0]);
  await until(() => ws.sent.length > 0);
  if (opts.welcome !== false) ws.recv(opts.welcomeFrame || WELCOME);
  return { client, ws, calls, events };
}

async function until(fn, ms = 2000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error("condition not reached: " + fn);
    await sleep(2);
  }
}

const msg = (seq, prev, extra = {}) => ({ type: "message", conversation: "C", seq, prev, kind: "text", sender: { role: "agent", id: "ayla" }, text: "m" + seq, at: 1, ...extra });

test("hello comes first, with the credentials of the auth callback", async () => {
  const { client, ws, calls } = await connected({ auth: () => ({ kind: "visitor", token: "v1.x", language: "tr" }) });
  assert.deepEqual(ws.sent[0], { type: "hello", protocol: 1, auth: { kind: "visitor", token: "v1.x", language: "tr" } });
  assert.deepEqual(plain(calls), [{ expired: false }]);
  assert.equal(client.state, "open");
  client.stop();
});

test("duplicates are dropped and a gap is filled by resuming from the last seq seen", async () => {
  const { client, ws, events } = await connected();
  client.watch("C", { after: 0 });
  assert.deepEqual(ws.sent.at(-1), { type: "resume", conversation: "C", after: 0 });
  ws.recv(msg(1, 0));
  ws.recv(msg(2, 1));
  ws.recv({ type: "resumed", conversation: "C", last_seq: 2 });
  ws.recv(msg(2, 1)); // the same entry again (a replay overlap)
  ws.recv(msg(5, 4)); // 3 and 4 are missing
  assert.deepEqual(ws.sent.at(-1), { type: "resume", conversation: "C", after: 2 });
  ws.recv(msg(6, 5)); // still missing 3 and 4: no second resume
  assert.equal(ws.sent.filter((f) => f.type === "resume").length, 2, "one resume per gap");
  for (const [s, p] of [[3, 2], [4, 3], [5, 4], [6, 5]]) ws.recv(msg(s, p));
  ws.recv({ type: "resumed", conversation: "C", last_seq: 6 });
  const seqs = events.filter(([e]) => e === "message").map(([, m]) => m.seq);
  assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6]);
  assert.equal(client.last("C"), 6);
  client.stop();
});

test("an unacknowledged message is sent again after a reconnect, with the same client_id", async () => {
  const { client, ws, events } = await connected();
  client.watch("C", { after: 0 });
  ws.recv({ type: "resumed", conversation: "C", last_seq: 0 });
  const entry = client.say("C", "where is my deposit?");
  const first = ws.sent.at(-1);
  assert.deepEqual(first, { type: "send", conversation: "C", client_id: entry.client_id, text: "where is my deposit?" });
  ws.drop(1006); // lost before the ack
  assert.notEqual(client.state, "open");
  const ws2 = await until(() => FakeSocket.all[1]);
  await until(() => ws2.sent.length > 0);
  assert.equal(ws2.sent[0].type, "hello");
  ws2.recv(WELCOME);
  assert.deepEqual(ws2.sent.at(-1), { type: "resume", conversation: "C", after: 0 });
  ws2.recv({ type: "resumed", conversation: "C", last_seq: 0 });
  assert.deepEqual(ws2.sent.at(-1), first, "the resend carries the same client_id and text");
  ws2.recv({ type: "ack", conversation: "C", client_id: entry.client_id, seq: 1, prev: 0, duplicate: true });
  assert.equal(client.pending("C").length, 0);
  assert.deepEqual(events.filter(([e]) => e === "ack").map(([, a]) => a.seq), [1]);
  client.stop();
});

test("a message typed while offline waits, and is sent once, when the conversation is attached", async () => {
  const { client, ws } = await connected({ welcome: false });
  client.watch("C", { after: 3, resume: false });
  const entry = client.say("C", "typed offline");
  assert.deepEqual(ws.types(), ["hello"]);
  ws.recv(WELCOME);
  assert.deepEqual(ws.sent.at(-1), { type: "resume", conversation: "C", after: 3 });
  ws.recv({ type: "resumed", conversation: "C", last_seq: 3 });
  ws.recv({ type: "resumed", conversation: "C", last_seq: 3 });
  assert.equal(ws.sent.filter((f) => f.client_id === entry.client_id).length, 1);
  client.stop();
});

test("the outbox survives a page load through its storage", async () => {
  let saved = [];
  const storage = { load: () => saved, save: (list) => { saved = list; } };
  const a = await connected({ storage });
  const entry = a.client.say("C", "keep me");
  a.client.stop();
  assert.equal(saved.length, 1);
  const b = await connected({ storage });
  assert.deepEqual(plain(b.client.pending("C").map((e) => [e.client_id, e.text])), [[entry.client_id, "keep me"]]);
  b.client.stop();
});

test("a refused message is given up and reported; an overloaded one is retried", async () => {
  const { client, ws, events } = await connected();
  client.watch("C", { after: 0 });
  ws.recv({ type: "resumed", conversation: "C", last_seq: 0 });
  const bad = client.say("C", "x");
  ws.recv({ type: "error", code: "invalid_state", message: "closed", frame: "send", conversation: "C", client_id: bad.client_id });
  assert.equal(client.pending("C").length, 0);
  assert.deepEqual(events.filter(([e]) => e === "failed").map(([, f]) => f.code), ["invalid_state"]);
  const busy = client.say("C", "y");
  ws.recv({ type: "error", code: "overloaded", message: "busy", frame: "send", conversation: "C", client_id: busy.client_id });
  assert.equal(client.pending("C").length, 1);
  client.stop();
});

test("a player's messages are paced to the message budget in welcome, in order", async () => {
  // 80 a minute in bursts of 4: the client keeps to 75 %, bursts of 3, one every second.
  const limits = { frames_per_second: 20, burst_frames: 40, player_messages_per_minute: 80, player_message_burst: 4 };
  const { client, ws } = await connected({ welcomeFrame: { ...WELCOME, limits } });
  client.watch("C", { after: 0 });
  ws.recv({ type: "resumed", conversation: "C", last_seq: 0 });
  const said = [1, 2, 3, 4, 5].map((n) => client.say("C", "m" + n).client_id);
  const sends = () => ws.sent.filter((f) => f.type === "send").map((f) => f.client_id);
  assert.deepEqual(sends(), said.slice(0, 3), "a burst of three at once");
  const started = Date.now();
  await until(() => sends().length === 4, 3000);
  assert.ok(Date.now() - started >= 800, `the fourth waited for the budget (${Date.now() - started} ms)`);
  await until(() => sends().length === 5, 3000);
  assert.deepEqual(sends(), said, "in the order said, each once");
  client.stop();
});

test("an agent's messages are not paced by a player's budget", async () => {
  const agentWelcome = { ...WELCOME, you: { role: "agent", id: "ayla" } };
  const { client, ws } = await connected({ welcomeFrame: agentWelcome });
  client.watch("C", { after: 0 });
  ws.recv({ type: "resumed", conversation: "C", last_seq: 0 });
  for (let n = 0; n < 8; n++) client.say("C", "a" + n);
  await until(() => ws.sent.filter((f) => f.type === "send").length === 8, 1000);
  client.stop();
});

test("an expired token makes the client ask for a fresh one and reconnect", async () => {
  const { client, ws, calls } = await connected({ welcome: false });
  ws.recv({ type: "error", code: "token_expired", message: "expired", frame: "hello" });
  ws.drop(4002);
  const ws2 = await until(() => FakeSocket.all[1]);
  await until(() => ws2.sent.length > 0);
  assert.deepEqual(plain(calls), [{ expired: false }, { expired: true }]);
  client.stop();
});

test("refused credentials stop the client instead of retrying forever", async () => {
  const { client, ws, events } = await connected({ welcome: false });
  ws.drop(4001);
  await sleep(60);
  assert.equal(FakeSocket.all.length, 1, "no new connection");
  assert.equal(client.state, "failed");
  assert.ok(events.some(([e]) => e === "auth_failed"));
  client.stop();
});

test("a sign-out (4003) stops the client and says why", async () => {
  const { client, ws, events } = await connected();
  ws.drop(4003);
  await sleep(60);
  assert.equal(FakeSocket.all.length, 1, "no new connection");
  assert.equal(client.state, "failed");
  const failed = events.find(([e]) => e === "auth_failed");
  assert.ok(failed, "auth_failed emitted");
  assert.equal(failed[1].reason, "signed_out");
  client.stop();
});

test("a server restart (1012) and a slow-consumer close (4008) reconnect and resume", async () => {
  for (const code of [1012, 4008]) {
    const { client, ws } = await connected();
    client.watch("C", { after: 0 });
    ws.recv(msg(1, 0));
    ws.drop(code);
    const ws2 = await until(() => FakeSocket.all[1], 3000);
    await until(() => ws2.sent.length > 0);
    ws2.recv(WELCOME);
    assert.deepEqual(ws2.sent.at(-1), { type: "resume", conversation: "C", after: 1 }, `after close ${code}`);
    client.stop();
  }
});

test("typing indicators are dropped, not queued, once the rate budget is spent", async () => {
  const welcome = { ...WELCOME, limits: { frames_per_second: 2, burst_frames: 4 } };
  const { client, ws } = await connected({ welcomeFrame: welcome });
  const before = ws.sent.length;
  const results = [1, 2, 3, 4].map(() => client.send({ type: "typing", conversation: "C", active: true }));
  assert.deepEqual(results, [true, true, false, false]);
  assert.equal(ws.sent.length - before, 2);
  client.send({ type: "history" }); // not droppable: waits for budget, then goes
  assert.equal(ws.sent.length - before, 2);
  await until(() => ws.sent.at(-1).type === "history", 3000);
  client.stop();
});

test("the browser going offline drops the connection at once; back online, it connects without waiting", async () => {
  // A window that can say online and offline.
  const net = new EventTarget();
  const context = vm.createContext({ setTimeout, clearTimeout, setInterval, clearInterval, console, crypto: globalThis.crypto,
    addEventListener: net.addEventListener.bind(net), removeEventListener: net.removeEventListener.bind(net) });
  context.self = context;
  vm.runInContext(SOURCE, context, { filename: "client.js" });
  FakeSocket.all = [];
  // A long backoff: only the "online" event can reconnect within the test's wait.
  const client = new context.Pitboss.Client({ url: "ws://chat.test/ws", WebSocket: FakeSocket, minDelay: 5000, maxDelay: 10000, auth: async () => ({ kind: "visitor" }) });
  running.push(client);
  client.start();
  const ws = await until(() => FakeSocket.all[0]);
  await until(() => ws.sent.length > 0);
  ws.recv(WELCOME);
  assert.equal(client.state, "open");
  net.dispatchEvent(new Event("offline"));
  assert.equal(client.state, "reconnecting", "at once, not after the keep-alive ping");
  assert.ok(ws.closed, "the dead socket is given up");
  await sleep(50);
  assert.equal(FakeSocket.all.length, 1, "no new socket before the network is back");
  net.dispatchEvent(new Event("online"));
  const ws2 = await until(() => FakeSocket.all[1], 1000);
  await until(() => ws2.sent.length > 0);
  ws2.recv(WELCOME);
  assert.equal(client.state, "open");
});
