// The widget as a casino embeds it: one script tag on a page of another origin
// (allowed with --allowed-origins), a verified player whose token comes from the
// casino backend through getToken() (called again when the server says the token
// expired), Turkish from the script tag's data-language, nothing fetched from
// anywhere but the configured server, and everything it loads under 20 KB gzipped.

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startServer, launchBrowser, newPage, consoleLogin, freePort, artifact, STATIC_DIR, PITBOSS_BIN, stepsOf } from "./helpers.mjs";
import { startCasino, TOKEN_ARGS } from "./casino.mjs";

const W = "#pitboss-widget";
const LIMIT = 20 * 1024;

describe("the widget embedded on a casino page of another origin", () => {
  let server, casino, browser, player, ayla;
  const step = stepsOf(() => server);
  const requests = [];
  const loaded = new Map();

  before(async () => {
    casino = await startCasino({
      player: { sub: "c-42", name: "Deniz", language: "tr", vip_tier: 3, jurisdiction: "MT" },
      expiredFirst: true,
      widget: { department: "payments", language: "tr", "get-token": "casinoToken" },
    });
    const port = await freePort();
    casino.pitboss = `http://127.0.0.1:${port}`;
    server = await startServer({ port, args: [...TOKEN_ARGS, "--allowed-origins", casino.url] });
    browser = await launchBrowser();
    ayla = await newPage(await browser.newContext({ viewport: { width: 1400, height: 900 } }));
    player = await newPage(await browser.newContext());
    player.on("request", (r) => requests.push(r.url()));
    player.on("websocket", (ws) => requests.push(ws.url()));
    player.on("response", async (r) => {
      if (r.url().startsWith(server.url + "/") && r.request().resourceType() !== "websocket") {
        try { loaded.set(new URL(r.url()).pathname, await r.body()); } catch { /* redirect or aborted */ }
      }
    });
  });

  after(async () => {
    await browser?.close();
    await server?.close();
    await casino?.close();
  });

  step("a verified player connects with a fresh token after the first one expired", async () => {
    await consoleLogin(server, ayla, "ayla");
    await player.goto(casino.url + "/");
    await player.getByRole("button", { name: "Destek sohbetini aç" }).click();
    await server.wait("the widget connects (in Turkish)", () => player.getByRole("button", { name: "Sohbet başlat" }).waitFor());
    await server.until("getToken was asked again after token_expired", async () => (await player.evaluate(() => window.tokenCalls)) >= 2);
    assert.ok(casino.tokensIssued >= 2, "the casino backend signed a second token");
  });

  step("the agent sees the verified player's VIP tier and attributes; they chat", async () => {
    await player.getByRole("button", { name: "Sohbet başlat" }).click();
    const offer = ayla.locator("#offers li", { hasText: "Deniz" });
    await server.wait("ayla is offered Deniz's chat", () => offer.waitFor());
    assert.match(await offer.textContent(), /VIP 3/);
    assert.match(await offer.textContent(), /Payments · TR/);
    await server.wait("the queue shows the VIP tier", () => ayla.locator("#queue tbody tr", { hasText: "VIP 3" }).filter({ hasText: "Payments" }).waitFor());
    await offer.getByRole("button", { name: /Accept/ }).click();
    const about = ayla.locator(".chat:not([hidden]) .about");
    await server.wait("the player's attributes are shown beside the chat", () => about.getByText("MT").waitFor());
    const attrs = (await about.locator("dd").allTextContents()).join("|");
    assert.match(attrs, /Deniz\|p:c-42\|Turkish \(TR\)\|VIP 3\|MT\|No\|Yes/);
    await server.wait("the player sees who is helping, in Turkish", () => player.locator(W).getByText("Ayla ile sohbet ediyorsunuz.").waitFor());
    const input = player.getByRole("textbox", { name: "Mesajınız" });
    await input.fill("Merhaba, çekim talebim ne durumda?");
    await input.press("Enter");
    await server.wait("ayla receives it", () => ayla.locator(".chat:not([hidden]) .msgs").getByText("Merhaba, çekim talebim ne durumda?").waitFor());
    const reply = ayla.getByRole("textbox", { name: "Reply to the player" });
    await reply.fill("/wait");
    await server.wait("Turkish canned replies for a Turkish chat", () => ayla.getByRole("option", { name: /Beklediğiniz için teşekkürler/ }).waitFor());
    await reply.press("Enter");
    await reply.press("Enter");
    await server.wait("the player gets the canned reply", () => player.locator(W).getByText(/Beklediğiniz için teşekkürler/).waitFor());
  });

  step("the widget talks to nobody but its configured server", () => {
    const foreign = requests.filter((u) => !u.startsWith(casino.url + "/") && !u.startsWith(server.url + "/") && !u.startsWith(server.url.replace("http", "ws") + "/") && !u.startsWith("data:"));
    assert.deepEqual(foreign, []);
    assert.ok(requests.includes(server.url.replace("http", "ws") + "/ws"), "the WebSocket goes to the configured server");
  });

  step("everything the widget loads is under 20 KB gzipped", (t) => {
    for (const [path, body] of loaded) {
      assert.ok(body.equals(readFileSync(join(STATIC_DIR, path))),
        `${PITBOSS_BIN} serves an old copy of static${path}: rebuild it (cargo build -p pitboss-server) so that the measured files are the ones in the tree`);
    }
    const files = [...loaded.entries()].map(([path, body]) => ({ path, bytes: body.length, gzipped: gzipSync(body).length }));
    const paths = files.map((f) => f.path).sort();
    assert.deepEqual(paths, ["/client.js", "/i18n.js", "/widget.js", "/widget/i18n/tr.js", "/widget/widget.css"]);
    const total = files.reduce((n, f) => n + f.gzipped, 0);
    const raw = files.reduce((n, f) => n + f.bytes, 0);
    // The page loaded one language; the others weigh about the same, and the
    // heaviest one counts.
    const locale = files.find((f) => f.path.startsWith("/widget/i18n/"));
    const perLanguage = Object.fromEntries(readdirSync(join(STATIC_DIR, "widget", "i18n")).map((file) => {
      const gz = gzipSync(readFileSync(join(STATIC_DIR, "widget", "i18n", file))).length;
      return [file.replace(".js", ""), total - locale.gzipped + gz];
    }));
    const worst = Math.max(...Object.values(perLanguage));
    const report = { total_gzipped_bytes: total, total_bytes: raw, limit_bytes: LIMIT, files, total_gzipped_bytes_per_language: perLanguage };
    writeFileSync(artifact("widget-size.json"), JSON.stringify(report, null, 2) + "\n");
    t.diagnostic(`widget: ${files.length} files, ${raw} bytes, ${total} bytes gzipped; per language ${JSON.stringify(perLanguage)} (limit ${LIMIT})`);
    assert.ok(total <= LIMIT, `the widget loads ${total} bytes gzipped, more than ${LIMIT}: ${JSON.stringify(files)}`);
    assert.ok(worst <= LIMIT, `with its heaviest language the widget loads ${worst} bytes gzipped, more than ${LIMIT}`);
  });

  step("the same verified player on another device sees the earlier conversation", async () => {
    await player.getByRole("button", { name: "Sohbeti bitir" }).click();
    await player.getByRole("alertdialog").getByRole("button", { name: "Evet, bitir" }).click();
    await server.wait("the player is asked for a rating", () => player.locator(W).getByText("Sohbetiniz nasıldı?").waitFor());
    await player.getByRole("button", { name: "Geç" }).click();
    await server.wait("the chat ended for ayla too", () => ayla.getByText("The chat is closed.").waitFor());
    const other = await newPage(await browser.newContext()); // no shared storage: only the token says who it is
    await other.goto(casino.url + "/");
    await other.getByRole("button", { name: "Destek sohbetini aç" }).click();
    await server.wait("the earlier conversation is shown", () => other.locator(W).getByText(/Önceki görüşmeniz/).waitFor());
    await server.wait("with its messages", () => other.locator(W).getByText("Merhaba, çekim talebim ne durumda?").waitFor());
    assert.deepEqual(other.problems(), []);
  });

  step("a page of an origin that is not allowed cannot open the chat", async () => {
    const page = await newPage(await browser.newContext());
    const origin = casino.url.replace("localhost", "127.0.0.1");
    await page.goto(origin + "/");
    await page.getByRole("button", { name: "Destek sohbetini aç" }).click();
    await server.wait("the widget says the chat is unavailable", () => page.locator(W).getByText("Sohbet şu anda kullanılamıyor. Birazdan yeniden denenecek…").waitFor());
    await server.until("the server refused the origin", () => /origin that is not allowed/.test(server.log(400)));
    await page.waitForTimeout(2000); // a few more tries
    assert.equal(await page.getByRole("button", { name: "Sohbet başlat" }).count(), 0);
    // One state: it never connected, so nothing was lost, and it is not "connecting" either.
    const shown = await page.locator(`${W} .status, ${W} .conn`).evaluateAll((els) => els.filter((el) => el.offsetParent).map((el) => el.textContent));
    assert.deepEqual(shown, ["Sohbet şu anda kullanılamıyor. Birazdan yeniden denenecek…"]);
  });

  step("no page raised an error or a dialog", () => {
    for (const p of [player, ayla]) assert.deepEqual(p.problems(), []);
  });
});
