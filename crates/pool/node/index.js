'use strict';
/**
 * Node workers for forkyard-pool (Rust): a handler and one call.
 *
 *     const { serve } = require('forkyard-pool');
 *     serve(async (request, { signal }) => ({ square: request.n ** 2 }));
 *
 * The parent pool starts this script with a Unix socket at the fd named by
 * FORKYARD_IPC_FD and FORKYARD_IPC_CODEC=json-lines (build the pool with
 * `.codec(forkyard_ipc::Codec::JsonLines)`). The wire, one JSON document per
 * line each way (forkyard-pool's src/protocol.rs is the authority):
 *
 *     parent -> worker  {"forkyard_ipc":1,"codec":"json-lines","sends":{...},"receives":{...}}
 *     worker -> parent  the same hello with "sends" and "receives" swapped
 *     worker -> parent  "Ready"
 *     parent -> worker  {"Task":{"id":7,"req":<request>}}
 *     worker -> parent  {"Done":{"id":7,"result":{"Ok":<response>}}}
 *                    or {"Done":{"id":7,"result":{"Err":{"kind":"TypeError","message":"...","detail":"<stack>"}}}}
 *     parent -> worker  {"Chunk":{"id":9,"items":[<request>,...]}}
 *     worker -> parent  {"Items":{"id":9,"results":[[0,{"Ok":<response>}],...]}}  (each index once)
 *     parent -> worker  {"Cancel":{"id":10}}
 *     worker -> parent  {"Cancelled":{"id":10}}        (once stopped; nothing more for 10)
 *     parent -> worker  "Drain"                        (answer what you have, then exit 0)
 *
 * A Node worker cannot compute the Rust types' structural fingerprints, so it
 * declares the ones the parent announced: the parent's type check then trusts
 * this worker to speak them.
 */

const net = require('node:net');

/** forkyard-ipc's default frame limit: no parent sends a longer line. */
const DEFAULT_MAX_LINE = 16 * 1024 * 1024;

/**
 * The most bytes of an error's detail (its stack) sent, as forkyard-pool's
 * `TaskError::DETAIL_MAX`: a longer one keeps its head and its tail.
 */
const DETAIL_MAX = 16 * 1024;
// TaskError::UNSENDABLE: the kind of a result that cannot be sent (over the
// frame limit, or with no JSON form).
const UNSENDABLE = 'Unsendable';
const DETAIL_HEAD = 4 * 1024;

/**
 * Fails a task with an error kind and message of your choosing:
 * `throw new TaskError('no such user', 'NotFound')` answers kind `NotFound`,
 * message `no such user` (the Rust caller gets `PoolError::Task(e)` with
 * `e.kind() == Some("NotFound")`). A `detail` string, if given, is sent
 * instead of the stack.
 */
class TaskError extends Error {
  constructor(message, kind = 'TaskError', detail = undefined) {
    super(message);
    this.name = kind;
    this.kind = kind;
    if (detail !== undefined) this.detail = String(detail);
  }
}

/**
 * A thrown value as the pool's error: `{ kind, message, detail }`.
 *
 * - kind: the error's `code` when it is a non-empty string (`ENOENT`,
 *   `ERR_INVALID_ARG_TYPE`), else its `name` (`TypeError`, a `TaskError`'s
 *   kind), or its class name when a subclass left `name` as plain `Error`;
 *   `Error` for a thrown value that is not an Error.
 * - message: `err.message`, or the thrown value as text.
 * - detail: a `TaskError`'s `detail`, else `err.stack`, kept to at most
 *   DETAIL_MAX bytes of UTF-8 (its head and its tail).
 *
 * A lone surrogate in any of them becomes U+FFFD, so the line stays JSON the
 * pool can read.
 */
function errorParts(error) {
  if (!(error instanceof Error)) {
    let message;
    try {
      message = String(error);
    } catch {
      message = Object.prototype.toString.call(error);
    }
    return { kind: 'Error', message: wellFormed(message) };
  }
  const ctor = error.constructor && error.constructor.name;
  let kind = error.name && error.name !== 'Error' ? String(error.name) : ctor || 'Error';
  if (typeof error.code === 'string' && error.code) kind = error.code;
  // Each text well formed: a lone surrogate would make the line unreadable.
  const parts = { kind: wellFormed(kind), message: wellFormed(String(error.message)) };
  const detail = error instanceof TaskError && typeof error.detail === 'string' ? error.detail : error.stack;
  if (typeof detail === 'string') parts.detail = wellFormed(boundDetail(detail));
  return parts;
}

/**
 * The text the Rust caller sees for a failed task (its `TaskError`
 * displayed): `"<kind>: <message>"`, or the kind alone when the message is
 * empty.
 */
function describeError(error) {
  const { kind, message } = errorParts(error);
  return message ? `${kind}: ${message}` : kind;
}

/**
 * `detail` kept to at most DETAIL_MAX bytes of UTF-8: its first 4 KiB and its
 * end, with a line saying how many bytes were cut between them. Cut on UTF-8
 * bytes, each cut moved to a character's boundary (a character split at
 * either cut is dropped and counted as cut), so no emoji is split into a lone
 * surrogate.
 */
function boundDetail(detail) {
  // Buffer.from writes a lone surrogate as U+FFFD: the bytes are well formed.
  const data = Buffer.from(detail, 'utf8');
  if (data.length <= DETAIL_MAX) return detail;
  // A continuation byte (10xxxxxx) is inside a character: back off to its start.
  let headEnd = DETAIL_HEAD;
  while (headEnd > 0 && (data[headEnd] & 0xc0) === 0x80) headEnd -= 1;
  let tailStart = data.length - (DETAIL_MAX - DETAIL_HEAD - 40);
  while (tailStart < data.length && (data[tailStart] & 0xc0) === 0x80) tailStart += 1;
  const head = data.toString('utf8', 0, headEnd);
  const tail = data.toString('utf8', tailStart);
  return `${head}\n[... ${tailStart - headEnd} bytes cut ...]\n${tail}`;
}

// A high surrogate with no low one after it, or a low one with no high one
// before it (code units: no `u` flag).
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * `text` with each lone surrogate replaced by U+FFFD (what
 * `String.prototype.toWellFormed` does from Node 20; this package runs on 18).
 * `JSON.stringify` writes a lone surrogate as a `\ud83d` escape, which is not
 * Unicode: the pool would reject the whole line and lose the worker.
 */
const LONE_ESCAPE = /(?<!\\)(?:\\\\)*\\ud[89a-f][0-9a-f]{2}/i;

function wellFormed(text) {
  return text.replace(LONE_SURROGATE, '\ufffd');
}

function errJson(error) {
  return `{"Err":${JSON.stringify(errorParts(error))}}`;
}

function short(text, limit = 200) {
  return text.length <= limit ? text : `${text.slice(0, limit)}... (${text.length} chars)`;
}

/** `{"Ok":value}` as JSON text, or an Err when the value has no JSON form. */
function ok(value) {
  try {
    const json = JSON.stringify(value === undefined ? null : value);
    if (json === undefined) {
      // A function or a symbol: nothing JSON can say.
      throw new TypeError(`a value of type ${typeof value} has no JSON form`);
    }
    // JSON.stringify writes a surrogate pair as it is and escapes only a lone
    // surrogate; such an escape (after an even run of backslashes) is not
    // Unicode, and the pool would reject the line and lose the worker.
    if (json.includes('\\ud') && LONE_ESCAPE.test(json)) {
      throw new TypeError('a string holds a lone surrogate (half a UTF-16 pair), which is not Unicode');
    }
    return `{"Ok":${json}}`;
  } catch (error) {
    return errText(UNSENDABLE, `the response is not JSON: ${error.message || error}`);
  }
}

function errText(kind, message) {
  return `{"Err":${JSON.stringify({ kind: wellFormed(kind), message: wellFormed(message) })}}`;
}

function fail(message) {
  process.stderr.write(`forkyard-pool worker: ${message}\n`);
}

/**
 * Answers the pool's tasks with `handler(request, { signal, id })` until
 * drained, then exits the process.
 *
 * - `request` is the decoded JSON (serde's shape of the Rust request type);
 *   the handler returns the response, or a promise of it; it must have a
 *   JSON form (`undefined` is sent as `null`).
 * - Every task the pool sends runs at once: as many overlap as the pool
 *   grants (`max_in_flight_per_worker`). A handler that computes without
 *   awaiting holds the event loop: such tasks run one at a time.
 * - A thrown error (or a rejected promise) answers its task with its kind,
 *   message and stack (see `errorParts`): the Rust caller gets
 *   `PoolError::Task` with a `TaskError` (`kind()`, `message()`,
 *   `detail()`), which it tells apart from a crash
 *   (`PoolError::WorkerCrashed`). The worker keeps serving.
 * - A chunk (`Pool::map`) runs its items one after the other through the same
 *   handler (`{ signal, id, index }`). The results of items that finish back
 *   to back go out together; as soon as the chunk waits (an item awaits I/O
 *   or a timer), whatever finished goes out, and the rest at its end.
 * - On `Cancel`, `signal` aborts. A handler that rejects then (as `fetch`,
 *   timers/promises and streams do with the signal) answers `Cancelled`; a
 *   chunk starts none of its remaining items. A handler that ignores its
 *   signal cannot be stopped: it answers when it ends, or the pool kills the
 *   worker once its cancel grace has passed.
 * - On `Drain` (or when the parent goes away) it starts nothing new, answers
 *   what it has, and exits 0. A message it cannot read is named on stderr;
 *   it answers what it has and exits 1.
 *
 * @param {(request: any, context: {signal: AbortSignal, id: number, index?: number}) => any} handler
 * @param {{maxLine?: number}} [options]
 */
function serve(handler, options = {}) {
  if (typeof handler !== 'function') {
    throw new TypeError('serve(handler): the handler must be a function');
  }
  const maxLine = options.maxLine === undefined ? DEFAULT_MAX_LINE : options.maxLine;
  if (!Number.isInteger(maxLine) || maxLine < 1) {
    throw new RangeError(`maxLine must be a positive integer, got ${maxLine}`);
  }
  const fd = process.env.FORKYARD_IPC_FD;
  if (fd === undefined) {
    fail('FORKYARD_IPC_FD is not set: start this worker from a forkyard pool');
    process.exit(2);
  }
  const codec = process.env.FORKYARD_IPC_CODEC || 'json-lines';
  if (codec !== 'json-lines') {
    fail(`the parent chose the ${codec} codec; a Node worker speaks json-lines: build the pool with .codec(Codec::JsonLines)`);
    process.exit(2);
  }
  // allowHalfOpen: a parent that shuts its side for writing still reads the
  // answers to the tasks it sent.
  const socket = new net.Socket({ fd: Number(fd), readable: true, writable: true, allowHalfOpen: true });
  new Worker(handler, socket, maxLine);
}

class Worker {
  constructor(handler, socket, maxLine) {
    this.handler = handler;
    this.socket = socket;
    this.maxLine = maxLine;
    this.running = new Map(); // id -> job
    this.outbox = [];
    this.flushScheduled = false;
    this.helloDone = false;
    this.stopped = false; // Drain, EOF or an error: read no more
    this.exiting = false;
    this.error = null;
    this.pending = []; // Buffers of the line being read
    this.pendingLength = 0;
    socket.on('data', (data) => this.onData(data));
    socket.on('end', () => this.stop(null));
    socket.on('error', (error) => this.stop(this.helloDone ? null : `the channel: ${error.message}`));
  }

  onData(data) {
    let start = 0;
    while (!this.stopped) {
      const newline = data.indexOf(10, start);
      if (newline < 0) {
        if (start < data.length) {
          this.pending.push(start === 0 ? data : data.subarray(start));
          this.pendingLength += data.length - start;
        }
        if (this.pendingLength > this.maxLine) {
          this.stop(`a message longer than maxLine (${this.maxLine} bytes)`);
        }
        return;
      }
      let line = data.subarray(start, newline);
      if (this.pending.length) {
        this.pending.push(line);
        line = Buffer.concat(this.pending);
        this.pending = [];
        this.pendingLength = 0;
      }
      start = newline + 1;
      if (line.length > this.maxLine) {
        this.stop(`a message longer than maxLine (${this.maxLine} bytes)`);
        return;
      }
      this.onLine(line.toString('utf8'));
    }
  }

  onLine(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch (error) {
      this.stop(`a message that is not JSON (${error.message}): ${short(text)}`);
      return;
    }
    if (!this.helloDone) {
      this.helloDone = true;
      if (!message || typeof message !== 'object' || !('forkyard_ipc' in message) || !message.sends || !message.receives) {
        this.stop(`no valid hello from the parent: ${short(text)}`);
        return;
      }
      this.send({ forkyard_ipc: message.forkyard_ipc, codec: 'json-lines', sends: message.receives, receives: message.sends });
      this.send('Ready');
      return;
    }
    if (message === 'Drain') {
      this.stop(null);
      return;
    }
    const kinds = message && typeof message === 'object' && !Array.isArray(message) ? Object.keys(message) : [];
    const body = kinds.length === 1 ? message[kinds[0]] : null;
    if (body && typeof body === 'object') {
      if (kinds[0] === 'Task' && 'req' in body) {
        const job = this.newJob(body, text);
        if (job) this.runTask(job, body.req);
        return;
      }
      if (kinds[0] === 'Chunk' && Array.isArray(body.items)) {
        const job = this.newJob(body, text);
        if (job) this.runChunk(job, body.items);
        return;
      }
      if (kinds[0] === 'Cancel') {
        this.cancel(body.id);
        return;
      }
    }
    this.stop(`a message this worker does not know: ${short(text)}`);
  }

  newJob(body, text) {
    const id = body.id;
    if (!Number.isSafeInteger(id) || id < 0) {
      this.stop(`a task without a valid id: ${short(text)}`);
      return null;
    }
    if (this.running.has(id)) {
      this.stop(`task ${id} is already running: ${short(text)}`);
      return null;
    }
    const job = { id, controller: new AbortController(), cancelRequested: false, results: [], timer: null };
    this.running.set(id, job);
    return job;
  }

  /** Aborts the job's signal; unknown or answered ids are ignored. */
  cancel(id) {
    const job = this.running.get(id);
    if (!job || job.cancelRequested) return;
    job.cancelRequested = true;
    job.controller.abort(new DOMException('the pool cancelled the task', 'AbortError'));
  }

  async runTask(job, request) {
    let result;
    try {
      result = ok(await this.handler(request, { signal: job.controller.signal, id: job.id }));
    } catch (error) {
      if (job.cancelRequested) {
        this.running.delete(job.id);
        this.send({ Cancelled: { id: job.id } });
        this.settled();
        return;
      }
      result = errJson(error);
    }
    this.running.delete(job.id);
    let line = `{"Done":{"id":${job.id},"result":${result}}}`;
    const size = Buffer.byteLength(line);
    if (size > this.maxLine) {
      line = `{"Done":{"id":${job.id},"result":${errText(UNSENDABLE, `the response is ${size} bytes, over the frame limit (${this.maxLine})`)}}}`;
    }
    this.sendLine(line);
    this.settled();
  }

  async runChunk(job, items) {
    let stopped = false;
    const signal = job.controller.signal;
    for (let index = 0; index < items.length; index++) {
      if (job.cancelRequested) {
        stopped = true;
        break;
      }
      let result;
      try {
        result = ok(await this.handler(items[index], { signal, id: job.id, index }));
      } catch (error) {
        if (job.cancelRequested) {
          stopped = true;
          break;
        }
        result = errJson(error);
      }
      job.results.push([index, result]);
      // Sent once the event loop turns: items that finish back to back run
      // in one turn (their awaits are microtasks) and go out together; an
      // item that waits for I/O or a timer lets the turn end, and what
      // finished before it goes out then, not after it.
      if (job.timer === null) {
        job.timer = setImmediate(() => this.sendResults(job));
      }
    }
    this.running.delete(job.id);
    this.sendResults(job);
    if (stopped) this.send({ Cancelled: { id: job.id } });
    this.settled();
  }

  /** Sends a chunk's results so far, in Items messages that fit a frame. */
  sendResults(job) {
    if (job.timer !== null) {
      clearImmediate(job.timer);
      job.timer = null;
    }
    const results = job.results;
    job.results = [];
    const head = `{"Items":{"id":${job.id},"results":[`;
    const tail = ']}}';
    const frame = Buffer.byteLength(head) + tail.length;
    let parts = [];
    let size = frame;
    for (const [index, result] of results) {
      let part = `[${index},${result}]`;
      let bytes = Buffer.byteLength(part);
      if (frame + bytes > this.maxLine) {
        part = `[${index},${errText(UNSENDABLE, `the response is ${bytes} bytes, over the frame limit (${this.maxLine})`)}]`;
        bytes = Buffer.byteLength(part);
      }
      if (parts.length && size + 1 + bytes > this.maxLine) {
        this.sendLine(head + parts.join(',') + tail);
        parts = [];
        size = frame;
      }
      size += bytes + (parts.length ? 1 : 0);
      parts.push(part);
    }
    if (parts.length) this.sendLine(head + parts.join(',') + tail);
  }

  send(message) {
    this.sendLine(JSON.stringify(message));
  }

  sendLine(line) {
    // Answers that end in the same turn of the event loop go out in one write.
    this.outbox.push(line, '\n');
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush() {
    this.flushScheduled = false;
    if (this.outbox.length && !this.socket.destroyed) {
      this.socket.write(this.outbox.join(''));
    }
    this.outbox = [];
  }

  /** Reads no more; exits once every job has answered. */
  stop(error) {
    if (this.stopped) return;
    this.stopped = true;
    this.error = error;
    this.socket.pause();
    this.settled();
  }

  /** Called when a job ends: exits if stopped and nothing runs. */
  settled() {
    if (!this.stopped || this.running.size || this.exiting) return;
    this.exiting = true;
    setImmediate(() => {
      this.flush();
      const code = this.error === null ? 0 : 1;
      if (this.error !== null) fail(this.error);
      if (this.socket.destroyed || !this.socket.writable) {
        process.exit(code);
      }
      this.socket.end(() => process.exit(code));
      // The parent gone without reading: do not wait forever for the end.
      this.socket.on('error', () => process.exit(code));
    });
  }
}

module.exports = { serve, TaskError, describeError, errorParts, DEFAULT_MAX_LINE, DETAIL_MAX, UNSENDABLE };
