// A persistent JavaScript "kernel" for the agentrun-ci local emulator.
// Reads one JSON request per line on stdin: {"id", "code", "timeoutMs"}; evaluates the code
// with the `vm` module in one context that lives as long as this process (so variables
// persist), captures console output, and answers one line: MARK + JSON
// {"id", "events": [...], "status": "ok"|"error"|"timeout", "executionCount"}.
'use strict';
const vm = require('vm');
const util = require('util');
const path = require('path');
const readline = require('readline');
const { createRequire } = require('module');

const MARK = '\u0000AGENTRUN\u0000';
let events = null;
const emit = (type) => (...args) => {
  if (events) events.push({ type, text: util.format(...args) + '\n' });
};
const sandboxConsole = {
  log: emit('stdout'), info: emit('stdout'), debug: emit('stdout'),
  warn: emit('stderr'), error: emit('stderr'), trace: emit('stderr'),
  dir: (o) => emit('stdout')(util.inspect(o)),
};
const context = vm.createContext({
  console: sandboxConsole,
  require: createRequire(path.join(process.cwd(), 'repl.js')),
  process, Buffer, URL, URLSearchParams, TextEncoder, TextDecoder,
  setTimeout, clearTimeout, setInterval, clearInterval, setImmediate, clearImmediate,
  structuredClone: globalThis.structuredClone, fetch: globalThis.fetch,
});
let count = 0;

async function run(req) {
  events = [];
  count += 1;
  let status = 'ok';
  const timeoutMs = Math.max(1, Math.floor(req.timeoutMs || 30000));
  try {
    let value = vm.runInContext(req.code, context, {
      filename: `cell${count}.js`, timeout: timeoutMs, breakOnSigint: true,
    });
    if (value && typeof value.then === 'function') {
      let timer;
      const limit = new Promise((_, reject) => {
        timer = setTimeout(() => reject({ agentrunTimeout: true }), timeoutMs);
      });
      try { value = await Promise.race([value, limit]); } finally { clearTimeout(timer); }
    }
    if (value !== undefined) {
      const text = util.inspect(value);
      events.push({ type: 'result', text, data: { 'text/plain': text }, isMainResult: true,
                    executionCount: count });
    }
  } catch (e) {
    const timedOut = e && (e.code === 'ERR_SCRIPT_EXECUTION_TIMEOUT' || e.agentrunTimeout);
    status = timedOut ? 'timeout' : 'error';
    let name; let value; let tb;
    if (timedOut) {
      name = 'TimeoutError';
      value = `execution exceeded ${timeoutMs / 1000} s and was interrupted`;
      tb = `${name}: ${value}`;
    } else {
      name = (e && e.name) || 'Error';
      value = e && e.message !== undefined ? String(e.message) : String(e);
      tb = (e && e.stack) || `${name}: ${value}`;
    }
    events.push({ type: 'error', name, value, traceback: tb, text: tb });
  }
  const out = { id: req.id, events, status, executionCount: count };
  events = null;
  process.stdout.write(MARK + JSON.stringify(out) + '\n');
}

let chain = Promise.resolve();
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return;
  const req = JSON.parse(line);
  chain = chain.then(() => run(req));
}).on('close', () => chain.then(() => process.exit(0)));
