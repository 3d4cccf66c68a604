// Everything from the other side is text, never HTML: script and img/svg payloads in
// messages, names, player attributes, notes, transfer notes, canned replies, close
// reasons and offline messages show up literally and run nothing; a department
// tag named like an object's own key ("__proto__") is shown as itself.

import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { startServer, launchBrowser, newPage, consoleLogin, freePort, STATIC_DIR, stepsOf } from "./helpers.mjs";
import { startCasino, TOKEN_ARGS } from "./casino.mjs";

const W = "#pitboss-widget";
const IMG = `<img src=x onerror="window.__xss=(window.__xss||0)+1">`;
const SCRIPT = `<script>window.__xss=(window.__xss||0)+1</script>`;
const SVG = `"><svg onload="window.__xss=(window.__xss||0)+1">`;
const SHORT = "<svg onload=x>"; // fits a jurisdiction (16 characters at most)

function jsFiles(dir) {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? jsFiles(p) : p.endsWith(".js") ? [p] : [];
  });
}

/** Whether a payload ran or became an element, in the page and in the widget's shadow root. */
async function inert(page) {
  return page.evaluate(() => {
    const roots = [document];
    const host = document.querySelector("#pitboss-widget");
    if (host && host.shadowRoot) roots.push(host.shadowRoot);
    const bad = [];
    for (const r of roots) {
      for (const el of r.querySelectorAll("img, [onerror], [onload]")) bad.push(el.outerHTML.slice(0, 80));
      for (const el of r.querySelectorAll("script")) if (el.textContent.includes("__xss")) bad.push(el.outerHTML.slice(0, 80));
      for (const el of r.querySelectorAll(".msgs svg, #offers svg, #offline svg, .about svg, .banner svg")) bad.push(el.outerHTML.slice(0, 80));
    }
    return { ran: window.__xss || 0, elements: bad };
  });
}

test("the clients never write HTML from strings", () => {
  const sinks = /\.innerHTML\b|\.outerHTML\s*=|insertAdjacentHTML|document\.write|\beval\(|new Function\(|createContextualFragment/;
  for (const file of jsFiles(STATIC_DIR)) {
    const src = readFileSync(file, "utf8");
    const hit = src.split("\n").findIndex((l) => sinks.test(l));
    assert.equal(hit, -1, `${file}:${hit + 1} uses an HTML sink`);
  }
});

describe("payloads from the other side stay text", () => {
  let server, casino, browser, player, ayla, olga, visitor;
  const step = stepsOf(() => server);

  before(async () => {
    casino = await startCasino({
      player: { sub: "xss-1", name: IMG, jurisdiction: SHORT, vip_tier: 1 },
      widget: { department: "general", language: "en", "get-token": "casinoToken" },
    });
    const port = await freePort();
    casino.pitboss = `http://127.0.0.1:${port}`;
    server = await startServer({ port, args: [...TOKEN_ARGS, "--allowed-origins", casino.url] });
    const sam = await server.login("sam");
    await server.api("/api/catalog", { token: sam, method: "PUT", body: { kind: "canned_reply", language: "en", key: "xss", text: IMG } });
    await server.api("/api/catalog", { token: sam, method: "PUT", body: { kind: "close_reason", language: "en", key: "xss", text: SCRIPT } });
    browser = await launchBrowser();
    const wide = { viewport: { width: 1400, height: 900 } };
    ayla = await newPage(await browser.newContext(wide));
    olga = await newPage(await browser.newContext(wide));
    player = await newPage(await browser.newContext());
    visitor = await newPage(await browser.newContext());
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await casino?.close();
  });

  step("an anonymous visitor named with a payload leaves a payload as an offline message", async () => {
    await visitor.goto(server.url + "/console");
    const ok = await visitor.evaluate(({ name, text }) => new Promise((resolve, reject) => {
      const ws = new WebSocket(location.origin.replace("http", "ws") + "/ws");
      ws.onopen = () => ws.send(JSON.stringify({ type: "hello", protocol: 1, auth: { kind: "visitor", name } }));
      ws.onmessage = (e) => {
        const f = JSON.parse(e.data);
        if (f.type === "welcome") ws.send(JSON.stringify({ type: "start", department: "__proto__", language: "en" }));
        if (f.type === "no_agents") ws.send(JSON.stringify({ type: "send", conversation: f.conversation, client_id: "x1", text }));
        if (f.type === "ack") { ws.close(); resolve(true); }
        if (f.type === "error") reject(new Error(f.code + " " + f.message));
      };
      setTimeout(() => reject(new Error("no ack")), 10000);
    }), { name: IMG, text: SCRIPT });
    assert.equal(ok, true);
  });

  step("a verified player with payloads in name and attributes writes payloads", async () => {
    await consoleLogin(server, ayla, "ayla");
    await player.goto(casino.url + "/");
    await player.getByRole("button", { name: "Open support chat" }).click();
    await player.getByRole("button", { name: "Start a chat" }).click();
    const input = player.getByRole("textbox", { name: "Your message" });
    for (const text of [SCRIPT, IMG]) {
      await input.fill(text);
      await input.press("Enter");
    }
    await server.wait("the payload messages are acknowledged", () => player.locator(`${W} .me .meta`, { hasText: "Sent" }).nth(1).waitFor());
    await server.wait("ayla's offer names the player literally", () => ayla.locator("#offers li strong", { hasText: IMG }).waitFor());
    await ayla.getByRole("button", { name: /Accept the chat/ }).click();
    const chat = ayla.locator(".chat:not([hidden])");
    await server.wait("the messages are shown as text", () => chat.locator(".msgs .text", { hasText: IMG }).waitFor());
    await server.wait("the attributes are shown as text", () => chat.locator(".about dd", { hasText: SHORT }).waitFor());
    assert.ok(await chat.locator(".msgs .text", { hasText: SCRIPT }).count() === 1);
    assert.equal(await ayla.getByRole("tab").first().locator(".label").textContent(), IMG);
  });

  step("a canned reply, a note and a transfer note carrying payloads stay text", async () => {
    await consoleLogin(server, olga, "olga");
    const reply = ayla.getByRole("textbox", { name: "Reply to the player" });
    await reply.fill("/xss");
    await server.wait("the canned reply is listed as text", () => ayla.getByRole("option", { name: /xss/ }).waitFor());
    await reply.press("Enter");
    assert.equal(await reply.inputValue(), IMG);
    await reply.press("Enter");
    await server.wait("the player sees the agent's payload as text", () => player.locator(`${W} .them .text`, { hasText: IMG }).waitFor());
    await ayla.getByLabel("Private note").check();
    await reply.fill(SVG);
    await reply.press("Enter");
    await ayla.getByLabel("Private note").uncheck();
    await ayla.getByRole("button", { name: "Transfer", exact: true }).click();
    await ayla.locator("#transfer-agent").selectOption("olga");
    await ayla.locator("#transfer-note").fill(SCRIPT);
    await ayla.locator("#transfer-dialog").getByRole("button", { name: "Transfer" }).click();
    await server.wait("olga's offer shows the transfer note as text", () => olga.locator("#offers .note", { hasText: SCRIPT }).waitFor());
    await olga.getByRole("button", { name: /Accept the chat/ }).click();
    await server.wait("olga sees the note as text", () => olga.locator(".chat:not([hidden]) .note .text", { hasText: SVG }).waitFor());
  });

  step("the offline list shows the visitor's payloads as text", async () => {
    await server.wait("the offline message is listed", () => olga.locator("#offline .quote", { hasText: SCRIPT }).waitFor());
    assert.equal(await olga.locator("#offline strong", { hasText: IMG }).count(), 1);
    const sub = await olga.locator("#offline li", { hasText: SCRIPT }).locator(".sub").first().textContent();
    assert.match(sub, /^__proto__ · EN · /, "a department named like an object's own key is shown by its tag");
  });

  step("a close reason carrying a payload stays text", async () => {
    await olga.getByRole("button", { name: "Close chat" }).click();
    await olga.locator("#close-reason").selectOption("xss");
    assert.equal(await olga.locator("#close-reason option:checked").textContent(), SCRIPT);
    await olga.locator("#close-dialog").getByRole("button", { name: "Close chat" }).click();
    await server.wait("the close reason is shown as text", () => olga.locator(".chat:not([hidden]) .banner", { hasText: SCRIPT }).waitFor());
    await server.wait("the player is asked for a rating", () => player.locator(W).getByText("How was your chat?").waitFor());
  });

  step("no payload ran or became an element anywhere", async () => {
    for (const [name, page] of [["player", player], ["ayla", ayla], ["olga", olga], ["visitor", visitor]]) {
      const r = await inert(page);
      assert.deepEqual(r, { ran: 0, elements: [] }, `${name}'s page`);
      assert.deepEqual(page.problems(), [], `${name}'s page had errors or dialogs`);
    }
  });
});
