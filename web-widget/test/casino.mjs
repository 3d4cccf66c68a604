// A pretend casino: its own web server on another origin, a page that embeds the
// widget from the pitboss server with one script tag, and a backend endpoint that
// signs player tokens (HS256 JWTs) the way a real casino backend would.

import { createServer } from "node:http";
import { createHmac } from "node:crypto";

export const TOKEN_SECRET = "casino-test-secret-0123456789abcdef-xyz";
export const TOKEN_ARGS = [
  "--player-token-alg", "HS256",
  "--player-token-secret", TOKEN_SECRET,
  "--player-token-issuer", "casino.test",
  "--player-token-audience", "pitboss",
  "--player-token-leeway-secs", "0",
];

export function signToken(claims, { expiresIn = 600 } = {}) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ iss: "casino.test", aud: "pitboss", iat: now, exp: now + expiresIn, ...claims });
  const sig = createHmac("sha256", TOKEN_SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/**
 * Starts the casino (on all interfaces: the page is opened as localhost and, to
 * play a foreign origin, as 127.0.0.1). `player` is the claims of the logged-in player (or null for
 * nobody); `expiredFirst` makes the first token handed out already expired, as a
 * casino session that went stale would. `widget` is the script tag's attributes.
 */
export async function startCasino({ player, expiredFirst = false, widget = {}, head = "" }) {
  // Bound first, on a port the system picks; `casino.pitboss` (the chat server's
  // address) is set by the caller before any page is served.
  const casino = { tokensIssued: 0, player, pitboss: null };
  const attrs = Object.entries(widget).map(([k, v]) => ` data-${k}="${v}"`).join("");
  const page = () => `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Casino</title><link rel="icon" href="data:,">${head}</head>
<body>
<h1>Casino</h1>
<script>
  // The casino's own code: asks its backend for a fresh signed token.
  window.casinoToken = function () {
    window.tokenCalls = (window.tokenCalls || 0) + 1;
    return fetch("/token").then(function (r) { return r.ok ? r.text() : null; });
  };
</script>
<script src="${casino.pitboss}/widget.js"${attrs} async></script>
</body>
</html>`;
  const server = createServer((req, res) => {
    if (req.url === "/token") {
      if (!casino.player) { res.writeHead(204); res.end(); return; }
      casino.tokensIssued++;
      const expired = expiredFirst && casino.tokensIssued === 1;
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(signToken(casino.player, { expiresIn: expired ? -120 : 600 }));
      return;
    }
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(page());
  });
  await new Promise((ok) => server.listen(0, ok));
  casino.port = server.address().port;
  casino.url = `http://localhost:${casino.port}`;
  casino.close = () => new Promise((ok) => { server.closeAllConnections?.(); server.close(ok); });
  return casino;
}
