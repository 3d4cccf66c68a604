// When the server cannot take a chat at once: a `start` it turns away for now
// (`rate_limited` here; `overloaded` takes the same path) is not a dead end. The
// widget tells the player the team is busy and sends the `start` again after a
// pause, and the chat begins without the player doing anything.

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, newPage, stepsOf } from "./helpers.mjs";

const W = "#pitboss-widget";

/** Before the page's first `start`, spends the connection's one-frame burst on a
 * `ping`, so that the server refuses that `start` for rate. */
const SPEND_BURST_BEFORE_START = () => {
  const send = WebSocket.prototype.send;
  let spent = false;
  WebSocket.prototype.send = function (data) {
    if (!spent && typeof data === "string" && data.includes('"type":"start"')) {
      spent = true;
      send.call(this, JSON.stringify({ type: "ping" }));
    }
    return send.call(this, data);
  };
};

/** Whether `check` holds within `ms`, polling. */
async function within(ms, check) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return check();
}

describe("a start the server turns away for now", () => {
  let server, browser, player;
  const step = stepsOf(() => server);
  let received = [];

  /** A page of its own (a new visitor, a new connection), recording its frames. */
  async function freshPlayer() {
    const ctx = await browser.newContext();
    await ctx.addInitScript(SPEND_BURST_BEFORE_START);
    const page = await newPage(ctx);
    const frames = [];
    page.on("websocket", (ws) => ws.on("framereceived", (f) => {
      try { frames.push(JSON.parse(f.payload)); } catch { /* not JSON */ }
    }));
    return { page, frames };
  }

  before(async () => {
    // One frame a second per connection, bursts of one.
    server = await startServer({ args: ["--frames-per-second", "1", "--burst-frames", "1"] });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  step("the widget says the team is busy, tries again by itself, and the chat starts", async () => {
    // The ping and the start leave the page together, so the start finds the
    // connection's one token spent, unless the server was held up for the second
    // it takes to come back. On a loaded machine that can happen: a page whose
    // first start got through is set aside and another visitor tries (at most
    // three), so that what is tested is the retry, not the machine's timing.
    const refusedStart = () => received.some((v) => v.type === "error" && v.code === "rate_limited" && v.frame === "start");
    let refused = false;
    for (let attempt = 1; attempt <= 3 && !refused; attempt++) {
      await player?.context().close();
      ({ page: player, frames: received } = await freshPlayer());
      await player.goto(server.url + "/");
      await player.getByRole("button", { name: "Open support chat" }).click();
      await player.getByRole("button", { name: "Start a chat" }).click();
      refused = await within(10000, refusedStart);
    }
    assert.ok(refused, "the server refused the first start for rate in one of three visits");
    await server.wait("the player is told the team is busy", () =>
      player.locator(W).getByText("Our team is very busy right now.", { exact: false }).waitFor());
    assert.equal(await player.getByRole("button", { name: "Start a chat" }).isVisible(), false,
      "the start button stays hidden while the widget retries");
    // Nobody is online in this server, so the start that gets through is answered
    // with `no_agents`.
    await server.wait("the retried start gets through", () =>
      player.locator(W).getByText("No agent is available right now.").waitFor());
    assert.ok(received.some((v) => v.type === "no_agents"), "the server answered a start");
    assert.equal(received.filter((v) => v.type === "error" && v.code !== "rate_limited").length, 0,
      `no other refusals: ${JSON.stringify(received.filter((v) => v.type === "error"))}`);
  });
});
