// What a queued player is told about the wait when the server has no estimate: on
// a new server nothing has closed yet, so there is no handle-time history, and a
// player waiting behind a busy agent is shown the place in line alone, not "no
// agent is available"; that is said only once nobody online serves the chat.

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, launchBrowser, newPage, addAgent, stepsOf } from "./helpers.mjs";

const W = "#pitboss-widget";
const PASSWORD = "kim-has-a-long-password";

describe("the wait shown to a queued player without an estimate", () => {
  let server, browser, desk, player;
  const step = stepsOf(() => server);
  const status = () => player.locator(`${W} .status`);

  before(async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "pitboss-e2e-"));
    // The demo serves the casino page; its agents stay logged out.
    server = await startServer({ dataDir });
    addAgent(dataDir, "kim", { password: PASSWORD, capacity: 1 });
    browser = await launchBrowser();
    // A page of the server's origin where kim (capacity 1) and a first player talk
    // the protocol directly: kim takes the first player's chat and is then full.
    desk = await newPage(await browser.newContext());
    await desk.goto(server.url + "/console");
    const token = await server.login("kim", PASSWORD);
    await desk.evaluate((token) => new Promise((resolve, reject) => {
      const url = location.origin.replace("http", "ws") + "/ws";
      const kim = (window.kim = new WebSocket(url));
      kim.onopen = () => kim.send(JSON.stringify({ type: "hello", protocol: 1, auth: { kind: "agent", token } }));
      kim.onmessage = (e) => {
        const f = JSON.parse(e.data);
        if (f.type === "welcome") {
          const first = (window.first = new WebSocket(url));
          first.onopen = () => first.send(JSON.stringify({ type: "hello", protocol: 1, auth: { kind: "visitor", name: "First", language: "en" } }));
          first.onmessage = (e) => {
            const g = JSON.parse(e.data);
            if (g.type === "welcome") first.send(JSON.stringify({ type: "start", department: "general" }));
            if (g.type === "assigned") resolve(true);
          };
        }
        if (f.type === "offer") kim.send(JSON.stringify({ type: "accept", conversation: f.conversation }));
        if (f.type === "error") reject(new Error(f.code + " " + f.message));
      };
      setTimeout(() => reject(new Error("the first chat was not assigned")), 15000);
    }), token);
    player = await newPage(await browser.newContext({ locale: "en-US" }));
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  step("behind a busy agent with no history yet, the widget shows the place in line alone", async () => {
    await player.goto(server.url + "/");
    await player.getByRole("button", { name: "Open support chat" }).click();
    await player.getByRole("button", { name: "Start a chat" }).click();
    await server.wait("the player is queued, first in line", () => player.locator(`${W} .status`, { hasText: "You are number 1 in line." }).waitFor());
    await player.waitForTimeout(300);
    assert.equal((await status().textContent()).trim(), "You are number 1 in line.", "no claim that nobody is available");
  });

  step("once the only agent goes away, the player is told no agent is available", async () => {
    await desk.evaluate(() => window.kim.send(JSON.stringify({ type: "set_status", status: "away" })));
    await server.wait("the widget says so", () =>
      player.locator(`${W} .status`, { hasText: "You are number 1 in line. No agent is available right now." }).waitFor());
    await desk.evaluate(() => window.kim.send(JSON.stringify({ type: "set_status", status: "online" })));
    await server.until("and takes it back when she returns", async () => (await status().textContent()).trim() === "You are number 1 in line.");
  });
});
