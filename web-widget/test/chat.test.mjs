// One support chat end to end, in a real Chromium against a real pitboss: the player
// writes from the widget on the demo casino page, an agent is notified, accepts and
// answers from the console, the chat is transferred to a second agent, the player
// reloads, the server is killed and restarted on the same port and data directory,
// the agent closes the chat, the player rates it, and comes back later.

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, newPage, consoleLogin, artifact, axe, stepsOf } from "./helpers.mjs";

const W = "#pitboss-widget";
const STUB_NOTIFICATIONS = () => {
  window.__notes = [];
  window.Notification = function (title, options) { window.__notes.push({ title, body: options && options.body }); };
  window.Notification.permission = "granted";
  window.Notification.requestPermission = () => Promise.resolve("granted");
};

/** What a conversation shows, in order: one string per entry. */
const widgetLines = (page) => page.locator(`${W} .msgs > li p`).allTextContents();
const consoleLines = (page) => page.locator(".chat:not([hidden]) .msgs > li p").allTextContents();
const dupes = (lines) => lines.filter((l, i) => lines.indexOf(l) !== i);

describe("a support chat from first message to rating", () => {
  let server, browser, player, ayla, olga, conversation;
  const step = stepsOf(() => server);
  const FIRST = "Hi, my deposit of 50 EUR has not arrived";

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
    const agentCtx = { viewport: { width: 1400, height: 900 } };
    const aylaCtx = await browser.newContext(agentCtx);
    await aylaCtx.addInitScript(STUB_NOTIFICATIONS);
    ayla = await newPage(aylaCtx);
    const olgaCtx = await browser.newContext(agentCtx);
    await olgaCtx.addInitScript(STUB_NOTIFICATIONS);
    olga = await newPage(olgaCtx);
    player = await newPage(await browser.newContext({ viewport: { width: 1280, height: 800 } }));
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  step("an agent logs in and is online", async () => {
    await consoleLogin(server, ayla, "ayla");
    await server.wait("ayla is shown online", () => ayla.locator("#status-online[aria-pressed=true]").waitFor());
  });

  step("the widget opens from the keyboard and Escape gives the focus back", async () => {
    await player.goto(server.url + "/");
    const launcher = player.getByRole("button", { name: "Open support chat" });
    await server.wait("the launcher appears", () => launcher.waitFor());
    await launcher.focus();
    await player.keyboard.press("Enter");
    await server.wait("the panel opens with the start button focused", () =>
      player.waitForFunction(() => document.querySelector("#pitboss-widget").shadowRoot.activeElement?.textContent === "Start a chat"));
    await player.keyboard.press("Escape");
    assert.equal(await player.locator(`${W} .panel`).isHidden(), true);
    assert.equal(await player.evaluate(() => document.querySelector("#pitboss-widget").shadowRoot.activeElement?.getAttribute("aria-controls")), "pb-panel");
  });

  step("the player starts a chat, sees the queue position and writes", async () => {
    await player.getByRole("button", { name: "Open support chat" }).click();
    await player.getByRole("button", { name: "Start a chat" }).click();
    await server.wait("the player sees the queue position", () => player.locator(W).getByText("You are number 1 in line.").waitFor());
    const input = player.getByRole("textbox", { name: "Your message" });
    await input.fill(FIRST);
    await input.press("Enter");
    await server.wait("the player's message is acknowledged", () => player.locator(`${W} .me .meta`, { hasText: "Sent" }).waitFor());
  });

  step("the agent is notified, sees the queue live, accepts and answers with a canned reply", async () => {
    await server.wait("ayla gets the offer", () => ayla.getByRole("button", { name: /Accept the chat/ }).waitFor());
    const notes = await ayla.evaluate(() => window.__notes);
    assert.ok(notes.some((n) => n.title.startsWith("New chat")), `a desktop notification for the new chat: ${JSON.stringify(notes)}`);
    await server.wait("the queue shows the waiting player", () => ayla.locator("#queue tbody tr", { hasText: "general" }).filter({ hasText: "EN" }).waitFor());
    await ayla.getByRole("button", { name: /Accept the chat/ }).click();
    await server.wait("ayla's tab shows the player's message", () => ayla.locator(".chat:not([hidden]) .log").getByText(FIRST).waitFor());
    conversation = await ayla.evaluate(() => Object.keys(window.pitbossConsole.chats)[0]);
    assert.match(conversation, /^[0-9a-f-]{36}$/);
    await server.wait("the player sees who is helping", () => player.locator(W).getByText("You are chatting with Ayla.").waitFor());

    const reply = ayla.getByRole("textbox", { name: "Reply to the player" });
    await reply.pressSequentially("Let me look");
    await server.wait("the player sees ayla typing", () => player.locator(W).getByText("Ayla is typing…").waitFor());
    await reply.fill("");
    await reply.pressSequentially("/hel");
    await server.wait("canned replies are offered", () => ayla.getByRole("option", { name: /Hello! How can I help you today\?/ }).waitFor());
    await reply.press("Enter"); // takes the highlighted canned reply
    assert.equal(await reply.inputValue(), "Hello! How can I help you today?");
    await reply.press("Enter"); // sends it
    await server.wait("the player receives the reply", () => player.locator(`${W} .them .text`, { hasText: "Hello! How can I help you today?" }).waitFor());
    await server.wait("ayla sees that the player read it", () => ayla.locator(".chat:not([hidden]) .agent .meta", { hasText: "Read" }).waitFor());
    await server.wait("the player sees that ayla read theirs", () => player.locator(`${W} .me .meta`, { hasText: "Read" }).waitFor());

    await ayla.getByLabel("Private note").check();
    await reply.fill("Checked the PSP: deposit is pending there");
    await reply.press("Enter");
    await server.wait("the note is stored", () => ayla.locator(".chat:not([hidden]) .note .meta").filter({ hasNotText: "Sending" }).waitFor());
    await ayla.getByLabel("Private note").uncheck();

    await player.screenshot({ path: artifact("widget-desktop.png") });
    const violations = await axe(player, [W, ".pb"]);
    assert.deepEqual(violations, [], "serious or critical accessibility problems in the widget");
  });

  step("the player reloads mid-chat: the transcript is intact and not doubled", async () => {
    const lines = await widgetLines(player);
    assert.ok(lines.includes(FIRST) && !lines.some((l) => l.includes("PSP")), `the private note never reaches the player: ${lines}`);
    await player.reload();
    await server.wait("the transcript comes back after the reload", () => player.locator(`${W} .them .text`, { hasText: "Hello! How can I help" }).waitFor());
    await server.wait("the agent's name comes back", () => player.locator(W).getByText("You are chatting with Ayla.").waitFor());
    const again = await widgetLines(player);
    assert.deepEqual(again, lines, "same entries, same order, none twice");
    const input = player.getByRole("textbox", { name: "Your message" });
    await input.fill("Still there?");
    await input.press("Enter");
    await server.wait("ayla gets the message written after the reload", () => ayla.locator(".chat:not([hidden]) .log").getByText("Still there?").waitFor());
    assert.equal((await consoleLines(ayla)).filter((l) => l === "Still there?").length, 1);
  });

  step("a card number the player pastes is hidden from the agent and the transcript; the player is told", async () => {
    const input = player.getByRole("textbox", { name: "Your message" });
    await input.fill("My card is 4111 1111 1111 1111");
    await input.press("Enter");
    await server.wait("the player's copy is masked", () => player.locator(`${W} .me .text`, { hasText: "My card is •••• •••• •••• 1111" }).waitFor());
    await server.wait("the player is told why", () => player.locator(W).getByText("For your safety, card numbers and bank details in this message are hidden.").waitFor());
    await server.wait("ayla sees the masked text", () => ayla.locator(".chat:not([hidden]) .log").getByText("My card is •••• •••• •••• 1111").waitFor());
    assert.ok(!(await consoleLines(ayla)).some((l) => l.includes("4111 1111 1111 1111")), "the agent never sees the number");
    assert.ok(!(await widgetLines(player)).some((l) => l.includes("4111 1111 1111 1111")), "nor does the widget keep it");
  });

  step("the chat is transferred to a second agent, who sees the whole history", async () => {
    await consoleLogin(server, olga, "olga");
    await ayla.getByRole("button", { name: "Transfer", exact: true }).click();
    const dialog = ayla.locator("#transfer-dialog");
    await dialog.getByLabel("Agent", { exact: true }).last().selectOption("olga");
    await dialog.getByLabel("Note for the next agent (private)").fill("Deposit stuck at the PSP, please follow up");
    await dialog.getByRole("button", { name: "Transfer" }).click();
    await server.wait("ayla sees the transfer pending", () => ayla.getByText(/Transfer to Olga requested/).first().waitFor());
    await server.wait("olga is offered the transfer with the note", () => olga.locator("#offers .transfer", { hasText: "Transfer from Ayla: Deposit stuck at the PSP" }).waitFor());
    assert.ok((await olga.evaluate(() => window.__notes)).some((n) => n.title.startsWith("Transfer offered")));
    await olga.getByRole("button", { name: /Accept the chat/ }).click();
    const log = olga.locator(".chat:not([hidden]) .log");
    for (const text of [FIRST, "Hello! How can I help you today?", "Checked the PSP: deposit is pending there", "Still there?", "Transfer to Olga: Deposit stuck at the PSP, please follow up"]) {
      await server.wait(`olga sees "${text}" from before the transfer`, () => log.getByText(text).waitFor());
    }
    await server.wait("ayla is told the chat moved", () => ayla.getByText("This chat is now with Olga.").waitFor());
    await server.wait("the player sees the new agent", () => player.locator(W).getByText("You are chatting with Olga.").waitFor());
    await server.wait("the player sees the transfer in the transcript", () => player.locator(W).getByText("Olga joined the chat").waitFor());
    assert.deepEqual(dupes(await consoleLines(olga)).filter((l) => !/joined the chat/.test(l)), []);

    await olga.screenshot({ path: artifact("console.png") });
    const violations = await axe(olga);
    assert.deepEqual(violations, [], "serious or critical accessibility problems in the console");
  });

  step("the server is killed and restarted mid-chat; both sides recover and nothing is lost or doubled", async () => {
    const before = await widgetLines(player);
    await server.kill();
    await server.wait("the player sees the connection is lost", () => player.locator(W).getByText("Connection lost. Reconnecting…").waitFor());
    await server.wait("olga sees the connection is lost", () => olga.locator("#app[data-state=reconnecting]").waitFor());
    const input = player.getByRole("textbox", { name: "Your message" });
    await input.fill("Typed while you were away");
    await input.press("Enter");
    await server.wait("the message waits in the outbox", () => player.locator(`${W} .me .meta`, { hasText: "Sending" }).waitFor());

    await server.restart();
    await server.wait("olga reconnects", () => olga.locator("#app[data-state=open]").waitFor({ timeout: 20000 }));
    await server.wait("the player reconnects", () => player.locator(`${W} .conn`).waitFor({ state: "hidden", timeout: 20000 }));
    await server.wait("the message typed offline is delivered to olga", () => olga.locator(".chat:not([hidden]) .log").getByText("Typed while you were away").waitFor({ timeout: 20000 }));
    await server.wait("and acknowledged to the player", () => player.locator(`${W} .me`, { hasText: "Typed while you were away" }).locator(".meta", { hasNotText: "Sending" }).waitFor());

    const reply = olga.getByRole("textbox", { name: "Reply to the player" });
    await reply.fill("Yes, I am still here. It is credited now.");
    await reply.press("Enter");
    await server.wait("the player gets olga's answer after the restart", () => player.locator(W).getByText("Yes, I am still here. It is credited now.").waitFor());

    const lines = await widgetLines(player);
    assert.deepEqual(lines.slice(0, before.length), before, "the transcript before the restart is intact");
    assert.deepEqual(dupes(lines.filter((l) => !/joined the chat/.test(l))), [], `nothing shown twice to the player: ${lines}`);
    const agentLines = await consoleLines(olga);
    assert.equal(agentLines.filter((l) => l === "Typed while you were away").length, 1, "olga has the offline message once");
  });

  step("messages that arrive while the panel is closed are counted on the launcher, across a reload", async () => {
    await player.getByRole("button", { name: "Minimise chat" }).click();
    const reply = olga.getByRole("textbox", { name: "Reply to the player" });
    await reply.fill("One more thing: check your e-mail.");
    await reply.press("Enter");
    await server.wait("the launcher counts the unread message", () => player.getByRole("button", { name: "Open support chat (1 unread)" }).waitFor());
    await player.reload();
    await server.wait("after a reload only the unseen message counts", () => player.getByRole("button", { name: "Open support chat (1 unread)" }).waitFor());
    await player.getByRole("button", { name: "Open support chat (1 unread)" }).click();
    await server.wait("opening the chat clears the count", () => player.getByRole("button", { name: "Open support chat", exact: true }).waitFor());
    await server.wait("the message is there", () => player.locator(W).getByText("One more thing: check your e-mail.").waitFor());
  });

  step("the agent closes with a reason; the player rates; the rating is stored", async () => {
    await olga.getByRole("button", { name: "Close chat" }).click();
    await olga.locator("#close-reason").selectOption("resolved");
    await olga.locator("#close-dialog").getByRole("button", { name: "Close chat" }).click();
    await server.wait("olga sees the chat closed with its reason", () => olga.getByText("The chat is closed: Resolved.").waitFor());
    await server.wait("the player is asked for a rating", () => player.locator(W).getByText("How was your chat?").waitFor());
    assert.deepEqual(await axe(player, [W, ".pb"]), [], "serious or critical accessibility problems in the rating form");
    await player.locator(`${W} label[for=pb-star4]`).click();
    await player.locator(W).getByLabel("Comment (optional)").fill("Quick and friendly");
    await player.getByRole("button", { name: "Send rating" }).click();
    await server.wait("the player is thanked", () => player.locator(W).getByText("Thank you for your feedback!").waitFor());
    assert.deepEqual(await axe(player, [W, ".pb"]), [], "serious or critical accessibility problems after the rating");
    const token = await server.login("sam");
    const stored = await server.until("the rating is stored", async () => {
      const b = await server.api(`/api/conversations/${conversation}`, { token });
      return b.conversation.rating === 4 && b;
    });
    assert.equal(stored.rating_comment, "Quick and friendly");
    assert.equal(stored.close_reason, "resolved");
    assert.equal(stored.conversation.state, "closed");
    assert.equal(stored.conversation.agent, "olga");
  });

  step("the agent's key figures count the chat, its first response and its rating", async () => {
    await olga.locator("#kpis-refresh").click();
    const figure = (key) => olga.locator(`[data-kpi="${key}"] dd`);
    await server.wait("olga's satisfaction shows the rating", () => figure("kpi_satisfaction").getByText("4.0/5 from 1").waitFor());
    assert.equal(await olga.locator("#kpis-h").textContent(), "Your last 24 hours");
    assert.equal(await figure("kpi_started").textContent(), "1", "olga's own: the one chat she closed");
    assert.match(await figure("kpi_first_response").textContent(), /^avg \d+ s · 90 % within \d+ s$/);
    assert.match(await figure("kpi_resolution").textContent(), /^avg \d+ s · 90 % within \d+ s$/);
    assert.equal(await figure("kpi_abandoned").textContent(), "0");
    assert.deepEqual(await axe(olga, ".kpis"), [], "serious or critical accessibility problems in the key figures");
    await olga.screenshot({ path: artifact("console-kpis.png") });
  });

  step("a returning visitor sees the earlier conversation, also on a phone-sized screen", async () => {
    const page = await newPage(player.context());
    await page.setViewportSize({ width: 375, height: 667 });
    await page.goto(server.url + "/");
    await page.getByRole("button", { name: "Open support chat" }).click();
    await server.wait("the earlier conversation is shown", () => page.locator(W).getByText(/Your earlier conversation/).waitFor());
    await server.wait("with its messages", () => page.locator(W).getByText(FIRST).waitFor());
    await server.wait("and a way to start again", () => page.getByRole("button", { name: "Start a chat" }).waitFor());
    const box = await page.locator(`${W} .panel`).boundingBox();
    assert.ok(box.width >= 370 && box.height >= 660, `the panel fills a phone screen: ${JSON.stringify(box)}`);
    await page.screenshot({ path: artifact("widget-phone.png") });
    assert.deepEqual(dupes(await widgetLines(page)).filter((l) => !/joined the chat/.test(l)), []);
    assert.deepEqual(page.problems(), []);
  });

  step("no page raised an error or a dialog", () => {
    for (const p of [player, ayla, olga]) assert.deepEqual(p.problems(), []);
  });
});
