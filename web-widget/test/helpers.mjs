// Test support: a real `pitboss` on a free port with a temporary data directory,
// headless Chromium (the system's, never a downloaded one), and bounded waits
// whose failures print what the server logged.

import { spawn, spawnSync } from "node:child_process";
import { createServer } from "node:net";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, mkdirSync, existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import vm from "node:vm";
import { it } from "node:test";
import { chromium } from "playwright-core";

export const WIDGET_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const STATIC_DIR = join(WIDGET_DIR, "static");
export const ARTIFACTS = resolve(WIDGET_DIR, "..", "test-artifacts");
export const PITBOSS_BIN = process.env.PITBOSS_BIN
  ? resolve(process.env.PITBOSS_BIN)
  : resolve(WIDGET_DIR, "..", "target", "debug", "pitboss");
export const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";

/** A port nobody listens on right now. */
export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.unref();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** The strings of one interface ("widget" or "console") in one language, as the page gets them. */
export function strings(ns, lang) {
  const context = vm.createContext({});
  context.self = context;
  for (const f of ["i18n.js", `${ns}/i18n/${lang}.js`]) vm.runInContext(readFileSync(join(STATIC_DIR, f), "utf8"), context);
  return context.Pitboss.i18n.dicts[ns][lang];
}

export function sleep(ms) {
  return new Promise((ok) => setTimeout(ok, ms));
}

/** Adds an agent account with the CLI, while the server runs or after it ran once (the CLI opens only an existing database). */
export function addAgent(dataDir, login, { password, name, languages = "en", departments = "general", supervisor = false, capacity = 3 }) {
  const args = ["agent", "add", login, "--password-stdin", "--name", name || login, "--languages", languages,
    "--departments", departments, "--capacity", String(capacity), "--data-dir", dataDir];
  if (supervisor) args.push("--supervisor");
  const r = spawnSync(PITBOSS_BIN, args, { input: password + "\n", encoding: "utf8", timeout: 30000 });
  if (r.status !== 0) throw new Error(`pitboss agent add ${login} failed: ${r.stderr || r.error}`);
}

/**
 * Starts `pitboss serve` and resolves once it logs `listening on`.
 * Returns a handle: url, port, dataDir, log(), kill() (SIGKILL), stop() (SIGTERM),
 * restart() (same port, same data dir), wait(description, fn).
 */
export async function startServer({ demo = true, args = [], dataDir, port } = {}) {
  if (!existsSync(PITBOSS_BIN)) {
    throw new Error(`no pitboss binary at ${PITBOSS_BIN}: run \`cargo build -p pitboss-server\` or set PITBOSS_BIN`);
  }
  const own = !dataDir;
  dataDir = dataDir || mkdtempSync(join(tmpdir(), "pitboss-e2e-"));
  port = port || (await freePort());
  const lines = [];
  // The demo agents' password, fixed for this server's life: a restart keeps it,
  // and with it the agents' sessions (a fresh password would end them).
  const demoPassword = demo && !args.includes("--demo-password") ? "e2e-" + randomBytes(6).toString("hex") : null;
  const server = {
    port,
    dataDir,
    url: `http://127.0.0.1:${port}`,
    proc: null,
    password: demoPassword,
    log: (n = 80) => lines.slice(-n).join("\n"),
    async spawn() {
      const full = ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir, ...(demo ? ["--demo"] : []),
        ...(demoPassword ? ["--demo-password", demoPassword] : []), ...args];
      const proc = spawn(PITBOSS_BIN, full, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1", PITBOSS_LOG: process.env.PITBOSS_LOG || "info" } });
      server.proc = proc;
      let buffered = "";
      let listening;
      const ready = new Promise((ok, fail) => {
        listening = ok;
        proc.on("exit", (code, signal) => fail(new Error(`pitboss exited (${code ?? signal}) before listening`)));
      });
      const onData = (chunk) => {
        buffered += chunk.toString();
        let i;
        while ((i = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, i);
          buffered = buffered.slice(i + 1);
          lines.push(line);
          if (lines.length > 2000) lines.shift();
          const pw = /demo agent login="?sam"? password=(\S+)/.exec(line);
          if (pw && !demoPassword) server.password = pw[1];
          if (line.includes("listening on")) listening();
        }
      };
      proc.stdout.on("data", onData);
      proc.stderr.on("data", onData);
      let timer;
      const timeout = new Promise((_, fail) => { timer = setTimeout(() => fail(new Error("pitboss did not log `listening on` within 20 s")), 20000); });
      try {
        await Promise.race([ready, timeout]);
      } catch (err) {
        throw withLog(err, server);
      } finally {
        clearTimeout(timer);
      }
    },
    /** Ends the process abruptly (a crash: no close frames, no drain). */
    async kill() {
      const proc = server.proc;
      if (!proc || proc.exitCode !== null || proc.signalCode) return;
      const gone = new Promise((ok) => proc.on("exit", ok));
      proc.kill("SIGKILL");
      await gone;
    },
    /** Graceful shutdown (clients get 1012). */
    async stop() {
      const proc = server.proc;
      if (!proc || proc.exitCode !== null || proc.signalCode) return;
      const gone = new Promise((ok) => proc.on("exit", ok));
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 15000);
      await gone;
      clearTimeout(t);
    },
    async restart() {
      await server.spawn();
    },
    async close() {
      await server.stop();
      if (own) rmSync(dataDir, { recursive: true, force: true });
    },
    /** Runs a wait; a failure names what was awaited and shows the server log. */
    async wait(description, fn) {
      try {
        return await fn();
      } catch (err) {
        throw withLog(new Error(`${description}: ${err.message.split("\n")[0]}`), server);
      }
    },
    /** Polls `check` (sync or async) until it returns a truthy value. */
    async until(description, check, timeoutMs = 15000) {
      const end = Date.now() + timeoutMs;
      let last;
      for (;;) {
        try {
          const v = await check();
          if (v) return v;
        } catch (err) {
          last = err;
        }
        if (Date.now() > end) {
          throw withLog(new Error(`${description}: not within ${timeoutMs / 1000} s${last ? ` (last error: ${last.message.split("\n")[0]})` : ""}`), server);
        }
        await sleep(100);
      }
    },
    /** A REST call as an agent: resolves to the parsed JSON body. */
    async api(path, { token, method = "GET", body } = {}) {
      const res = await fetch(server.url + path, {
        method,
        headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
      const text = await res.text();
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
      return text ? JSON.parse(text) : null;
    },
    async login(login, password = server.password) {
      return (await server.api("/api/login", { method: "POST", body: { login, password } })).token;
    },
  };
  await server.spawn();
  return server;
}

function withLog(err, server) {
  if (!String(err.message).includes("----- pitboss log")) {
    err.message += `\n----- pitboss log (last lines) -----\n${server.log(60)}\n-----`;
  }
  return err;
}

/** `it` whose failures, whatever threw them, end with the server's log. */
export function stepsOf(getServer) {
  return (name, fn) => it(name, async (t) => {
    try {
      return await fn(t);
    } catch (err) {
      const server = getServer();
      throw server && err instanceof Error ? withLog(err, server) : err;
    }
  });
}

/** Headless Chromium from the system. Never downloads a browser. */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM_BIN`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
}

/**
 * A new page that records uncaught page errors, console errors and dialogs (an
 * XSS payload that ran would show up as one), and fails on none of them by
 * itself: `problems()` lists them for the test to assert on.
 */
export async function newPage(context) {
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("dialog", async (d) => { problems.push(`dialog: ${d.message()}`); await d.dismiss(); });
  page.problems = () => problems.slice();
  page.setDefaultTimeout(15000);
  return page;
}

export function artifact(name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  return join(ARTIFACTS, name);
}

/** Logs an agent into the console page and waits until it is connected. */
export async function consoleLogin(server, page, login, password = server.password) {
  await page.goto(server.url + "/console");
  await page.getByLabel(/login/i).first().fill(login);
  await page.getByLabel(/password/i).fill(password);
  await page.locator("#login-form button[type=submit]").click();
  await server.wait(`console of ${login} connects`, () => page.locator("#app[data-state=open]").waitFor());
}

/** Runs axe-core in the page (or in `selector`) and returns serious and critical violations. */
export async function axe(page, include) {
  const { readFileSync } = await import("node:fs");
  const { createRequire } = await import("node:module");
  const require = createRequire(import.meta.url);
  const source = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
  // Evaluated by the browser's tooling, not as a <script> of the page: the
  // console's Content-Security-Policy refuses inline scripts, as it should.
  await page.evaluate(source);
  const result = await page.evaluate(async (include) => {
    const r = await window.axe.run(include ? { include: [include] } : document, {
      resultTypes: ["violations"],
    });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ") + " :: " + n.failureSummary).slice(0, 5) }));
  }, include);
  return result.filter((v) => v.impact === "serious" || v.impact === "critical");
}

/** Scripted players: raw WebSocket visitors on a page of the server's origin. */
export async function playersPage(browser, server) {
  const page = await newPage(await browser.newContext());
  await page.goto(server.url + "/healthz");
  await page.evaluate(() => {
    window.__pb = { ws: {}, frames: [] };
    window.__pbOpen = (key, name, language) => new Promise((ok, fail) => {
      const ws = new WebSocket(location.origin.replace("http", "ws") + "/ws");
      window.__pb.ws[key] = ws;
      ws.onopen = () => ws.send(JSON.stringify({ type: "hello", protocol: 1, auth: { kind: "visitor", name, language } }));
      ws.onmessage = (e) => {
        const f = JSON.parse(e.data);
        f.__key = key;
        window.__pb.frames.push(f);
        if (f.type === "welcome") ok(true);
      };
      setTimeout(() => fail(new Error("no welcome for " + key)), 10000);
    });
    window.__pbStart = (key, language, department) => new Promise((ok, fail) => {
      const n = window.__pb.frames.length;
      window.__pb.ws[key].send(JSON.stringify({ type: "start", language, department }));
      const iv = setInterval(() => {
        const f = window.__pb.frames.slice(n).find((x) => x.__key === key && (x.type === "resumed" || x.type === "error"));
        if (!f) return;
        clearInterval(iv);
        if (f.type === "error") fail(new Error(f.code + " " + f.message)); else ok(f.conversation);
      }, 50);
      setTimeout(() => { clearInterval(iv); fail(new Error("no answer to start")); }, 10000);
    });
    window.__pbSend = (key, frame) => window.__pb.ws[key].send(JSON.stringify(frame));
  });
  let serial = 0;
  return {
    page,
    open: (key, name, language) => page.evaluate(([k, n, l]) => window.__pbOpen(k, n, l), [key, name, language]),
    start: (key, language, department) => page.evaluate(([k, l, d]) => window.__pbStart(k, l, d), [key, language, department]),
    say: (key, conversation, text) => page.evaluate(([k, c, t, id]) => window.__pbSend(k, { type: "send", conversation: c, client_id: id, text: t }), [key, conversation, text, `m${++serial}`]),
    rate: (key, conversation, score, comment) => page.evaluate(([k, c, s, m]) => window.__pbSend(k, { type: "rate", conversation: c, score: s, comment: m }), [key, conversation, score, comment]),
    frames: () => page.evaluate(() => window.__pb.frames),
  };
}
