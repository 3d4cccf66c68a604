/*! Pitboss player widget (docs/widget.md). Server text goes in as text, never HTML. */
(function (root, doc) {
  "use strict";
  var P = (root.Pitboss = root.Pitboss || {});
  if (P.widget) return;
  P.widget = {};

  var script = doc.currentScript;
  var data = (script && script.dataset) || {};
  var given = root.PitbossConfig || {};
  var src = script && script.src ? new URL(script.src, doc.baseURI) : null;
  var server = String(given.server || data.server || (src ? src.origin + src.pathname.replace(/\/[^/]*$/, "") : root.location.origin)).replace(/\/+$/, "");
  var tokenFn = given.getToken || (data.getToken && function (info) {
    var f = root[data.getToken];
    return typeof f === "function" ? f(info) : null;
  });
  var cfg = {
    department: given.department || data.department || undefined,
    language: given.language || data.language || undefined,
    name: given.name || data.name || undefined,
    open: given.open != null ? !!given.open : data.open === "true"
  };

  function load(path, done) {
    var s = doc.createElement("script");
    s.src = server + path;
    s.async = false; // run in the order inserted
    s.onload = function () { done && done(); };
    s.onerror = function () { done && done(new Error("cannot load " + path)); };
    (doc.head || doc.documentElement).appendChild(s);
  }

  var host = doc.createElement("div");
  host.id = "pitboss-widget";
  var shadow = host.attachShadow({ mode: "open" });
  var css = doc.createElement("link");
  css.rel = "stylesheet";
  css.href = server + "/widget/widget.css";
  shadow.appendChild(css);

  load("/client.js");
  load("/i18n.js", function (err) {
    if (err) return;
    var lang = P.i18n.pick(P.i18n.preferred(cfg.language));
    load("/widget/i18n/" + lang + ".js", function (err2) {
      if (!err2) return boot(lang);
      if (lang === "en") return;
      load("/widget/i18n/en.js", function (err3) { if (!err3) boot("en"); });
    });
  });

  function boot(lang) {
    var t = P.i18n.translator("widget", lang);
    var key = "pitboss:" + server + ":";
    var store = {
      get: function (k) { try { return root.localStorage.getItem(key + k); } catch (e) { return null; } },
      set: function (k, v) { try { if (v == null) root.localStorage.removeItem(key + k); else root.localStorage.setItem(key + k, v); } catch (e) { /* private mode */ } }
    };
    var session = {
      get: function (k) { try { return root.sessionStorage.getItem(key + k); } catch (e) { return null; } },
      set: function (k, v) { try { root.sessionStorage.setItem(key + k, v); } catch (e) { /* private mode */ } }
    };

    // ------------------------------------------------------------- the DOM

    function h(tag, props, kids) {
      var el = doc.createElement(tag);
      for (var k in props || {}) {
        var v = props[k];
        if (v == null || v === false) continue;
        if (k === "text") el.textContent = v;
        else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, v === true ? "" : v);
      }
      (kids || []).forEach(function (c) { if (c) el.appendChild(typeof c === "string" ? doc.createTextNode(c) : c); });
      return el;
    }
    function show(el, on) { el.hidden = !on; }

    var badge = h("span", { class: "badge", hidden: true, "aria-hidden": "true" });
    var launcherLabel = h("span", { class: "sr", text: t("open_chat") });
    var launcher = h("button", { type: "button", class: "launcher", "aria-expanded": "false", "aria-controls": "pb-panel", onclick: function () { setOpen(panel.hidden, true); } }, [icon(), launcherLabel, badge]);
    var statusLine = h("p", { class: "status", role: "status" });
    var hint = h("p", { class: "hint", role: "status", hidden: true });
    var conn = h("p", { class: "conn", role: "status", hidden: true });
    var endBtn = h("button", { type: "button", class: "end", hidden: true, "aria-expanded": "false", text: t("end_chat"), onclick: function () { askEnd(confirmBox.hidden); } });
    var keepBtn = h("button", { type: "button", text: t("end_no"), onclick: function () { askEnd(); } });
    var confirmBox = h("div", { class: "confirm", role: "alertdialog", "aria-labelledby": "pb-q", hidden: true, onkeydown: function (e) { if (e.key === "Escape") { e.stopPropagation(); askEnd(); } } }, [
      h("p", { id: "pb-q" }),
      h("div", { class: "row" }, [h("button", { type: "button", class: "danger", text: t("end_yes"), onclick: function () { askEnd(); endChat(); } }), keepBtn])
    ]);
    var minBtn = h("button", { type: "button", class: "min", "aria-label": t("minimize"), title: t("minimize"), onclick: function () { setOpen(false); launcher.focus(); } }, ["\u2013"]);
    var intro = h("div", { class: "intro", hidden: true }, [
      h("p", { text: t("intro") }),
      h("button", { type: "button", class: "primary", text: t("start_chat"), onclick: startChat })
    ]);
    var log = h("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": t("messages") });
    var typingLine = h("p", { class: "typing", "aria-live": "polite" });

    var stars = [];
    var rateForm = h("form", { class: "rate", hidden: true, onsubmit: sendRating }, [
      h("fieldset", {}, [
        h("legend", { text: t("rate_title") }),
        h("div", { class: "stars" }, [1, 2, 3, 4, 5].map(function (n) {
          var input = h("input", { type: "radio", name: "pb-score", value: String(n), id: "pb-star" + n, required: n === 1 });
          stars.push(input);
          return h("span", {}, [input, h("label", { for: "pb-star" + n, title: t("stars", { n: n }) }, [h("span", { "aria-hidden": "true", text: "\u2605" }), h("span", { class: "sr", text: t("stars", { n: n }) })])]);
        }))
      ]),
      h("label", { for: "pb-comment", text: t("rate_comment") }),
      h("textarea", { id: "pb-comment", rows: "2", maxlength: "1000" }),
      h("div", { class: "row" }, [
        h("button", { type: "submit", class: "primary", text: t("rate_send") }),
        h("button", { type: "button", text: t("rate_skip"), onclick: function () { finish(false); } })
      ])
    ]);
    var after = h("div", { class: "after", hidden: true }, [
      h("p", { class: "thanks", role: "status" }),
      h("button", { type: "button", class: "primary", text: t("new_chat"), onclick: startChat })
    ]);
    // No maxlength: a longer paste is kept and explained (checkLength).
    var input = h("textarea", { id: "pb-input", rows: "2", placeholder: t("placeholder"), "aria-describedby": "pb-count pb-long", onkeydown: onKey, oninput: function () { onTyping(); checkLength(); } });
    var inputLabel = h("label", { class: "sr", for: "pb-input", text: t("your_message") });
    var sendBtn = h("button", { type: "submit", class: "primary", text: t("send") });
    var count = h("p", { id: "pb-count", hidden: true });
    var tooLong = h("p", { id: "pb-long", class: "error", role: "alert" });
    var composer = h("form", { class: "composer", hidden: true, onsubmit: function (e) { e.preventDefault(); sendMessage(); } }, [inputLabel, input, sendBtn, count, tooLong]);
    // At the end: kept there when a phone's keyboard opens.
    var atEnd = true;
    var scroller = h("div", { class: "scroll", onscroll: function () { atEnd = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 30; } }, [log, typingLine, rateForm, after, intro]);
    var panel = h("section", { id: "pb-panel", class: "panel", role: "dialog", "aria-labelledby": "pb-title", hidden: true, onkeydown: function (e) { if (e.key === "Escape") { setOpen(false); launcher.focus(); } } }, [
      h("header", {}, [h("h2", { id: "pb-title", text: t("title") }), endBtn, minBtn]),
      confirmBox, statusLine, hint, conn, scroller, composer
    ]);
    var rootEl = h("div", { class: "pb", lang: lang, dir: "ltr" }, [panel, launcher]);
    shadow.appendChild(rootEl);
    (doc.body || doc.documentElement).appendChild(host);
    new ResizeObserver(function () { if (atEnd) scrollDown(); }).observe(scroller);

    function icon() {
      var ns = "http://www.w3.org/2000/svg";
      var svg = doc.createElementNS(ns, "svg");
      var path = svg.appendChild(doc.createElementNS(ns, "path"));
      svg.setAttribute("viewBox", "0 0 24 24");
      svg.setAttribute("aria-hidden", "true");
      path.setAttribute("d", "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z");
      return svg;
    }

    // ------------------------------------------------------------ the state

    var START_RETRIES = 6; // 25 to 47 s of pauses in all before giving up

    var client = null;
    var cur = null; // {id, state, agent, readSeq}
    var views = {}; // conversation → {box, ol, bySeq, byClient}
    var starting = false;
    // A `start` turned away for now, sent again (retryStart): the frame, tries, timer.
    var lastStart = null;
    var startTries = 0;
    var startTimer = null;
    var historyAsked = false;
    var earlier = null; // id of an earlier conversation shown read-only
    var rateFor = null;
    var unread = 0;
    var typingTimer = null;
    var typingSent = 0;
    var typingIdle = null;
    var readTimer = null;
    var readSent = {};
    var wantFocus = false;
    var maxChars = 4000; // welcome.limits.max_text_chars

    // `byUser`: the focus moves in; a reload that reopens it leaves the page's.
    function setOpen(open, byUser) {
      show(panel, open);
      launcher.setAttribute("aria-expanded", String(open));
      session.set("open", open ? "1" : "");
      if (open) {
        connect();
        unread = 0;
        updateBadge();
        scrollDown();
        if (byUser) { wantFocus = true; focusFirst(); }
        markRead();
      }
    }

    // After the player acted: to the message box, else the start button; the
    // minimise button holds the focus until the connection tells which.
    function focusFirst() {
      if (panel.hidden || !wantFocus) return;
      var el = !composer.hidden ? input : !intro.hidden ? intro.querySelector("button") : null;
      if (el) wantFocus = false;
      focus(el || minBtn);
    }

    function updateBadge() {
      badge.textContent = unread > 9 ? "9+" : String(unread);
      show(badge, unread > 0);
      launcherLabel.textContent = unread ? t("open_chat_unread", { n: unread }) : t("open_chat");
    }

    function scrollDown() { scroller.scrollTop = scroller.scrollHeight; }

    // Never scrolls the panel: the player could not scroll it back.
    function focus(el) { el.focus({ preventScroll: true }); }

    function setStatus(text) { statusLine.textContent = text || ""; show(statusLine, !!text); }
    function setHint(text) { hint.textContent = text || ""; show(hint, !!text); }

    // Offline until an agent takes it, even with agents online: once written, it
    // is received, not "nobody is there".
    function offlineState() {
      var done = view(cur.id).ol.querySelector(".me");
      setStatus(done ? t("offline_sent") : cur.fresh ? t("no_agents") : "");
      setHint(done ? "" : t("offline_intro"));
    }

    function askEnd(on) {
      on = !!(on && cur && cur.state !== "closed");
      if (on) confirmBox.firstChild.textContent = t(cur.state === "queued" ? "end_confirm_queued" : "end_confirm");
      var inside = confirmBox.contains(shadow.activeElement);
      show(confirmBox, on);
      endBtn.setAttribute("aria-expanded", String(on));
      if (on) keepBtn.focus();
      else if (inside) endBtn.focus();
    }

    // Counted as the server does: code points of the trimmed text.
    function checkLength() {
      var n = Array.from(input.value.trim()).length, over = n > maxChars, near = !over && n > maxChars * 0.9;
      count.textContent = near ? t("chars_left", { n: maxChars - n }) : "";
      show(count, near);
      var msg = over ? t("too_long", { n: n.toLocaleString(lang), max: maxChars.toLocaleString(lang) }) : "";
      if (tooLong.textContent != msg) tooLong.textContent = msg;
      input.setAttribute("aria-invalid", String(over));
      return over;
    }

    function view(id) {
      var v = views[id];
      if (v) return v;
      var ol = h("ol", { class: "msgs" });
      var box = h("section", { class: "conv", "aria-label": t("conversation") }, [ol]);
      log.appendChild(box);
      return (views[id] = { box: box, ol: ol, bySeq: {}, byClient: {} });
    }

    // The current conversation, below an earlier read-only one. `attached`: our
    // `start` attached it; else (another tab's chat) it resumes it itself.
    function adopt(id, state, attached) {
      if (!cur || cur.id !== id) {
        cur = { id: id, state: state, agent: null, readSeq: 0, fresh: starting };
        store.set("conv", id);
        store.set("last", id);
        if (earlier === id) { earlier = null; }
        var v = view(id);
        var label = v.box.querySelector(".earlier");
        if (label) label.remove();
        log.appendChild(v.box);
        client.watch(id, { resume: !attached });
      } else if (state) cur.state = state;
      starting = false;
      stopStartRetry();
      show(intro, false);
      show(after, false);
      show(rateForm, false);
      show(composer, cur.state !== "closed");
      show(endBtn, cur.state !== "closed");
      focusFirst();
    }

    // ---------------------------------------------------------- rendering

    function time(ms) {
      try { return new Date(ms).toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" }); } catch (e) { return ""; }
    }

    function item(m, mine) {
      var li;
      if (m.kind === "event") {
        // Not shown: a department transfer's raw tag, the player's name in their own close.
        var you = client && client.you;
        var text = m.event === "transfer_requested" && /^You are being transferred to [a-z0-9_-]+\. /.test(m.text) ? t("ev_transfer_other") : m.event === "closed" && you && m.text === you.name + " closed the chat" ? t("ev_closed") : P.i18n.eventText(m, t);
        li = h("li", { class: "event" }, [h("p", { text: text })]);
      } else {
        var who = mine ? t("you") : (m.sender && (m.sender.name || m.sender.id)) || t("agent");
        li = h("li", { class: mine ? "msg me" : "msg them" }, [
          h("span", { class: mine ? "who sr" : "who", text: who }),
          h("p", { class: "text", dir: "auto" }, mine ? [m.text] : linked(m.text)),
          h("span", { class: "meta" })
        ]);
      }
      li.at = m.at || Date.now();
      return li;
    }

    // http(s) addresses as links, built as elements; no trailing punctuation.
    function linked(text) {
      return text.split(/(https?:\/\/[^\s<>"]*[^\s<>"'.,;:!?)\]])/i).map(function (s, i) {
        return i % 2 ? h("a", { href: s, target: "_blank", rel: "noopener noreferrer nofollow", text: s }) : s;
      });
    }

    function meta(li, state) {
      var el = li.querySelector(".meta");
      if (!el) return;
      li.state = state;
      el.textContent = time(li.at) + (state ? " \u00b7 " + t(state) : "");
      // Read out only a failure: the log would announce every change.
      el.setAttribute("aria-hidden", state !== "not_sent");
      li.classList.toggle("failed", state === "not_sent");
    }

    // Keeps a conversation's list in seq order; unacknowledged ones stay last.
    function place(v, li, seq) {
      var kids = v.ol.children;
      var before = null;
      for (var i = kids.length - 1; i >= 0; i--) {
        var k = kids[i];
        if (k === li) continue;
        if (!k.seq || k.seq > seq) { before = k; continue; }
        break;
      }
      v.ol.insertBefore(li, before);
    }

    function onMessage(m) {
      if (m.kind === "note") return;
      var v = view(m.conversation);
      if (v.bySeq[m.seq]) return;
      var mine = m.sender && m.sender.role === "player";
      var li = m.client_id && mine && v.byClient[m.client_id];
      if (li) delete v.byClient[m.client_id];
      else li = item(m, mine);
      li.seq = m.seq;
      v.bySeq[m.seq] = li;
      place(v, li, m.seq);
      var current = cur && m.conversation === cur.id;
      meta(li, mine && current ? cur.readSeq >= m.seq ? "read" : "sent" : "");
      if (mine && current && cur.state === "offline") offlineState();
      if (cur && m.conversation === cur.id) {
        if (m.kind === "event" && m.event === "joined") cur.answered = true;
        if (m.kind === "event" && m.event === "closed") closedNow();
        if (!mine && m.kind === "text") {
          showTyping(null);
          // Unread: not yet in front of the player, across reloads too.
          if ((panel.hidden || doc.hidden) && m.seq > seen(m.conversation)) { unread++; updateBadge(); }
          markRead();
        }
      }
      scrollDown();
    }

    function renderPending(e) {
      var v = view(e.conversation);
      if (v.byClient[e.client_id]) return;
      var li = item({ kind: "text", text: e.text, at: e.at }, true);
      v.byClient[e.client_id] = li;
      v.ol.appendChild(li);
      meta(li, "sending");
      scrollDown();
    }

    function onAck(a) {
      var v = views[a.conversation];
      if (!v) return;
      var li = v.byClient[a.client_id];
      if (!li) return;
      delete v.byClient[a.client_id];
      if (v.bySeq[a.seq]) { li.remove(); return; }
      li.seq = a.seq;
      v.bySeq[a.seq] = li;
      place(v, li, a.seq);
      meta(li, cur && cur.readSeq >= a.seq ? "read" : "sent");
    }

    // The server masked a card number in our message: show what it stored.
    function onMasked(m) {
      var v = views[m.conversation];
      var li = v && v.bySeq[m.seq];
      if (!li) return;
      var text = li.querySelector(".text");
      if (text) text.textContent = m.text;
      if (!li.querySelector(".masked")) {
        li.insertBefore(h("span", { class: "masked", role: "status", text: t("masked") }), li.querySelector(".meta"));
      }
    }

    function onRead(r) {
      if (!cur || r.conversation !== cur.id || !r.by || r.by.role === "player") return;
      cur.readSeq = Math.max(cur.readSeq, r.seq);
      var v = views[cur.id];
      for (var s in v.bySeq) {
        var li = v.bySeq[s];
        if (li.state === "sent" && +s <= cur.readSeq) meta(li, "read");
      }
    }

    function showTyping(name) {
      clearTimeout(typingTimer);
      typingLine.textContent = name ? t("typing", { name: name }) : "";
      if (name) typingTimer = setTimeout(function () { showTyping(null); }, 6000);
    }

    // ------------------------------------------------------------ protocol

    function connect() {
      if (client) return;
      client = new P.Client({
        url: server.replace(/^http/, "ws") + "/ws",
        auth: auth,
        storage: {
          load: function () { try { return JSON.parse(store.get("outbox") || "[]"); } catch (e) { return []; } },
          save: function (list) { store.set("outbox", list.length ? JSON.stringify(list) : null); }
        }
      });
      P.widget.client = client;
      client.on("state", function (s) {
        show(conn, s === "reconnecting" || s === "failed");
        // Never connected (a refused origin): unavailable, not lost nor connecting.
        conn.textContent = t(s === "failed" || !client.everOpen ? "unavailable" : "reconnecting");
        if (s === "connecting" && !cur) setStatus(t("connecting"));
        else if (!client.everOpen) setStatus("");
      });
      client.on("welcome", onWelcome);
      client.on("message", onMessage);
      client.on("ack", onAck);
      client.on("masked", onMasked);
      client.on("read", onRead);
      client.on("failed", function (f) {
        var v = views[f.entry.conversation];
        var li = v && v.byClient[f.entry.client_id];
        if (li) meta(li, "not_sent");
      });
      client.on("resumed", function (r) {
        if (starting && !views[r.conversation] && r.conversation !== earlier) adopt(r.conversation, "queued", 1);
        var v = view(r.conversation);
        v.box.removeAttribute("aria-busy");
        client.pending(r.conversation).forEach(renderPending);
        if (r.conversation === earlier) {
          if (rateFor === earlier) askRating(); else { show(intro, true); }
        }
        scrollDown();
      });
      client.on("reset", function (r) {
        var v = views[r.conversation];
        if (!v) return;
        v.ol.textContent = "";
        v.bySeq = {};
        v.byClient = {};
      });
      client.on("queued", function (q) {
        adopt(q.conversation, "queued", starting);
        var wait = q.estimated_wait_secs;
        // null: no online agent, or no history yet (protocol.md §4).
        setStatus(t("queued", { n: q.position }) + " " + (wait != null ? wait < 60 ? t("wait_soon") : t("wait_min", { n: Math.round(wait / 60) }) : q.agents_online ? "" : t("no_agents")));
        setHint(wait == null ? t("queued_hint") : "");
      });
      client.on("no_agents", function (n) {
        adopt(n.conversation, "offline", starting);
        offlineState();
        input.placeholder = t("offline_placeholder");
        sendBtn.textContent = t("offline_send");
      });
      client.on("assigned", function (a) {
        adopt(a.conversation, "active", starting);
        cur.agent = a.agent;
        cur.answered = true;
        setHint("");
        input.placeholder = t("placeholder");
        sendBtn.textContent = t("send");
        setStatus(t("assigned", { name: a.agent.name || a.agent.id }));
      });
      client.on("closed", function (c) { if (cur && c.conversation === cur.id) closedNow(); });
      client.on("rated", function () { finish(true); });
      client.on("typing", function (ty) {
        if (cur && ty.conversation === cur.id && ty.from && ty.from.role !== "player") showTyping(ty.active ? ty.from.name || t("agent") : null);
      });
      client.on("history", onHistory);
      client.on("error", function (e) {
        if (e.frame === "rate" && e.code === "invalid_state") finish(true);
        else if (e.frame === "start") {
          if ((e.code === "overloaded" || e.code === "rate_limited") && lastStart && startTries < START_RETRIES) { retryStart(); return; }
          starting = false;
          stopStartRetry();
          setStatus(e.code === "too_many_conversations" ? t("too_many") : t("start_failed"));
          show(intro, true);
        }
      });
      client.on("auth_failed", function () {
        if (!tokenFn && store.get("visitor")) { store.set("visitor", null); client.start(); return; }
        setTimeout(function () { client.start(); }, 15000);
      });
      client.start();
    }

    function auth(info) {
      return Promise.resolve(tokenFn ? tokenFn(info) : null).then(function (token) {
        if (token) return { kind: "player", token: String(token) };
        return { kind: "visitor", token: store.get("visitor") || undefined, name: cfg.name, language: lang };
      });
    }

    // This page's department, or the conversation this browser had last, even
    // ended (a department transfer moves it).
    function ours(c) {
      return !cfg.department || c.department === cfg.department || c.id === store.get("conv") || c.id === store.get("last");
    }

    function onWelcome(w) {
      if (w.visitor_token) store.set("visitor", w.visitor_token);
      maxChars = (w.limits || {}).max_text_chars || maxChars;
      if (!cur && !starting) setStatus("");
      var last = store.get("conv");
      var open = (w.conversations || []).filter(function (c) {
        return c.state !== "closed" && ours(c);
      }).sort(function (a, b) { return (b.id === last) - (a.id === last); });
      if (cur) {
        var s = open.filter(function (c) { return c.id === cur.id; })[0];
        // The client resumes it; a start also tells where it stands (queue, agent).
        if (s && (s.state !== "active" || !cur.agent || s.agent !== cur.agent.id)) sendStart({ type: "start", department: s.department });
        return;
      }
      if (starting) { sendStart({ type: "start", department: cfg.department, language: lang }); return; }
      if (open.length) {
        view(open[0].id).box.setAttribute("aria-busy", "true");
        adopt(open[0].id, open[0].state, 1);
        sendStart({ type: "start", department: open[0].department });
      } else if (!historyAsked) {
        historyAsked = true;
        client.send({ type: "history" });
        setStatus("");
        show(intro, true);
        focusFirst();
      }
    }

    function onHistory(hist) {
      if (cur || earlier) return;
      var prev = (hist.conversations || []).filter(ours)[0];
      if (!prev) return;
      earlier = prev.id;
      var v = view(prev.id);
      v.box.setAttribute("aria-busy", "true");
      v.box.insertBefore(h("h3", { class: "earlier", text: t("earlier", { date: new Date(prev.created_at).toLocaleDateString(lang) }) }), v.ol);
      if (prev.state === "closed" && prev.rating == null && prev.agent && store.get("conv") === prev.id) rateFor = prev.id;
      show(intro, false);
      client.send({ type: "resume", conversation: prev.id, after: 0 });
    }

    /** Sends a `start`, kept to send again if the server is busy. */
    function sendStart(frame) {
      clearTimeout(startTimer);
      lastStart = frame;
      client.send(frame);
    }

    /** Says the server is busy; sends the `start` again after 1, 2, 4… 16 s,
     * jittered so that widgets turned away together come back apart. */
    function retryStart() {
      startTries++;
      setStatus(t("busy_retrying"));
      var delay = Math.min(16000, 1000 * Math.pow(2, startTries - 1)) * (0.5 + Math.random() * 0.5);
      clearTimeout(startTimer);
      startTimer = setTimeout(function () {
        if (client.state === "open" && lastStart) client.send(lastStart);
      }, delay);
    }

    function stopStartRetry() {
      clearTimeout(startTimer);
      lastStart = null;
      startTries = 0;
    }

    function startChat() {
      connect();
      starting = true;
      wantFocus = true;
      show(intro, false);
      show(after, false);
      setStatus(t("connecting"));
      if (client.state === "open") sendStart({ type: "start", department: cfg.department, language: lang });
    }

    function endChat() {
      if (cur && cur.state !== "closed") client.send({ type: "close", conversation: cur.id });
    }

    function closedNow() {
      if (!cur || cur.state === "closed") return;
      cur.state = "closed";
      client.unwatch(cur.id);
      client.discard(cur.id).forEach(function (e) {
        var li = views[cur.id].byClient[e.client_id];
        if (li) meta(li, "not_sent");
      });
      showTyping(null);
      show(composer, false);
      askEnd(false);
      show(endBtn, false);
      setHint("");
      setStatus(t("closed"));
      // Only a chat an agent answered can be rated.
      if (cur.answered) { rateFor = cur.id; askRating(); } else finish(false);
    }

    function askRating() {
      show(intro, false);
      show(rateForm, true);
      scrollDown();
      if (!panel.hidden) focus(stars[0]);
    }

    function sendRating(e) {
      e.preventDefault();
      var score = 0;
      stars.forEach(function (s) { if (s.checked) score = +s.value; });
      if (!score || !rateFor) return;
      var comment = rateForm.querySelector("textarea").value.trim();
      client.send({ type: "rate", conversation: rateFor, score: score, comment: comment || null });
    }

    function finish(rated) {
      rateFor = null;
      show(rateForm, false);
      after.querySelector(".thanks").textContent = rated ? t("rate_thanks") : "";
      show(after, true);
      scrollDown();
      if (!panel.hidden) focus(after.querySelector("button"));
      // The chat is over: the next one starts fresh, and a reload does not ask again.
      cur = null;
      store.set("conv", null);
    }

    function sendMessage() {
      var text = input.value.trim();
      if (!text || !cur || cur.state === "closed") return;
      if (checkLength()) return input.focus();
      var e = client.say(cur.id, text);
      renderPending(e);
      input.value = "";
      checkLength();
      typing(false);
      if (cur.state === "offline") offlineState();
    }

    function onKey(e) {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendMessage(); }
    }

    // Throttled: one "started" per 3 s, "stopped" after 4 s idle.
    function onTyping() {
      if (!cur || cur.state === "closed" || !input.value) return;
      var now = Date.now();
      if (now - typingSent > 3000) { typingSent = now; client.send({ type: "typing", conversation: cur.id, active: true }); }
      clearTimeout(typingIdle);
      typingIdle = setTimeout(function () { typing(false); }, 4000);
    }

    function typing(active) {
      clearTimeout(typingIdle);
      if (!active && typingSent && cur) client.send({ type: "typing", conversation: cur.id, active: false });
      typingSent = 0;
    }

    // Seen at once; one read receipt a moment later for a burst of messages.
    function markRead() {
      if (!cur || panel.hidden || doc.hidden || !client) return;
      var id = cur.id;
      var seq = client.last(id);
      if (seq > seen(id)) store.set("seen", id + " " + seq);
      clearTimeout(readTimer);
      readTimer = setTimeout(function () {
        if (seq > (readSent[id] || 0) && client.send({ type: "read", conversation: id, seq: seq })) readSent[id] = seq;
      }, 300);
    }

    // The last seq the player saw with the panel open, for one conversation.
    function seen(id) {
      var v = (store.get("seen") || "").split(" ");
      return v[0] === id ? +v[1] || 0 : 0;
    }

    doc.addEventListener("visibilitychange", function () {
      if (!doc.hidden) { markRead(); if (!panel.hidden) { unread = 0; updateBadge(); } }
    });

    P.widget.open = function () { setOpen(true, true); };
    P.widget.close = function () { setOpen(false); };
    P.widget.language = lang;
    P.widget.server = server;

    if (cfg.open || session.get("open") === "1") setOpen(true);
    else if (store.get("conv")) connect();
  }
})(window, document);
