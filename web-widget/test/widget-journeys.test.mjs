// A player's chat across tabs, reloads and transfers, in a real Chromium against a
// real pitboss, with two agents scripted over the protocol: a tab that was open
// before the chat started shows it and can write in it; "Sent" and "Read" under
// the player's messages after a reload; text laid out in its own direction; a
// transfer to an agent whose name has a full stop in it; a chat that a department
// transfer moved away from the page's department is still the player's after a
// reload, also once it ended; the player's own close is not told back to them by
// name; an agent's http(s) links clickable, nothing else; going offline noticed at
// once; a hostile host stylesheet kept out; and on a phone, the transcript kept at
// its end when the keyboard opens, the rating form in view after a long chat.

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, launchBrowser, newPage, addAgent, stepsOf, strings } from "./helpers.mjs";

const W = "#pitboss-widget";
const PASSWORD = "agents-have-long-passwords";
// The demo casino page embedded for the general department, for a named player.
const PAGE = "/?department=general&name=Deniz";

const en = strings("widget", "en");
const fill = (s, vars) => s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));

describe("a player's chat across tabs, reloads and transfers", () => {
  let server, browser, desk, tabA, tabB, conversation;
  const step = stepsOf(() => server);
  const lines = (page) => page.locator(`${W} .msgs > li p`).allTextContents();
  const mine = (page, text) => page.locator(`${W} .msgs > li.me`, { hasText: text });
  /** Frames the scripted agents received, oldest first. */
  const frames = (login) => desk.evaluate((login) => window.agents[login].frames, login);
  const agentSend = (login, frame) => desk.evaluate(([login, frame]) => window.agents[login].ws.send(JSON.stringify(frame)), [login, frame]);
  let serial = 0;
  const say = (login, text) => agentSend(login, { type: "send", conversation, client_id: `${login}-${++serial}`, text });

  before(async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "pitboss-e2e-"));
    // The demo serves the casino page; its own agents stay logged out.
    server = await startServer({ dataDir });
    addAgent(dataDir, "ana", { password: PASSWORD, name: "A. Demir", departments: "general" });
    addAgent(dataDir, "mali", { password: PASSWORD, name: "Mali", departments: "payments" });
    browser = await launchBrowser();
    desk = await newPage(await browser.newContext());
    await desk.goto(server.url + "/healthz");
    for (const login of ["ana", "mali"]) {
      const token = await server.login(login, PASSWORD);
      // Each agent accepts every offer at once and records what it receives.
      await desk.evaluate(([login, token]) => new Promise((resolve, reject) => {
        const ws = new WebSocket(location.origin.replace("http", "ws") + "/ws");
        const agent = { ws, frames: [] };
        (window.agents = window.agents || {})[login] = agent;
        ws.onopen = () => ws.send(JSON.stringify({ type: "hello", protocol: 1, auth: { kind: "agent", token } }));
        ws.onmessage = (e) => {
          const f = JSON.parse(e.data);
          agent.frames.push(f);
          if (f.type === "welcome") resolve(true);
          if (f.type === "offer") ws.send(JSON.stringify({ type: "accept", conversation: f.conversation }));
        };
        setTimeout(() => reject(new Error(`${login} got no welcome`)), 10000);
      }), [login, token]);
    }
    const player = await browser.newContext({ locale: "en-US" });
    tabA = await newPage(player);
    tabB = await newPage(player);
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  step("a tab open before the chat started shows it, and what it sends arrives", async () => {
    for (const tab of [tabA, tabB]) {
      await tab.goto(server.url + PAGE);
      await tab.getByRole("button", { name: "Open support chat" }).click();
      await server.wait("the intro shows", () => tab.getByRole("button", { name: "Start a chat" }).waitFor());
    }
    await tabA.getByRole("button", { name: "Start a chat" }).click();
    await server.wait("tab A is chatting with ana", () => tabA.locator(`${W} .status`, { hasText: fill(en.assigned, { name: "A. Demir" }) }).waitFor());
    await tabA.getByLabel(en.your_message).fill("hello from tab A");
    await tabA.keyboard.press("Enter");
    await server.wait("tab A's message is sent", () => mine(tabA, "hello from tab A").getByText(en.sent, { exact: false }).waitFor());
    conversation = (await frames("ana")).find((f) => f.type === "assigned").conversation;
    await say("ana", "reply from ana");

    await server.wait("tab B shows the player's message", () => tabB.locator(`${W} .msgs`).getByText("hello from tab A").waitFor());
    await server.wait("and the agent's reply", () => tabB.locator(`${W} .msgs`).getByText("reply from ana").waitFor());
    await tabB.getByLabel(en.your_message).fill("hello from tab B");
    await tabB.keyboard.press("Enter");
    await server.wait("tab B's message is sent", () => mine(tabB, "hello from tab B").getByText(en.sent, { exact: false }).waitFor());
    await server.until("ana receives it", async () => (await frames("ana")).some((f) => f.type === "message" && f.text === "hello from tab B"));
    await server.wait("tab A shows it too", () => tabA.locator(`${W} .msgs`).getByText("hello from tab B").waitFor());
    for (const tab of [tabA, tabB]) {
      const all = await lines(tab);
      assert.equal(all.filter((l) => l === "hello from tab A").length, 1, `no duplicates: ${all}`);
      assert.equal(all.filter((l) => l === "hello from tab B").length, 1, `no duplicates: ${all}`);
    }
  });

  step("after a reload the player's messages say Sent, Read once the agent reads, and still Read after another reload", async () => {
    await tabA.reload();
    await server.wait("the transcript is back", () => tabA.locator(`${W} .msgs`).getByText("reply from ana").waitFor());
    const meta = mine(tabA, "hello from tab A").locator(".meta");
    await server.wait("the message says Sent", () => meta.getByText(en.sent, { exact: false }).waitFor());
    assert.equal(await meta.getAttribute("aria-hidden"), "true", "Sent is not read out");
    const last = Math.max(...(await frames("ana")).filter((f) => f.type === "message").map((f) => f.seq));
    await agentSend("ana", { type: "read", conversation, seq: last });
    await server.wait("and Read once ana has read it", () => meta.getByText(en.read, { exact: false }).waitFor());
    // The server keeps ana's read mark.
    await tabA.reload();
    await server.wait("the transcript is back again", () => tabA.locator(`${W} .msgs`).getByText("reply from ana").waitFor());
    await server.wait("the message still says Read", () => mine(tabA, "hello from tab A").locator(".meta").getByText(en.read, { exact: false }).waitFor());
  });

  step("each message is laid out in its own direction", async () => {
    const arabic = "مرحبا، أين إيداعي؟ 100$!";
    await say("ana", arabic);
    const text = tabA.locator(`${W} .msgs > li p.text`, { hasText: arabic });
    await server.wait("the Arabic message arrives", () => text.waitFor());
    assert.equal(await text.getAttribute("dir"), "auto");
    assert.equal(await text.evaluate((el) => getComputedStyle(el).direction), "rtl");
  });

  step("an agent's http(s) addresses are links; other schemes stay text", async () => {
    const text = "See https://example.com/help?x=1&y=2, or (https://example.org/a_b). Not javascript:alert(1), data:text/html,<b>x</b> or ftp://example.net.";
    await say("ana", text);
    const p = tabA.locator(`${W} .msgs > li.them p.text`, { hasText: "See https://example.com" });
    await server.wait("the message arrives", () => p.waitFor());
    assert.equal(await p.textContent(), text, "the text is unchanged");
    const links = await p.locator("a").evaluateAll((as) => as.map((a) => [a.getAttribute("href"), a.textContent, a.target, a.rel]));
    assert.deepEqual(links, [
      ["https://example.com/help?x=1&y=2", "https://example.com/help?x=1&y=2", "_blank", "noopener noreferrer nofollow"],
      ["https://example.org/a_b", "https://example.org/a_b", "_blank", "noopener noreferrer nofollow"],
    ]);
    assert.equal(await tabA.locator(`${W} .msgs > li.me a`).count(), 0, "the player's own text is not linked");
  });

  step("going offline is shown at once; a message typed meanwhile goes once the network is back", async () => {
    const conn = tabA.locator(`${W} .conn`);
    await tabA.context().setOffline(true);
    const lost = Date.now();
    await server.wait("the player is told at once that the connection is lost", () => conn.getByText(en.reconnecting).waitFor({ timeout: 3000 }));
    assert.ok(Date.now() - lost < 3000, "not after the keep-alive ping");
    await tabA.getByLabel(en.your_message).fill("typed while offline");
    await tabA.keyboard.press("Enter");
    await server.wait("it waits", () => mine(tabA, "typed while offline").getByText(en.sending).waitFor());
    await tabA.context().setOffline(false);
    await server.wait("reconnected as soon as the network is back", () => conn.waitFor({ state: "hidden", timeout: 5000 }));
    await server.wait("the message is sent", () => mine(tabA, "typed while offline").getByText(en.sent, { exact: false }).waitFor());
    await server.until("ana receives it", async () => (await frames("ana")).some((f) => f.type === "message" && f.text === "typed while offline"));
    await tabA.waitForTimeout(500);
    assert.equal((await frames("ana")).filter((f) => f.type === "message" && f.text === "typed while offline").length, 1, "once");
    assert.equal((await lines(tabA)).filter((l) => l === "typed while offline").length, 1, "shown once");
  });

  step("a department transfer moves the chat, and a reload still shows it", async () => {
    await agentSend("ana", { type: "transfer", conversation, to: { department: "payments" } });
    await server.wait("the player is told the department's name", () => tabA.locator(`${W} .msgs`).getByText(fill(en.ev_transfer, { name: "Payments" })).waitFor());
    await server.wait("mali joins", () => tabA.locator(`${W} .status`, { hasText: fill(en.assigned, { name: "Mali" }) }).waitFor());
    const record = await server.api(`/api/conversations/${conversation}`, { token: await server.login("mali", PASSWORD) });
    assert.equal(record.conversation.department, "payments", "the chat now belongs to payments");

    await tabA.reload();
    await server.wait("the moved chat is shown after the reload", () => tabA.locator(`${W} .msgs`).getByText("reply from ana").waitFor());
    await server.wait("with its agent", () => tabA.locator(`${W} .status`, { hasText: fill(en.assigned, { name: "Mali" }) }).waitFor());
    assert.equal(await tabA.getByRole("button", { name: "Start a chat" }).isVisible(), false, "no offer to start another chat");
    await say("mali", "mali here, checking your deposit");
    await server.wait("mali's message arrives", () => tabA.locator(`${W} .msgs`).getByText("mali here, checking your deposit").waitFor());
  });

  step("a transfer to an agent whose name has a full stop names them whole", async () => {
    await agentSend("mali", { type: "transfer", conversation, to: { agent: "ana" } });
    await server.wait("the player is told the whole name", () =>
      tabA.locator(`${W} .msgs`).getByText(fill(en.ev_transfer, { name: "A. Demir" })).waitFor());
  });

  step("the player's own close is not told back to them by name", async () => {
    await server.wait("ana has the chat again", () => tabA.locator(`${W} .status`, { hasText: fill(en.assigned, { name: "A. Demir" }) }).waitFor());
    await tabA.getByRole("button", { name: en.end_chat }).click();
    await tabA.getByRole("button", { name: en.end_yes }).click();
    await server.wait("the close is shown", () => tabA.locator(`${W} .msgs`).getByText(en.ev_closed, { exact: true }).waitFor());
    const stored = (await frames("ana")).find((f) => f.type === "message" && f.event === "closed");
    assert.equal(stored.text, "The player closed the chat", "the agent sees who closed it, and no name a player chose stands in a line of the server's");
    assert.deepEqual([...tabA.problems(), ...tabB.problems()], []);
  });

  step("the moved chat, ended and rated, is still shown read-only after a reload", async () => {
    await tabA.locator(`${W} label[for=pb-star5]`).click();
    await tabA.getByRole("button", { name: en.rate_send }).click();
    await server.wait("the player is thanked", () => tabA.locator(W).getByText(en.rate_thanks).waitFor());
    const record = await server.api(`/api/conversations/${conversation}`, { token: await server.login("sam") });
    assert.equal(record.conversation.department, "payments", "not the page's department");
    await tabA.reload();
    await server.wait("the ended chat is shown as the earlier conversation", () => tabA.locator(`${W} .earlier`).waitFor());
    await server.wait("with its messages", () => tabA.locator(`${W} .msgs`).getByText("mali here, checking your deposit").waitFor());
    await server.wait("and a way to start again", () => tabA.getByRole("button", { name: en.start_chat }).waitFor());
    assert.equal(await tabA.getByRole("button", { name: en.rate_send }).isVisible(), false, "not asked to rate again");
  });

  step("a host page's hostile stylesheet does not reach the widget", async () => {
    const page = await newPage(await browser.newContext({ locale: "en-US" }));
    await page.goto(server.url + PAGE);
    await page.addStyleTag({ content: "* { letter-spacing: 3px; word-spacing: 9px; text-transform: uppercase; } div { display: none !important; }" });
    const open = page.getByRole("button", { name: "Open support chat" });
    await server.wait("the launcher is shown", () => open.waitFor());
    const box = await open.boundingBox();
    assert.ok(box && box.width === 60 && box.height === 60, `the launcher keeps its size: ${JSON.stringify(box)}`);
    await open.click();
    await server.wait("the panel opens", () => page.getByRole("button", { name: en.start_chat }).waitFor());
    const style = await page.locator(`${W} .intro p`).evaluate((el) => { const s = getComputedStyle(el); return [s.letterSpacing, s.wordSpacing, s.textTransform]; });
    assert.deepEqual(style, ["normal", "0px", "none"]);
    assert.deepEqual(page.problems(), []);
  });

  step("on a phone, the transcript stays at its end when the keyboard opens; after a long chat the rating form is in view", async () => {
    const phone = await newPage(await browser.newContext({ locale: "en-US", viewport: { width: 375, height: 667 }, isMobile: true, hasTouch: true }));
    await phone.goto(server.url + "/?department=general&name=Pat");
    await phone.getByRole("button", { name: "Open support chat" }).click();
    await phone.getByRole("button", { name: en.start_chat }).click();
    await server.wait("Pat is chatting with ana", () => phone.locator(`${W} .status`, { hasText: fill(en.assigned, { name: "A. Demir" }) }).waitFor());
    const id = (await frames("ana")).filter((f) => f.type === "assigned" && f.conversation !== conversation).pop().conversation;
    for (let i = 1; i <= 24; i++) {
      await agentSend("ana", { type: "send", conversation: id, client_id: `long-${i}`, text: `Line ${i}: a long answer about deposits, bonuses, limits and verification, so that the transcript is much longer than the screen.` });
      await phone.waitForTimeout(60);
    }
    await server.wait("the long transcript arrives", () => phone.locator(`${W} .msgs`).getByText(/^Line 24:/).waitFor());
    const geometry = () => phone.evaluate(() => {
      const root = document.querySelector("#pitboss-widget").shadowRoot;
      const scroll = root.querySelector(".scroll");
      const span = (el) => { const b = el.getBoundingClientRect(); return [Math.round(b.top), Math.round(b.bottom)]; };
      return {
        panel: root.querySelector(".panel").scrollTop,
        fromEnd: Math.round(scroll.scrollHeight - scroll.scrollTop - scroll.clientHeight),
        header: span(root.querySelector("header")),
        stars: [...root.querySelectorAll(".stars label")].map(span),
        again: span(root.querySelector(".after button")),
        height: innerHeight,
      };
    });
    assert.ok((await geometry()).fromEnd <= 1, "the transcript is at its end");
    // The keyboard opens: the screen is shorter.
    await phone.setViewportSize({ width: 375, height: 360 });
    await server.until("the transcript stays at its end", async () => (await geometry()).fromEnd <= 1, 3000);
    await phone.setViewportSize({ width: 375, height: 667 });

    await agentSend("ana", { type: "close", conversation: id });
    await server.wait("Pat is asked for a rating", () => phone.locator(W).getByText(en.rate_title).waitFor());
    await phone.waitForTimeout(300);
    const inView = (g, what) => {
      assert.equal(g.panel, 0, `the panel is not scrolled: ${JSON.stringify(g)}`);
      assert.equal(g.header[0], 0, `the header is at the top: ${JSON.stringify(g)}`);
      for (const [top, bottom] of what(g)) assert.ok(top >= g.header[1] && bottom <= g.height, `in view: ${JSON.stringify(g)}`);
    };
    inView(await geometry(), (g) => g.stars);
    await phone.locator(`${W} label[for=pb-star4]`).click();
    await phone.getByRole("button", { name: en.rate_send }).click();
    await server.wait("Pat is thanked", () => phone.locator(W).getByText(en.rate_thanks).waitFor());
    await phone.waitForTimeout(300);
    inView(await geometry(), (g) => [g.again]);
    assert.deepEqual(phone.problems(), []);
  });
});
