// Usability of the player widget where the audit found gaps: a queued player whose
// agents all went away is told so (the server's `queued` with `agents_online: false`), and
// that their place is kept; a text over the server's limit is kept and explained,
// with a counter near the limit; "End chat" asks first (keyboard and Escape); an
// offline message, once written, is "received", not "nobody is available", even
// after a reload with agents online; hints stay above the conversation; a transfer
// to a department never shows the department's raw tag.

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, newPage, consoleLogin, axe, stepsOf } from "./helpers.mjs";

const W = "#pitboss-widget";
const shadowFocus = (page) => page.evaluate(() => document.querySelector("#pitboss-widget").shadowRoot.activeElement?.textContent || null);

/** A page that records every frame its WebSockets receive. */
async function recordingPage(context) {
  const page = await newPage(context);
  page.frames = [];
  page.on("websocket", (ws) => ws.on("framereceived", (f) => {
    try { page.frames.push(JSON.parse(f.payload)); } catch { /* not JSON */ }
  }));
  return page;
}

describe("widget usability: queue without agents, long texts, ending, offline messages, transfers", () => {
  let server, browser, player, ayla, ru, olga;
  const step = stepsOf(() => server);
  const hint = (page) => page.locator(`${W} .hint`);
  /** The element `sel` of the widget, once it shows `text`. */
  const shows = (page, sel, text) => page.locator(`${W} ${sel}`, { hasText: text }).waitFor();

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
    ayla = await newPage(await browser.newContext({ viewport: { width: 1400, height: 900 } }));
    olga = await newPage(await browser.newContext({ viewport: { width: 1400, height: 900 } }));
    player = await recordingPage(await browser.newContext({ locale: "en-US", viewport: { width: 1280, height: 800 } }));
    ru = await recordingPage(await browser.newContext({ locale: "en-US", viewport: { width: 1280, height: 800 } }));
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  step("a queued player whose only agent goes away is told no agent is available, and that the place is kept", async () => {
    await consoleLogin(server, ayla, "ayla");
    await player.goto(server.url + "/");
    await player.getByRole("button", { name: "Open support chat" }).click();
    await player.getByRole("button", { name: "Start a chat" }).click();
    await server.wait("the player is queued with an agent about to answer", () =>
      shows(player, ".status", "You are number 1 in line. An agent will be with you shortly."));
    assert.equal(await hint(player).isVisible(), false, "no hint while an agent is coming");

    await ayla.locator("#status-away").click();
    await server.wait("ayla is away", () => ayla.locator("#status-away[aria-pressed=true]").waitFor());
    // What the server sends in that case (protocol.md §4): the same position, no
    // estimate, nobody online for it.
    await server.until("the server sends `queued` with a null estimate and no agent online", () =>
      player.frames.some((f) => f.type === "queued" && f.position === 1 && f.estimated_wait_secs === null && f.agents_online === false));
    await server.wait("the player is told no agent is available now", () =>
      shows(player, ".status", "You are number 1 in line. No agent is available right now."));
    await server.wait("and that the place is kept and writing goes on", () =>
      shows(player, ".hint", "Your place in line is kept. You can keep writing: we will answer here."));
    assert.equal(await player.locator(`${W} .status`).textContent(), "You are number 1 in line. No agent is available right now.", "the old estimate is gone");

    const input = player.getByRole("textbox", { name: "Your message" });
    await input.fill("Are you still there?");
    await input.press("Enter");
    await server.wait("a message written meanwhile is stored", () => player.locator(`${W} .me .meta`, { hasText: "Sent" }).waitFor());

    // Ending a queued chat gives up the place: the confirmation says so.
    await player.getByRole("button", { name: "End chat", exact: true }).click();
    const dialog = player.getByRole("alertdialog", { name: "End this chat? You will lose your place in line." });
    await server.wait("ending a queued chat asks first and says what is lost", () => dialog.waitFor());
    await dialog.getByRole("button", { name: "Keep chatting" }).click();
    await server.wait("'Keep chatting' closes the question", () => dialog.waitFor({ state: "hidden" }));

    await ayla.locator("#status-online").click();
    await server.wait("once ayla is back the player is told again that an agent is coming", () =>
      shows(player, ".status", "You are number 1 in line. An agent will be with you shortly."));
    await server.wait("and the hint goes", () => hint(player).waitFor({ state: "hidden" }));
  });

  step("a text over the limit is kept whole and explained; a counter shows near the limit", async () => {
    const input = player.getByRole("textbox", { name: "Your message" });
    const sentBefore = await player.locator(`${W} .me`).count();
    // The server counts characters (Unicode scalar values), not UTF-16 units:
    // 3,700 emoji are 7,400 units but within the limit.
    await input.fill("\u{1F600}".repeat(3700));
    await server.wait("the counter shows what is left", () => shows(player, "#pb-count", "Characters left: 300"));
    assert.equal(await player.locator(`${W} [role=alert]`).textContent(), "");

    const long = "a".repeat(4100);
    await input.fill(long);
    const alert = player.locator(`${W} [role=alert]`);
    await server.wait("a clear message says the text is too long", () =>
      shows(player, "[role=alert]", "Your message is too long (4,100 characters, at most 4,000). Please shorten it or send it in parts."));
    assert.equal(await input.inputValue(), long, "nothing was cut off");
    assert.equal(await input.getAttribute("aria-invalid"), "true");
    assert.match(await input.getAttribute("aria-describedby"), /pb-long/);
    assert.equal(await player.locator(`${W} #pb-count`).isVisible(), false, "the counter gives way to the message");
    await input.press("Enter");
    await player.getByRole("button", { name: "Send", exact: true }).click();
    await player.waitForTimeout(500);
    assert.equal(await player.locator(`${W} .me`).count(), sentBefore, "a text over the limit is not sent");
    assert.equal(await input.inputValue(), long, "and stays in the box to be shortened");

    await input.fill("a".repeat(3999));
    await server.until("the message goes once the text fits", async () => (await alert.textContent()) === "");
    assert.equal(await input.getAttribute("aria-invalid"), "false");
    await input.press("Enter");
    await server.wait("a text at the limit is sent and stored", () => player.locator(`${W} .me .meta`, { hasText: "Sent" }).nth(1).waitFor());
    assert.equal(await input.inputValue(), "");
    assert.equal(await player.locator(`${W} #pb-count`).isVisible(), false, "the counter goes with the text");
  });

  step("End chat asks first; Escape and 'Keep chatting' keep the chat; the keyboard can confirm", async () => {
    await server.wait("ayla gets the offer", () => ayla.getByRole("button", { name: /Accept the chat/ }).waitFor());
    await ayla.getByRole("button", { name: /Accept the chat/ }).click();
    await server.wait("the player is assigned", () => shows(player, ".status", "You are chatting with Ayla."));

    const end = player.getByRole("button", { name: "End chat", exact: true });
    const dialog = player.getByRole("alertdialog", { name: "End this chat?" });
    await end.click();
    await server.wait("a confirmation appears", () => dialog.waitFor());
    assert.equal(await shadowFocus(player), "Keep chatting", "the safe answer has the focus");
    assert.equal(await end.getAttribute("aria-expanded"), "true");
    assert.deepEqual(await axe(player, [W, ".pb"]), [], "serious or critical accessibility problems with the confirmation open");

    await player.keyboard.press("Escape");
    await server.wait("Escape closes the confirmation", () => dialog.waitFor({ state: "hidden" }));
    assert.equal(await player.locator(`${W} .panel`).isVisible(), true, "Escape in the confirmation does not close the panel");
    assert.equal(await shadowFocus(player), "End chat", "the focus goes back to End chat");

    await player.keyboard.press("Enter");
    await server.wait("Enter on End chat asks again", () => dialog.waitFor());
    await player.keyboard.press("Enter");
    await server.wait("'Keep chatting' closes it", () => dialog.waitFor({ state: "hidden" }));
    await player.waitForTimeout(500);
    assert.equal(player.frames.filter((f) => f.type === "closed").length, 0, "the chat was not closed");
    assert.equal(await player.getByRole("textbox", { name: "Your message" }).isVisible(), true);

    await player.keyboard.press("Enter");
    await server.wait("asked a third time", () => dialog.waitFor());
    await player.keyboard.press("Shift+Tab");
    assert.equal(await shadowFocus(player), "Yes, end chat");
    await player.keyboard.press("Enter");
    await server.wait("confirmed, the chat ends", () => shows(player, ".status", "The chat has ended."));
    assert.equal(player.frames.filter((f) => f.type === "closed" && f.by === "player").length, 1);
    await server.wait("and the player may rate it", () => player.getByRole("button", { name: "Send rating" }).waitFor());
  });

  step("an offline message in Russian: the hint is above the conversation and goes once the player has written", async () => {
    // Olga and Sam (Russian) are not connected: nobody serves a Russian chat.
    await ru.goto(server.url + "/?lang=ru");
    await ru.getByRole("button", { name: "Открыть чат поддержки" }).click();
    await ru.getByRole("button", { name: "Начать чат" }).click();
    await server.wait("nobody is available at the start", () => shows(ru, ".status", "Сейчас нет свободных операторов."));
    await server.wait("and the player is asked to leave a message", () => shows(ru, ".hint", /Оставьте сообщение ниже/));

    const input = ru.getByRole("textbox", { name: "Ваше сообщение" });
    await input.fill("Где мой вывод средств?");
    await ru.getByRole("button", { name: "Отправить сообщение" }).click();
    await server.wait("the message is stored", () => ru.locator(`${W} .me .meta`, { hasText: "Отправлено" }).waitFor());
    await server.wait("the player is told it was received", () =>
      shows(ru, ".status", "Спасибо! Мы получили ваше сообщение и ответим здесь."));
    assert.equal(await ru.locator(W).getByText("Сейчас нет свободных операторов.").count(), 0, "no longer 'nobody is available'");
    assert.equal(await hint(ru).isVisible(), false, "the hint to leave a message is gone once written");
    assert.equal(await ru.locator(W).getByText(/Оставьте сообщение ниже/).count(), 0);
    // Nothing of the widget's own is shown under the player's message.
    const below = await ru.evaluate(() => {
      const root = document.querySelector("#pitboss-widget").shadowRoot;
      const mine = root.querySelector(".me").getBoundingClientRect().bottom;
      return [...root.querySelectorAll(".scroll > :not(.log)")].filter((el) => el.offsetParent && el.textContent.trim() && el.getBoundingClientRect().top >= mine).map((el) => el.textContent);
    });
    assert.deepEqual(below, []);
  });

  step("after agents come online and the page is reloaded, the offline message still reads as received", async () => {
    await consoleLogin(server, olga, "olga");
    await ru.reload();
    await server.wait("the conversation is back", () => ru.locator(W).getByText("Где мой вывод средств?").waitFor());
    await server.until("the server confirmed it is still offline", () =>
      ru.frames.filter((f) => f.type === "no_agents").length >= 2);
    await server.wait("it is received, to be answered here", () =>
      shows(ru, ".status", "Спасибо! Мы получили ваше сообщение и ответим здесь."));
    assert.equal(await ru.locator(W).getByText("Сейчас нет свободных операторов.").count(), 0, "not 'nobody is available' while Olga is online");
    assert.equal(await hint(ru).isVisible(), false);
    assert.deepEqual(await axe(ru, [W, ".pb"]), [], "serious or critical accessibility problems in the offline state");
  });

  step("a transfer to a department names it in the player's language, never by its tag", async () => {
    const card = olga.locator("#offline li", { hasText: "Где мой вывод средств?" });
    await server.wait("olga sees the offline message", () => card.waitFor());
    await card.getByRole("button", { name: /Answer the message/ }).click();
    await server.wait("the player sees who answered", () => shows(ru, ".status", "Вас обслуживает Olga."));
    // A department transfer needs an agent of it, other than the owner, online who
    // speaks the chat's language (decision 0020): Sam, of payments, speaks Russian.
    await consoleLogin(server, await newPage(await browser.newContext({ viewport: { width: 1400, height: 900 } })), "sam");
    await olga.locator(".chat:not([hidden])").getByRole("button", { name: "Transfer", exact: true }).click();
    const dialog = olga.locator("#transfer-dialog");
    await dialog.getByRole("radio", { name: "Department" }).check();
    await olga.locator("#transfer-department").selectOption("payments");
    await dialog.getByRole("button", { name: "Transfer" }).click();
    await server.until("the server wrote the transfer with the department's Russian name", () =>
      ru.frames.some((f) => f.type === "message" && f.event === "transfer_requested" && /transferred to Платежи\./.test(f.text)));
    await server.wait("the player is told in Russian, with the name", () =>
      ru.locator(W).getByText("Вас переводят: Платежи. История разговора сохраняется.").waitFor());
    assert.equal(await ru.locator(W).getByText(/payments/).count(), 0, "the raw department tag is not shown");
  });

  step("no widget page raised an error or a dialog", () => {
    for (const p of [player, ru]) assert.deepEqual(p.problems(), []);
  });
});
