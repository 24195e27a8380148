'use strict';
// The worker forkyard-pool's Rust tests run (tests/it/node.rs): the `Work`
// requests of tests/it/python.rs, on this module.
//
//     node worker.js
//
// FORKYARD_POOL_NODE_MODULE names the module to load (the tests' npm install
// into a temporary directory); by default it is this directory's parent.

const fs = require('node:fs');
const { setTimeout: sleep } = require('node:timers/promises');

const modulePath = process.env.FORKYARD_POOL_NODE_MODULE || require('node:path').join(__dirname, '..');
const forkyard = require(modulePath);

/** An error class of the worker's own (its kind is its class name). */
class Refused extends Error {}

const builtins = { Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError };

// Meet is a barrier: `waiting` tasks wait for the current `generation` to
// end, which the n-th arrival does; a task that gives up leaves the count.
let waiting = 0;
let generation = 0;
const arrivals = new Set(); // wake-ups of the waiting tasks

function fail({ kind, message }) {
  if (kind === 'Refused') throw new Refused(message);
  // A high surrogate with no low one: half an emoji.
  if (kind === 'Undecodable') throw new TypeError(`${message}\ud83d`);
  if (builtins[kind]) throw new builtins[kind](message);
  if (kind === 'Detailed') throw new forkyard.TaskError(message, kind, 'given by the handler');
  throw new forkyard.TaskError(message, kind);
}

// Two functions in turn, so a stack of `depth` frames (every one kept).
function deepA(n, message) {
  if (n <= 0) throw new Refused(message);
  return deepB(n - 1, message);
}

function deepB(n, message) {
  if (n <= 0) throw new Refused(message);
  return deepA(n - 1, message);
}

async function meet({ n, within_ms: withinMs }) {
  const mine = generation;
  waiting += 1;
  if (waiting === n) {
    waiting = 0;
    generation += 1;
    for (const wake of arrivals) wake();
    return n;
  }
  let wake;
  const woken = new Promise((resolve) => {
    wake = resolve;
    arrivals.add(resolve);
  });
  const timer = new Promise((resolve) => setTimeout(resolve, withinMs));
  await Promise.race([woken, timer]);
  arrivals.delete(wake);
  if (generation === mine) {
    waiting -= 1;
    const error = new Error(`${waiting + 1} of ${n} tasks ran at once`);
    error.name = 'TimeoutError';
    throw error;
  }
  return n;
}

async function waitFile(path, signal) {
  fs.writeFileSync(`${path}.started`, '');
  const deadline = Date.now() + 20000;
  while (!fs.existsSync(path) && Date.now() < deadline) {
    await sleep(5, undefined, { signal }); // rejects when the task is cancelled
  }
  return fs.existsSync(path);
}

function hang(signal) {
  // A well-behaved handler: it gives up when its signal aborts.
  return new Promise((_, reject) => {
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

async function handle(request, { signal }) {
  switch (request) {
    case 'Pid':
      return process.pid;
    case 'Module':
      return require.resolve(modulePath);
    case 'Crash':
      process.abort();
      break;
    case 'Exit0':
      process.exit(0);
      break;
    case 'Hang':
      return hang(signal);
    case 'Garbage':
      fs.writeSync(Number(process.env.FORKYARD_IPC_FD), '}{ not json\n');
      return 0;
    case 'Unserializable':
      return 10n; // a BigInt: JSON.stringify refuses it
    case 'LoneSurrogate':
      return 'half \ud83d';
    default:
      break;
  }
  const [kind] = Object.keys(request);
  const value = request[kind];
  switch (kind) {
    case 'Echo':
      return value;
    case 'Big':
      return 'x'.repeat(value);
    case 'Pause':
      await sleep(value);
      return value;
    case 'Deaf':
      fs.writeFileSync(`${value}.started`, '');
      return new Promise(() => {}); // never settles, never looks at the signal
    case 'Once':
      fs.writeFileSync(value, '', { flag: 'wx' });
      return value;
    case 'Fail':
      return fail(value);
    case 'Deep': {
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = Infinity;
      try {
        return deepA(value.depth, value.message);
      } finally {
        Error.stackTraceLimit = limit;
      }
    }
    case 'Meet':
      return meet(value);
    case 'WaitFile':
      return waitFile(value, signal);
    case 'CrashOnce':
      if (!fs.existsSync(value.marker)) {
        fs.writeFileSync(value.marker, '');
        process.abort();
      }
      return 'survived';
    default:
      throw new RangeError(`unsupported request ${JSON.stringify(request)}`);
  }
}

forkyard.serve(handle);
