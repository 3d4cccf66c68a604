// The agent console across a server that goes down and comes back: an agent who
// was away stays away. A node that starts again (or another node, after a
// failover) greets a reconnecting agent online when it never heard otherwise;
// the console, which remembers, sets the agent away again, so no chat is offered
// to someone who stepped away.

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, newPage, stepsOf, consoleLogin, playersPage } from "./helpers.mjs";

describe("a console whose server restarts", () => {
  let server, browser, ayla;
  const step = stepsOf(() => server);
  const sent = [];

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
    ayla = await newPage(await browser.newContext());
    ayla.on("websocket", (ws) => ws.on("framesent", (f) => {
      try { sent.push(JSON.parse(f.payload)); } catch { /* not JSON */ }
    }));
    await consoleLogin(server, ayla, "ayla");
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  /** Ayla's status as the server holds it, from a supervisor's account list. */
  async function statusOnServer() {
    const token = await server.login("sam");
    const agents = await server.api("/api/agents", { token });
    return (agents.agents || agents).find((a) => a.id === "ayla")?.status;
  }

  step("an agent away before the restart is away after it, on the server too", async () => {
    await ayla.locator("#status-away").click();
    await server.wait("ayla is away", () => ayla.locator("#status-away[aria-pressed=true]").waitFor());
    assert.equal(await statusOnServer(), "away");
    const before = sent.filter((f) => f.type === "set_status").length;

    await server.kill();
    await server.restart();
    await server.until("ayla's console is back and away on the server", async () =>
      (await ayla.locator("#app[data-state=open]").count()) === 1 && (await statusOnServer()) === "away");
    await server.wait("the console shows away", () => ayla.locator("#status-away[aria-pressed=true]").waitFor());
    assert.deepEqual(sent.filter((f) => f.type === "set_status").slice(before), [{ type: "set_status", status: "away" }]);
    assert.deepEqual(ayla.problems(), []);
  });
});

describe("an offer whose withdrawal never comes", () => {
  let server, browser, ayla, player;
  const step = stepsOf(() => server);

  before(async () => {
    server = await startServer({ args: ["--offer-timeout-secs", "5"] });
    browser = await launchBrowser();
    ayla = await newPage(await browser.newContext());
    player = await playersPage(browser, server);
    await consoleLogin(server, ayla, "ayla");
  });

  after(async () => {
    if (server?.proc?.pid) try { process.kill(server.proc.pid, "SIGCONT"); } catch { /* gone */ }
    await browser?.close();
    await server?.close();
  });

  step("leaves the console 10 s after its time ran out, though the socket stays open", async () => {
    await player.open("p1", "Deniz");
    await player.start("p1", "en");
    const card = ayla.locator("#offers li");
    await server.wait("ayla is offered the chat", () => card.first().waitFor());
    // The server stops answering: no withdrawal will come, and the socket stays open.
    process.kill(server.proc.pid, "SIGSTOP");
    try {
      const shown = Date.now();
      await server.wait("the card goes", () => card.first().waitFor({ state: "detached", timeout: 20000 }));
      const took = Date.now() - shown;
      assert.ok(took >= 9000, `the card went after ${took} ms, before its time ran out and 10 s more`);
      assert.equal(await ayla.locator("#offers-empty").isVisible(), true);
    } finally {
      process.kill(server.proc.pid, "SIGCONT");
    }
    assert.deepEqual(ayla.problems(), []);
  });
});
