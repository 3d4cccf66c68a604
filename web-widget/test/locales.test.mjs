// Every language has every string: each locale file of the widget and of the
// console has exactly the English keys, with the same {placeholders}, and every
// key the code looks up exists. Adding a language means adding its files and its
// code to LANGUAGES in static/i18n.js; this test then tells what is missing.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import vm from "node:vm";
import { STATIC_DIR } from "./helpers.mjs";

function loadScript(file, context) {
  vm.runInContext(readFileSync(join(STATIC_DIR, file), "utf8"), context, { filename: file });
}

function loadAll() {
  const context = vm.createContext({});
  context.self = context;
  loadScript("i18n.js", context);
  const dicts = {};
  for (const ns of ["widget", "console"]) {
    dicts[ns] = {};
    for (const file of readdirSync(join(STATIC_DIR, ns, "i18n"))) {
      loadScript(join(ns, "i18n", file), context);
    }
    dicts[ns] = context.Pitboss.i18n.dicts[ns];
  }
  return { dicts, languages: Object.keys(context.Pitboss.i18n.LANGUAGES), i18n: context.Pitboss.i18n };
}

const placeholders = (s) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

/** Keys the code looks up: t("key"), the message states, data-i18n attributes, event keys. */
// Event keys a namespace may leave out: the event then reads as the next pattern
// of the same event (the widget, within its size budget, says "your agent was
// disconnected" for a sign-off too, and "the chat was closed" to the player who
// closed it).
const OPTIONAL = { widget: ["ev_signed_off", "ev_closed_player"], console: [] };

function usedKeys(ns) {
  const files = ns === "widget" ? ["widget.js"] : ["console/console.js", "console/index.html"];
  const keys = new Set();
  for (const f of files) {
    const src = readFileSync(join(STATIC_DIR, f), "utf8");
    for (const m of src.matchAll(/\bt\(\s*"(\w+)"\s*[,)]/g)) keys.add(m[1]);
    for (const m of src.matchAll(/\bmeta\([^)]*"(\w+)"\)/g)) keys.add(m[1]);
    for (const m of src.matchAll(/data-i18n(?:-label)?="(\w+)"/g)) keys.add(m[1]);
  }
  const i18n = readFileSync(join(STATIC_DIR, "i18n.js"), "utf8");
  for (const m of i18n.matchAll(/"(ev_\w+)"/g)) if (!OPTIONAL[ns].includes(m[1])) keys.add(m[1]);
  if (ns === "console") {
    // Built from a prefix and a protocol value.
    for (const s of ["queued", "active", "offline", "closed"]) keys.add("state_" + s);
    for (const o of ["pending", "accepted", "declined", "expired"]) keys.add("transfer_" + o);
  }
  return keys;
}

const { dicts, languages, i18n } = loadAll();

test("the four shipped languages are listed", () => {
  for (const lang of ["en", "tr", "az", "ru"]) assert.ok(languages.includes(lang), `${lang} is not in LANGUAGES`);
});

for (const ns of ["widget", "console"]) {
  test(`${ns}: every listed language has a locale file and every locale file is listed`, () => {
    assert.deepEqual(Object.keys(dicts[ns]).sort(), [...languages].sort());
  });

  test(`${ns}: every key the code uses exists in English`, () => {
    const missing = [...usedKeys(ns)].filter((k) => !(k in dicts[ns].en));
    assert.deepEqual(missing, [], `keys used in the ${ns} code but missing from ${ns}/i18n/en.js`);
  });

  for (const lang of languages) {
    if (lang === "en") continue;
    test(`${ns}: locale ${lang} has exactly the English keys and placeholders`, () => {
      const en = dicts[ns].en;
      const other = dicts[ns][lang] || {};
      const missing = Object.keys(en).filter((k) => !(k in other));
      const extra = Object.keys(other).filter((k) => !(k in en));
      assert.deepEqual(missing, [], `${ns}/i18n/${lang}.js misses keys`);
      assert.deepEqual(extra, [], `${ns}/i18n/${lang}.js has keys English does not`);
      for (const k of Object.keys(en)) {
        assert.equal(typeof other[k], "string", `${lang}.${k} is not a string`);
        assert.ok(other[k].trim().length > 0, `${lang}.${k} is empty`);
        assert.deepEqual(placeholders(other[k]), placeholders(en[k]), `${ns} ${lang}.${k}: placeholders differ from English`);
      }
    });
  }
}

test("a missing key is caught: the check fails on a locale without one", () => {
  // Guards the guard: the comparison above must notice a removed key.
  const en = dicts.widget.en;
  const broken = { ...dicts.widget.tr };
  delete broken.send;
  assert.deepEqual(Object.keys(en).filter((k) => !(k in broken)), ["send"]);
});

test("languages are chosen from the page, then the browser, else English", () => {
  assert.equal(i18n.pick(["tr-TR", "en"]), "tr");
  assert.equal(i18n.pick([undefined, "", "az_AZ"]), "az");
  assert.equal(i18n.pick(["de", "fr"]), "en");
  assert.equal(i18n.pick(["RU"]), "ru");
});

test("server events are put into the reader's language", () => {
  const t = i18n.translator("widget", "tr");
  const ev = (event, text) => i18n.eventText({ kind: "event", event, text }, t);
  assert.equal(ev("joined", "Ayla joined the chat"), "Ayla sohbete katıldı");
  assert.equal(ev("joined", "Sam took over the chat"), "Sam sohbeti devraldı");
  assert.equal(ev("rated", "The player rated the chat 4/5"), "Sohbet 4/5 olarak puanlandı");
  assert.equal(ev("closed", "The player closed the chat"), "Sohbet kapatıldı");
  assert.equal(ev("transfer_requested", "You are being transferred to Olga. Your conversation stays with you."), "Aktarılıyorsunuz: Olga. Görüşmeniz sizinle kalır.");
  assert.equal(ev("something_new", "A new kind of event"), "A new kind of event");
  // A sign-off: the console says so; the widget, without that key, says what it
  // says for any requeue.
  const signedOff = "Your agent has signed off; you are first in line for the next one.";
  assert.equal(ev("requeued", signedOff), dicts.widget.tr.ev_requeued);
  const desk = i18n.translator("console", "tr");
  assert.equal(i18n.eventText({ kind: "event", event: "requeued", text: signedOff }, desk), dicts.console.tr.ev_signed_off);
  assert.equal(i18n.eventText({ kind: "event", event: "requeued", text: "Your agent was disconnected; you are first in line for the next one." }, desk), dicts.console.tr.ev_requeued);
  // Agents are told the player closed the chat; the player, who did, is not.
  assert.equal(i18n.eventText({ kind: "event", event: "closed", text: "The player closed the chat" }, desk), "Oyuncu sohbeti kapattı");
  assert.equal(i18n.eventText({ kind: "event", event: "closed", text: "Sam closed the chat" }, desk), "Sam sohbeti kapattı");
});
