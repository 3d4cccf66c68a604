/*! Pitboss protocol client (docs/protocol.md) for the widget and the console:
 * reconnects, resumes by seq, dedups, keeps an outbox keyed by client_id, paces
 * to the rate limit. No UI. A classic script (no CORS needed), global `Pitboss`. */
(function (root) {
  "use strict";
  var P = (root.Pitboss = root.Pitboss || {});
  if (P.Client) return;

  var PROTOCOL = 1;
  // Frames that are worth nothing late: dropped instead of queued when the
  // connection is down or the rate budget is spent.
  var DROPPABLE = { typing: 1, read: 1, ping: 1 };
  // Frames kept across a reconnect. Resumes and messages are not: the welcome
  // of the next connection re-issues them from current state.
  var KEEP = { start: 1, close: 1, rate: 1, history: 1, set_status: 1, transfer: 1, take: 1, accept: 1, decline: 1 };
  // Refusals after which a message is given up rather than retried.
  var FINAL = { invalid_state: 1, forbidden: 1, not_found: 1, text_too_long: 1, invalid_field: 1, conflict: 1, bad_frame: 1 };

  function randomId() {
    var b = new Uint8Array(12);
    (root.crypto || root.msCrypto).getRandomValues(b);
    var s = "";
    for (var i = 0; i < b.length; i++) s += (b[i] + 256).toString(16).slice(1);
    return s;
  }

  /**
   * new Pitboss.Client({url, auth, WebSocket?, storage?, now?})
   *  url      ws:// or wss:// address of /ws
   *  auth     async ({expired}) => auth object for hello ({kind:"visitor",…}),
   *           or null to give up (state "failed"). Called before every connect;
   *           `expired` is true after the server answered token_expired.
   *  storage  optional {load() => entries[], save(entries[])} to keep the outbox
   *           across page loads.
   */
  function Client(opts) {
    this.url = opts.url;
    this.auth = opts.auth;
    this.WS = opts.WebSocket || root.WebSocket;
    this.storage = opts.storage || null;
    this.now = opts.now || Date.now;
    this.minDelay = opts.minDelay || 500;
    this.maxDelay = opts.maxDelay || 10000;
    this.state = "idle"; // idle | connecting | open | reconnecting | failed | closed
    this.you = null;
    this.limits = null;
    this.handlers = {};
    this.convs = {}; // id → {last, watch, ready, resuming}
    this.outbox = []; // [{client_id, conversation, text, kind, at, sentOn}]
    this.queue = []; // frames waiting for the connection or for rate budget
    this.ws = null;
    this.serial = 0; // connection number, to tell which connection sent what
    this.attempt = 0;
    this.attemptId = 0;
    this.everOpen = false;
    this.expired = false;
    this.timer = null;
    this.pumpTimer = null;
    this.setRate(20, 40);
    this.lastRecv = 0;
    this.pingAt = 0;
    if (this.storage) {
      try {
        var saved = this.storage.load() || [];
        for (var i = 0; i < saved.length; i++) {
          var e = saved[i];
          if (e && e.client_id && e.conversation && typeof e.text === "string") {
            this.outbox.push({ client_id: e.client_id, conversation: e.conversation, text: e.text, kind: e.kind || "text", at: e.at || 0, sentOn: 0 });
          }
        }
      } catch (err) { /* a broken store must not stop the chat */ }
    }
    var self = this;
    this.onOnline = function () { if (self.state === "reconnecting" && !self.ws) self.connectSoon(0); };
    // Offline: at once, not after the ping's 35 s.
    this.onOffline = function () { self.reconnect(); };
    if (root.addEventListener) { root.addEventListener("online", this.onOnline); root.addEventListener("offline", this.onOffline); }
  }

  var C = Client.prototype;

  // ------------------------------------------------------------------ events

  /** Subscribes to an event: a server frame type ("queued", "offer"…), or one
   * of "state", "message" (new, in order, deduplicated), "ack", "failed",
   * "outbox", "reset", "auth_failed", "frame" (every frame). Returns an unsubscriber. */
  C.on = function (type, fn) {
    (this.handlers[type] = this.handlers[type] || []).push(fn);
    var list = this.handlers[type];
    return function () { var i = list.indexOf(fn); if (i >= 0) list.splice(i, 1); };
  };

  C.emit = function (type, data) {
    var list = (this.handlers[type] || []).slice();
    for (var i = 0; i < list.length; i++) {
      try { list[i](data, this); } catch (err) { if (root.console) root.console.error(err); }
    }
  };

  C.setState = function (state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  };

  // ------------------------------------------------------------- connection

  C.start = function () {
    if (this.state === "idle" || this.state === "failed" || this.state === "closed") {
      this.attempt = 0;
      this.connect();
    }
    return this;
  };

  /** Closes for good (log out, widget removed). */
  C.stop = function () {
    this.setState("closed");
    clearTimeout(this.timer);
    clearTimeout(this.pumpTimer);
    clearTimeout(this.flushTimer);
    clearInterval(this.beat);
    if (this.ws) { try { this.ws.close(1000); } catch (e) { /* already closed */ } }
    this.ws = null;
    if (root.removeEventListener) { root.removeEventListener("online", this.onOnline); root.removeEventListener("offline", this.onOffline); }
  };

  C.connect = function () {
    var self = this;
    clearTimeout(this.timer);
    if (this.state === "closed") return;
    this.setState(this.everOpen || this.attempt > 0 ? "reconnecting" : "connecting");
    var expired = this.expired;
    this.expired = false;
    // Only the latest attempt may open a socket (an "online" event can start a
    // new one while the previous one still waits for its credentials).
    var id = ++this.attemptId;
    Promise.resolve()
      .then(function () { return self.auth({ expired: expired }); })
      .then(function (auth) {
        if (self.state === "closed" || id !== self.attemptId) return;
        if (!auth) { self.fail("no credentials"); return; }
        self.open(auth);
      }, function (err) {
        if (self.state === "closed" || id !== self.attemptId) return;
        self.emit("error", { code: "auth_callback", message: String(err && err.message || err) });
        self.retry();
      });
  };

  C.open = function (auth) {
    var self = this;
    var ws;
    if (this.ws) { var old = this.ws; this.ws = null; try { old.close(1000); } catch (e) { /* gone */ } }
    try { ws = new this.WS(this.url); } catch (err) { this.retry(); return; }
    var serial = ++this.serial;
    this.ws = ws;
    var welcomed = false;
    // A socket that neither opens nor answers hello in time is given up.
    var deadline = setTimeout(function () { if (!welcomed) { try { ws.close(); } catch (e) { /* gone */ } } }, 10000);
    ws.onopen = function () {
      ws.send(JSON.stringify({ type: "hello", protocol: PROTOCOL, auth: auth }));
    };
    ws.onmessage = function (ev) {
      if (self.ws !== ws) return;
      var frame;
      try { frame = JSON.parse(ev.data); } catch (err) { return; }
      if (!frame || typeof frame.type !== "string") return;
      self.lastRecv = self.now();
      self.pingAt = 0;
      if (frame.type === "welcome") { welcomed = true; clearTimeout(deadline); }
      self.receive(frame, serial);
    };
    ws.onclose = function (ev) {
      clearTimeout(deadline);
      if (self.ws !== ws) return;
      self.closed(ev.code || 1006);
    };
    ws.onerror = function () { /* onclose follows */ };
  };

  C.closed = function (code) {
    this.ws = null;
    clearInterval(this.beat);
    clearTimeout(this.pumpTimer);
    for (var id in this.convs) { this.convs[id].ready = false; this.convs[id].resuming = false; }
    var kept = [];
    for (var i = 0; i < this.queue.length; i++) if (KEEP[this.queue[i].type]) kept.push(this.queue[i]);
    this.queue = kept;
    if (this.state === "closed" || this.state === "failed") return;
    this.emit("disconnect", { code: code });
    if (code === 4001) { this.fail("auth_failed"); return; }
    if (code === 4003) { this.fail("signed_out"); return; }
    if (code === 4000 && this.protocolError) { this.fail(this.protocolError); return; }
    if (code === 4002) { this.expired = true; this.connectSoon(this.attempt ? this.delay() : 100); this.attempt++; return; }
    if (code === 1012) { this.connectSoon(this.attempt ? this.delay() : 200 + Math.random() * 800); this.attempt++; return; }
    this.retry(code === 1013 || code === 4029 ? 3000 : 0);
  };

  C.fail = function (why) {
    this.setState("failed");
    this.emit("auth_failed", { reason: why });
  };

  C.delay = function () {
    var d = Math.min(this.maxDelay, this.minDelay * Math.pow(2, this.attempt));
    return d / 2 + Math.random() * d / 2; // jitter: clients do not come back in step
  };

  C.retry = function (atLeast) {
    var d = Math.max(atLeast || 0, this.delay());
    this.attempt++;
    this.connectSoon(d);
  };

  C.connectSoon = function (ms) {
    var self = this;
    clearTimeout(this.timer);
    if (this.state !== "reconnecting") this.setState("reconnecting");
    this.timer = setTimeout(function () { self.connect(); }, ms);
  };

  /** Forces a new connection now (for example when the page becomes visible). */
  C.reconnect = function () {
    if (this.ws) { var ws = this.ws; this.ws = null; try { ws.close(1000); } catch (e) { /* gone */ } this.closed(1006); }
    else if (this.state === "reconnecting") this.connectSoon(0);
  };

  C.heartbeat = function () {
    var self = this;
    clearInterval(this.beat);
    this.beat = setInterval(function () {
      if (!self.ws || self.state !== "open") return;
      var now = self.now();
      if (self.pingAt && now - self.pingAt > 10000) { self.reconnect(); return; }
      if (!self.pingAt && now - self.lastRecv > 25000) { self.pingAt = now; self.send({ type: "ping" }); }
    }, 5000);
  };

  // ------------------------------------------------------------ receiving

  C.conv = function (id) {
    return this.convs[id] || (this.convs[id] = { last: 0, watch: false, ready: false, resuming: false });
  };

  C.receive = function (f, serial) {
    var c;
    switch (f.type) {
      case "welcome":
        this.you = f.you;
        this.protocolError = null;
        this.limits = f.limits || null;
        if (f.limits) this.setRate(f.limits.frames_per_second, f.limits.burst_frames);
        this.setSendRate(f.limits && f.limits.player_messages_per_minute, f.limits && f.limits.player_message_burst);
        this.attempt = 0;
        this.everOpen = true;
        this.lastRecv = this.now();
        this.setState("open");
        this.heartbeat();
        this.emit("welcome", f);
        for (var id in this.convs) {
          c = this.convs[id];
          if (c.watch && !c.resuming) this.resume(id);
        }
        this.pump();
        break;
      case "message":
        c = this.conv(f.conversation);
        if (f.seq <= c.last) return; // seen already (replay overlap, second connection)
        if (f.prev > c.last) { // missed something: the replay brings it, in order
          if (!c.resuming) this.resume(f.conversation);
          return;
        }
        c.last = f.seq;
        if (f.client_id) this.delivered(f.client_id, f.conversation, f.seq);
        this.emit("message", f);
        break;
      case "ack":
        c = this.conv(f.conversation);
        if (f.seq > c.last) {
          if (f.prev > c.last) { if (!c.resuming) this.resume(f.conversation); }
          else c.last = f.seq;
        }
        this.delivered(f.client_id, f.conversation, f.seq, f.duplicate);
        break;
      case "resumed":
        c = this.conv(f.conversation);
        c.resuming = false;
        c.ready = true;
        if (f.last_seq > c.last) c.last = f.last_seq;
        this.flush(f.conversation);
        break;
      case "cannot_resume":
        // Our idea of the conversation is wrong (ahead) or partly gone (purged):
        // start over from what the server still has; the UI clears its view.
        c = this.conv(f.conversation);
        c.last = f.reason === "purged" ? Math.max(0, f.first_seq - 1) : 0;
        c.resuming = false;
        this.emit("reset", f);
        this.resume(f.conversation);
        break;
      case "assigned":
        // The server attaches the owner from 0 and replays: expect it.
        if (f.player) this.conv(f.conversation).watch = true;
        break;
      case "released":
        this.conv(f.conversation).watch = false;
        break;
      case "error":
        this.refused(f);
        break;
    }
    // "message" and "ack" were emitted above, once checked; the rest as they came.
    if (f.type !== "message" && f.type !== "ack") this.emit(f.type, f);
    this.emit("frame", f);
  };

  C.refused = function (f) {
    if (f.frame === "hello" && (f.code === "unsupported_version" || f.code === "bad_frame")) this.protocolError = f.code;
    if (f.frame === "resume" && f.conversation && this.convs[f.conversation]) {
      this.convs[f.conversation].resuming = false;
      if (f.code === "forbidden" || f.code === "not_found") this.convs[f.conversation].watch = false;
    }
    if (!f.client_id) return;
    var e = this.find(f.client_id, f.conversation);
    if (!e) return;
    if (FINAL[f.code]) {
      this.remove(e);
      this.emit("failed", { entry: e, code: f.code, message: f.message });
    } else {
      // overloaded, rate_limited: nothing was stored; send it again a little later.
      e.sentOn = 0;
      var self = this;
      setTimeout(function () { self.flush(e.conversation); }, 1000 + Math.random() * 1000);
    }
  };

  C.delivered = function (clientId, conversation, seq, duplicate) {
    var e = this.find(clientId, conversation);
    if (e) this.remove(e);
    this.emit("ack", { client_id: clientId, conversation: conversation, seq: seq, duplicate: !!duplicate, entry: e || null });
  };

  // --------------------------------------------------------------- sending

  /** Sends a frame. Droppable frames (typing, read, ping) are dropped when the
   * connection is down or the rate budget is spent; others wait for both.
   * Returns whether the frame was sent or queued. */
  C.send = function (frame) {
    if (DROPPABLE[frame.type]) {
      if (this.state !== "open" || !this.ws || this.queue.length) return false;
      if (!this.frames.take(this.now())) return false;
      this.raw(frame);
      return true;
    }
    this.queue.push(frame);
    this.pump();
    return true;
  };

  C.raw = function (frame) {
    try { this.ws.send(JSON.stringify(frame)); } catch (err) { /* onclose follows */ }
  };

  C.setRate = function (perSecond, burst) {
    // Stay under the server's limit: its bucket and ours do not tick in step.
    this.frames = new Bucket(Math.max(1, (perSecond || 20) * 0.75), Math.floor((burst || 40) * 0.5), this.now());
  };

  C.pump = function () {
    var self = this;
    clearTimeout(this.pumpTimer);
    if (this.state !== "open" || !this.ws) return;
    while (this.queue.length && this.frames.take(this.now())) this.raw(this.queue.shift());
    if (this.queue.length) {
      this.pumpTimer = setTimeout(function () { self.pump(); }, this.frames.wait());
    }
  };

  /** Asks for a conversation's entries after `after` and keeps it attached across
   * reconnects (resumed from the last seq seen each time) until unwatch(). With
   * {resume: false} nothing is sent now (the server attaches by itself after
   * `start` or `assigned`). */
  C.watch = function (id, opts) {
    opts = opts || {};
    var c = this.conv(id);
    c.watch = true;
    if (typeof opts.after === "number") c.last = opts.after;
    if (opts.resume !== false && this.state === "open") this.resume(id);
  };

  C.unwatch = function (id) {
    if (this.convs[id]) this.convs[id].watch = false;
  };

  /** Sends `resume` from the last seq seen (once per connection at a time). */
  C.resume = function (id) {
    var c = this.conv(id);
    c.resuming = true;
    this.send({ type: "resume", conversation: id, after: c.last });
  };

  C.last = function (id) {
    return this.convs[id] ? this.convs[id].last : 0;
  };

  /** Queues a chat message (kind "text") or private note ("note"). It goes out
   * once the conversation is attached on an open connection, and again after each
   * reconnect until acknowledged. Returns the outbox entry. */
  C.say = function (conversation, text, kind) {
    var e = { client_id: randomId(), conversation: conversation, text: text, kind: kind === "note" ? "note" : "text", at: this.now(), sentOn: 0 };
    this.outbox.push(e);
    this.save();
    this.flush(conversation);
    return e;
  };

  /** Sends what the outbox holds for a conversation that this connection has not
   * sent yet. Resends are harmless: the server answers them with the original seq. */
  C.flush = function (conversation) {
    var c = this.convs[conversation];
    if (!c || !c.ready || this.state !== "open") return;
    for (var i = 0; i < this.outbox.length; i++) {
      var e = this.outbox[i];
      if (e.conversation !== conversation || e.sentOn === this.serial) continue;
      if (e.kind !== "note" && this.sends && !this.sends.take(this.now())) {
        // The player's message budget is spent: the rest waits for it to refill.
        var self = this;
        clearTimeout(this.flushTimer);
        this.flushTimer = setTimeout(function () { self.flushAll(); }, this.sends.wait());
        return;
      }
      e.sentOn = this.serial;
      this.send({ type: e.kind === "note" ? "note" : "send", conversation: e.conversation, client_id: e.client_id, text: e.text });
    }
  };

  /** Flushes every conversation's outbox. */
  C.flushAll = function () {
    for (var id in this.convs) this.flush(id);
  };

  /** Paces `send` frames to the player's message budget (from `welcome`; agents
   * have none), at 75 % of it: the server's budget is shared by all of the
   * player's tabs and does not tick in step with ours. */
  C.setSendRate = function (perMinute, burst) {
    this.sends = perMinute > 0 ? new Bucket(perMinute * 0.75 / 60, Math.floor((burst || 1) * 0.75), this.now()) : null;
  };

  /** A token bucket: `perSecond` tokens a second, at most `burst` (≥ 1) saved. */
  function Bucket(perSecond, burst, now) {
    this.rate = perSecond / 1000; // per ms
    this.burst = Math.max(1, burst);
    this.tokens = this.burst;
    this.at = now;
  }

  /** Takes a token if there is one. */
  Bucket.prototype.take = function (now) {
    this.tokens = Math.min(this.burst, this.tokens + (now - this.at) * this.rate);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  };

  /** Milliseconds until the next token (after a `take` that found none). */
  Bucket.prototype.wait = function () {
    return Math.ceil((1 - this.tokens) / this.rate) + 5;
  };

  /** The unacknowledged messages of a conversation, oldest first. */
  C.pending = function (conversation) {
    var out = [];
    for (var i = 0; i < this.outbox.length; i++) if (this.outbox[i].conversation === conversation) out.push(this.outbox[i]);
    return out;
  };

  C.find = function (clientId, conversation) {
    for (var i = 0; i < this.outbox.length; i++) {
      var e = this.outbox[i];
      if (e.client_id === clientId && (!conversation || e.conversation === conversation)) return e;
    }
    return null;
  };

  C.remove = function (e) {
    var i = this.outbox.indexOf(e);
    if (i >= 0) { this.outbox.splice(i, 1); this.save(); }
  };

  /** Drops a conversation's unsent messages (it was closed). */
  C.discard = function (conversation) {
    var gone = this.pending(conversation);
    for (var i = 0; i < gone.length; i++) this.remove(gone[i]);
    return gone;
  };

  C.save = function () {
    this.emit("outbox", this.outbox);
    if (!this.storage) return;
    try {
      this.storage.save(this.outbox.map(function (e) {
        return { client_id: e.client_id, conversation: e.conversation, text: e.text, kind: e.kind, at: e.at };
      }));
    } catch (err) { /* storage full or disabled: the outbox still lives in memory */ }
  };

  P.Client = Client;
  P.randomId = randomId;
})(typeof self !== "undefined" ? self : globalThis);
