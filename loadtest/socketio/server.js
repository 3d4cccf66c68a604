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
// cluster scenario); the churn dispatcher stays per node.
// Prints `listening on HOST:PORT` once it accepts connections.
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const host = process.env.HOST || "127.0.0.1";
const port = Number(process.env.PORT || 0);

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

// The churn dispatcher: FIFO of waiting players, agents' free slots.
let nextConversation = 0;
const waiting = []; // { conversation, socket }
const agents = new Map(); // socket.id -> { socket, free }
const open = new Map(); // conversation -> { player, agentId }

function assign() {
  while (waiting.length > 0) {
    let best = null;
    for (const a of agents.values()) {
      if (a.free > 0 && (best === null || a.free > best.free)) best = a;
    }
    if (best === null) return;
    const w = waiting.shift();
    best.free -= 1;
    best.socket.emit("assigned", { conversation: w.conversation });
    w.socket.emit("assigned", { conversation: w.conversation });
    open.set(w.conversation, { player: w.socket, agentId: best.socket.id });
  }
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
  socket.on("agent", (capacity) => {
    agents.set(socket.id, { socket, free: Number(capacity) || 1 });
    assign();
  });
  socket.on("start", () => {
    nextConversation += 1;
    const conversation = `c${nextConversation}`;
    socket.emit("queued", { conversation, position: waiting.length + 1 });
    waiting.push({ conversation, socket });
    assign();
  });
  socket.on("close", (conversation) => {
    const c = open.get(conversation);
    if (!c) return;
    open.delete(conversation);
    c.player.emit("closed", { conversation });
    const a = agents.get(c.agentId);
    if (a) a.free += 1;
    assign();
  });
  socket.on("disconnect", () => {
    agents.delete(socket.id);
    for (let i = waiting.length - 1; i >= 0; i--) {
      if (waiting[i].socket === socket) waiting.splice(i, 1);
    }
  });
});

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
