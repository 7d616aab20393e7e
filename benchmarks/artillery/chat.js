// The chat scenario's steps for Artillery's socket.io engine (see ../bench_chat.py).
//
// The engine connects each virtual user with the Chainlit auth payload the
// script sets (the scenario's socketio.auth: a sessionId and threadId per user);
// these functions play the rest of the scenario on that socket: a turn
// (client_message, then wait for task_end, timing the first streamed token)
// or, every BENCH_RESUME_EVERY seconds, a thread switch (clear_session, as
// Chainlit's own client sends before it lets a session go, then reconnect with
// the other thread's id and a new sessionId), due on a fixed grid from the
// user's start (ours and the other peers use a grid from the run's start, at
// each session's own offset: the same rate). Every wait has a deadline. Users
// stop at the end of the run (BENCH_DURATION_S after this worker's first user
// started); a turn cut by that end is not counted.
'use strict';

const crypto = require('node:crypto');

const DURATION_MS = Number(process.env.BENCH_DURATION_S || 30) * 1000;
const RESUME_EVERY_MS = Number(process.env.BENCH_RESUME_EVERY || 5) * 1000;
const TURN_TIMEOUT_MS = 30000;
const CONNECT_TIMEOUT_MS = 10000;
const CONNECTION_SUCCESSFUL = 'connection_successful';  // as Chainlit's react-client
const CLEAR_SESSION = 'clear_session';  // likewise, before it disconnects
let runEndsAt = null;

function start(context, events) {
  const now = Date.now();
  if (runEndsAt === null) {
    runEndsAt = now + DURATION_MS;
  }
  const socket = context.sockets[''];
  // What Chainlit's own client sends once connected (the engine connected this
  // socket): the app then starts or resumes the session's thread.
  socket.emit(CONNECTION_SUCCESSFUL);
  events.emit('counter', 'chat.handshakes', 1);
  context.chat = {
    socket,
    threads: [socket.auth.threadId, crypto.randomUUID()],
    index: 0,
    nextResume: RESUME_EVERY_MS > 0 ? now + RESUME_EVERY_MS : Infinity,  // 0: never
  };
  return context.chat;
}

function userMessage(threadId) {
  return {
    message: {
      threadId,
      id: crypto.randomUUID(),
      name: 'User',
      type: 'user_message',
      output: 'hello',
      createdAt: new Date().toISOString(),
      metadata: {},
    },
    fileReferences: [],
  };
}

function turn(chat, events, done) {
  const socket = chat.socket;
  const started = process.hrtime.bigint();
  const left = runEndsAt - Date.now();
  let firstToken = null;
  let finished = false;
  const onToken = () => {
    if (firstToken === null) {
      firstToken = process.hrtime.bigint();
    }
  };
  const finish = (ended) => {
    if (finished) {
      return;
    }
    finished = true;
    clearTimeout(timer);
    socket.off('stream_start', onToken);
    socket.off('stream_token', onToken);
    socket.off('task_end', onEnd);
    if (ended) {
      events.emit('counter', 'chat.turns', 1);
      if (firstToken !== null) {
        events.emit('histogram', 'chat.first_token', Number(firstToken - started) / 1e6);
      }
    } else if (left >= TURN_TIMEOUT_MS) {
      events.emit('counter', 'chat.turns_failed', 1);  // else the end of the run cut it
    }
    done();
  };
  // The target also sends task_end in answer to connection_successful: only one
  // after this turn's first token ends the turn.
  const onEnd = () => {
    if (firstToken !== null) {
      finish(true);
    }
  };
  const timer = setTimeout(() => finish(false), Math.max(0, Math.min(TURN_TIMEOUT_MS, left)));
  socket.on('stream_start', onToken);
  socket.on('stream_token', onToken);
  socket.on('task_end', onEnd);
  socket.emit('client_message', userMessage(chat.threads[chat.index]));
}

function switchThread(chat, events, done) {
  const socket = chat.socket;
  chat.index = 1 - chat.index;
  socket.emit(CLEAR_SESSION);
  socket.disconnect();
  events.emit('counter', 'chat.handshakes', 1);
  socket.auth = Object.assign({}, socket.auth, {
    sessionId: crypto.randomUUID(),
    threadId: chat.threads[chat.index],
  });
  let finished = false;
  const finish = (ok) => {
    if (finished) {
      return;
    }
    finished = true;
    clearTimeout(timer);
    socket.off('connect', onConnect);
    socket.off('connect_error', onError);
    if (!ok) {
      events.emit('counter', 'chat.resumes_failed', 1);
      chat.dead = true;
    }
    // The next point of the grid still ahead: a slow switch does not push the later ones.
    const now = Date.now();
    while (chat.nextResume <= now) {  // (never Infinity here: a switch was due)
      chat.nextResume += RESUME_EVERY_MS;
    }
    done();
  };
  const onConnect = () => {
    socket.emit(CONNECTION_SUCCESSFUL);
    finish(true);
  };
  const onError = () => finish(false);
  const timer = setTimeout(() => finish(false), CONNECT_TIMEOUT_MS);
  socket.once('connect', onConnect);
  socket.once('connect_error', onError);
  socket.connect();
}

// A flow step: a thread switch when one is due, a turn otherwise.
function step(context, events, done) {
  const chat = context.chat || start(context, events);
  if (Date.now() >= chat.nextResume) {
    return switchThread(chat, events, done);
  }
  return turn(chat, events, done);
}

// The loop's condition: until the run ends or the session died.
function running(context, next) {
  const chat = context.chat;
  return next(!(chat && chat.dead) && Date.now() < runEndsAt);
}

module.exports = { step, running };
