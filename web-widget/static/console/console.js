/*! Pitboss agent console: log in, status, the live queue, offers, several chats
 * in tabs, the player's card and earlier conversations beside each chat, canned
 * replies ("/"), private notes, transfers, closing with a reason, offline
 * messages, and (supervisors) every live conversation with take-over.
 * The protocol is the shared Pitboss.Client's; the REST calls are
 * docs/protocol.md §7. Text from players and other agents goes in with
 * textContent only. */
(function (root, doc) {
  "use strict";
  var P = root.Pitboss;
  var TOKEN = "pitboss.console.token";
  var LANG = "pitboss.console.lang";
  var SELECTED = "pitboss.console.selected"; // the tab shown, kept across a reload
  var SEEN = "pitboss.console.seen."; // + login: {conversation: last seq seen}
  var DRAFT = "pitboss.console.draft."; // + conversation: the reply being written
  var ORDER = "pitboss.console.order"; // the tabs' conversations, in the agent's order

  function stored(area, k, v) {
    try {
      if (arguments.length === 2) return root[area].getItem(k);
      if (v == null) root[area].removeItem(k); else root[area].setItem(k, v);
    } catch (e) { return null; }
  }

  var lang = P.i18n.pick([stored("localStorage", LANG)].concat(P.i18n.preferred()));
  var t = P.i18n.translator("console", lang);
  doc.documentElement.lang = lang;
  doc.title = t("page_title");

  function $(sel, el) { return (el || doc).querySelector(sel); }
  function $$(sel, el) { return Array.prototype.slice.call((el || doc).querySelectorAll(sel)); }
  $$("[data-i18n]").forEach(function (el) { el.textContent = t(el.getAttribute("data-i18n")); });
  $$("[data-i18n-label]").forEach(function (el) { el.setAttribute("aria-label", t(el.getAttribute("data-i18n-label"))); });

  function h(tag, props, kids) {
    var el = doc.createElement(tag);
    for (var k in props || {}) {
      var v = props[k];
      if (v == null || v === false) continue;
      if (k === "text") el.textContent = v;
      else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    (kids || []).forEach(function (c) { if (c != null && c !== false) el.appendChild(typeof c === "string" ? doc.createTextNode(c) : c); });
    return el;
  }
  function show(el, on) { el.hidden = !on; }
  function clear(el) { el.textContent = ""; }
  // Builds `el` again with `build`; a control in it that had the focus (known by
  // its data-key) has it again, so lists that refresh by themselves stay usable
  // from the keyboard.
  function rebuild(el, build) {
    var a = doc.activeElement, key = a && el.contains(a) && a.getAttribute("data-key");
    clear(el);
    build();
    var b = key && Array.prototype.filter.call(el.querySelectorAll("[data-key]"), function (n) { return n.getAttribute("data-key") === key; })[0];
    if (b) b.focus();
  }

  var langSelect = $("#lang-select");
  Object.keys(P.i18n.LANGUAGES).forEach(function (code) {
    langSelect.appendChild(h("option", { value: code, text: P.i18n.LANGUAGES[code], selected: code === lang }));
  });
  langSelect.addEventListener("change", function () {
    stored("localStorage", LANG, langSelect.value);
    root.location.reload();
  });

  // ------------------------------------------------------------------ state

  var token = stored("sessionStorage", TOKEN);
  var me = null;
  // An admin is a supervisor here: the console has no admin-only screens.
  function supervises(account) { return !!account && (account.role === "supervisor" || account.role === "admin"); }
  var client = null;
  var chats = {}; // conversation id → chat (a tab and its panel)
  var selected = null;
  var offers = {};
  var queue = { total: 0, entries: [], at: 0 };
  var catalogs = {};
  var agents = [];
  var departments = [];
  var timers = [];
  var audio = null;
  var status = null;
  var signingOut = null; // the timer of a sign-out waiting for the server
  var offerExpiredAt = 0;
  var liveList = []; // supervisors: the active and queued conversations
  var connected = false; // the socket is open: offers can be answered, the status is known

  // -------------------------------------------------------------------- REST

  function api(path, opts) {
    opts = opts || {};
    return fetch(path, {
      method: opts.method || "GET",
      headers: Object.assign({ "content-type": "application/json" }, token ? { authorization: "Bearer " + token } : {}),
      body: opts.body ? JSON.stringify(opts.body) : undefined
    }).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (body) {
        if (res.status === 401 && token) { logout(t("session_expired")); }
        if (!res.ok) { var err = new Error(body.message || res.statusText); err.code = body.error; throw err; }
        return body;
      });
    });
  }

  // The catalog's items of one language, exactly (none if it has none).
  function catalogOf(kind, language) {
    var key = kind + ":" + language;
    if (!catalogs[key]) {
      catalogs[key] = api("/api/catalog?kind=" + kind + "&language=" + encodeURIComponent(language)).then(function (b) {
        return b.items || [];
      }).catch(function () { delete catalogs[key]; return []; });
    }
    return catalogs[key];
  }

  // The items of the first of `languages` the catalog has any in, else English.
  function catalogFirst(kind, languages) {
    var list = [];
    languages.concat(["en"]).forEach(function (l) { if (l && list.indexOf(l) < 0) list.push(l); });
    function next(i) {
      if (i >= list.length) return Promise.resolve([]);
      return catalogOf(kind, list[i]).then(function (items) { return items.length ? items : next(i + 1); });
    }
    return next(0);
  }

  // Departments' display names in the console's language, else English, else the
  // tag itself (catalog kind "department").
  // Keyed by tags a player may pick ("__proto__" among them): no prototype.
  var deptNames = Object.create(null);
  function loadDeptNames() {
    Promise.all([catalogOf("department", "en"), catalogOf("department", lang)]).then(function (r) {
      deptNames = Object.create(null);
      r[0].concat(r[1]).forEach(function (i) { deptNames[i.key] = i.text; });
      renderOffers();
      renderQueue();
      renameAll();
      renderDepts();
      if (me && supervises(me)) liveSoon();
    });
  }
  function deptName(d) { return deptNames[d] || d; }

  // The departments and every catalog, read afresh (canned replies and close
  // reasons on their next use).
  function loadCatalogs() {
    catalogs = {};
    api("/api/departments").then(function (b) { departments = b.departments || []; }, function () {});
    loadDeptNames();
  }

  // Agents' and departments' names arrive after the transcripts may have: the
  // transfer notes and each chat's details are written again with them.
  function renameAll() {
    Object.keys(chats).forEach(function (k) {
      var chat = chats[k];
      $$(".transfer-note", chat.log).forEach(function (li) { li.querySelector(".text").textContent = noteText(li.note); });
      if (chat.player) setPlayer(chat, chat.player);
    });
  }

  // Canned replies are written to the player: the chat's language, else English.
  function catalog(kind, language) { return catalogFirst(kind, [language]); }

  // Close reasons are read by the agent: the console's language first, then the
  // chat's, then English.
  function closeReasons(chat) { return catalogFirst("close_reason", [lang, chat && chat.language]); }

  function reasonText(chat, key) {
    return closeReasons(chat).then(function (items) {
      for (var i = 0; i < items.length; i++) if (items[i].key === key) return items[i].text;
      return key;
    });
  }

  // ------------------------------------------------------------- logging in

  $("#login-form").addEventListener("submit", function (e) {
    e.preventDefault();
    unlockAudio();
    $("#login-error").textContent = "";
    var body = { login: $("#login-name").value.trim(), password: $("#login-password").value };
    token = null;
    api("/api/login", { method: "POST", body: body }).then(function (b) {
      token = b.token;
      stored("sessionStorage", TOKEN, token);
      $("#login-password").value = "";
      startApp();
    }, function (e) {
      // A wrong password, or a server that cannot check one now (busy, store
      // down, unreachable): only the first is the agent's to fix.
      $("#login-error").textContent = t(e.code === "unauthorized" ? "login_failed" : "login_unavailable");
    });
  });

  function logout(message) {
    clearTimeout(signingOut);
    signingOut = null;
    $("#logout").disabled = false;
    if (client) client.stop();
    client = null;
    token = null;
    stored("sessionStorage", TOKEN, null);
    stored("sessionStorage", SELECTED, null);
    stored("sessionStorage", ORDER, null);
    timers.forEach(clearInterval);
    timers = [];
    $$("dialog[open]").forEach(function (d) { d.close(); });
    Object.keys(chats).forEach(function (id) { dropChat(id); });
    offers = {};
    renderOffers();
    showAwayNotice(false);
    status = null;
    show($("#app"), false);
    show($("#login-view"), true);
    $("#login-error").textContent = message || "";
    $("#login-name").focus();
  }

  // The chats this agent owns and that are still open: signing out puts them
  // back in the queue.
  function openOwned() {
    return Object.keys(chats).filter(function (id) { return chats[id].owned && !chats[id].ended; });
  }

  $("#logout").addEventListener("click", function () {
    var n = openOwned().length;
    if (!n) { signOut(); return; }
    var one = false;
    try { one = new Intl.PluralRules(lang).select(n) === "one"; } catch (e) { one = n === 1; }
    $("#logout-text").textContent = t(one ? "logout_open_one" : "logout_open_other", { n: n });
    $("#logout-dialog").returnValue = "";
    $("#logout-dialog").showModal();
  });
  $("#logout-dialog").addEventListener("close", function () {
    if ($("#logout-dialog").returnValue === "ok") signOut();
  });

  // Tells the server first (it requeues the agent's chats at once and closes
  // every connection of theirs), then logs out here when the socket closes, or
  // after 3 s at most. A server that does not know `sign_out` answers
  // `unknown_type`: log out here at once; its grace period requeues the chats.
  function signOut() {
    if (signingOut) return;
    if (!client) { logout(""); return; }
    $("#logout").disabled = true;
    signingOut = setTimeout(finishSignOut, 3000);
    client.send({ type: "sign_out" });
  }
  function finishSignOut() {
    if (!signingOut) return;
    logout("");
  }

  function startApp() {
    api("/api/me").then(function (account) {
      if (!token) return; // logged out meanwhile
      me = account;
      $("#me").textContent = supervises(me) ? t("me_supervisor", { name: me.name }) : t("me_agent", { name: me.name });
      show($("#login-view"), false);
      show($("#app"), true);
      // The login form went with the focus: start at the offers.
      if (focusLost()) $("#offers-h").focus();
      show($("#live-section"), supervises(me));
      show($("#team-section"), supervises(me));
      show($("#depts-section"), supervises(me));
      deptKpis = Object.create(null);
      deptShown = null;
      show($("#catalog-section"), supervises(me));
      connect();
      loadOffline();
      timers.push(setInterval(loadOffline, 15000));
      if (supervises(me)) { loadLive(); timers.push(setInterval(loadLive, 5000)); }
      $("#kpis-h").textContent = supervises(me) ? t("kpis_team") : t("kpis_own");
      loadKpis();
      timers.push(setInterval(loadKpis, 60000));
      timers.push(setInterval(tickQueue, 1000));
      timers.push(setInterval(tickOffers, 1000));
      loadAgents();
      if (supervises(me)) timers.push(setInterval(loadAgents, 15000));
      loadCatalogs();
      // Supervisors edit replies, reasons and department names while others work:
      // read them again now and then rather than only at sign-in.
      timers.push(setInterval(loadCatalogs, 60000));
    }, function () {
      // A refused session (401) has gone back to the login form already; a
      // server that is not reachable, or cannot check the session yet (503), is
      // asked again.
      if (token) setTimeout(startApp, 3000);
    });
  }

  function connect() {
    client = new P.Client({
      url: root.location.origin.replace(/^http/, "ws") + "/ws",
      // An expired session cannot be refreshed here: null stops the client and
      // sends the agent back to the login form.
      auth: function (info) { return token && !info.expired ? { kind: "agent", token: token } : null; }
    });
    root.pitbossConsole = { client: client, chats: chats };
    client.on("state", function (s) {
      $("#app").setAttribute("data-state", s);
      var c = $("#conn");
      c.textContent = s === "open" || signingOut ? "" : s === "reconnecting" ? t("reconnecting") : t("connecting");
      c.title = c.textContent;
      c.classList.toggle("warn", s === "reconnecting");
      setConnected(s === "open", s === "reconnecting");
    });
    client.on("auth_failed", function (e) {
      // 4003: this agent signed out, here or in another window.
      if (e && e.reason === "signed_out") logout(signingOut ? "" : t("signed_out_elsewhere"));
      else logout(t("session_expired"));
    });
    client.on("disconnect", function () {
      // Signing out, any close ends it. Deferred: the client decides what to do
      // after this event, and logout() stops it for good.
      if (signingOut) setTimeout(finishSignOut, 0);
    });
    client.on("welcome", onWelcome);
    client.on("status", function (f) {
      setStatusButtons(f.status);
      // An offer that expired sets the agent away (docs/protocol.md §5.2): say so.
      if (f.status === "away" && Date.now() - offerExpiredAt < 10000) {
        offerExpiredAt = 0;
        showAwayNotice(true);
        notify(t("away_title"), t("away_missed"));
      }
      if (f.status === "online") showAwayNotice(false);
    });
    client.on("offer", onOffer);
    client.on("offer_withdrawn", function (f) {
      delete offers[f.conversation];
      renderOffers();
      if (f.reason === "expired") offerExpiredAt = Date.now();
    });
    client.on("assigned", onAssigned);
    client.on("message", onMessage);
    client.on("ack", onAck);
    client.on("failed", function (f) {
      var chat = chats[f.entry.conversation];
      var li = chat && chat.byClient[f.entry.client_id];
      if (li) meta(chat, li, "not_sent");
      if (root.console) root.console.warn("pitboss: message refused: " + f.code + (f.message ? " — " + f.message : ""));
      toast(errorText({ code: f.code, frame: f.entry.kind === "note" ? "note" : "send" }));
    });
    client.on("typing", function (f) {
      var chat = chats[f.conversation];
      if (!chat || !f.from || f.from.role !== "player") return;
      clearTimeout(chat.typingTimer);
      chat.typing.textContent = f.active ? t("typing", { name: f.from.name || t("player") }) : "";
      if (f.active) chat.typingTimer = setTimeout(function () { chat.typing.textContent = ""; }, 6000);
    });
    client.on("read", function (f) {
      var chat = chats[f.conversation];
      if (!chat || !f.by || f.by.role !== "player") return;
      chat.readSeq = Math.max(chat.readSeq, f.seq);
      Object.keys(chat.bySeq).forEach(function (s) {
        var li = chat.bySeq[s];
        if (li.state === "sent" && +s <= chat.readSeq) meta(chat, li, "read");
      });
    });
    client.on("transfer_update", function (f) {
      var chat = chats[f.conversation];
      if (!chat) return;
      var to = f.to.agent ? agentName(f.to.agent) : deptName(f.to.department);
      banner(chat, t("transfer_" + f.outcome, { to: to }), f.outcome !== "accepted" && f.outcome !== "pending");
      if (f.outcome === "pending") chat.transferPending = true;
      else chat.transferring = chat.transferPending = false;
      if (f.outcome === "accepted") chat.transferNote = "";
      updateActions(chat);
    });
    client.on("released", function (f) {
      var chat = chats[f.conversation];
      if (!chat) return;
      end(chat, t("released", { name: f.to ? f.to.name || f.to.id : "—" }));
    });
    client.on("closed", function (f) {
      var chat = chats[f.conversation];
      if (chat) {
        end(chat, f.reason ? t("closed_with", { reason: f.reason }) : t("closed"));
        // Show the reason as the catalog words it (in the agent's language if it can).
        if (f.reason) reasonText(chat, f.reason).then(function (text) {
          if (chat.ended) banner(chat, t("closed_with", { reason: text }), true);
        });
      }
      if (supervises(me)) liveSoon();
    });
    client.on("queue_snapshot", function (f) {
      queue = { total: f.total, entries: f.entries || [], at: Date.now() };
      renderQueue();
      if (supervises(me)) liveSoon();
    });
    client.on("error", function (f) {
      // The server's message is English and for developers: the log only.
      if (root.console) root.console.warn("pitboss: " + (f.frame || "frame") + " refused: " + f.code + (f.message ? " — " + f.message : ""));
      if (signingOut && f.code === "unknown_type" && (!f.frame || f.frame === "sign_out")) { finishSignOut(); return; }
      if (f.client_id) return; // shown on the message itself
      if (f.frame === "resume" && (f.code === "forbidden" || f.code === "not_found")) return;
      if (f.frame === "transfer") { transferRefused(f); return; }
      // An offer the server no longer has (the router that made it went down,
      // say, and its withdrawal never came): its card goes.
      if ((f.frame === "accept" || f.frame === "decline") && (f.code === "invalid_state" || f.code === "not_found") && offers[f.conversation]) {
        delete offers[f.conversation];
        renderOffers();
      }
      toast(errorText(f));
    });
    client.start();
  }

  // A refusal in the agent's language, by its code (and the frame, where that
  // says more); the server's own message stays in the log.
  function errorText(f) {
    var keys = ["err_" + f.frame + "_" + f.code, "err_" + f.code];
    for (var i = 0; i < keys.length; i++) {
      var s = t(keys[i]);
      if (s !== keys[i]) return s;
    }
    return t("refused", { code: f.code });
  }

  function onWelcome(w) {
    // Back on another node after the one it used went down, the agent who was
    // away may be greeted online (a new router did not hear of it): stay away.
    var wasAway = status === "away";
    setStatusButtons(w.status || "online");
    if (wasAway && w.status === "online") client.send({ type: "set_status", status: "away" });
    if (supervises(me)) loadAgents(); // the team's statuses, this one online now
    // The offers still open are sent again after `welcome` (docs/protocol.md
    // §5.2); those from before the connection dropped may have been withdrawn.
    offers = {};
    renderOffers();
    var listed = {};
    inAgentsOrder(w.conversations || []).forEach(function (s) {
      listed[s.id] = true;
      if (s.agent !== me.id) return; // supervisors: the others are in the live list
      var chat = openChat(s.id, { owned: true, summary: s });
      if (!chat.ended) client.watch(s.id); // resumed from the last seq seen (0 for a new tab)
    });
    // Chats that ended or moved while we were away: read their tail once.
    Object.keys(chats).forEach(function (id) {
      var chat = chats[id];
      if (listed[id] || chat.ended || !chat.owned) return;
      client.unwatch(id);
      client.send({ type: "resume", conversation: id, after: client.last(id) });
      end(chat, t("ended_elsewhere"));
    });
    // What was read is kept for the open conversations only.
    var seen = seenAll();
    Object.keys(seen).forEach(function (id) { if (!listed[id]) delete seen[id]; });
    saveSeen(seen);
    saveOrder();
    // After a reload: show the tab that was shown, else the first one.
    if (!selected || !chats[selected]) {
      var want = stored("sessionStorage", SELECTED);
      var ids = Object.keys(chats);
      if (chats[want]) select(want);
      else if (ids.length) select(ids[0]);
    }
  }

  // The server lists the conversations in no particular order: the tabs keep the
  // order the agent had before a reload (new ones after them, as they come).
  function inAgentsOrder(list) {
    var order;
    try { order = JSON.parse(stored("sessionStorage", ORDER) || "[]") || []; } catch (e) { order = []; }
    var rank = function (s) { var i = order.indexOf(s.id); return i < 0 ? order.length : i; };
    return list.map(function (s, i) { return { s: s, i: i }; })
      .sort(function (a, b) { return rank(a.s) - rank(b.s) || a.i - b.i; })
      .map(function (x) { return x.s; });
  }
  function saveOrder() { stored("sessionStorage", ORDER, JSON.stringify(Object.keys(chats))); }

  // The last seq the agent has seen of each conversation, kept across reloads,
  // so that what was read is not counted as unread again.
  function seenAll() {
    try { return JSON.parse(stored("localStorage", SEEN + (me ? me.id : "")) || "{}") || {}; } catch (e) { return {}; }
  }
  function saveSeen(seen) { stored("localStorage", SEEN + (me ? me.id : ""), JSON.stringify(seen)); }
  function seenSeq(id) { return seenAll()[id] || 0; }
  function setSeen(id, seq) {
    var seen = seenAll();
    if ((seen[id] || 0) >= seq) return;
    seen[id] = seq;
    saveSeen(seen);
  }

  // ---------------------------------------------------------------- status

  // Without a connection neither is pressed: the server may have set the agent
  // offline meanwhile, and a click could not be sent.
  function setStatusButtons(s) {
    status = s;
    ["online", "away"].forEach(function (v) {
      var b = $("#status-" + v);
      b.setAttribute("aria-pressed", String(connected && s === v));
      b.disabled = !connected;
      b.title = connected ? "" : t("offers_paused");
    });
  }

  // The connection went down or came back: offers and the status are paused
  // while it is down, live again once it is back. The hint is for a lost
  // connection (the first one has "Connecting…" in the header only).
  function setConnected(on, lost) {
    connected = on;
    show($("#offers-paused"), !!lost);
    setStatusButtons(status);
    renderOffers();
  }
  $("#status-online").addEventListener("click", function () { client.send({ type: "set_status", status: "online" }); });
  $("#away-online").addEventListener("click", function () { client.send({ type: "set_status", status: "online" }); });
  $("#away-dismiss").addEventListener("click", function () { showAwayNotice(false); });

  function showAwayNotice(on) { show($("#away-notice"), on); }
  $("#status-away").addEventListener("click", function () { client.send({ type: "set_status", status: "away" }); });

  // --------------------------------------------------------- notifications

  function unlockAudio() {
    try { audio = audio || new (root.AudioContext || root.webkitAudioContext)(); } catch (e) { audio = null; }
  }

  function notify(title, body) {
    try {
      if (audio) {
        var o = audio.createOscillator();
        var g = audio.createGain();
        o.frequency.value = 880;
        g.gain.setValueAtTime(0.15, audio.currentTime);
        g.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.4);
        o.connect(g);
        g.connect(audio.destination);
        o.start();
        o.stop(audio.currentTime + 0.4);
      }
    } catch (e) { /* no sound device */ }
    try {
      if (root.Notification && root.Notification.permission === "granted") new root.Notification(title, { body: body, tag: "pitboss" });
    } catch (e) { /* notifications unavailable */ }
  }

  var notifyBtn = $("#notify-btn");
  notifyBtn.title = t("enable_notifications"); // the button may be shortened
  function updateNotifyBtn() {
    var perm = root.Notification ? root.Notification.permission : "denied";
    show(notifyBtn, perm === "default");
  }
  notifyBtn.addEventListener("click", function () {
    unlockAudio();
    if (root.Notification) root.Notification.requestPermission().then(updateNotifyBtn, updateNotifyBtn);
  });
  updateNotifyBtn();

  function toast(text) {
    var el = $("#toast");
    el.textContent = text;
    show(el, true);
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { show(el, false); }, 6000);
  }

  // Read out by screen readers (a polite live region, not shown): what arrives
  // outside the agent's view, an offer or a message in another chat.
  function announce(text) {
    var el = $("#announce");
    el.textContent = "";
    setTimeout(function () { el.textContent = text; }, 50);
  }

  // Whether the keyboard focus went with the control that had it (removed,
  // hidden or disabled by the action it ran), so it is on nothing now.
  function focusLost() {
    var a = doc.activeElement;
    return !a || a === doc.body || a.disabled || !a.getClientRects().length;
  }
  // After an action that took the focused control away: the selected chat's
  // reply box, else its tab, else the first open offer, else the offers list.
  function refocus() {
    if (!focusLost()) return;
    var chat = selected && chats[selected];
    var target = chat && !chat.composer.hidden ? chat.input : chat ? chat.tab : $("#offers button:not([disabled])") || $("#offers-h");
    if (target) target.focus();
  }

  // ----------------------------------------------------------------- offers

  function onOffer(o) {
    offers[o.conversation] = Object.assign({ received: Date.now() }, o);
    renderOffers();
    var who = playerName(o.player);
    var title = o.transfer ? t("notify_transfer", { name: who }) : t("notify_offer", { name: who });
    notify(title, deptName(o.department) + " · " + o.language);
    announce(title);
  }

  function renderOffers() {
    var ul = $("#offers");
    var ids = Object.keys(offers);
    rebuild(ul, function () { ids.forEach(function (id) {
      var o = offers[id];
      var card = o.player || {};
      ul.appendChild(h("li", { class: (o.transfer ? "card transfer" : "card") + (connected ? "" : " paused"), "data-conversation": id }, [
        h("strong", { text: playerName(card) }),
        card.vip_tier ? h("span", { class: "vip", text: t("vip", { n: card.vip_tier }) }) : null,
        h("span", { class: "sub" }, [deptName(o.department) + " · " + o.language.toUpperCase() + " · ", h("span", { class: "waited", "data-offer": id })]),
        h("span", { class: "left", "data-offer": id }),
        o.transfer ? h("p", { class: "note", text: t("transfer_from", { name: o.transfer.from.name || o.transfer.from.id }) + (o.transfer.note ? ": " + o.transfer.note : "") }) : null,
        h("div", { class: "row" }, [
          h("button", { type: "button", class: "primary", "data-key": "accept-" + id, disabled: !connected, text: t("accept"), "aria-label": t("accept_from", { name: playerName(card) }), onclick: function () { accepting[id] = true; client.send({ type: "accept", conversation: id }); } }),
          h("button", { type: "button", "data-key": "decline-" + id, disabled: !connected, text: t("decline"), "aria-label": t("decline_from", { name: playerName(card) }), onclick: function () { declining = true; client.send({ type: "decline", conversation: id }); } })
        ])
      ]));
    }); });
    tickOffers();
    show($("#offers-empty"), !ids.length);
    if (declining && focusLost()) { declining = false; refocus(); }
  }
  var accepting = {};
  var declining = false;

  // Every second: how long each offered player has waited, and the time left
  // to answer (after it the server sets the agent away); without a connection,
  // that the offer is on hold instead of a countdown nobody can act on.
  function tickOffers() {
    $$("#offers .waited").forEach(function (el) {
      var o = offers[el.getAttribute("data-offer")];
      if (o) el.textContent = t("waited", { time: duration(o.waited_ms + Date.now() - o.received) });
    });
    var stale = [];
    $$("#offers .left").forEach(function (el) {
      var id = el.getAttribute("data-offer"), o = offers[id];
      if (!o) return;
      var left = o.received + o.expires_in_ms - Date.now();
      // Its withdrawal is due at once when the time runs out; a card still here
      // 10 s later was withdrawn by a server that could not say so.
      if (connected && left < -10000) stale.push(id);
      el.textContent = !connected ? t("offer_paused") : t("offer_left", { n: Math.max(0, Math.ceil(left / 1000)) });
    });
    if (stale.length) { stale.forEach(function (id) { delete offers[id]; }); renderOffers(); }
  }

  function onAssigned(a) {
    var offer = offers[a.conversation];
    delete offers[a.conversation];
    renderOffers();
    if (!a.player || a.agent.id !== me.id) return;
    // `assigned` carries no summary: the offer tells the language and the
    // department (a department transfer's new one); the REST details confirm.
    var chat = openChat(a.conversation, { owned: true, player: a.player, offer: offer });
    chat.owned = true;
    chat.ended = null;
    chat.watching = false;
    chat.tab.classList.remove("ended");
    banner(chat, "");
    updateActions(chat);
    updateBadge(chat);
    refreshDetails(chat);
    if (accepting[a.conversation] || !selected) select(a.conversation);
    // Accepted (or taken over) here: straight to the reply box.
    if (accepting[a.conversation] && focusLost()) chat.input.focus();
    delete accepting[a.conversation];
    loadOffline();
  }

  // ------------------------------------------------------------------ queue

  function renderQueue() {
    var tbody = $("#queue tbody");
    rebuild(tbody, function () { queue.entries.forEach(function (e) {
      tbody.appendChild(h("tr", {}, [
        h("td", { class: "waited" }),
        h("td", { text: e.language.toUpperCase() }),
        h("td", { text: e.vip_tier ? t("vip", { n: e.vip_tier }) : "—" }),
        h("td", { text: deptName(e.department) }),
        h("td", { class: "state" }, [
          h("span", { class: "state-text", text: e.offered ? t("offered") : t("waiting") }),
          supervises(me) ? h("button", { type: "button", class: "small", "data-key": "take-" + e.conversation, text: t("take_over"), onclick: function () { accepting[e.conversation] = true; client.send({ type: "take", conversation: e.conversation }); } }) : null
        ])
      ]));
    }); });
    tickQueue();
    $("#queue-total").textContent = "(" + queue.total + ")";
    show($("#queue"), queue.entries.length > 0);
    show($("#queue-empty"), !queue.entries.length);
  }

  // Every second: the waiting times only, so that nothing under the pointer or
  // the focus is replaced.
  function tickQueue() {
    var elapsed = Date.now() - queue.at;
    $$("#queue td.waited").forEach(function (td, i) {
      var e = queue.entries[i];
      if (e) td.textContent = duration(e.waited_ms + elapsed);
    });
  }

  // ------------------------------------------------------- offline messages

  function loadOffline() {
    if (!token) return;
    api("/api/offline").then(function (b) {
      var ul = $("#offline");
      clear(ul);
      var list = b.offline || [];
      list.forEach(function (o) {
        var c = o.conversation;
        var first = (o.messages || [])[0];
        ul.appendChild(h("li", { class: "card" }, [
          h("strong", { text: playerName(o.player) }),
          h("span", { class: "sub", text: deptName(c.department) + " · " + c.language.toUpperCase() + " · " + when(c.created_at) }),
          first ? h("p", { class: "quote", text: first.text }) : h("p", { class: "quote none", text: t("offline_no_text") }),
          (o.messages || []).length > 1 ? h("span", { class: "sub", text: t("more_messages", { n: o.messages.length - 1 }) }) : null,
          h("div", { class: "row" }, [
            h("button", { type: "button", class: "primary", text: t("answer"), "aria-label": t("answer_from", { name: playerName(o.player) }), onclick: function () { accepting[c.id] = true; client.send({ type: "take", conversation: c.id }); } })
          ])
        ]));
      });
      $("#offline-total").textContent = "(" + list.length + ")";
      show($("#offline-empty"), !list.length);
    }, function () { /* shown next time */ });
  }
  $("#offline-refresh").addEventListener("click", loadOffline);

  // ------------------------------------------- key figures, the last 24 hours

  // An agent's are their own chats (the server decides); a supervisor's, everyone's.
  function loadKpis() {
    if (!token) return;
    api("/api/kpis").then(function (k) { fillKpis($("#kpis"), k); }, function () { /* shown next time */ });
    loadDeptKpis();
  }

  function fillKpis(dl, k) {
    var none = t("kpi_none");
    var spread = function (s) {
      return s && s.count ? t("kpi_value", { mean: duration(s.mean), p90: duration(s.p90, true) }) : none;
    };
    var sat = k.satisfaction || {};
    var rows = [
      ["kpi_started", String((k.conversations || {}).started || 0)],
      ["kpi_wait", spread(k.wait_ms)],
      ["kpi_first_response", spread(k.first_response_ms)],
      ["kpi_resolution", spread(k.resolution_ms)],
      ["kpi_satisfaction", sat.rated ? t("kpi_rating", { mean: decimal(sat.mean), count: sat.rated }) : none],
      ["kpi_abandoned", String((k.conversations || {}).abandoned || 0)]
    ];
    clear(dl);
    rows.forEach(function (r) {
      dl.appendChild(h("div", { class: "kpi", "data-kpi": r[0] }, [h("dt", { text: t(r[0]) }), h("dd", { text: r[1] })]));
    });
  }
  $("#kpis-refresh").addEventListener("click", loadKpis);

  // ------------------------------- supervisors: key figures per department

  // With the team's figures (every minute, and on demand): the departments
  // (`GET /api/departments`), then one `GET /api/kpis?department=` for each of
  // the first DEPT_MAX by display name, so a refresh asks at most 1 + DEPT_MAX
  // times; the others are counted in a note. One refresh at a time. Each card
  // shows chats started and answered; its button opens the other figures.
  var DEPT_MAX = 12;
  var deptKpis = Object.create(null); // tag → Kpis, the last answer
  var deptShown = null; // the tags shown, in order; null before the first answer
  var deptTotal = 0;
  var deptOpen = Object.create(null); // tag → true: its figures are open
  var deptLoading = false;

  function byDeptName(a, b) {
    var x = deptName(a), y = deptName(b);
    try { return x.localeCompare(y, lang) || (a < b ? -1 : 1); } catch (e) { return x < y ? -1 : x > y ? 1 : 0; }
  }

  function loadDeptKpis() {
    if (!token || !supervises(me) || deptLoading) return;
    deptLoading = true;
    api("/api/departments").then(function (b) {
      var all = (b.departments || []).slice();
      departments = all.slice();
      all.sort(byDeptName);
      var pick = all.slice(0, DEPT_MAX);
      return Promise.all(pick.map(function (d) {
        return api("/api/kpis?department=" + encodeURIComponent(d)).then(function (k) { deptKpis[d] = k; }, function () { /* the last figures stay */ });
      })).then(function () {
        deptShown = pick;
        deptTotal = all.length;
        Object.keys(deptKpis).forEach(function (d) { if (pick.indexOf(d) < 0) delete deptKpis[d]; });
      });
    }, function () { /* shown next time */ }).then(function () {
      deptLoading = false;
      renderDepts();
    });
  }

  function renderDepts() {
    if (!me || !supervises(me) || !deptShown) return;
    var ul = $("#depts");
    var list = deptShown.slice().sort(byDeptName); // names may arrive later
    rebuild(ul, function () { list.forEach(function (d) {
      var k = deptKpis[d];
      var c = (k && k.conversations) || {};
      var open = !!(deptOpen[d] && k);
      var name = deptName(d);
      var box = h("dl", { class: "kpis", id: "dept-k-" + d, hidden: !open });
      if (k) fillKpis(box, k);
      ul.appendChild(h("li", { class: "card member dept", "data-department": d }, [
        h("div", { class: "row" }, [
          h("h3", { id: "dept-h-" + d, text: name }),
          h("span", { class: "sub summary", text: k ? t("depts_summary", { started: c.started || 0, answered: c.answered || 0 }) : t("kpi_none") })
        ]),
        h("button", {
          type: "button", class: "small", "data-key": "dept-" + d, disabled: !k,
          "aria-expanded": String(open), "aria-controls": "dept-k-" + d,
          text: t("team_kpis"), "aria-label": t("team_kpis_of", { name: name }),
          onclick: function () { if (deptOpen[d]) delete deptOpen[d]; else deptOpen[d] = true; renderDepts(); }
        }),
        box
      ]));
    }); });
    var more = $("#depts-more");
    more.textContent = deptTotal > list.length ? t("depts_more", { shown: list.length, total: deptTotal }) : "";
    show(more, deptTotal > list.length);
    show($("#depts-empty"), !list.length);
  }
  $("#depts-refresh").addEventListener("click", loadDeptKpis);

  // ------------------------------------- supervisors: the catalog's texts

  // Canned replies, close reasons and department names, per language: listed,
  // added or replaced by key, deleted (a second click confirms).
  var CATALOG_KINDS = ["canned_reply", "close_reason", "department"];
  var catalogDlg = $("#catalog-dialog");
  CATALOG_KINDS.forEach(function (k) { $("#catalog-kind").appendChild(h("option", { value: k, text: t("kind_" + k) })); });
  function catalogPick() { return { kind: $("#catalog-kind").value, language: $("#catalog-language").value }; }
  function catalogStatus(text, failed) {
    var el = $("#catalog-status");
    el.textContent = text || "";
    el.classList.toggle("error", !!failed);
  }

  function openCatalog() {
    var sel = $("#catalog-language");
    var want = sel.value || lang;
    var langs = Object.keys(P.i18n.LANGUAGES);
    agents.forEach(function (a) { (a.languages || []).forEach(function (l) { if (langs.indexOf(l) < 0) langs.push(l); }); });
    clear(sel);
    langs.forEach(function (l) { sel.appendChild(h("option", { value: l, text: P.i18n.LANGUAGES[l] || l.toUpperCase(), selected: l === want })); });
    catalogStatus("");
    renderCatalog();
    if (!catalogDlg.open) catalogDlg.showModal();
  }

  function renderCatalog() {
    var pick = catalogPick();
    $("#catalog-key-hint").textContent = t("catalog_key_" + pick.kind);
    // The server's limits: a department is named by its tag, in a short name.
    var dept = pick.kind === "department";
    $("#catalog-key").maxLength = dept ? 32 : 64;
    $("#catalog-text").maxLength = dept ? 64 : 4000;
    // Read fresh: another supervisor may have changed it.
    delete catalogs[pick.kind + ":" + pick.language];
    catalogOf(pick.kind, pick.language).then(function (items) {
      var now = catalogPick();
      if (now.kind !== pick.kind || now.language !== pick.language) return;
      var ul = $("#catalog-items");
      rebuild(ul, function () { items.forEach(function (i) {
        var del = h("button", { type: "button", class: "small", "data-key": "del-" + i.key, text: t("catalog_delete"), "aria-label": t("catalog_delete_of", { key: i.key }) });
        // The first click asks (and says so to screen readers too); leaving the
        // button takes the question back.
        var disarm = function () {
          del.armed = false;
          del.textContent = t("catalog_delete");
          del.setAttribute("aria-label", t("catalog_delete_of", { key: i.key }));
        };
        del.onblur = disarm;
        del.onclick = function () {
          if (!del.armed) {
            del.armed = true;
            del.textContent = t("catalog_confirm_delete");
            del.setAttribute("aria-label", t("catalog_confirm_delete") + " " + i.key);
            return;
          }
          api("/api/catalog/" + [pick.kind, pick.language, i.key].map(encodeURIComponent).join("/"), { method: "DELETE" }).then(function () {
            $("#catalog-kind").focus();
            catalogChanged(pick, t("catalog_deleted", { key: i.key }));
          }, function () { catalogStatus(t("catalog_failed"), true); });
        };
        ul.appendChild(h("li", {}, [
          h("span", { class: "key", text: i.key }),
          h("span", { class: "text", dir: "auto", text: i.text }),
          h("button", { type: "button", class: "small", "data-key": "edit-" + i.key, text: t("catalog_edit"), "aria-label": t("catalog_edit_of", { key: i.key }), onclick: function () {
            $("#catalog-key").value = i.key;
            $("#catalog-text").value = i.text;
            $("#catalog-text").focus();
          } }),
          del
        ]));
      }); });
      show($("#catalog-empty"), !items.length);
    });
  }

  function catalogChanged(pick, text) {
    delete catalogs[pick.kind + ":" + pick.language];
    if (pick.kind === "department") loadDeptNames();
    catalogStatus(text);
    renderCatalog();
  }

  $("#catalog-open").addEventListener("click", openCatalog);
  $("#catalog-close").addEventListener("click", function () { catalogDlg.close(); });
  // Another kind or language: what was in the form belonged to the one before.
  function catalogSwitch() {
    $("#catalog-key").value = "";
    $("#catalog-text").value = "";
    catalogStatus("");
    renderCatalog();
  }
  $("#catalog-kind").addEventListener("change", catalogSwitch);
  $("#catalog-language").addEventListener("change", catalogSwitch);
  $("#catalog-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var pick = catalogPick();
    var item = { kind: pick.kind, language: pick.language, key: $("#catalog-key").value.trim(), text: $("#catalog-text").value };
    api("/api/catalog", { method: "PUT", body: item }).then(function (b) {
      $("#catalog-key").value = "";
      $("#catalog-text").value = "";
      catalogChanged(pick, t("catalog_saved", { key: b.item.key }));
    }, function (e) { catalogStatus(e.code === "invalid_field" ? t("catalog_refused") : t("catalog_failed"), true); });
  });

  // ------------------------------------------------ supervisors: everything

  // The live list again after a change, at most once every 2 s: a busy queue
  // changes many times a second, and each load is two requests.
  var liveTimer = null, liveAt = 0;
  function liveSoon() {
    if (liveTimer) return;
    liveTimer = setTimeout(function () { liveTimer = null; loadLive(); }, Math.max(0, liveAt + 2000 - Date.now()));
  }

  function loadLive() {
    liveAt = Date.now();
    if (!token || !supervises(me)) return;
    Promise.all(["active", "queued"].map(function (s) { return api("/api/conversations?state=" + s + "&limit=200"); })).then(function (r) {
      var list = (r[0].conversations || []).concat(r[1].conversations || []);
      var cards = Object.assign({}, r[0].players, r[1].players);
      liveList = list;
      renderTeam();
      var ul = $("#live");
      rebuild(ul, function () { list.forEach(function (c) {
        var mine = c.agent === me.id;
        var who = playerName(cards[c.player] || { id: c.player });
        ul.appendChild(h("li", { class: "card" }, [
          h("strong", { text: who }),
          h("span", { class: "sub", text: t("state_" + c.state) + " · " + (c.agent ? agentName(c.agent) : t("nobody")) + " · " + deptName(c.department) + " · " + c.language.toUpperCase() }),
          mine ? null : h("div", { class: "row" }, [
            h("button", { type: "button", "data-key": "view-" + c.id, text: t("view"), "aria-label": t("view_conversation", { id: who }), onclick: function () { watchChat(c); } }),
            h("button", { type: "button", class: "primary", "data-key": "take-" + c.id, text: t("take_over"), "aria-label": t("take_over_conversation", { id: who }), onclick: function () { accepting[c.id] = true; client.send({ type: "take", conversation: c.id }); } })
          ])
        ]));
      }); });
      $("#live-total").textContent = "(" + list.length + ")";
      show($("#live-empty"), !list.length);
    }, function () { /* shown next time */ });
  }

  function watchChat(summary) {
    var chat = openChat(summary.id, { owned: false, summary: summary });
    chat.watching = true;
    watchBanner(chat, summary);
    client.watch(summary.id);
    select(summary.id);
  }

  // Notes are taken in queued and active conversations only.
  function watchBanner(chat, summary) {
    chat.whisperable = summary.state === "queued" || summary.state === "active";
    banner(chat, t("watching", { owner: summary.agent ? agentName(summary.agent) : t("watching_nobody") }));
    updateActions(chat);
  }

  // A watched chat changed hands (transfer, take-over, requeue): name its owner
  // now. Replayed events come in bursts; one request after the last.
  function rewatch(chat) {
    clearTimeout(chat.rewatchTimer);
    chat.rewatchTimer = setTimeout(function () {
      api("/api/conversations/" + chat.id).then(function (b) {
        if (chats[chat.id] === chat && chat.watching && !chat.ended) watchBanner(chat, b.conversation);
      }, function () { /* kept as it was */ });
    }, 300);
  }

  // ------------------------------------------------------------------- chats

  function openChat(id, opts) {
    var chat = chats[id];
    if (chat) {
      if (opts.offer) { chat.language = opts.offer.language || chat.language; chat.department = opts.offer.department || chat.department; }
      if (opts.player) setPlayer(chat, opts.player);
      return chat;
    }
    var tabId = "tab-" + id;
    var panelId = "panel-" + id;
    chat = chats[id] = {
      id: id, owned: !!opts.owned, ended: null, watching: false, transferring: false,
      language: opts.summary ? opts.summary.language : opts.offer ? opts.offer.language : opts.player && opts.player.language || "en",
      department: opts.summary ? opts.summary.department : opts.offer ? opts.offer.department : "",
      player: null, bySeq: {}, byClient: {}, unread: 0, readSeq: 0, readSent: 0, typingSent: 0
    };
    chat.label = h("span", { class: "label", text: opts.summary ? shortPlayer(opts.summary.player) : "…" });
    // The tab's name is its text: the player, "ended", and the unread count
    // (a number on screen, "2 unread" for screen readers).
    chat.badge = h("span", { class: "badge", "aria-hidden": "true", hidden: true });
    chat.unreadSr = h("span", { class: "sr" });
    chat.endedMark = h("span", { class: "ended-mark", hidden: true, text: t("tab_ended") });
    chat.tab = h("button", { type: "button", role: "tab", id: tabId, "aria-controls": panelId, "aria-selected": "false", tabindex: "-1", onclick: function () { select(id); }, onkeydown: tabKeys }, [chat.label, " ", chat.endedMark, " ", chat.badge, chat.unreadSr]);
    $("#tabs").appendChild(chat.tab);

    chat.log = h("ol", { class: "msgs" });
    chat.scroll = h("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": t("messages") }, [chat.log]);
    chat.typing = h("p", { class: "typing", "aria-live": "polite" });
    chat.bannerEl = h("p", { class: "banner", role: "status", hidden: true });
    chat.input = h("textarea", { id: "input-" + id, rows: "3", maxlength: "4000", "aria-autocomplete": "list", "aria-controls": "canned-" + id, placeholder: t("placeholder"), onkeydown: function (e) { composerKeys(chat, e); }, oninput: function () { composerInput(chat); } });
    // What was being written before a reload (or a change of language) is back.
    chat.input.value = stored("sessionStorage", DRAFT + id) || "";
    chat.noteMode = h("input", { type: "checkbox", id: "note-" + id, onchange: function () { syncNoteMode(chat); } });
    chat.canned = h("ul", { class: "canned", role: "listbox", id: "canned-" + id, "aria-label": t("canned_replies"), hidden: true });
    chat.sendBtn = h("button", { type: "submit", class: "primary", text: t("send") });
    chat.composer = h("form", { class: "composer", onsubmit: function (e) { e.preventDefault(); sendFrom(chat); } }, [
      h("label", { for: "input-" + id, class: "sr", text: t("reply_to_player") }),
      chat.canned,
      chat.input,
      h("div", { class: "row" }, [
        h("label", { class: "check" }, [chat.noteMode, " ", t("private_note")]),
        h("span", { class: "hint", text: t("canned_hint") }),
        chat.sendBtn
      ])
    ]);
    chat.transferBtn = h("button", { type: "button", text: t("transfer"), onclick: function () { openTransfer(chat); } });
    chat.closeBtn = h("button", { type: "button", text: t("close_chat"), onclick: function () { openClose(chat); } });
    chat.takeBtn = h("button", { type: "button", class: "primary", text: t("take_over"), hidden: true, onclick: function () { accepting[id] = true; client.send({ type: "take", conversation: id }); } });
    chat.closeTab = h("button", { type: "button", hidden: true, text: t("close_tab"), onclick: function () { dropChat(id); } });
    chat.actions = h("div", { class: "actions" }, [chat.transferBtn, chat.closeBtn, chat.takeBtn, chat.closeTab]);
    chat.attrs = h("dl", { class: "attrs" });
    chat.history = h("ul", { class: "history" });
    chat.panel = h("div", { role: "tabpanel", id: panelId, "aria-labelledby": tabId, class: "chat", hidden: true }, [
      h("div", { class: "main" }, [chat.actions, chat.bannerEl, chat.scroll, chat.typing, chat.composer]),
      h("aside", { class: "about", "aria-label": t("about_player") }, [
        h("h3", { text: t("player") }), chat.attrs,
        h("h3", { text: t("earlier_conversations") }), chat.history
      ])
    ]);
    $("#panels").appendChild(chat.panel);
    show($("#no-chats"), false);
    saveOrder();
    if (opts.player) setPlayer(chat, opts.player);
    updateActions(chat);
    refreshDetails(chat);
    return chat;
  }

  // Language, department and the player's card as the server has them now.
  function refreshDetails(chat) {
    api("/api/conversations/" + chat.id).then(function (b) {
      if (chats[chat.id] !== chat) return;
      chat.language = b.conversation.language;
      chat.department = b.conversation.department;
      if (b.player || chat.player) setPlayer(chat, b.player || chat.player);
      catalog("canned_reply", chat.language);
    }, function () { /* not readable (yet) */ });
  }

  function syncNoteMode(chat) {
    chat.composer.classList.toggle("noting", chat.noteMode.checked);
    chat.input.placeholder = chat.noteMode.checked ? t("note_placeholder") : t("placeholder");
  }

  function setPlayer(chat, card) {
    chat.player = card;
    chat.label.textContent = playerName(card);
    clear(chat.attrs);
    var rows = [
      [t("attr_name"), card.name || "—"],
      [t("attr_id"), card.id],
      [t("attr_language"), languageName(card.language)],
      [t("attr_vip"), card.vip_tier ? t("vip", { n: card.vip_tier }) : t("no")],
      [t("attr_jurisdiction"), card.jurisdiction || "—"],
      [t("attr_self_excluded"), card.self_excluded ? t("yes") : t("no")],
      [t("attr_verified"), card.verified ? t("yes") : t("no")]
    ];
    if (chat.department) rows.push([t("attr_department"), deptName(chat.department)]);
    rows.forEach(function (r, i) {
      chat.attrs.appendChild(h("dt", { text: r[0] }));
      chat.attrs.appendChild(h("dd", { class: i === 5 && card.self_excluded ? "warn" : null, text: r[1] }));
    });
    loadHistory(chat);
  }

  function loadHistory(chat) {
    if (!chat.player || chat.historyLoaded) return;
    chat.historyLoaded = true;
    api("/api/players/" + encodeURIComponent(chat.player.id) + "/conversations").then(function (b) {
      clear(chat.history);
      var list = (b.conversations || []).filter(function (c) { return c.id !== chat.id; });
      if (!list.length) chat.history.appendChild(h("li", { class: "empty", text: t("no_earlier") }));
      list.forEach(function (c) {
        var text = when(c.created_at) + " · " + t("state_" + c.state) + (c.agent ? " · " + agentName(c.agent) : "") + (c.rating ? " · " + c.rating + "/5" : "");
        // Another agent's transcript is for that agent and supervisors
        // (docs/permissions.md): the summary only.
        chat.history.appendChild(h("li", {}, [supervises(me) || c.agent === me.id
          ? h("button", { type: "button", class: "link", onclick: function () { showTranscript(c); } }, [text])
          : h("span", { text: text, title: t("transcript_unavailable") })]));
      });
    }, function () { chat.historyLoaded = false; });
  }

  function showTranscript(c) {
    var dlg = $("#transcript-dialog");
    $("#transcript-h").textContent = t("transcript_of", { date: when(c.created_at) });
    var ol = $("#transcript-log");
    var facts = $("#transcript-facts");
    clear(ol);
    clear(facts);
    show(facts, false);
    api("/api/conversations/" + c.id + "/transcript").then(function (b) {
      (b.messages || []).slice().sort(function (x, y) { return x.seq - y.seq; }).forEach(function (m) { ol.appendChild(item(m)); });
    }, function () { ol.appendChild(h("li", { class: "empty", text: t("transcript_unavailable") })); });
    // How it ended: the close reason, the rating and the player's comment.
    api("/api/conversations/" + c.id).then(function (d) {
      var summary = d.conversation || c;
      var rows = [];
      rows.push([t("attr_state"), t("state_" + summary.state)]);
      if (summary.agent) rows.push([t("attr_agent"), agentName(summary.agent)]);
      var reason = d.close_reason ? reasonText({ language: summary.language }, d.close_reason) : Promise.resolve(summary.state === "closed" ? t("no_reason") : null);
      return reason.then(function (text) {
        if (text) rows.push([t("close_reason"), text]);
        rows.push([t("attr_rating"), summary.rating ? t("rating_value", { score: summary.rating }) : t("not_rated")]);
        if (d.rating_comment) rows.push([t("attr_rating_comment"), d.rating_comment]);
        rows.forEach(function (r) {
          facts.appendChild(h("dt", { text: r[0] }));
          facts.appendChild(h("dd", { text: r[1] }));
        });
        show(facts, true);
      });
    }).catch(function () { /* the transcript alone */ });
    dlg.showModal();
  }

  function select(id) {
    selected = id;
    stored("sessionStorage", SELECTED, id);
    Object.keys(chats).forEach(function (k) {
      var chat = chats[k];
      var on = k === id;
      chat.tab.setAttribute("aria-selected", String(on));
      chat.tab.tabIndex = on ? 0 : -1;
      show(chat.panel, on);
    });
    var chat = chats[id];
    if (!chat) return;
    chat.unread = 0;
    if (client) setSeen(id, client.last(id));
    updateBadge(chat);
    markRead(chat);
    chat.scroll.scrollTop = chat.scroll.scrollHeight;
  }

  function tabKeys(e) {
    var ids = Object.keys(chats);
    var i = ids.indexOf(selected);
    var next = e.key === "ArrowRight" ? ids[(i + 1) % ids.length] : e.key === "ArrowLeft" ? ids[(i - 1 + ids.length) % ids.length] : e.key === "Home" ? ids[0] : e.key === "End" ? ids[ids.length - 1] : null;
    if (!next) return;
    e.preventDefault();
    select(next);
    chats[next].tab.focus();
  }

  function dropChat(id) {
    var chat = chats[id];
    if (!chat) return;
    if (client) client.unwatch(id);
    chat.tab.remove();
    chat.panel.remove();
    delete chats[id];
    saveDraft(chat, "");
    saveOrder();
    if (selected === id) {
      selected = null;
      var rest = Object.keys(chats);
      if (rest.length) select(rest[rest.length - 1]);
    }
    show($("#no-chats"), !Object.keys(chats).length);
    updateTitle();
    refocus();
  }

  function end(chat, text) {
    chat.ended = text;
    chat.owned = false;
    saveDraft(chat, ""); // nobody can send it any more
    chat.transferring = chat.transferPending = false;
    if (client) client.unwatch(chat.id);
    banner(chat, text, true);
    chat.typing.textContent = "";
    chat.tab.classList.add("ended");
    var inside = chat.panel.contains(doc.activeElement);
    updateActions(chat);
    updateBadge(chat);
    // The reply box and the chat's buttons went: its "Close tab" is next.
    if (selected === chat.id && (inside || focusLost()) && focusLost()) chat.closeTab.focus();
  }

  function banner(chat, text, important) {
    chat.bannerEl.textContent = text || "";
    chat.bannerEl.classList.toggle("important", !!important);
    show(chat.bannerEl, !!text);
  }

  // A supervisor viewing a chat they do not own may write private notes to its
  // agent (never to the player) without taking it over.
  function whispers(chat) {
    return !chat.owned && chat.watching && chat.whisperable && !chat.ended && supervises(me);
  }

  function updateActions(chat) {
    var canWrite = chat.owned && !chat.ended;
    var whisper = whispers(chat);
    show(chat.composer, canWrite || whisper);
    if (whisper !== chat.noteMode.disabled) {
      chat.noteMode.disabled = whisper;
      chat.noteMode.checked = whisper;
      syncNoteMode(chat);
    }
    chat.transferBtn.disabled = !canWrite || chat.transferring;
    show(chat.transferBtn, canWrite);
    show(chat.closeBtn, canWrite || (chat.watching && !chat.ended));
    show(chat.takeBtn, chat.watching && !chat.ended && supervises(me));
    show(chat.closeTab, !!chat.ended || chat.watching);
  }

  function updateBadge(chat) {
    chat.badge.textContent = String(chat.unread);
    show(chat.badge, chat.unread > 0);
    show(chat.endedMark, !!chat.ended);
    chat.unreadSr.textContent = chat.unread ? t("unread", { n: chat.unread }) : "";
    updateTitle();
  }

  function updateTitle() {
    var n = 0;
    Object.keys(chats).forEach(function (k) { n += chats[k].unread; });
    doc.title = (n ? "(" + n + ") " : "") + t("page_title");
  }

  // --------------------------------------------------------------- messages

  // The note the server writes for a transfer ("Transfer to agent:boris: …",
  // "Transfer to department:payments: …"), in the console's language.
  function noteText(m) {
    var x = m.event === "transfer_note" && /^Transfer to (agent|department):([^:]+): ([\s\S]*)$/.exec(m.text || "");
    if (!x) return m.text;
    return x[1] === "agent" ? t("transfer_note_agent", { name: agentName(x[2]), note: x[3] }) : t("transfer_note_department", { department: deptName(x[2]), note: x[3] });
  }

  function item(m) {
    var li;
    if (m.kind === "event") {
      li = h("li", { class: "event" }, [h("p", { text: P.i18n.eventText(m, t) })]);
    } else {
      var mine = m.sender && me && m.sender.id === me.id;
      var who = !m.sender ? "" : m.sender.name || (m.sender.role === "player" ? shortPlayer(m.sender.id) : m.sender.id);
      var cls = m.kind === "note" ? "msg note" : m.sender && m.sender.role === "player" ? "msg player" : "msg agent";
      li = h("li", { class: cls + (mine ? " mine" : "") }, [
        h("span", { class: "who", text: m.kind === "note" ? t("note_by", { name: who }) : who }),
        h("p", { class: "text", dir: "auto", text: noteText(m) }),
        h("span", { class: "meta", "aria-hidden": "true" })
      ]);
    }
    li.at = m.at || Date.now();
    if (m.event === "transfer_note") { li.note = m; li.classList.add("transfer-note"); }
    var el = li.querySelector(".meta");
    if (el) el.textContent = clock(li.at);
    return li;
  }

  function meta(chat, li, state) {
    var el = li.querySelector(".meta");
    if (!el) return;
    li.state = state;
    el.textContent = clock(li.at) + (state ? " · " + t(state) : "");
    li.classList.toggle("failed", state === "not_sent");
  }

  function place(chat, li, seq) {
    var kids = chat.log.children;
    var before = null;
    for (var i = kids.length - 1; i >= 0; i--) {
      var k = kids[i];
      if (k === li) continue;
      if (!k.seq || k.seq > seq) { before = k; continue; }
      break;
    }
    chat.log.insertBefore(li, before);
  }

  function onMessage(m) {
    var chat = chats[m.conversation];
    if (!chat || chat.bySeq[m.seq]) return;
    var li = m.client_id && chat.byClient[m.client_id];
    if (li && m.sender && me && m.sender.id === me.id) delete chat.byClient[m.client_id];
    else li = item(m);
    li.seq = m.seq;
    chat.bySeq[m.seq] = li;
    place(chat, li, m.seq);
    var mine = m.sender && me && m.sender.id === me.id && m.kind === "text";
    if (mine) meta(chat, li, chat.readSeq >= m.seq ? "read" : "sent");
    if (m.sender && m.sender.role === "player") {
      clearTimeout(chat.typingTimer);
      chat.typing.textContent = "";
    }
    // From the player, or a note or message of someone else (a supervisor's
    // instruction). Counted once: what the agent saw before a reload is not
    // unread again.
    if (m.sender && m.kind !== "event" && !(me && m.sender.id === me.id)) {
      if (selected !== m.conversation || doc.hidden) {
        if (m.seq > seenSeq(m.conversation)) {
          chat.unread++;
          updateBadge(chat);
          if (selected !== m.conversation) announce(t("announce_message", { name: chat.label.textContent }));
        }
      } else markRead(chat);
    }
    if (m.kind === "event" && m.event === "closed" && !chat.ended) end(chat, t("closed"));
    if (m.kind === "event" && chat.owned && !chat.ended) transferEvent(chat, m);
    if (m.kind === "event" && chat.watching && !chat.ended && (m.event === "joined" || m.event === "requeued")) rewatch(chat);
    chat.scroll.scrollTop = chat.scroll.scrollHeight;
  }

  // The transcript says whether a transfer is pending, also when it is replayed
  // after a reload: a `transfer_requested` not yet followed by its outcome.
  function transferEvent(chat, m) {
    if (m.event === "transfer_requested") {
      var x = /^You are being transferred to (.+)\. Your/.exec(m.text || "");
      chat.transferring = chat.transferPending = true;
      banner(chat, t("transfer_pending", { to: x ? x[1] : "—" }));
    } else if ((m.event === "transfer_cancelled" || m.event === "joined") && chat.transferPending) {
      chat.transferring = chat.transferPending = false;
      banner(chat, "");
    } else return;
    updateActions(chat);
  }

  function onAck(a) {
    var chat = chats[a.conversation];
    var li = chat && chat.byClient[a.client_id];
    if (!li) return;
    delete chat.byClient[a.client_id];
    if (chat.bySeq[a.seq]) { li.remove(); return; }
    li.seq = a.seq;
    chat.bySeq[a.seq] = li;
    place(chat, li, a.seq);
    if (!li.classList.contains("note")) meta(chat, li, chat.readSeq >= a.seq ? "read" : "sent");
    else meta(chat, li, "");
  }

  function markRead(chat) {
    clearTimeout(chat.readTimer);
    chat.readTimer = setTimeout(function () {
      if (!client || selected !== chat.id || doc.hidden || chat.ended) return;
      var seq = client.last(chat.id);
      // Only viewing: nothing is "read" for the player until someone serves them.
      if (!chat.owned) { setSeen(chat.id, seq); return; }
      setSeen(chat.id, seq);
      if (seq > chat.readSent && client.send({ type: "read", conversation: chat.id, seq: seq })) chat.readSent = seq;
    }, 300);
  }
  doc.addEventListener("visibilitychange", function () {
    if (doc.hidden || !selected || !chats[selected]) return;
    chats[selected].unread = 0;
    if (client) setSeen(selected, client.last(selected));
    updateBadge(chats[selected]);
    markRead(chats[selected]);
  });

  function sendFrom(chat) {
    var text = chat.input.value.trim();
    if (!text || chat.ended || !(chat.owned || whispers(chat))) return;
    var note = chat.noteMode.checked || !chat.owned;
    var e = client.say(chat.id, text, note ? "note" : "text");
    var li = item({ kind: note ? "note" : "text", text: text, at: e.at, sender: { id: me.id, name: me.name, role: me.role === "admin" ? "supervisor" : me.role } });
    chat.byClient[e.client_id] = li;
    chat.log.appendChild(li);
    meta(chat, li, "sending");
    chat.input.value = "";
    saveDraft(chat, "");
    closeCanned(chat);
    // A note is one message: the next one goes to the player again.
    if (note && chat.owned) { chat.noteMode.checked = false; syncNoteMode(chat); }
    if (chat.typingSent && !note) client.send({ type: "typing", conversation: chat.id, active: false });
    chat.typingSent = 0;
    chat.scroll.scrollTop = chat.scroll.scrollHeight;
  }

  // ----------------------------------------------------- composer, canned

  // The reply being written, kept for this browser tab: a reload or a change
  // of the console's language rebuilds the chat's tab with it.
  function saveDraft(chat, text) { stored("sessionStorage", DRAFT + chat.id, text || null); }

  function composerInput(chat) {
    var v = chat.input.value;
    saveDraft(chat, v);
    if (v.charAt(0) === "/") searchCanned(chat, v.slice(1).trim().toLowerCase());
    else closeCanned(chat);
    if (chat.noteMode.checked || !v || v.charAt(0) === "/") return;
    var now = Date.now();
    if (now - chat.typingSent > 3000) { chat.typingSent = now; client.send({ type: "typing", conversation: chat.id, active: true }); }
    clearTimeout(chat.typingIdle);
    chat.typingIdle = setTimeout(function () {
      if (chat.typingSent) client.send({ type: "typing", conversation: chat.id, active: false });
      chat.typingSent = 0;
    }, 4000);
  }

  function searchCanned(chat, q) {
    catalog("canned_reply", chat.language).then(function (items) {
      if (chat.input.value.charAt(0) !== "/") return;
      // Keys that start with the query first, then keys that contain it, then texts.
      var rank = function (i) {
        var k = i.key.toLowerCase();
        return k.indexOf(q) === 0 ? 0 : k.indexOf(q) > 0 ? 1 : i.text.toLowerCase().indexOf(q) >= 0 ? 2 : 3;
      };
      var found = items.map(function (i) { return { i: i, r: rank(i) }; })
        .filter(function (x) { return x.r < 3; })
        .sort(function (a, b) { return a.r - b.r; })
        .map(function (x) { return x.i; }).slice(0, 8);
      chat.cannedItems = found;
      chat.cannedActive = 0;
      clear(chat.canned);
      found.forEach(function (i, n) {
        chat.canned.appendChild(h("li", { role: "option", id: "canned-" + chat.id + "-" + n, "aria-selected": String(n === 0), onmousedown: function (e) { e.preventDefault(); useCanned(chat, n); } }, [
          h("strong", { text: "/" + i.key }), " ", i.text
        ]));
      });
      if (!found.length) chat.canned.appendChild(h("li", { class: "empty", role: "option", "aria-disabled": "true", "aria-selected": "false", text: t("no_canned") }));
      show(chat.canned, true);
      activeCanned(chat, 0);
    });
  }

  function activeCanned(chat, n) {
    var opts = $$("[role=option]", chat.canned);
    opts.forEach(function (o, i) { o.setAttribute("aria-selected", String(i === n)); });
    chat.cannedActive = n;
    if (opts[n] && chat.cannedItems.length) chat.input.setAttribute("aria-activedescendant", opts[n].id);
  }

  function useCanned(chat, n) {
    var i = chat.cannedItems && chat.cannedItems[n];
    if (!i) return;
    chat.input.value = i.text;
    saveDraft(chat, i.text);
    closeCanned(chat);
    chat.input.focus();
  }

  function closeCanned(chat) {
    show(chat.canned, false);
    chat.cannedItems = null;
    chat.input.removeAttribute("aria-activedescendant");
  }

  function composerKeys(chat, e) {
    var open = !chat.canned.hidden && chat.cannedItems && chat.cannedItems.length;
    if (open && (e.key === "ArrowDown" || e.key === "ArrowUp")) {
      e.preventDefault();
      var n = chat.cannedItems.length;
      activeCanned(chat, (chat.cannedActive + (e.key === "ArrowDown" ? 1 : n - 1)) % n);
      return;
    }
    if (open && (e.key === "Enter" || e.key === "Tab")) { e.preventDefault(); useCanned(chat, chat.cannedActive); return; }
    if (!chat.canned.hidden && e.key === "Escape") { e.preventDefault(); closeCanned(chat); return; }
    // The list is open with nothing to insert: Enter does not send the filter.
    if (!chat.canned.hidden && e.key === "Enter") { e.preventDefault(); return; }
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendFrom(chat); }
  }

  // ------------------------------------------------------- transfer, close

  var dialogChat = null;

  function loadAgents() {
    if (!token) return Promise.resolve(agents);
    return api("/api/agents").then(function (b) {
      var before = agents.length;
      agents = b.agents || [];
      renderTeam();
      if (!before) renameAll();
      return agents;
    }, function () { return agents; });
  }

  // Why an agent cannot take this chat now ("" if they can): the server's rules
  // for a transfer to an agent (docs/protocol.md §5.4). `load` (owned chats plus
  // open offers) is null when routing did not answer: then fullness is unknown.
  function cannotTake(a, chat) {
    if (a.id === me.id) return t("why_you");
    if (a.status === "away") return t("why_away");
    if (a.status !== "online") return t("why_offline");
    if ((a.languages || []).indexOf(chat.language) < 0) return t("why_language", { lang: String(chat.language).toUpperCase() });
    if (a.load != null && a.capacity != null && a.load >= a.capacity) return t("why_full", { n: a.load, cap: a.capacity });
    return "";
  }

  function statusText(s) {
    return t(s === "online" ? "status_online" : s === "away" ? "status_away" : "status_offline");
  }

  // Who can take it first, then the others (disabled) with the reason.
  function renderTransferAgents(chat, loaded) {
    var sel = $("#transfer-agent");
    var keep = sel.value;
    clear(sel);
    if (!loaded) {
      sel.appendChild(h("option", { value: "", disabled: true, selected: true, text: t("loading") }));
      return;
    }
    var can = [], cannot = [];
    agents.forEach(function (a) {
      var why = cannotTake(a, chat);
      var text = a.name + " (" + a.id + ") · " + statusText(a.status) + " · " + (a.languages || []).join(", ").toUpperCase();
      (why ? cannot : can).push(h("option", { value: a.id, disabled: !!why, text: why ? text + " — " + why : text }));
    });
    if (can.length) sel.appendChild(h("optgroup", { label: t("transfer_can") }, can));
    if (cannot.length) sel.appendChild(h("optgroup", { label: t("transfer_cannot") }, cannot));
    renderTransferDepartments(chat);
    if (keep && can.some(function (o) { return o.value === keep; })) sel.value = keep;
    else if (can.length) sel.value = can[0].value;
    else sel.insertBefore(h("option", { value: "", disabled: true, selected: true, text: t("nobody_available") }), sel.firstChild);
    $("#transfer-agent-hint").textContent = can.length ? t("transfer_hint", { lang: String(chat.language).toUpperCase() }) : t("transfer_nobody");
  }

  // Each department with how many online agents of it speak the chat's language
  // (none: the server refuses the transfer). Counts once agents are loaded.
  function renderTransferDepartments(chat) {
    var depSel = $("#transfer-department");
    var dep = depSel.value;
    var lang = String(chat.language).toUpperCase();
    clear(depSel);
    departments.forEach(function (d) {
      var n = agents.filter(function (a) {
        return a.id !== me.id && a.status === "online" && (a.departments || []).indexOf(d) >= 0 && (a.languages || []).indexOf(chat.language) >= 0;
      }).length;
      var text = agents.length ? deptName(d) + " — " + (n ? t("dept_online", { n: n, lang: lang }) : t("dept_nobody", { lang: lang })) : deptName(d);
      depSel.appendChild(h("option", { value: d, text: text, selected: d === dep }));
    });
  }

  function openTransfer(chat, problem) {
    var dlg = $("#transfer-dialog");
    if (dlg.open) return;
    dialogChat = chat;
    renderTransferAgents(chat, false);
    // Statuses change all the time: ask again each time the dialog opens.
    loadAgents().then(function () { if (dialogChat === chat && dlg.open) renderTransferAgents(chat, true); });
    renderTransferDepartments(chat);
    // The note survives a refusal or a cancel: the agent picks someone else.
    $("#transfer-note").value = chat.transferNote || "";
    if (!problem) $("#transfer-form").elements.kind.value = "agent";
    $("#transfer-error").textContent = problem || "";
    syncTransferKind();
    dlg.returnValue = "";
    dlg.showModal();
  }
  function syncTransferKind() {
    var kind = $("#transfer-form").elements.kind.value;
    $("#transfer-agent").disabled = kind !== "agent";
    $("#transfer-department").disabled = kind !== "department";
  }
  $$("#transfer-form input[name=kind]").forEach(function (r) { r.addEventListener("change", syncTransferKind); });
  $("#transfer-dialog").addEventListener("close", function () {
    var chat = dialogChat;
    if (!chat) return;
    chat.transferNote = $("#transfer-note").value;
    if ($("#transfer-dialog").returnValue !== "ok" || !chat.owned || chat.ended) return;
    var kind = $("#transfer-form").elements.kind.value;
    var value = kind === "agent" ? $("#transfer-agent").value : $("#transfer-department").value;
    if (!value) return;
    var to = {};
    to[kind] = value;
    var note = chat.transferNote.trim();
    chat.transferring = true;
    chat.transferKind = kind;
    chat.transferPending = false;
    updateActions(chat);
    client.send({ type: "transfer", conversation: chat.id, to: to, note: note || null });
    // Its button waits for the answer (disabled): back to the reply box.
    chat.input.focus();
  });

  // The server refused a transfer (the target is away, full…): the button works
  // again, and the dialog opens again with the note so the agent can pick
  // someone else.
  function transferRefused(f) {
    var chat = chats[f.conversation];
    if (!chat) {
      Object.keys(chats).forEach(function (id) { if (chats[id].transferring && !chats[id].transferPending) chat = chats[id]; });
    }
    var text = errorText(f);
    if (chat && chat.transferKind === "department" && f.code === "invalid_state") text = t("err_transfer_department_invalid_state");
    if (!chat) { toast(text); return; }
    chat.transferring = chat.transferPending = false;
    updateActions(chat);
    if (chat.owned && !chat.ended && selected === chat.id && !$$("dialog[open]").length) openTransfer(chat, text);
    else toast(text);
  }

  function openClose(chat) {
    dialogChat = chat;
    var sel = $("#close-reason");
    clear(sel);
    // No reason is chosen for the agent: a default would mislabel chats.
    sel.appendChild(h("option", { value: "", selected: true, text: t("close_no_reason") }));
    closeReasons(chat).then(function (items) {
      if (!items.length) items = [{ key: "resolved", text: t("reason_resolved") }];
      items.forEach(function (i) { sel.appendChild(h("option", { value: i.key, text: i.text })); });
    });
    $("#close-dialog").returnValue = "";
    $("#close-dialog").showModal();
  }
  $("#close-dialog").addEventListener("close", function () {
    var chat = dialogChat;
    if ($("#close-dialog").returnValue !== "ok" || !chat || chat.ended) return;
    var frame = { type: "close", conversation: chat.id };
    var reason = $("#close-reason").value;
    if (reason) frame.reason = reason;
    client.send(frame);
  });

  // ------------------------------------------------- supervisors: the team

  // Each account with its status and, from the live list, how many chats it
  // has open now; its key figures on demand.
  var teamKpis = {};
  function renderTeam() {
    if (!me || !supervises(me)) return;
    var load = {};
    liveList.forEach(function (c) { if (c.state === "active" && c.agent) load[c.agent] = (load[c.agent] || 0) + 1; });
    var ul = $("#team");
    rebuild(ul, function () {
      var order = { online: 0, away: 1, offline: 2 };
      agents.slice().sort(function (a, b) { return (order[a.status] || 2) - (order[b.status] || 2) || (a.name < b.name ? -1 : 1); }).forEach(function (a) {
        var box = h("dl", { class: "kpis", hidden: !teamKpis[a.id] });
        if (teamKpis[a.id]) fillKpis(box, teamKpis[a.id]);
        var btn = h("button", { type: "button", class: "small", "data-key": "team-" + a.id, "aria-expanded": String(!!teamKpis[a.id]), text: t("team_kpis"), "aria-label": t("team_kpis_of", { name: a.name }) });
        btn.addEventListener("click", function () {
          if (teamKpis[a.id]) { delete teamKpis[a.id]; renderTeam(); return; }
          api("/api/kpis?agent=" + encodeURIComponent(a.id)).then(function (k) { teamKpis[a.id] = k; renderTeam(); }, function () { /* try again */ });
        });
        ul.appendChild(h("li", { class: "card member", "data-agent": a.id }, [
          h("div", { class: "row" }, [
            h("strong", { text: a.name }),
            h("span", { class: "dot " + (a.status || "offline"), text: statusText(a.status) })
          ]),
          h("span", { class: "sub", text: t("team_load", { n: load[a.id] || 0, cap: a.capacity == null ? "—" : a.capacity }) + " · " + (a.languages || []).join(", ").toUpperCase() }),
          btn,
          box
        ]));
      });
    });
    var online = agents.filter(function (a) { return a.status === "online"; }).length;
    $("#team-total").textContent = "(" + t("team_online", { n: online, total: agents.length }) + ")";
  }
  $("#team-refresh").addEventListener("click", function () { loadAgents(); loadLive(); });

  // ---------------------------------------------------------------- helpers

  // A language by its name in the console's language, with the code the queue
  // and the offers show ("Turkish (TR)"); the code alone where the browser has
  // no name for it.
  function languageName(code) {
    if (!code) return "—";
    var name = null;
    try { name = new Intl.DisplayNames([lang], { type: "language" }).of(code); } catch (e) { /* no names here */ }
    return name && name.toLowerCase() !== code.toLowerCase() ? name + " (" + code.toUpperCase() + ")" : code.toUpperCase();
  }

  function playerName(card) {
    if (!card) return t("player");
    if (card.name) return card.name;
    return shortPlayer(card.id);
  }
  // "v:8a1d…" (an anonymous visitor) reads better as "Visitor 8a1d820c".
  function shortPlayer(id) {
    id = String(id || "");
    return id.slice(0, 2) === "v:" ? t("visitor", { id: id.slice(2, 10) }) : id.replace(/^p:/, "");
  }
  function agentName(id) {
    for (var i = 0; i < agents.length; i++) if (agents[i].id === id) return agents[i].name;
    return id;
  }
  // One decimal, with the console's language's separator: English writes "4.0";
  // Turkish, Azerbaijani and Russian write "4,0" (Chromium has no number data for
  // Azerbaijani, so it is not asked).
  function decimal(x) {
    var s = x.toFixed(1);
    return lang === "en" ? s : s.replace(".", ",");
  }
  // `up`: rounded up, for a bound ("90 % within"), which must stay true.
  function duration(ms, up) {
    var s = Math.max(0, (up ? Math.ceil : Math.round)(ms / 1000));
    return s < 60 ? t("secs", { n: s }) : t("mins", { m: Math.floor(s / 60), s: ("0" + s % 60).slice(-2) });
  }
  function clock(ms) {
    try { return new Date(ms).toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" }); } catch (e) { return ""; }
  }
  // A date and time. A browser without month names for the language (Chromium
  // has none for Azerbaijani: "2026 M12 7 23:33") gets day.month.year instead.
  function when(ms) {
    var s = "";
    try { s = new Date(ms).toLocaleString(lang, { dateStyle: "medium", timeStyle: "short" }); } catch (e) { /* numeric below */ }
    if (s && !/M\d/.test(s)) return s;
    var d = new Date(ms);
    var two = function (n) { return ("0" + n).slice(-2); };
    return two(d.getDate()) + "." + two(d.getMonth() + 1) + "." + d.getFullYear() + " " + two(d.getHours()) + ":" + two(d.getMinutes());
  }

  // ------------------------------------------------------------------ start

  if (token) startApp();
  else { show($("#login-view"), true); $("#login-name").focus(); }
})(window, document);
