// A player's chat across tabs, reloads and transfers, in a real Chromium against a
// real pitboss, with two agents scripted over the protocol: a tab that was open
// before the chat started shows it and can write in it; "Sent" and "Read" under
// the player's messages after a reload; text laid out in its own direction; a
// transfer to an agent whose name has a full stop in it; a chat that a department
// transfer moved away from the page's department is still the player's after a
// reload; and the player's own close is not told back to them by name.

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
    addAgent(dataDir, "ana", { password: PASSWORD, name: "A. Demir", departments: "general" });
    addAgent(dataDir, "mali", { password: PASSWORD, name: "Mali", departments: "payments" });
    // The demo serves the casino page; its own agents stay logged out.
    server = await startServer({ dataDir });
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
    assert.equal(stored.text, "Deniz closed the chat", "the agent sees who closed it");
    assert.deepEqual([...tabA.problems(), ...tabB.problems()], []);
  });
});
