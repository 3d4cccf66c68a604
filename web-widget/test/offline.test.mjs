// When nobody can take the chat: the widget says so at once (here in Russian, the
// page's language) and takes an offline message; an agent answers it from the
// console's offline list; a supervisor, whose console is in Turkish, sees every
// live conversation and takes this one over.

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, newPage, consoleLogin, axe, artifact, stepsOf, strings } from "./helpers.mjs";

const W = "#pitboss-widget";
const ru = strings("widget", "ru");
const fill = (s, vars) => s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));

describe("offline messages and supervisor take-over", () => {
  let server, browser, player, olga, sam;
  const step = stepsOf(() => server);
  const MESSAGE = "Мой вывод средств задерживается уже три дня";

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
    player = await newPage(await browser.newContext({ locale: "en-US" }));
    olga = await newPage(await browser.newContext({ viewport: { width: 1400, height: 900 } }));
    const samCtx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    await samCtx.addInitScript(() => localStorage.setItem("pitboss.console.lang", "tr"));
    sam = await newPage(samCtx);
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  step("with no agent online the widget says so at once and offers an offline message form", async () => {
    await player.goto(server.url + "/?lang=ru");
    await player.getByRole("button", { name: "Открыть чат поддержки" }).click();
    await player.getByRole("button", { name: "Начать чат" }).click();
    await server.wait("the player is told nobody is available", () => player.locator(W).getByText("Сейчас нет свободных операторов.").waitFor());
    await server.wait("and is offered to leave a message", () => player.locator(W).getByText(/Оставьте сообщение ниже/).waitFor());
    const input = player.getByRole("textbox", { name: "Ваше сообщение" });
    await input.fill(MESSAGE);
    await player.getByRole("button", { name: "Отправить сообщение" }).click();
    await server.wait("the offline message is confirmed", () => player.locator(W).getByText(/Мы получили ваше сообщение/).waitFor());
    await server.wait("and acknowledged", () => player.locator(`${W} .me .meta`, { hasText: "Отправлено" }).waitFor());
    assert.deepEqual(await axe(player, [W, ".pb"]), [], "serious or critical accessibility problems in the offline form");
    await player.screenshot({ path: artifact("widget-offline-ru.png") });
  });

  step("an agent answers it from the offline messages list", async () => {
    await consoleLogin(server, olga, "olga");
    const card = olga.locator("#offline li", { hasText: MESSAGE });
    await server.wait("olga sees the offline message", () => card.waitFor());
    await card.getByRole("button", { name: /Answer the message/ }).click();
    await server.wait("the offline conversation opens in a tab", () => olga.locator(".chat:not([hidden]) .msgs").getByText(MESSAGE).waitFor());
    await server.wait("and leaves the offline list", () => olga.locator("#offline li", { hasText: MESSAGE }).waitFor({ state: "detached" }));
    const reply = olga.getByRole("textbox", { name: "Reply to the player" });
    await reply.fill("Здравствуйте! Проверяю ваш вывод.");
    await reply.press("Enter");
    await server.wait("the player, still on the page, gets the answer", () => player.locator(W).getByText("Здравствуйте! Проверяю ваш вывод.").waitFor());
    await server.wait("and sees who answered, in Russian", () => player.locator(W).getByText("Оператор Olga отвечает на ваше сообщение").waitFor());
    await server.wait("and who is helping now", () => player.locator(W).getByText("Вас обслуживает Olga.").waitFor());
  });

  step("an agent can go away and come back online", async () => {
    await olga.locator("#status-away").click();
    await server.wait("olga is away", () => olga.locator("#status-away[aria-pressed=true]").waitFor());
    await olga.locator("#status-online").click();
    await server.wait("olga is online again", () => olga.locator("#status-online[aria-pressed=true]").waitFor());
  });

  step("a supervisor sees every live conversation and takes one over", async () => {
    await sam.goto(server.url + "/console");
    await sam.getByLabel("Kullanıcı adı").fill("sam");
    await sam.getByLabel("Parola").fill(server.password);
    await sam.getByRole("button", { name: "Giriş yap" }).click();
    await server.wait("sam's console connects", () => sam.locator("#app[data-state=open]").waitFor());
    const live = sam.locator("#live li", { hasText: "Olga" });
    await server.wait("sam sees olga's conversation in the live list", () => live.waitFor());
    await live.getByRole("button", { name: /görüşmesini görüntüle/ }).click();
    await server.wait("sam can read it without owning it", () => sam.locator(".chat:not([hidden]) .msgs").getByText(MESSAGE).waitFor());
    // Viewing, sam may write private notes to olga, never to the player.
    const watched = sam.locator(".chat:not([hidden])");
    assert.equal(await watched.getByLabel("Özel not").isChecked(), true, "notes only while viewing");
    assert.equal(await watched.getByLabel("Özel not").isDisabled(), true);
    await server.wait("the banner names the owner", () => watched.getByText(/Bu görüşmeyi izliyorsunuz \(Olga\)/).waitFor());
    const whisper = watched.getByRole("textbox", { name: "Oyuncuya yanıt" });
    await whisper.fill("Onaylandı, oyuncuya bildirebilirsin");
    await whisper.press("Enter");
    await server.wait("olga gets sam's private note", () => olga.locator(".msgs .note").getByText("Onaylandı, oyuncuya bildirebilirsin").waitFor());
    await sam.locator(".chat:not([hidden])").getByRole("button", { name: "Devral" }).click();
    await server.wait("olga is told sam has it now", () => olga.getByText("This chat is now with Sam.").waitFor());
    await server.wait("the player sees the take-over", () => player.locator(W).getByText("Чат ведёт Sam").waitFor());
    const reply = sam.getByRole("textbox", { name: "Oyuncuya yanıt" });
    await reply.fill("Ваш вывод одобрен.");
    await reply.press("Enter");
    await server.wait("the player gets the supervisor's message", () => player.locator(W).getByText("Ваш вывод одобрен.").waitFor());
    assert.deepEqual(await axe(sam), [], "serious or critical accessibility problems in the supervisor's console");
    await sam.screenshot({ path: artifact("console-supervisor-tr.png") });
    const lines = await player.locator(`${W} .msgs > li p`).allTextContents();
    assert.equal(lines.filter((l) => l === MESSAGE).length, 1);
    assert.ok(!lines.some((l) => l.includes("Onaylandı")), "the player never sees the supervisor's note");
  });

  step("a transfer to a department reaches an agent of it, who accepts", async () => {
    await sam.locator(".chat:not([hidden])").getByRole("button", { name: "Aktar" }).click();
    const dialog = sam.locator("#transfer-dialog");
    await dialog.getByRole("radio", { name: "Departman" }).check();
    // Olga (technical, Russian) is online; nobody but sam serves payments.
    const technical = sam.locator("#transfer-department option[value=technical]");
    await server.wait("the departments say who is online", () => technical.filter({ hasText: "RU konuşan 1 kişi çevrimiçi" }).waitFor({ state: "attached" }));
    assert.match(await sam.locator("#transfer-department option[value=payments]").textContent(), /RU konuşan kimse çevrimiçi değil/);
    // A transfer to payments is refused at once, and the dialog says why, keeping the note.
    await sam.locator("#transfer-department").selectOption("payments");
    await dialog.getByLabel("Sonraki temsilci için not (özel)").fill("Technical check of the payout, please");
    await dialog.getByRole("button", { name: "Aktar" }).click();
    await server.wait("the refusal is shown in the dialog", () => sam.locator("#transfer-error", { hasText: "Bu departmanda sohbetin dilini konuşan kimse çevrimiçi değil" }).waitFor());
    assert.equal(await dialog.getByLabel("Sonraki temsilci için not (özel)").inputValue(), "Technical check of the payout, please");
    await dialog.getByRole("radio", { name: "Departman" }).check();
    await sam.locator("#transfer-department").selectOption("technical");
    await dialog.getByRole("button", { name: "Aktar" }).click();
    await server.wait("sam sees the transfer pending (in Turkish, with the department's Turkish name)", () => sam.getByText("Teknik destek için aktarma istendi; yanıt bekleniyor.").waitFor());
    assert.match(await technical.textContent(), /^Teknik destek — /, "the dialog names the departments");
    await server.wait("the player is told the department's Russian name", () => player.locator(W).getByText(fill(ru.ev_transfer, { name: "Техническая поддержка" })).waitFor());
    const offer = olga.locator("#offers .transfer", { hasText: "Transfer from Sam: Technical check of the payout, please" });
    await server.wait("olga, of the technical department, is offered it", () => offer.waitFor());
    await offer.getByRole("button", { name: /Accept/ }).click();
    await server.wait("sam is told olga has it now", () => sam.getByText("Bu sohbet artık Olga ile.").waitFor());
    await server.wait("olga's tab is open again", () => olga.locator(".chat:not([hidden]) .msgs").getByText("Ваш вывод одобрен.").waitFor());
  });

  step("a transfer the receiving agent declines stays with the sender", async () => {
    await olga.locator(".chat:not([hidden])").getByRole("button", { name: "Transfer", exact: true }).click();
    await olga.locator("#transfer-agent").selectOption("sam");
    await olga.locator("#transfer-note").fill("Supervisor approval needed");
    await olga.locator("#transfer-dialog").getByRole("button", { name: "Transfer" }).click();
    const offer = sam.locator("#offers .transfer", { hasText: "Olga tarafından aktarma: Supervisor approval needed" });
    await server.wait("sam is offered the transfer", () => offer.waitFor());
    await offer.getByRole("button", { name: "Reddet" }).click();
    await server.wait("olga is told it was declined", () => olga.getByText("Sam declined the transfer; the chat stays with you.").waitFor());
    const reply = olga.locator(".chat:not([hidden])").getByRole("textbox", { name: "Reply to the player" });
    await reply.fill("Я остаюсь с вами.");
    await reply.press("Enter");
    await server.wait("olga still writes to the player", () => player.locator(W).getByText("Я остаюсь с вами.").waitFor());
  });

  step("no page raised an error or a dialog", () => {
    for (const p of [player, olga, sam]) assert.deepEqual(p.problems(), []);
  });
});
