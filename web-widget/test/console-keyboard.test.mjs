// The agent console for an agent who works from the keyboard, or with a screen
// reader: after each action the focus lands where the next one starts (not on
// the page itself, which sends the next Tab back to the header), lists that
// refresh by themselves keep the focused control, and what arrives outside the
// agent's view (an offer, a message in another chat) is read out.

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, newPage, consoleLogin, stepsOf, strings, playersPage } from "./helpers.mjs";

const en = strings("console", "en");
const fill = (s, vars) => s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
const WIDE = { viewport: { width: 1280, height: 800 } };

/** The focused element's id, or its data-key, or its tag. */
const focused = (page) => page.evaluate(() => {
  const a = document.activeElement;
  return a ? a.id || a.getAttribute("data-key") || a.tagName.toLowerCase() : null;
});

describe("the console from the keyboard", () => {
  let server, browser, players, ayla, sam;
  let first, second;
  const step = stepsOf(() => server);

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
    ayla = await newPage(await browser.newContext(WIDE));
    sam = await newPage(await browser.newContext(WIDE));
    players = await playersPage(browser, server);
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  /** Waits until the page's focus is on `want` (an id or data-key). */
  async function focusOn(page, want, what) {
    await server.until(what, async () => (await focused(page)) === want, 5000)
      .catch(async () => assert.fail(`${what}: the focus is on ${await focused(page)}, not ${want}`));
  }

  step("after logging in, the focus is on the offers", async () => {
    await consoleLogin(server, ayla, "ayla");
    await focusOn(ayla, "offers-h", "the focus after login");
  });

  step("an offer is read out, and accepting it from the keyboard lands in its reply box", async () => {
    await players.open("p1", "Deniz", "tr");
    first = await players.start("p1", "en");
    const accept = ayla.locator(`[data-key="accept-${first}"]`);
    await server.wait("ayla is offered Deniz's chat", () => accept.waitFor());
    await server.until("the offer is read out", async () =>
      (await ayla.locator("#announce").textContent()) === fill(en.notify_offer, { name: "Deniz" }), 5000);
    await accept.focus();
    await ayla.keyboard.press("Enter");
    await focusOn(ayla, `input-${first}`, "the focus after accepting");
    await ayla.keyboard.type("Hello Deniz");
    assert.equal(await ayla.locator(`#input-${first}`).inputValue(), "Hello Deniz");
    // The player's language by its name, with its code.
    const language = ayla.locator(".chat:not([hidden]) .about dt", { hasText: en.attr_language }).locator("xpath=following-sibling::dd[1]");
    await server.until("the player's language is named", async () => (await language.textContent()) === "Turkish (TR)", 5000);
  });

  step("declining from the keyboard leaves the focus in the console, not on the page", async () => {
    await players.open("p2", "Mehmet");
    second = await players.start("p2", "en");
    const decline = ayla.locator(`[data-key="decline-${second}"]`);
    await server.wait("ayla is offered Mehmet's chat", () => decline.waitFor());
    await decline.focus();
    await ayla.keyboard.press("Enter");
    await server.wait("the offer goes", () => decline.waitFor({ state: "detached" }));
    await focusOn(ayla, `input-${first}`, "the focus after declining");
  });

  step("a message in a chat that is not shown is read out", async () => {
    // A second chat, taken from the keyboard: now it is the one shown.
    await players.open("p3", "Olga");
    const third = await players.start("p3", "en");
    const accept = ayla.locator(`[data-key="accept-${third}"]`);
    await server.wait("ayla is offered Olga's chat", () => accept.waitFor());
    await accept.focus();
    await ayla.keyboard.press("Enter");
    await focusOn(ayla, `input-${third}`, "the focus after accepting the second chat");
    await players.say("p1", first, "Are you there?");
    await server.until("the message in Deniz's chat is read out", async () =>
      (await ayla.locator("#announce").textContent()) === fill(en.announce_message, { name: "Deniz" }), 5000);
  });

  step("the supervisor's team list keeps the focused button across its refreshes", async () => {
    await consoleLogin(server, sam, "sam");
    const kpis = sam.locator('[data-key="team-ayla"]');
    await server.wait("ayla is in sam's team list", () => kpis.waitFor());
    await kpis.focus();
    // The list is built again every 5 s.
    await sam.waitForTimeout(11000);
    assert.equal(await focused(sam), "team-ayla");
    await sam.keyboard.press("Enter");
    await server.wait("ayla's key figures open", () => sam.locator('[data-key="team-ayla"][aria-expanded=true]').waitFor());
    assert.equal(await focused(sam), "team-ayla");
  });

  step("no page raised an error or a dialog", () => {
    for (const p of [ayla, sam, players.page]) assert.deepEqual(p.problems(), []);
  });
});
