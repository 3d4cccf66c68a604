// The Socket.IO reference relay: what a team would build for live chat with
// Socket.IO 4 and rooms, run beside Pitboss under the same load.
//
// Events (all over the WebSocket transport only, as the load generator speaks it):
//   join(room, ack)              join a conversation's room
//   send({room, client_id, text}, ack)   relay to the room's other members as `message`
//   agent(capacity)              churn: this socket is an agent with `capacity` slots
//   start()                      churn: a player arrives; `queued`, then `assigned`
//   close(conversation)          churn: the agent ends a conversation; the player gets `closed`
//
// With REDIS_URL set, rooms span nodes through @socket.io/redis-adapter (the
// cluster scenario). The churn dispatcher then runs on one node, the one started
// with DISPATCHER=1: the others forward `agent`, `start`, `close` and disconnects
// to it with serverSideEmit, and it answers each socket through the room named by
// the socket's id, which the adapter delivers on whichever node holds the socket.
// Prints `listening on HOST:PORT` once it accepts connections.
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const host = process.env.HOST || "127.0.0.1";
const port = Number(process.env.PORT || 0);
const clustered = Boolean(process.env.REDIS_URL);
const dispatches = !clustered || process.env.DISPATCHER === "1";

const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  // As Pitboss's MAX_FRAME_BYTES.
  maxHttpBufferSize: 16 * 1024,
  serveClient: false,
});

async function useRedis(url) {
  const { createClient } = require("redis");
  const { createAdapter } = require("@socket.io/redis-adapter");
  const pub = createClient({ url });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}

// The churn dispatcher: FIFO of waiting players, agents' free slots. Sockets are
// known by id, so that they may be on any node.
let nextConversation = 0;
const waiting = []; // { conversation, player }
const agents = new Map(); // socket id -> free slots
const open = new Map(); // conversation -> { player, agent }

// Emits to a socket by id: directly when it is on this node, through the
// adapter otherwise.
function emitTo(id, event, data) {
  const local = io.sockets.sockets.get(id);
  if (local) local.emit(event, data);
  else io.to(id).emit(event, data);
}

function assign() {
  while (waiting.length > 0) {
    let best = null;
    let bestFree = 0;
    for (const [id, free] of agents) {
      if (free > bestFree) {
        best = id;
        bestFree = free;
      }
    }
    if (best === null) return;
    const w = waiting.shift();
    agents.set(best, bestFree - 1);
    emitTo(best, "assigned", { conversation: w.conversation });
    emitTo(w.player, "assigned", { conversation: w.conversation });
    open.set(w.conversation, { player: w.player, agent: best });
  }
}

const dispatcher = {
  agent(id, capacity) {
    agents.set(id, Number(capacity) || 1);
    assign();
  },
  start(id) {
    nextConversation += 1;
    const conversation = `c${nextConversation}`;
    emitTo(id, "queued", { conversation, position: waiting.length + 1 });
    waiting.push({ conversation, player: id });
    assign();
  },
  close(conversation) {
    const c = open.get(conversation);
    if (!c) return;
    open.delete(conversation);
    emitTo(c.player, "closed", { conversation });
    if (agents.has(c.agent)) agents.set(c.agent, agents.get(c.agent) + 1);
    assign();
  },
  gone(id) {
    agents.delete(id);
    for (let i = waiting.length - 1; i >= 0; i--) {
      if (waiting[i].player === id) waiting.splice(i, 1);
    }
  },
};

// Runs a dispatcher operation here, or sends it to the dispatching node.
function dispatch(op, ...args) {
  if (dispatches) dispatcher[op](...args);
  else io.serverSideEmit("churn", op, ...args);
}

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(String(room));
    if (typeof ack === "function") ack();
  });
  socket.on("send", (msg, ack) => {
    if (msg && typeof msg.room === "string") socket.to(msg.room).emit("message", msg);
    if (typeof ack === "function") ack();
  });
  socket.on("agent", (capacity) => dispatch("agent", socket.id, capacity));
  socket.on("start", () => dispatch("start", socket.id));
  socket.on("close", (conversation) => dispatch("close", String(conversation)));
  socket.on("disconnect", () => dispatch("gone", socket.id));
});

if (clustered && dispatches) {
  io.on("churn", (op, ...args) => {
    if (Object.prototype.hasOwnProperty.call(dispatcher, op)) dispatcher[op](...args);
  });
}

async function main() {
  if (process.env.REDIS_URL) await useRedis(process.env.REDIS_URL);
  httpServer.listen(port, host, () => {
    const a = httpServer.address();
    console.log(`listening on ${a.address}:${a.port}`);
  });
}

function stop() {
  io.close();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
