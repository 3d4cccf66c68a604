// The console's login tells a wrong password from a server that cannot check one:
// only the first is the agent's to fix.

import { describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, newPage, consoleLogin, stepsOf } from "./helpers.mjs";

describe("console login errors", () => {
  let server, browser, page;
  const step = stepsOf(() => server);
  const error = () => page.locator("#login-error");

  async function submit(login, password) {
    await page.getByLabel(/login/i).first().fill(login);
    await page.getByLabel(/password/i).fill(password);
    await page.locator("#login-form button[type=submit]").click();
  }

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
    page = await newPage(await browser.newContext({ locale: "en-US" }));
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  step("a wrong password is called one", async () => {
    await page.goto(server.url + "/console");
    await submit("ayla", "not-the-password");
    await server.wait("the refusal is shown", () => error().filter({ hasText: "Wrong login or password." }).waitFor());
  });

  step("a server that cannot be reached is not called a wrong password", async () => {
    await server.kill();
    await submit("ayla", server.password);
    await server.until("the console says logins cannot be checked now", async () =>
      (await error().textContent()) === "Logins cannot be checked right now. Try again in a moment.");
    await server.restart();
    await consoleLogin(server, page, "ayla");
    assert.equal(await page.locator("#app").getAttribute("data-state"), "open");
  });
});
