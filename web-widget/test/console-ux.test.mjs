// The agent console's usability fixes, end to end against a real pitboss: the
// transfer dialog (who can take the chat and why not; a refused transfer keeps
// the note and the button), close reasons (none preselected; in the agent's
// language), closed chats' reason and rating comment in the transcript view,
// ended tabs, the tab and unread counts across a reload, private-note mode,
// the department after a department transfer, layout at 1280 px (queue, toasts,
// the Russian header), empty offline messages, the supervisor's team panel,
// the notice when an unanswered offer sets the agent away, logging out with
// open chats (`sign_out`), and, in Azerbaijani and Russian: offers and the status
// on hold while the connection is down, the tabs' order and drafts across a
// reload, dates, the queue's and key figures' layout, the live list in view,
// the supervisor's key figures per department (hidden from agents).

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, newPage, consoleLogin, axe, stepsOf, strings, playersPage } from "./helpers.mjs";

const en = strings("console", "en");
const ru = strings("console", "ru");
const fill = (s, vars) => s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));

const WIDE = { viewport: { width: 1280, height: 800 } };

/** Records the frames a console page sends and receives. */
function recordFrames(page) {
  const sent = [];
  const received = [];
  page.on("websocket", (ws) => {
    ws.on("framesent", (e) => { try { sent.push(JSON.parse(e.payload)); } catch { /* not JSON */ } });
    ws.on("framereceived", (e) => { try { received.push(JSON.parse(e.payload)); } catch { /* not JSON */ } });
  });
  return { sent, received };
}

const shown = (page) => page.locator(".chat:not([hidden])");
const overlap = (a, b) => a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;

describe("agent console usability", () => {
  let server, browser, players, ayla, olga, sam, aylaFrames;
  let convA, convB, convC;
  const step = stepsOf(() => server);
  const logs = [];

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
    ayla = await newPage(await browser.newContext(WIDE));
    ayla.on("console", (m) => logs.push(m.text()));
    aylaFrames = recordFrames(ayla);
    olga = await newPage(await browser.newContext(WIDE));
    const samCtx = await browser.newContext(WIDE);
    await samCtx.addInitScript(() => { if (!localStorage.getItem("pitboss.console.lang")) localStorage.setItem("pitboss.console.lang", "en"); });
    sam = await newPage(samCtx);
    players = await playersPage(browser, server);
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  step("the close dialog preselects no reason; the reason is shown in the agent's language", async () => {
    await consoleLogin(server, ayla, "ayla");
    await players.open("p1", "Deniz");
    convA = await players.start("p1", "tr", "payments");
    await players.say("p1", convA, "Merhaba, çekim talebim bekliyor");
    await server.wait("ayla is offered the Turkish chat", () => ayla.getByRole("button", { name: /Accept the chat/ }).waitFor());
    await ayla.getByRole("button", { name: /Accept the chat/ }).click();
    await server.wait("the chat opens", () => shown(ayla).getByText("Merhaba, çekim talebim bekliyor").waitFor());

    await shown(ayla).getByRole("button", { name: en.close_chat }).click();
    const reason = ayla.locator("#close-reason");
    await server.wait("the reasons are listed", () => reason.locator("option[value=resolved]").waitFor({ state: "attached" }));
    assert.equal(await reason.inputValue(), "", "no reason is chosen for the agent");
    assert.equal(await reason.locator("option:checked").textContent(), en.close_no_reason);
    // Close reasons in the console's language (English) before the chat's (Turkish).
    assert.equal(await reason.locator("option[value=resolved]").textContent(), "Resolved");
    await reason.selectOption("resolved");
    await ayla.locator("#close-dialog").getByRole("button", { name: en.close_submit }).click();
    await server.wait("the chat is closed with its reason, in English", () => shown(ayla).getByText(fill(en.closed_with, { reason: "Resolved" })).waitFor());
    const close = aylaFrames.sent.find((f) => f.type === "close" && f.conversation === convA);
    assert.equal(close.reason, "resolved");
    await players.rate("p1", convA, 4, "Quick and friendly");
    const token = await server.login("sam");
    await server.until("the rating is stored", async () => (await server.api(`/api/conversations/${convA}`, { token })).conversation.rating === 4);
  });

  step("an ended chat's tab looks ended", async () => {
    const tab = ayla.getByRole("tab").first();
    await server.wait("the tab is marked ended", () => ayla.locator("[role=tab].ended .ended-mark", { hasText: en.tab_ended }).waitFor());
    assert.match(await tab.textContent(), new RegExp(`^Deniz\\s+${en.tab_ended}`), "screen readers hear it too");
    const live = await tab.evaluate((el) => getComputedStyle(el.querySelector(".label")).textDecorationLine);
    assert.equal(live, "line-through");
  });

  step("the player's earlier conversation shows its close reason and rating comment", async () => {
    convB = await players.start("p1", "tr", "payments");
    assert.notEqual(convB, convA);
    await players.say("p1", convB, "Yine ben");
    await server.wait("ayla is offered the second chat", () => ayla.getByRole("button", { name: /Accept the chat/ }).waitFor());
    await ayla.getByRole("button", { name: /Accept the chat/ }).click();
    await server.wait("it opens", () => shown(ayla).getByText("Yine ben").waitFor());
    const earlier = shown(ayla).locator(".history button");
    await server.wait("the earlier conversation is listed with its rating", () => earlier.filter({ hasText: "4/5" }).waitFor());
    await earlier.first().click();
    const facts = ayla.locator("#transcript-facts");
    await server.wait("the transcript shows how it ended", () => facts.getByText("Quick and friendly").waitFor());
    const text = await facts.textContent();
    assert.ok(text.includes(en.close_reason) && text.includes("Resolved"), `close reason shown: ${text}`);
    assert.ok(text.includes(en.attr_rating_comment) && text.includes("4/5"), `rating shown: ${text}`);
    await server.wait("with the transcript", () => ayla.locator("#transcript-log").getByText("Merhaba, çekim talebim bekliyor").waitFor());
    await ayla.locator("#transcript-dialog").getByRole("button", { name: en.close_window }).click();
  });

  step("the transfer dialog shows who can take the chat, and why the others cannot", async () => {
    await shown(ayla).getByRole("button", { name: en.transfer, exact: true }).click();
    const agent = ayla.locator("#transfer-agent");
    await server.wait("the agents are listed", () => agent.locator("option[value=olga]").waitFor({ state: "attached" }));
    const label = (id) => agent.locator(`option[value=${id}]`).textContent();
    assert.match(await label("olga"), new RegExp(`${en.status_offline}.*— ${en.why_offline}`));
    assert.match(await label("ayla"), new RegExp(`— ${en.why_you}`));
    for (const id of ["olga", "sam", "ayla"]) assert.equal(await agent.locator(`option[value=${id}]`).isDisabled(), true, `${id} cannot take it`);
    assert.equal(await ayla.locator("#transfer-agent-hint").textContent(), en.transfer_nobody);
    await ayla.locator("#transfer-note").fill("Withdrawal stuck, needs a supervisor");
    await ayla.locator("#transfer-dialog").getByRole("button", { name: en.cancel }).click();

    await consoleLogin(server, olga, "olga");
    await consoleLogin(server, sam, "sam");
    await shown(ayla).getByRole("button", { name: en.transfer, exact: true }).click();
    await server.wait("sam is listed as able to take it", () => agent.locator("optgroup", { hasText: "Sam" }).locator("option[value=sam]:not([disabled])").waitFor({ state: "attached" }));
    assert.equal(await agent.locator("optgroup").first().getAttribute("label"), en.transfer_can);
    assert.match(await label("olga"), new RegExp(`${en.status_online}.*— ${fill(en.why_language, { lang: "TR" })}`), "olga does not speak Turkish");
    assert.equal(await agent.locator("option[value=olga]").isDisabled(), true);
    assert.equal(await ayla.locator("#transfer-note").inputValue(), "Withdrawal stuck, needs a supervisor", "the note survives a cancel");
    assert.deepEqual(await axe(ayla, "#transfer-dialog"), [], "serious or critical accessibility problems in the transfer dialog");
  });

  step("a refused transfer gives the button back and keeps the note in the dialog, with a localised reason", async () => {
    // Sam goes away while ayla's dialog is open: the server refuses.
    await sam.locator("#status-away").click();
    await server.wait("sam is away", () => sam.locator("#status-away[aria-pressed=true]").waitFor());
    await ayla.locator("#transfer-agent").selectOption("sam");
    await ayla.locator("#transfer-dialog").getByRole("button", { name: en.transfer_submit }).click();
    const error = ayla.locator("#transfer-error");
    await server.wait("the dialog opens again with the reason", () => error.getByText(en.err_transfer_invalid_state).waitFor());
    const refusal = aylaFrames.received.find((f) => f.type === "error" && f.frame === "transfer");
    assert.equal(refusal.code, "invalid_state");
    assert.ok(!(await error.textContent()).includes(refusal.message), "the server's English message is not shown");
    assert.ok(logs.some((l) => l.includes("invalid_state") && l.includes(refusal.message)), "but it is in the browser's log");
    assert.equal(await ayla.locator("#transfer-note").inputValue(), "Withdrawal stuck, needs a supervisor");
    await server.wait("sam is listed as away now", () => ayla.locator("#transfer-agent option[value=sam][disabled]", { hasText: en.why_away }).waitFor({ state: "attached" }));
    await ayla.locator("#transfer-dialog").getByRole("button", { name: en.cancel }).click();
    assert.equal(await shown(ayla).getByRole("button", { name: en.transfer, exact: true }).isEnabled(), true, "the Transfer button works again");
  });

  step("after a department transfer the player card shows the new department", async () => {
    await sam.locator("#status-online").click();
    await server.wait("sam is online", () => sam.locator("#status-online[aria-pressed=true]").waitFor());
    await shown(ayla).getByRole("button", { name: en.transfer, exact: true }).click();
    await server.wait("sam can take it again", () => ayla.locator("#transfer-agent option[value=sam]:not([disabled])").waitFor({ state: "attached" }));
    await ayla.locator("#transfer-agent").selectOption("sam");
    assert.equal(await ayla.locator("#transfer-note").inputValue(), "Withdrawal stuck, needs a supervisor");
    await ayla.locator("#transfer-dialog").getByRole("button", { name: en.transfer_submit }).click();
    await server.wait("sam is offered it with the note", () => sam.locator("#offers .transfer", { hasText: "Withdrawal stuck, needs a supervisor" }).waitFor());
    await sam.getByRole("button", { name: /Accept the chat/ }).click();
    await server.wait("ayla's tab says sam has it", () => shown(ayla).getByText(fill(en.released, { name: "Sam" })).waitFor());
    const department = (page) => shown(page).locator(".about dt", { hasText: en.attr_department }).locator("xpath=following-sibling::dd[1]");
    assert.equal(await department(ayla).textContent(), "Payments", "the department's display name");

    // Sam sends it to the general department, where ayla takes it back: her
    // existing tab must show the new department.
    await server.wait("sam's tab is open", () => shown(sam).getByText("Yine ben").waitFor());
    await shown(sam).getByRole("button", { name: en.transfer, exact: true }).click();
    await sam.locator("#transfer-dialog").getByRole("radio", { name: en.transfer_department }).check();
    await sam.locator("#transfer-department").selectOption("general");
    await sam.locator("#transfer-dialog").getByRole("button", { name: en.transfer_submit }).click();
    await server.wait("ayla is offered the chat back", () => ayla.locator("#offers .transfer").waitFor());
    const offered = ayla.locator("#offers .transfer .sub");
    assert.match(await offered.textContent(), /^General support/, "the department's display name");
    // Sam reloads while it is pending: the transcript tells his console so.
    await sam.reload();
    await server.wait("sam's console reconnects", () => sam.locator("#app[data-state=open]").waitFor());
    await server.wait("the pending transfer is shown again", () => shown(sam).getByText(fill(en.transfer_pending, { to: "Genel destek" })).waitFor());
    assert.equal(await shown(sam).getByRole("button", { name: en.transfer, exact: true }).isDisabled(), true, "no second transfer meanwhile");
    await ayla.getByRole("button", { name: /Accept the chat/ }).click();
    await server.wait("ayla's tab is live again", () => shown(ayla).getByRole("textbox", { name: en.reply_to_player }).waitFor());
    await server.wait("and shows the general department", async () => (await department(ayla).textContent()) === "General support" || Promise.reject(new Error(await department(ayla).textContent())));
    assert.equal(await ayla.locator(`#tab-${convB}`).evaluate((el) => el.classList.contains("ended")), false, "the tab is live again");
  });

  step("private-note mode turns off once the note is sent", async () => {
    const note = shown(ayla).getByLabel(en.private_note);
    await note.check();
    const input = shown(ayla).getByRole("textbox", { name: en.reply_to_player });
    await input.fill("Sam checked the PSP");
    await input.press("Enter");
    await server.wait("the note is stored", () => shown(ayla).locator(".note .meta").filter({ hasNotText: en.sending }).last().waitFor());
    assert.equal(await note.isChecked(), false);
    assert.equal(await input.getAttribute("placeholder"), en.placeholder);
    await input.fill("Your withdrawal is on its way");
    await input.press("Enter");
    await server.wait("the next message goes to the player", () => players.page.waitForFunction((c) => window.__pb.frames.some((f) => f.type === "message" && f.conversation === c && f.text === "Your withdrawal is on its way"), convB));
  });

  step("the queue fits at 1280 px with the supervisor's Take over button; the team panel shows status and load", async () => {
    await sam.locator("#status-away").click();
    await server.wait("sam is away", () => sam.locator("#status-away[aria-pressed=true]").waitFor());
    await players.open("p3", "Emre");
    convC = await players.start("p3", "tr", "payments");
    await players.say("p3", convC, "Bonusum nerede?");
    await server.wait("ayla is offered the third chat", () => ayla.getByRole("button", { name: /Accept the chat/ }).waitFor());
    const take = sam.locator("#queue tbody tr").first().getByRole("button", { name: en.take_over });
    await server.wait("sam sees it queued, with Take over", () => take.waitFor());
    // Measured in one go: the queue is redrawn every second.
    const m = await sam.evaluate(() => {
      const side = document.querySelector(".side").getBoundingClientRect();
      const row = document.querySelector("#queue tbody tr");
      const box = (el) => { const r = el.getBoundingClientRect(); return { left: r.left, right: r.right }; };
      return {
        side: box(document.querySelector(".side")),
        button: box(row.querySelector("td.state button")),
        state: box(row.querySelector("td.state span")),
        overflow: document.querySelector(".side").scrollWidth - document.querySelector(".side").clientWidth,
        width: side.width,
      };
    });
    assert.ok(m.button.right <= m.side.right, `Take over is inside the side panel: ${JSON.stringify(m)}`);
    assert.ok(m.state.right <= m.side.right, "the State column is visible");
    const overflow = m.overflow;
    assert.ok(overflow <= 0, `the side panel does not scroll sideways (${overflow} px)`);
    // The waiting times tick every second; the button under the focus stays.
    await take.focus();
    await sam.waitForTimeout(1600);
    assert.equal(await sam.evaluate(() => document.activeElement?.getAttribute("data-key")), `take-${convC}`, "Take over keeps the focus");
    await server.wait("sam's live list names the players", () => sam.locator("#live li strong", { hasText: "Emre" }).waitFor());
    // A burst of changes reloads the live list once, not once per change.
    let loads = 0;
    const count = (r) => { if (r.url().includes("/api/conversations?state=queued")) loads++; };
    sam.on("request", count);
    await sam.evaluate(() => { for (let i = 0; i < 10; i++) window.pitbossConsole.client.emit("closed", { conversation: "elsewhere" }); });
    await sam.waitForTimeout(2500);
    sam.off("request", count);
    assert.ok(loads >= 1 && loads <= 2, `the live list was loaded ${loads} times for 10 changes`);
    // The offer's waiting time ticks.
    const waited = ayla.locator("#offers .waited").first();
    const before = await waited.textContent();
    await server.until("the offer's waiting time ticks", async () => (await waited.textContent()) !== before, 5000);
    // Sam views it while it is queued; once ayla takes it, his banner names her.
    await sam.locator("#live li", { hasText: "Emre" }).getByRole("button", { name: fill(en.view_conversation, { id: "Emre" }) }).click();
    await server.wait("sam's banner says nobody owns it", () => shown(sam).getByText(fill(en.watching, { owner: en.watching_nobody })).waitFor());
    // Only viewing, sam reads for nobody: the player is not told "Read".
    await players.say("p3", convC, "Kimse var mı?");
    await server.wait("sam sees the message", () => shown(sam).getByText("Kimse var mı?").waitFor());
    await sam.waitForTimeout(800); // a read is sent 300 ms after the message is shown
    assert.equal(await players.page.evaluate((c) => window.__pb.frames.filter((f) => f.type === "read" && f.conversation === c).length, convC), 0, "no read receipt from a viewer");
    await ayla.getByRole("button", { name: /Accept the chat/ }).click();
    await server.wait("the third chat opens", () => shown(ayla).getByText("Bonusum nerede?").waitFor());
    await server.wait("sam's banner names ayla now", () => shown(sam).getByText(fill(en.watching, { owner: "Ayla" })).waitFor());

    await sam.locator("#team-refresh").click();
    const member = sam.locator('#team li[data-agent="ayla"]');
    await server.wait("the team lists ayla online with her two open chats", () => member.getByText(fill(en.team_load, { n: 2, cap: 3 }), { exact: false }).waitFor());
    assert.equal(await member.locator(".dot").textContent(), en.status_online);
    assert.equal(await sam.locator('#team li[data-agent="sam"] .dot').textContent(), en.status_away);
    await member.getByRole("button", { name: fill(en.team_kpis_of, { name: "Ayla" }) }).click();
    await server.wait("ayla's key figures are shown", () => member.locator('[data-kpi="kpi_started"] dd').waitFor());
    assert.equal(await member.locator('[data-kpi="kpi_started"] dd').textContent(), "3", "ayla's own: the three chats she had");
    assert.deepEqual(await axe(sam), [], "serious or critical accessibility problems in the supervisor's console");
  });

  step("unread counts are not shown again for what was read, and a tab is selected after a reload", async () => {
    await players.say("p1", convB, "Teşekkürler");
    const tabB = ayla.locator(`#tab-${convB}`);
    await server.wait("the other tab counts the new message", () => tabB.locator(".badge:not([hidden])", { hasText: "1" }).waitFor());
    await tabB.click();
    await server.wait("reading it clears the count", () => tabB.locator(".badge").waitFor({ state: "hidden" }));
    await ayla.waitForTimeout(500); // the read mark is sent after 300 ms
    // The player has read everything: after the reload ayla's message still says Read.
    await players.page.evaluate((c) => window.__pbSend("p1", { type: "read", conversation: c, seq: 1000000 }), convB);
    const answer = ayla.locator(`#panel-${convB} li.mine`, { hasText: "Your withdrawal is on its way" }).locator(".meta");
    await server.wait("ayla sees it read", () => answer.getByText(en.read, { exact: false }).waitFor());
    await ayla.reload();
    await server.wait("the console reconnects", () => ayla.locator("#app[data-state=open]").waitFor());
    await server.wait("the tab shown before the reload is selected again", () => ayla.locator(`#tab-${convB}[aria-selected=true]`).waitFor());
    await server.wait("its pane shows the chat", () => shown(ayla).getByText("Teşekkürler").waitFor());
    await server.wait("ayla's answer still says Read", () => answer.getByText(en.read, { exact: false }).waitFor());
    await server.wait("the other chat is back too", () => ayla.locator(`#panel-${convC}`).getByText("Bonusum nerede?").waitFor({ state: "attached" }));
    assert.equal(await ayla.locator("[role=tab] .badge:not([hidden])").count(), 0, "nothing read before the reload is unread");
    assert.match(await ayla.title(), /^Pitboss/, "no unread count in the title");
    await players.say("p3", convC, "Hâlâ bekliyorum");
    await server.wait("a new message in the other tab is counted", () => ayla.locator(`#tab-${convC} .badge:not([hidden])`, { hasText: "1" }).waitFor());
  });

  step("a supervisor's note in a chat not shown counts as unread", async () => {
    const badge = ayla.locator(`#tab-${convC} .badge:not([hidden])`);
    await server.wait("one unread so far", () => badge.filter({ hasText: "1" }).waitFor());
    await sam.evaluate((c) => window.pitbossConsole.client.send({ type: "note", conversation: c, client_id: "sam-note-1", text: "Offer him 10 free spins" }), convC);
    await server.wait("the note is counted", () => badge.filter({ hasText: "2" }).waitFor());
  });

  step("with the canned replies open and nothing matching, Enter sends nothing", async () => {
    const input = shown(ayla).locator("textarea");
    await input.fill("/zzz");
    await server.wait("the list says nothing matches", () => shown(ayla).getByText(en.no_canned).waitFor());
    await input.press("Enter");
    await ayla.waitForTimeout(500);
    assert.equal(aylaFrames.sent.filter((f) => f.type === "send" && f.text === "/zzz").length, 0, "the filter was not sent");
    assert.equal(await input.inputValue(), "/zzz");
    await input.press("Escape");
    await input.fill("");
  });

  step("another agent's earlier conversation is a summary, not a link", async () => {
    const olgaSends = (frame) => olga.evaluate((f) => window.pitbossConsole.client.send(f), frame);
    await players.open("p5", "Lena");
    const first = await players.start("p5", "ru", "technical"); // only olga serves it
    await server.wait("olga is offered it", () => olga.getByRole("button", { name: /Accept the chat/ }).waitFor());
    await olgaSends({ type: "accept", conversation: first });
    await server.wait("olga has it", () => olga.locator(`#tab-${first}`).waitFor());
    await olgaSends({ type: "close", conversation: first });
    await server.wait("and closed it", () => olga.locator(`#tab-${first}.ended`).waitFor());
    const second = await players.start("p5", "en", "payments");
    await players.say("p5", second, "It is me again");
    await server.wait("ayla is offered the second", () => ayla.getByRole("button", { name: /Accept the chat/ }).waitFor());
    await ayla.getByRole("button", { name: /Accept the chat/ }).click();
    await server.wait("it opens", () => shown(ayla).getByText("It is me again").waitFor());
    const earlier = shown(ayla).locator(".history li");
    await server.wait("olga's conversation is listed", () => earlier.filter({ hasText: "Olga" }).waitFor());
    assert.equal(await earlier.filter({ hasText: "Olga" }).locator("button").count(), 0, "not a link");
    assert.equal(await earlier.filter({ hasText: "Olga" }).locator("span").getAttribute("title"), en.transcript_unavailable);
    await ayla.evaluate((c) => window.pitbossConsole.client.send({ type: "close", conversation: c }), second);
    await server.wait("ayla's chat with Lena ends", () => ayla.locator(`#tab-${second}.ended`).waitFor());
    await ayla.locator(`#tab-${convB}`).click();
  });

  step("toasts are localised by code and never cover the reply box", async () => {
    await ayla.evaluate((c) => window.pitbossConsole.client.send({ type: "accept", conversation: c }), convA);
    const toast = ayla.locator("#toast");
    await server.wait("the refusal is shown", () => toast.waitFor());
    const refusal = aylaFrames.received.filter((f) => f.type === "error" && f.frame === "accept").pop();
    const expected = en["err_accept_" + refusal.code] || en["err_" + refusal.code];
    assert.equal(await toast.textContent(), expected);
    assert.ok(!(await toast.textContent()).includes(refusal.message));
    const t = await toast.boundingBox();
    for (const sel of ["textarea", "button[type=submit]"]) {
      const b = await shown(ayla).locator(`.composer ${sel}`).boundingBox();
      assert.ok(!overlap(t, b), `the toast does not cover the composer's ${sel}`);
    }
  });

  step("an offline message without text says so", async () => {
    await players.open("p4", "Quiet");
    await players.start("p4", "de", "general"); // nobody serves German: an offline message
    await olga.locator("#offline-refresh").click();
    await server.wait("the empty offline message is listed with a note", () => olga.locator("#offline li", { hasText: "Quiet" }).getByText(en.offline_no_text).waitFor());
  });

  step("in Russian the header stays one row when the connection is lost, and Transfer reads as handing over", async () => {
    const page = await newPage(await browser.newContext(WIDE));
    await page.addInitScript(() => localStorage.setItem("pitboss.console.lang", "ru"));
    await page.goto(server.url + "/console");
    await page.locator("#login-name").fill("olga");
    await page.locator("#login-password").fill(server.password);
    await page.locator("#login-form button[type=submit]").click();
    await server.wait("olga's Russian console connects", () => page.locator("#app[data-state=open]").waitFor());
    assert.equal(await page.locator("#status-away").textContent(), "Нет на месте");
    await page.evaluate(() => window.pitbossConsole.client.emit("state", "reconnecting"));
    await server.wait("the notice is shown", () => page.locator("#conn", { hasText: ru.reconnecting.slice(0, 10) }).waitFor());
    const h1 = await page.locator(".top h1").boundingBox();
    const logout = await page.locator("#logout").boundingBox();
    const header = await page.locator(".top").boundingBox();
    assert.ok(Math.abs(h1.y + h1.height / 2 - (logout.y + logout.height / 2)) < 4, `Log out stays on the first row: ${JSON.stringify({ h1, logout })}`);
    assert.ok(logout.x + logout.width <= header.x + header.width, "and inside the header");
    assert.equal(ru.transfer, "Передать");
    assert.deepEqual(page.problems(), []);
    await page.context().close();
  });

  step("a supervisor edits canned replies and department names in the console; agents cannot", async () => {
    assert.equal(await ayla.locator("#catalog-section").isVisible(), false, "not for agents");
    await sam.locator("#catalog-open").click();
    const dlg = sam.locator("#catalog-dialog");
    await server.wait("the editor opens", () => dlg.waitFor());
    // A department's name, in English: shown at once in sam's own console.
    await dlg.getByLabel(en.catalog_kind).selectOption("department");
    await dlg.getByLabel(en.catalog_language).selectOption("en");
    await server.wait("the demo's names are listed", () => dlg.locator("#catalog-items li", { hasText: "General support" }).waitFor());
    await dlg.getByRole("button", { name: fill(en.catalog_edit_of, { key: "general" }) }).click();
    assert.equal(await dlg.getByLabel(en.catalog_text).inputValue(), "General support");
    await dlg.getByLabel(en.catalog_text).fill("Help desk");
    await dlg.getByRole("button", { name: en.catalog_save }).click();
    await server.wait("saved", () => dlg.getByText(fill(en.catalog_saved, { key: "general" })).waitFor());
    await server.wait("listed with its new name", () => dlg.locator("#catalog-items li", { hasText: "Help desk" }).waitFor());
    // A Turkish canned reply, added and then deleted (the second click confirms).
    await dlg.getByLabel(en.catalog_kind).selectOption("canned_reply");
    await dlg.getByLabel(en.catalog_language).selectOption("tr");
    await dlg.getByLabel(en.catalog_key).fill(" bye ");
    await dlg.getByLabel(en.catalog_text).fill("Görüşmek üzere!");
    await dlg.getByRole("button", { name: en.catalog_save }).click();
    await server.wait("the reply is listed", () => dlg.locator("#catalog-items li", { hasText: "Görüşmek üzere!" }).waitFor());
    const token = await server.login("sam");
    const listed = async () => (await server.api("/api/catalog?kind=canned_reply&language=tr", { token })).items.map((i) => i.key);
    assert.ok((await listed()).includes("bye"), "stored under its trimmed key");
    const del = dlg.locator('[data-key="del-bye"]');
    assert.equal(await del.getAttribute("aria-label"), fill(en.catalog_delete_of, { key: "bye" }));
    await del.click();
    assert.equal(await del.textContent(), en.catalog_confirm_delete, "asks before deleting");
    assert.equal(await del.getAttribute("aria-label"), en.catalog_confirm_delete + " bye", "and says so to screen readers");
    await dlg.getByLabel(en.catalog_text).focus();
    assert.equal(await del.textContent(), en.catalog_delete, "leaving the button takes the question back");
    assert.ok((await listed()).includes("bye"), "not deleted on the first click");
    await del.click();
    await del.click();
    await server.wait("deleted", () => dlg.getByText(fill(en.catalog_deleted, { key: "bye" })).waitFor());
    assert.ok(!(await listed()).includes("bye"));
    // A refused save says why and keeps what was typed.
    await dlg.getByLabel(en.catalog_kind).selectOption("department");
    await dlg.getByLabel(en.catalog_key).fill("vip desk");
    await dlg.getByLabel(en.catalog_text).fill("VIP");
    await dlg.getByRole("button", { name: en.catalog_save }).click();
    await server.wait("the refusal is shown, in the console's language", () => dlg.locator("#catalog-status.error", { hasText: en.catalog_refused }).waitFor());
    assert.equal(await dlg.getByLabel(en.catalog_key).inputValue(), "vip desk");
    // Another language starts an empty form: the text typed was for this one.
    await dlg.getByLabel(en.catalog_language).selectOption("tr");
    assert.equal(await dlg.getByLabel(en.catalog_key).inputValue(), "");
    assert.deepEqual(await axe(sam), [], "serious or critical accessibility problems in the catalog editor");
    await dlg.getByRole("button", { name: en.close_window }).click();
    await server.wait("the editor closes", () => dlg.waitFor({ state: "hidden" }));
    await server.wait("sam's console shows the new name", () => sam.locator("#live li", { hasText: "Help desk" }).first().waitFor());
  });

  step("logging out with open chats asks first; Stay keeps the agent logged in", async () => {
    await ayla.locator("#logout").click();
    const dialog = ayla.locator("#logout-dialog");
    await server.wait("the confirmation is shown", () => dialog.waitFor());
    assert.equal(await ayla.locator("#logout-text").textContent(), fill(en.logout_open_other, { n: 2 }));
    assert.deepEqual(await axe(ayla, "#logout-dialog"), [], "serious or critical accessibility problems in the logout dialog");
    await dialog.getByRole("button", { name: en.logout_stay }).click();
    assert.equal(await ayla.locator("#app").isVisible(), true);
    assert.equal(aylaFrames.sent.filter((f) => f.type === "sign_out").length, 0, "nothing sent for Stay");
  });

  step("confirming sends sign_out and returns to the login form within 3 s; the chats go back to the queue", async () => {
    const other = await newPage(ayla.context()); // another window of ayla's
    await consoleLogin(server, other, "ayla");
    await ayla.locator("#logout").click();
    const clicked = Date.now();
    await ayla.locator("#logout-dialog").getByRole("button", { name: en.logout_confirm }).click();
    await server.wait("the login form is back", () => ayla.locator("#login-view").waitFor({ timeout: 5000 }));
    const took = Date.now() - clicked;
    assert.ok(took < 4500, `logged out in ${took} ms`);
    assert.equal(aylaFrames.sent.filter((f) => f.type === "sign_out").length, 1, "sign_out was sent once");
    assert.equal(await ayla.evaluate(() => sessionStorage.getItem("pitboss.console.token")), null);
    assert.equal(await ayla.locator("#login-error").textContent(), "", "no \"session expired\" for a sign-out");
    const refused = aylaFrames.received.some((f) => f.type === "error" && f.code === "unknown_type");
    const token = await server.login("sam");
    if (refused) {
      // A server without sign_out: the console logged out anyway, at once.
      assert.ok(took < 2500, `an older server's unknown_type logs out at once (${took} ms)`);
    } else {
      // The server put ayla's chats back in the queue at once.
      await server.until("ayla's chats are no longer hers", async () => {
        const b = await server.api(`/api/conversations/${convB}`, { token });
        const c = await server.api(`/api/conversations/${convC}`, { token });
        return b.conversation.agent !== "ayla" && c.conversation.agent !== "ayla";
      }, 5000);
      await server.wait("ayla's other window is signed out too", () => other.locator("#login-error").getByText(en.signed_out_elsewhere).waitFor());
    }
    // The console stays logged out: no reconnect behind the login form.
    await ayla.waitForTimeout(1500);
    assert.equal(await ayla.locator("#app").isVisible(), false);
    assert.deepEqual(other.problems(), []);
  });

  step("no page raised an error or a dialog", () => {
    for (const p of [ayla, olga, sam, players.page]) assert.deepEqual(p.problems(), []);
  });
});

describe("an unanswered offer", () => {
  let server, browser, olga, players;
  const step = stepsOf(() => server);

  before(async () => {
    server = await startServer({ args: ["--offer-timeout-secs", "2"] });
    browser = await launchBrowser();
    const ctx = await browser.newContext(WIDE);
    await ctx.addInitScript(() => localStorage.setItem("pitboss.console.lang", "ru"));
    olga = await newPage(ctx);
    players = await playersPage(browser, server);
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  step("sets the agent away with a clear, localised notice and a way back online", async () => {
    await olga.goto(server.url + "/console");
    await olga.locator("#login-name").fill("olga");
    await olga.locator("#login-password").fill(server.password);
    await olga.locator("#login-form button[type=submit]").click();
    await server.wait("olga's console connects", () => olga.locator("#app[data-state=open]").waitFor());
    const notice = olga.locator("#away-notice");
    assert.equal(await notice.isVisible(), false, "no notice before anything happened");
    await players.open("p", "Иван");
    await players.start("p", "ru", "general");
    await server.wait("olga is offered the chat", () => olga.locator("#offers li").waitFor());
    // The card counts down the 2 s she has to answer, in her language.
    const left = olga.locator("#offers li .left");
    assert.match(await left.textContent(), new RegExp("^" + fill(ru.offer_left, { n: "[12]" }) + "$"));
    await server.wait("the offer expires and the notice says why", () => notice.getByText(ru.away_missed).waitFor({ timeout: 10000 }));
    assert.equal(await olga.locator("#status-away[aria-pressed=true]").textContent(), "Нет на месте");
    assert.deepEqual(await axe(olga, "#away-notice"), [], "serious or critical accessibility problems in the notice");
    await notice.getByRole("button", { name: ru.go_online }).click();
    await server.wait("olga is online again", () => olga.locator("#status-online[aria-pressed=true]").waitFor());
    await server.wait("and the notice is gone", () => notice.waitFor({ state: "hidden" }));
    assert.deepEqual(olga.problems(), []);
  });

  step("going away by hand shows no such notice", async () => {
    await olga.locator("#status-away").click();
    await server.wait("olga is away", () => olga.locator("#status-away[aria-pressed=true]").waitFor());
    await olga.waitForTimeout(300);
    assert.equal(await olga.locator("#away-notice").isVisible(), false);
  });
});

/** Words of `selector`'s cells that break across lines, and cells whose text sticks out. */
function brokenWords(page, selector) {
  return page.evaluate((sel) => {
    const out = [];
    for (const cell of document.querySelectorAll(sel)) {
      const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
      for (let n = walker.nextNode(); n; n = walker.nextNode()) {
        for (const m of n.data.matchAll(/\S+/g)) {
          const r = document.createRange();
          r.setStart(n, m.index);
          r.setEnd(n, m.index + m[0].length);
          const lines = new Set([...r.getClientRects()].filter((x) => x.width > 0).map((x) => Math.round(x.top)));
          if (lines.size > 1) out.push(`"${m[0]}" on ${lines.size} lines`);
        }
      }
      if (cell.scrollWidth > cell.clientWidth + 1) out.push(`"${cell.textContent}" sticks out of its cell`);
    }
    return out;
  }, selector);
}

/** Everything in the key figures' boxes that does not fit in them. */
function kpiOverflow(page) {
  return page.evaluate(() => {
    const out = [];
    for (const dl of document.querySelectorAll(".kpis:not([hidden])")) {
      const box = dl.getBoundingClientRect();
      for (const el of dl.querySelectorAll("*")) {
        const r = el.getBoundingClientRect();
        if (r.right > box.right + 0.5 || r.left < box.left - 0.5) out.push(`"${el.textContent}" outside its box (${Math.round(r.left)}–${Math.round(r.right)} of ${Math.round(box.left)}–${Math.round(box.right)})`);
        if (el.scrollWidth > el.clientWidth + 1) out.push(`"${el.textContent}" cut off`);
      }
    }
    const side = document.querySelector(".side");
    if (side.scrollWidth > side.clientWidth) out.push(`the side panel scrolls sideways by ${side.scrollWidth - side.clientWidth} px`);
    return out;
  });
}

// Key figures with long values (minutes), the same whatever the server counted.
// The wait's p90 (59:58.4) shows as "within 59:59": a bound is rounded up.
const LONG_KPIS = {
  conversations: { started: 128, abandoned: 17 },
  wait_ms: { count: 120, mean: 754000, p90: 3598400 },
  first_response_ms: { count: 120, mean: 95000, p90: 1985000 },
  resolution_ms: { count: 100, mean: 1834000, p90: 3541000 },
  satisfaction: { rated: 57, mean: 4.25 },
};

describe("the console in Azerbaijani and Russian at 1280 px, across reloads and a lost connection", () => {
  let server, browser, players, olga, sam, olgaFrames;
  const az = strings("console", "az");
  const step = stepsOf(() => server);
  const conv = {};
  const tabOrder = (page) => page.locator("[role=tab]").evaluateAll((tabs) => tabs.map((t) => t.id.replace(/^tab-/, "")));
  const input = (page, id) => page.locator(`#input-${id}`);

  // consoleLogin finds the fields by their English labels.
  async function login(page, name) {
    await page.goto(server.url + "/console");
    await page.locator("#login-name").fill(name);
    await page.locator("#login-password").fill(server.password);
    await page.locator("#login-form button[type=submit]").click();
    await server.wait(`${name}'s console connects`, () => page.locator("#app[data-state=open]").waitFor());
  }

  async function accept(c) {
    const card = olga.locator(`#offers li[data-conversation="${c}"]`);
    await server.wait(`olga is offered ${c}`, () => card.waitFor());
    await card.locator("button.primary").click();
    await server.wait(`olga's tab of ${c} opens`, () => olga.locator(`#tab-${c}`).waitFor());
  }

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
    const olgaCtx = await browser.newContext(WIDE);
    // Azerbaijani unless olga picks another language in the console.
    await olgaCtx.addInitScript(() => { if (!localStorage.getItem("pitboss.console.lang")) localStorage.setItem("pitboss.console.lang", "az"); });
    olga = await newPage(olgaCtx);
    olgaFrames = recordFrames(olga);
    const samCtx = await browser.newContext(WIDE);
    await samCtx.addInitScript(() => { if (!localStorage.getItem("pitboss.console.lang")) localStorage.setItem("pitboss.console.lang", "ru"); });
    sam = await newPage(samCtx);
    players = await playersPage(browser, server);
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  step("while the connection is down, offers and the status are on hold; after it, the offer is live again, once", async () => {
    await login(olga, "olga");
    await server.wait("olga is online", () => olga.locator("#status-online[aria-pressed=true]").waitFor());
    await players.open("p1", "Ivan");
    conv.a = await players.start("p1", "ru", "technical");
    const card = olga.locator(`#offers li[data-conversation="${conv.a}"]`);
    await server.wait("olga is offered the chat", () => card.waitFor());
    assert.equal(await olga.locator("#offers-paused").isVisible(), false, "no hint while connected");

    await server.stop();
    await server.wait("the header says the connection is lost", () => olga.locator("#conn", { hasText: az.reconnecting.slice(0, 10) }).waitFor());
    await server.wait("the offers say they are on hold", () => olga.locator("#offers-paused", { hasText: az.offers_paused }).waitFor());
    for (const b of await card.getByRole("button").all()) assert.equal(await b.isDisabled(), true, `${await b.textContent()} cannot be pressed`);
    assert.equal(await card.locator(".left").textContent(), az.offer_paused, "no countdown nobody can act on");
    for (const s of ["online", "away"]) {
      assert.equal(await olga.locator(`#status-${s}`).isDisabled(), true, `${s} cannot be pressed`);
      assert.equal(await olga.locator(`#status-${s}`).getAttribute("aria-pressed"), "false", `${s} is not shown as the status`);
    }
    await olga.waitForTimeout(1200);
    assert.equal(await card.locator(".left").textContent(), az.offer_paused, "still on hold");

    const offersBefore = olgaFrames.received.length;
    await server.restart();
    await server.wait("olga's console reconnects", () => olga.locator("#app[data-state=open]").waitFor({ timeout: 20000 }));
    await server.wait("the hint goes", () => olga.locator("#offers-paused").waitFor({ state: "hidden" }));
    await server.wait("the status is shown again", () => olga.locator("#status-online[aria-pressed=true]:not([disabled])").waitFor());
    await server.until("the server offers the chat again", () =>
      olgaFrames.received.slice(offersBefore).some((f) => f.type === "offer" && f.conversation === conv.a));
    await server.wait("its card is live", () => card.locator("button.primary:not([disabled])").waitFor());
    assert.match(await card.locator(".left").textContent(), new RegExp("^" + fill(az.offer_left, { n: "\\d+" }) + "$"), "counting down again");
    await olga.waitForTimeout(500);
    assert.equal(await olga.locator("#offers li").count(), 1, "offered once, shown once");
    await accept(conv.a);
  });

  step("the tabs keep the agent's order after a reload", async () => {
    await players.open("p2", "Oleg");
    await players.open("p3", "Nina");
    conv.b = await players.start("p2", "ru", "technical");
    conv.c = await players.start("p3", "ru", "technical");
    // Taken the other way round from how they came.
    await accept(conv.c);
    await accept(conv.b);
    const order = [conv.a, conv.c, conv.b];
    assert.deepEqual(await tabOrder(olga), order);
    // The server lists them in no particular order, which may happen to be
    // olga's: then her console is given them the other way round.
    let listed = null;
    await olga.routeWebSocket(/\/ws$/, (ws) => {
      const upstream = ws.connectToServer();
      ws.onMessage((m) => upstream.send(m));
      upstream.onMessage((m) => {
        const f = JSON.parse(m);
        if (f.type === "welcome") {
          listed = f.conversations.map((c) => c.id);
          if (JSON.stringify(listed) === JSON.stringify(order)) f.conversations.reverse();
          m = JSON.stringify(f);
        }
        ws.send(m);
      });
    });
    await olga.reload();
    await server.wait("olga's console reconnects", () => olga.locator("#app[data-state=open]").waitFor());
    await server.wait("the three tabs are back", async () => (await olga.locator("[role=tab]").count()) === 3 || Promise.reject(new Error("not yet")));
    assert.deepEqual(await tabOrder(olga), order, `in olga's order, whatever the server's (${JSON.stringify(listed)})`);
  });

  step("a half-written reply survives a reload and a change of language; once sent, it is gone", async () => {
    await olga.locator(`#tab-${conv.b}`).click();
    await input(olga, conv.b).fill("Salam! Sizə necə");
    await olga.locator(`#tab-${conv.c}`).click();
    await input(olga, conv.c).fill("Yoxlayıram, bir dəqiqə");
    await olga.reload();
    await server.wait("olga's console reconnects", () => olga.locator("#app[data-state=open]").waitFor());
    await server.wait("the draft is back", async () => (await input(olga, conv.c).inputValue()) === "Yoxlayıram, bir dəqiqə" || Promise.reject(new Error(await input(olga, conv.c).inputValue())));
    assert.equal(await input(olga, conv.b).inputValue(), "Salam! Sizə necə", "each chat its own");
    assert.equal(await input(olga, conv.a).inputValue(), "");
    // The language select reloads the page.
    await olga.locator("#lang-select").selectOption("ru");
    await server.wait("the console is in Russian", () => olga.locator("html[lang=ru] #app[data-state=open]").waitFor());
    await server.wait("the draft is still there", async () => (await input(olga, conv.c).inputValue()) === "Yoxlayıram, bir dəqiqə" || Promise.reject(new Error(await input(olga, conv.c).inputValue())));
    await olga.locator("#lang-select").selectOption("az");
    await server.wait("the console is in Azerbaijani again", () => olga.locator("html[lang=az] #app[data-state=open]").waitFor());
    await olga.locator(`#tab-${conv.c}`).click();
    await server.wait("and the draft with it", async () => (await input(olga, conv.c).inputValue()) === "Yoxlayıram, bir dəqiqə" || Promise.reject(new Error("not yet")));
    await input(olga, conv.c).press("Enter");
    await server.wait("it is sent", () => players.page.waitForFunction((c) => window.__pb.frames.some((f) => f.type === "message" && f.conversation === c && f.text === "Yoxlayıram, bir dəqiqə"), conv.c));
    await olga.reload();
    await server.wait("olga's console reconnects", () => olga.locator("#app[data-state=open]").waitFor());
    await server.wait("the chat is back", () => olga.locator(`#panel-${conv.c}`).getByText("Yoxlayıram, bir dəqiqə").waitFor({ state: "attached" }));
    assert.equal(await input(olga, conv.c).inputValue(), "", "a sent reply is not a draft any more");
    assert.equal(await input(olga, conv.b).inputValue(), "Salam! Sizə necə");
  });

  step("a closed chat's draft is dropped; dates read well in Azerbaijani", async () => {
    // Oleg's chat ends; his next one lists it under earlier conversations.
    await olga.locator(`#tab-${conv.b}`).click();
    await olga.evaluate((c) => window.pitbossConsole.client.send({ type: "close", conversation: c }), conv.b);
    await server.wait("the chat ends", () => olga.locator(`#tab-${conv.b}.ended`).waitFor());
    assert.equal(await olga.evaluate((c) => sessionStorage.getItem("pitboss.console.draft." + c), conv.b), null, "nobody can send it now");
    conv.d = await players.start("p2", "ru", "technical");
    await accept(conv.d);
    await olga.locator(`#tab-${conv.d}`).click();
    const earlier = olga.locator(`#panel-${conv.d} .history button`);
    await server.wait("the earlier chat is listed", () => earlier.first().waitFor());
    const text = await earlier.first().textContent();
    const date = text.split(" · ")[0];
    assert.doesNotMatch(date, /M\d/, `no month as "M12": ${text}`);
    const now = new Date();
    const two = (n) => String(n).padStart(2, "0");
    const today = `${two(now.getDate())}.${two(now.getMonth() + 1)}.${now.getFullYear()}`;
    assert.ok(date.includes(String(now.getFullYear())) && /\d\d:\d\d/.test(date), `a date and a time: ${date}`);
    if (/^\d/.test(date) && !/[a-zəğıöşüç]/i.test(date)) assert.ok(date.startsWith(today), `day.month.year: ${date}`);
    await earlier.first().click();
    const title = olga.locator("#transcript-h");
    await server.wait("the transcript opens", () => title.waitFor());
    assert.equal(await title.textContent(), fill(az.transcript_of, { date }));
    await olga.locator("#transcript-dialog").getByRole("button", { name: az.close_window }).click();
  });

  step("the queue's words never break inside, in any language at 1280 px; the state is a table cell", async () => {
    // Olga has three chats, her capacity: the next one waits in the queue.
    await players.open("p4", "Zaur");
    conv.e = await players.start("p4", "az", "technical");
    await server.wait("olga sees it queued", () => olga.locator("#queue tbody tr").waitFor());
    assert.deepEqual(await brokenWords(olga, "#queue th, #queue td"), [], "Azerbaijani, an agent's queue");
    await login(sam, "sam");
    for (const lang of ["ru", "az", "tr", "en"]) {
      await sam.evaluate((l) => localStorage.setItem("pitboss.console.lang", l), lang);
      await sam.reload();
      await server.wait(`sam's console in ${lang}`, () => sam.locator(`html[lang=${lang}] #app[data-state=open]`).waitFor());
      const take = sam.locator("#queue tbody tr td.state button");
      await server.wait("sam sees it queued, with Take over", () => take.first().waitFor());
      assert.deepEqual(await brokenWords(sam, "#queue th, #queue td"), [], `${lang}, a supervisor's queue`);
      const m = await sam.evaluate(() => {
        const td = document.querySelector("#queue tbody td.state");
        const row = td.parentElement.getBoundingClientRect();
        const side = document.querySelector(".side");
        return { display: getComputedStyle(td).display, bottom: td.getBoundingClientRect().bottom - row.bottom, sideways: side.scrollWidth - side.clientWidth };
      });
      assert.equal(m.display, "table-cell", `${lang}: the state cell is a table cell`);
      assert.ok(Math.abs(m.bottom) < 1, `${lang}: the state cell ends with its row (${m.bottom} px)`);
      assert.ok(m.sideways <= 0, `${lang}: the side panel does not scroll sideways (${m.sideways} px)`);
    }
  });

  step("a supervisor sees all live conversations without scrolling at 1280x800", async () => {
    await sam.evaluate(() => localStorage.setItem("pitboss.console.lang", "ru"));
    await sam.reload();
    await server.wait("sam's console in Russian", () => sam.locator("html[lang=ru] #app[data-state=open]").waitFor());
    await server.wait("the live list is filled", () => sam.locator("#live li").first().waitFor());
    const m = await sam.evaluate(() => ({
      heading: document.querySelector("#live-h").getBoundingClientRect().bottom,
      first: document.querySelector("#live li").getBoundingClientRect().top,
      scrolled: document.querySelector(".side").scrollTop,
      height: innerHeight,
      after: document.querySelector("#live-section").previousElementSibling.getAttribute("aria-labelledby"),
    }));
    assert.equal(m.after, "queue-h", "right after the queue");
    assert.equal(m.scrolled, 0);
    assert.ok(m.heading <= m.height && m.first < m.height, `in view without scrolling: ${JSON.stringify(m)}`);
  });

  step("a supervisor sees each department's key figures under its Russian name, a bounded number of them; an agent does not", async () => {
    // Away, sam is offered nothing: the chat in a second department waits in the queue.
    await sam.locator("#status-away").click();
    await server.wait("sam is away", () => sam.locator("#status-away[aria-pressed=true]").waitFor());
    await players.open("p6", "Aydan");
    conv.f = await players.start("p6", "tr", "payments");
    const token = await server.login("sam");
    const names = { technical: "Техническая поддержка", payments: "Платежи", general: "Общая поддержка" };
    const started = {};
    for (const d of Object.keys(names)) started[d] = (await server.api(`/api/kpis?department=${d}`, { token })).conversations.started;
    assert.ok(started.technical >= 5 && started.payments === 1, `chats in two departments: ${JSON.stringify(started)}`);

    const section = sam.locator("#depts-section");
    await sam.locator("#kpis-refresh").click(); // the team's figures and the departments' together
    await server.wait("the departments are listed", () => section.getByRole("heading", { level: 3, name: names.payments }).waitFor());
    assert.equal(await section.getByRole("heading", { level: 2 }).textContent(), ru.depts);
    for (const [d, name] of Object.entries(names)) {
      const card = sam.locator(`#depts li[data-department="${d}"]`);
      assert.equal(await card.locator("h3").textContent(), name, `${d} by its Russian name`);
      await server.until(`${d}: the chats started and answered`, async () =>
        (await card.locator(".summary").textContent()).startsWith(fill(ru.depts_summary, { started: started[d], answered: "" })));
      // Opened from the keyboard, like a Team card.
      const open = card.getByRole("button", { name: fill(ru.team_kpis_of, { name }) });
      assert.equal(await open.getAttribute("aria-expanded"), "false");
      await open.focus();
      await sam.keyboard.press("Enter");
      await server.wait(`${d}'s figures open`, () => card.locator(`[data-kpi="kpi_started"] dd`).waitFor());
      assert.equal(await open.getAttribute("aria-expanded"), "true");
      assert.equal(await card.locator(`[data-kpi="kpi_started"] dd`).textContent(), String(started[d]), `${d}: as many chats started as the API counts`);
      for (const k of ["kpi_wait", "kpi_first_response", "kpi_resolution", "kpi_satisfaction"]) assert.equal(await card.locator(`[data-kpi="${k}"] dt`).textContent(), ru[k]);
    }
    assert.deepEqual(await kpiOverflow(sam), [], "Russian, the departments' figures");
    assert.deepEqual(await axe(sam, "#depts-section"), [], "serious or critical accessibility problems in the departments' figures");

    // Fifteen departments: twelve shown, each asked for once a refresh, and a note.
    const many = Object.keys(names).concat(Array.from({ length: 12 }, (_, i) => `desk-${i + 1}`));
    const asked = [];
    const count = (r) => { const m = /\/api\/kpis\?department=([\w-]+)/.exec(r.url()); if (m) asked.push(m[1]); };
    await sam.route("**/api/departments", (route) => route.fulfill({ json: { departments: many } }));
    sam.on("request", count);
    await sam.locator("#depts-refresh").click();
    await server.wait("the note says how many are shown", () => sam.locator("#depts-more", { hasText: fill(ru.depts_more, { shown: 12, total: 15 }) }).waitFor());
    sam.off("request", count);
    await sam.unroute("**/api/departments");
    const cards = await sam.locator("#depts li").evaluateAll((li) => li.map((x) => x.getAttribute("data-department")));
    assert.equal(cards.length, 12, "twelve departments shown");
    assert.deepEqual([...new Set(asked)].sort(), [...cards].sort(), "only the departments shown are asked for");
    assert.ok(asked.length <= 12 * 2, `one request per department a refresh (${asked.length})`);
    await sam.locator("#depts-refresh").click();
    await server.wait("the three departments again, without the note", () => sam.locator("#depts-more").waitFor({ state: "hidden" }));
    assert.equal(await sam.locator("#depts li").count(), 3);

    // Olga is an agent: no such section, and no such requests.
    const olgaAsked = [];
    const olgaCount = (r) => { if (r.url().includes("/api/kpis?department=")) olgaAsked.push(r.url()); };
    olga.on("request", olgaCount);
    await olga.locator("#kpis-refresh").click();
    await server.wait("olga's own figures are shown", () => olga.locator('#kpis [data-kpi="kpi_started"]').waitFor());
    await olga.waitForTimeout(500);
    olga.off("request", olgaCount);
    assert.equal(await olga.locator("#depts-section").isVisible(), false, "an agent does not see the departments' figures");
    assert.equal(await olga.locator("#depts li").count(), 0);
    assert.deepEqual(olgaAsked, [], "an agent's console asks for no department's figures");
  });

  step("key figures fit their boxes in Russian and Azerbaijani at 1280 px", async () => {
    for (const page of [olga, sam]) {
      await page.route("**/api/kpis*", (route) => route.fulfill({ json: LONG_KPIS }));
      await page.locator("#kpis-refresh").click();
      await server.wait("the figures are shown", () => page.locator('#kpis [data-kpi="kpi_wait"] dd', { hasText: "59:59" }).waitFor());
    }
    assert.deepEqual(await kpiOverflow(olga), [], "Azerbaijani, an agent's own figures");
    const rating = await olga.locator('#kpis [data-kpi="kpi_satisfaction"] dd').textContent();
    assert.ok(rating.startsWith("4,3"), `a decimal comma in Azerbaijani: ${rating}`);
    const member = sam.locator('#team li[data-agent="olga"]');
    await member.getByRole("button", { name: fill(ru.team_kpis_of, { name: "Olga" }) }).click();
    await server.wait("olga's figures are shown in her card", () => member.locator('[data-kpi="kpi_wait"] dd', { hasText: "59:59" }).waitFor());
    assert.deepEqual(await kpiOverflow(sam), [], "Russian, the team's figures and a member's");
    assert.deepEqual(await axe(sam), [], "serious or critical accessibility problems in the supervisor's console");
  });

  step("no page raised an error or a dialog", () => {
    for (const p of [olga, sam, players.page]) assert.deepEqual(p.problems(), []);
  });
});
