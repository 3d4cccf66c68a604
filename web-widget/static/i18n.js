/*! Pitboss translations: the list of languages, choosing one, looking strings up,
 * and putting the server's English transcript events into the reader's language.
 * Strings live in one file per language and user interface
 * (widget/i18n/xx.js, console/i18n/xx.js), each calling Pitboss.i18n.add().
 * To add a language: copy the English files, translate them, and add its code
 * and name to LANGUAGES below; the test suite fails while any key is missing. */
(function (root) {
  "use strict";
  var P = (root.Pitboss = root.Pitboss || {});
  if (P.i18n) return;

  var LANGUAGES = { en: "English", tr: "Türkçe", az: "Azərbaycanca", ru: "Русский" };
  var dicts = { widget: {}, console: {} };

  /** Picks the first supported language among `wanted` (tags such as "tr-TR"),
   * else English. */
  function pick(wanted) {
    for (var i = 0; i < wanted.length; i++) {
      var tag = String(wanted[i] || "").toLowerCase().split(/[-_]/)[0];
      if (LANGUAGES[tag]) return tag;
    }
    return "en";
  }

  /** The preferences of this page: an explicit choice, the page's own language,
   * then the browser's. */
  function preferred(explicit) {
    var doc = root.document;
    var nav = root.navigator || {};
    return [explicit, doc && doc.documentElement && doc.documentElement.lang]
      .concat(nav.languages || [nav.language]);
  }

  /** A lookup function for one interface and language: t(key, {name: …}). Falls
   * back to English, then to the key itself. Values are plain text: callers put
   * them in the page with textContent, never as HTML. */
  function translator(ns, lang) {
    var d = (dicts[ns] && dicts[ns][lang]) || {};
    var en = (dicts[ns] && dicts[ns].en) || {};
    return function t(key, vars) {
      var s = d[key] != null ? d[key] : en[key] != null ? en[key] : key;
      if (vars) s = s.replace(/\{(\w+)\}/g, function (m, k) { return vars[k] != null ? String(vars[k]) : m; });
      return s;
    };
  }

  // The server writes transcript events in English (docs/protocol.md §6.4); the
  // tag says what happened and these patterns recover the name it mentions.
  var EVENTS = [
    ["joined", /^(.+) joined the chat$/, "ev_joined"],
    ["joined", /^(.+) answered your message$/, "ev_answered"],
    ["joined", /^(.+) took over the chat$/, "ev_took_over"],
    ["closed", /^The player left before an agent was free\.$/, "ev_abandoned"],
    ["closed", /^The player closed the chat$/, "ev_closed_player"],
    ["closed", /^(?:The player|The agent|A supervisor|Pitboss) closed the chat$/, "ev_closed"],
    ["closed", /^(.+) closed the chat$/, "ev_closed_by"],
    ["transfer_requested", /^You are being transferred to (.+)\. Your/, "ev_transfer"],
    ["transfer_cancelled", /^The transfer did not happen; (.+) stays with you\.$/, "ev_transfer_cancelled"],
    ["requeued", /signed off/, "ev_signed_off"],
    ["requeued", /^/, "ev_requeued"],
    ["rated", /(\d)\/5/, "ev_rated"]
  ];

  // A pattern whose key is missing yields to the next.
  function eventText(m, t) {
    for (var i = 0; i < EVENTS.length; i++) {
      var e = EVENTS[i], x = m.event === e[0] && e[1].exec(m.text || ""),
        s = x && t(e[2], { name: x[1], score: x[1] });
      if (s && s !== e[2]) return s;
    }
    return m.text || "";
  }

  P.i18n = {
    LANGUAGES: LANGUAGES,
    dicts: dicts,
    add: function (ns, lang, strings) { (dicts[ns] = dicts[ns] || {})[lang] = strings; },
    pick: pick,
    preferred: preferred,
    translator: translator,
    eventText: eventText
  };
})(typeof self !== "undefined" ? self : globalThis);
