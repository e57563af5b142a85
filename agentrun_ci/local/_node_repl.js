// A persistent JavaScript "kernel" for the agentrun-ci local emulator.
// Reads one JSON request per line on stdin: {"id", "code", "timeoutMs"}; evaluates the code
// with the `vm` module in one context that lives as long as this process (so variables
// persist), captures console output, and answers one line: MARK + JSON
// {"id", "events": [...], "status": "ok"|"error"|"timeout", "executionCount"}.
// Code may use ES-module `import` lines and top-level `await` (see prepare()).
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

// ES-module syntax, as notebooks' JavaScript kernels take it: static `import` lines become
// require() calls whose names are globals of the context (so later cells see them), and
// code with top-level `await` runs in an async function whose last expression is returned.
const IMPORT = /^[ \t]*import\s+(?:([\w$]+)\s*,?\s*)?(?:\*\s*as\s+([\w$]+)|\{([^}]*)\})?\s*from\s*(['"][^'"\n]+['"])[ \t]*;?|^[ \t]*import\s*(['"][^'"\n]+['"])[ \t]*;?/gm;

function rewriteImports(code) {
  return code.replace(IMPORT, (all, def, ns, named, from, bare) => {
    if (bare) return `require(${bare});`;
    const parts = [`{ const __m = require(${from});`];
    if (def) parts.push(`globalThis.${def} = __m && __m.__esModule ? __m.default : __m;`);
    if (ns) parts.push(`globalThis.${ns} = __m;`);
    for (const item of (named || '').split(',').map((x) => x.trim()).filter(Boolean)) {
      const [name, alias] = item.split(/\s+as\s+/).map((x) => x.trim());
      parts.push(`globalThis.${alias || name} = __m[${JSON.stringify(name)}];`);
    }
    return parts.join(' ') + ' }';
  });
}

function compiles(source) {
  try { new vm.Script(source); return true; } catch (e) { return false; }
}

function asyncWrap(code) {
  const lines = code.replace(/\s+$/, '').split('\n');
  const globals = [];
  for (let i = 0; i < lines.length; i += 1) {
    // top-level declarations (no indentation) become globals, as they would in a script
    const decl = /^(?:const|let|var)\s+([\w$]+)\s*=/.exec(lines[i]);
    if (decl) lines[i] = lines[i].replace(/^(?:const|let|var)\s+/, 'globalThis.');
    const named = /^(?:async\s+)?(?:function\*?|class)\s+([\w$]+)/.exec(lines[i]);
    if (named) globals.push(named[1]);
  }
  const exportNames = globals.map((n) => `globalThis.${n} = ${n};`).join(' ');
  for (let k = 1; k <= lines.length; k += 1) {
    const tail = lines.slice(lines.length - k).join('\n').replace(/;\s*$/, '');
    if (!tail.trim()) continue;
    const body = `${lines.slice(0, lines.length - k).join('\n')}\n${exportNames}\nreturn (${tail}\n);`;
    const source = `(async () => {\n${body}\n})()`;
    if (compiles(source)) return source;
  }
  return `(async () => {\n${lines.join('\n')}\n${exportNames}\n})()`;
}

function prepare(code) {
  const rewritten = rewriteImports(code);
  try {
    new vm.Script(rewritten);
    return rewritten;
  } catch (e) {
    if (e instanceof SyntaxError && /\bawait\b/.test(rewritten)) {
      const wrapped = asyncWrap(rewritten);
      if (compiles(wrapped)) return wrapped;
    }
    return rewritten; // let the real run report the syntax error
  }
}

async function run(req) {
  events = [];
  count += 1;
  let status = 'ok';
  const timeoutMs = Math.max(1, Math.floor(req.timeoutMs || 30000));
  try {
    let value = vm.runInContext(prepare(req.code), context, {
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
