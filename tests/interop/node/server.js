// The official Socket.IO server (socket.io 4.8 from npm) for the interop tests.
//
//   node server.js [--ping-interval MS] [--ping-timeout MS]
//
// Listens on 127.0.0.1 on a port the OS picks and writes one JSON object per line
// to stdout: first {"ev": "listening", "port": N}, then one line per connection,
// refusal, pong and disconnect, so a test can see what the server saw (its handshake log).
// The same handlers serve the default namespace and "/chat".
//
// Auth: a connect whose auth payload has {"token": "good"} is accepted; anything
// else is refused by the middleware with the message "bad token". Events:
//   "echo" (args...)           -> emits "echo" with the same args (binary included)
//   "echo" (args..., ack)      -> acks with the same args
//   "blob" ()                  -> emits "blob" with Buffers nested in an object and an array
//   "bin_ack" (n, ack)         -> acks with a Buffer of n bytes 0..n-1 and a text
//   "ask" (question)           -> emits "question" with an ack request; the answer comes
//                                 back as "answered" {type, hex|value} (bytes as hex)
//   "kick" ()                  -> server-side disconnect of the namespace
//   "sleep" (ms, ack)          -> acks after ms milliseconds
"use strict";

const http = require("http");
const { Server } = require("socket.io");

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
}

function log(record) {
  process.stdout.write(JSON.stringify(record) + "\n");
}

function describe(value) {
  if (Buffer.isBuffer(value)) return { type: "bytes", hex: value.toString("hex") };
  return { type: typeof value, value };
}

const httpServer = http.createServer();
const io = new Server(httpServer, {
  pingInterval: option("--ping-interval", 25000),
  pingTimeout: option("--ping-timeout", 20000),
  maxHttpBufferSize: 1e6,
});

function serve(namespace) {
  namespace.use((socket, next) => {
    const auth = socket.handshake.auth || {};
    if (auth.token === "good") return next();
    log({ ev: "refused", nsp: namespace.name, auth });
    next(new Error("bad token"));
  });
  namespace.on("connection", (socket) => {
    const headers = socket.handshake.headers;
    log({
      ev: "connection", nsp: namespace.name, sid: socket.id, auth: socket.handshake.auth,
      thread: headers["x-chainlit-thread-id"] || null, session: headers["x-test-session"] || null,
    });
    // Each pong the client sends is logged, so a test can wait for heartbeats to pass.
    socket.conn.on("packet", (packet) => {
      if (packet.type === "pong") log({ ev: "pong", sid: socket.id });
    });
    socket.on("echo", (...args) => {
      const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
      if (ack) ack(...args);
      else socket.emit("echo", ...args);
    });
    socket.on("blob", () => {
      socket.emit("blob", {
        name: "two buffers",
        first: Buffer.from([0, 1, 2, 255]),
        nested: [Buffer.from("hello"), { deeper: Buffer.alloc(0) }, "text"],
      });
    });
    socket.on("bin_ack", (size, ack) => {
      const bytes = Buffer.alloc(size);
      for (let i = 0; i < size; i += 1) bytes[i] = i % 256;
      ack(bytes, "done");
    });
    socket.on("ask", (question) => {
      socket.emit("question", question, (answer) => socket.emit("answered", describe(answer)));
    });
    socket.on("sleep", (ms, ack) => setTimeout(() => ack("slept"), ms));
    socket.on("kick", () => socket.disconnect());
    socket.on("disconnect", (reason) => {
      log({ ev: "disconnect", nsp: namespace.name, sid: socket.id, reason });
    });
  });
}

serve(io.of("/"));
serve(io.of("/chat"));

httpServer.listen(0, "127.0.0.1", () => {
  log({ ev: "listening", port: httpServer.address().port });
});
process.on("SIGTERM", () => process.exit(0));
