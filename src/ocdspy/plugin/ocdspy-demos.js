// ocdspy per-step demos for OpenCode: plain JavaScript (ES module), no build step, no packages.
//
// Written by `ocdspy export` beside its demo pool. On every model request of its agent it picks
// the pool's demos most like the current state of the turn and adds them to the system prompt.
// The rule is docs/demo-selection.md of ocdspy; src/ocdspy/program/select.py implements the same
// rule for `ocdspy evaluate`, and a parity test holds the two together.
//
// Whatever goes wrong (no pool, a bad or edited pool, a bug here) it logs one warning and adds
// nothing: the agent then works with the static demos in its own prompt.

import fs from "node:fs";

// Rewritten by `ocdspy export` (one line): the agent served, its pool file (beside this file),
// and the pool format version this plugin reads.
const CONFIG = { agent: "tuned", pool: "ocdspy-tuned.pool.json", version: 1 };

const POOL_FORMAT = "ocdspy-demo-pool";
const SERVICE = "ocdspy-demos";
const TOKEN = /[A-Za-z0-9_./-]+/g;
const VISIBLE = /[^ \t\r\n]/;
const N_CAP = 4;
const WEIGHTS = { n: 1, last: 3, lastout: 2, prev: 1, last2: 2 };
const MAX_PENDING = 256;

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isString = (v) => typeof v === "string";

// ------------------------------------------------------------------------------- the rule

function words(text) {
  const out = new Set();
  for (const m of String(text).matchAll(TOKEN)) out.add(m[0].toLowerCase());
  return out;
}

function stateFeatures(calls) {
  const n = calls.length;
  const f = { n: [String(Math.min(n, N_CAP))] };
  if (n >= 1) {
    const last = calls[n - 1];
    f.last = [last.tool];
    f.lastout = [last.tool, last.ok ? "ok" : "failed"];
  }
  if (n >= 2) {
    f.prev = [calls[n - 2].tool];
    f.last2 = [calls[n - 2].tool, calls[n - 1].tool];
  }
  return f;
}

function sameValue(a, b) {
  return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => x === b[i]);
}

// A prepared state: its features and its words, computed once.
function prepare(state) {
  return { features: stateFeatures(state.calls), words: words(state.task) };
}

function score(q, d) {
  let s = 0;
  for (const [name, value] of Object.entries(q.features)) {
    if (sameValue(value, d.features[name])) s += WEIGHTS[name];
  }
  let i = 0;
  for (const w of q.words) if (d.words.has(w)) i += 1;
  const u = q.words.size + d.words.size - i;
  return u === 0 ? { s: BigInt(s), i: 0n, u: 1n } : { s: BigInt(s), i: BigInt(i), u: BigInt(u) };
}

// Exact comparison of s + i/u, higher first (integers only: no floating point).
function compareScores(a, b) {
  const left = (a.s * a.u + a.i) * b.u;
  const right = (b.s * b.u + b.i) * a.u;
  return left > right ? -1 : left < right ? 1 : 0;
}

// The chosen demos of `pool` for `state` ({task, calls: [{tool, ok}]}), in pool order.
function selectDemos(pool, state, prepared) {
  const demos = pool.demos;
  if (demos.length <= pool.k) return demos.slice();
  const q = prepare(state);
  const ds = prepared || demos.map(prepare);
  const ranked = demos.map((_, idx) => ({ idx, sc: score(q, ds[idx]) }));
  ranked.sort((a, b) => compareScores(a.sc, b.sc) || a.idx - b.idx);
  const chosen = new Set(ranked.slice(0, pool.k).map((r) => r.idx));
  return demos.filter((_, idx) => chosen.has(idx));
}

function renderSelection(pool, chosen) {
  return chosen.length ? pool.intro + "\n\n" + chosen.map((d) => d.text).join("\n\n") : "";
}

// ------------------------------------------------------------------ state from OpenCode messages

const infoOf = (m) => (isObject(m) && isObject(m.info) ? m.info : {});
const partsOf = (m) => (isObject(m) && Array.isArray(m.parts) ? m.parts.filter(isObject) : []);
const visible = (t) => isString(t) && VISIBLE.test(t);

function isAutomatic(parts) {
  if (!parts.length) return false;
  for (const p of parts) {
    if (p.type === "text" && p.synthetic !== true && p.ignored !== true) return false;
    if (p.type === "file" || p.type === "subtask" || p.type === "agent") return false;
  }
  return parts.some((p) => p.type === "compaction" || p.synthetic === true);
}

function texts(parts, synthetic) {
  return parts
    .filter((p) => p.type === "text" && (p.synthetic === true) === synthetic && p.ignored !== true && visible(p.text))
    .map((p) => p.text);
}

function taskOf(parts) {
  let found = texts(parts, false);
  if (!found.length) found = parts.filter((p) => p.type === "subtask" && visible(p.prompt)).map((p) => p.prompt);
  if (!found.length) found = texts(parts, true);
  return found.join("\n\n");
}

function callOk(state) {
  if (!isObject(state)) return true;
  if (state.status === "error" || state.status === "pending" || state.status === "running") return false;
  const code = isObject(state.metadata) ? state.metadata.exit : undefined;
  return !(state.status === "completed" && typeof code === "number" && Number.isInteger(code) && code !== 0);
}

// The state of the turn in `messages` ([{info, parts}]), or null when there is no user request.
function stateFromMessages(messages) {
  let start = -1;
  for (let i = messages.length - 1; i >= 0; i--) {
    if (infoOf(messages[i]).role === "user" && !isAutomatic(partsOf(messages[i]))) {
      start = i;
      break;
    }
  }
  if (start < 0) return null;
  const calls = [];
  for (const m of messages.slice(start + 1)) {
    const info = infoOf(m);
    if (info.role !== "assistant" || info.summary === true) continue;
    for (const p of partsOf(m)) {
      if (p.type === "tool") calls.push({ tool: isString(p.tool) ? p.tool : "unknown", ok: callOk(p.state) });
    }
  }
  return { task: taskOf(partsOf(messages[start])), calls };
}

// The agent the user talks to now: info.agent of the last user message.
function requestAgent(messages) {
  for (let i = messages.length - 1; i >= 0; i--) {
    const info = infoOf(messages[i]);
    if (info.role === "user") return isString(info.agent) ? info.agent : null;
  }
  return null;
}

// ---------------------------------------------------------------------------- the pool file

// Throws an Error whose message names the field, for a pool this plugin cannot use.
function checkPool(pool, agent, version) {
  const bad = (where, what) => {
    throw new Error(`${where}: ${what}`);
  };
  if (!isObject(pool)) bad("(file)", "expected a JSON object");
  if (pool.format !== POOL_FORMAT) bad("format", `expected "${POOL_FORMAT}", got ${JSON.stringify(pool.format)}`);
  if (pool.version !== version) {
    bad("version", `this plugin reads version ${version}, the pool is version ${JSON.stringify(pool.version)}; export the agent again`);
  }
  if (pool.agent !== agent) bad("agent", `the pool is for agent ${JSON.stringify(pool.agent)}, this plugin serves "${agent}"`);
  if (!Number.isInteger(pool.k) || pool.k < 1) bad("k", "expected an integer of at least 1");
  if (!isString(pool.intro)) bad("intro", "expected a string");
  if (!Array.isArray(pool.demos)) bad("demos", "expected a list");
  pool.demos.forEach((d, i) => {
    if (!isObject(d)) bad(`demos.${i}`, "expected an object");
    for (const key of ["id", "task", "text"]) if (!isString(d[key])) bad(`demos.${i}.${key}`, "expected a string");
    if (!Array.isArray(d.calls)) bad(`demos.${i}.calls`, "expected a list");
    d.calls.forEach((c, j) => {
      if (!isObject(c) || !isString(c.tool)) bad(`demos.${i}.calls.${j}.tool`, "expected a string");
      if (typeof c.ok !== "boolean") bad(`demos.${i}.calls.${j}.ok`, "expected true or false");
    });
  });
  return pool;
}

function loadPool(url, agent, version) {
  let text;
  try {
    text = fs.readFileSync(url, "utf8");
  } catch (e) {
    throw new Error(`cannot read the demo pool (${e && e.code ? e.code : e})`);
  }
  let pool;
  try {
    pool = JSON.parse(text);
  } catch (e) {
    throw new Error(`the demo pool is not valid JSON (${e && e.message ? e.message : e})`);
  }
  return checkPool(pool, agent, version);
}

// ------------------------------------------------------------------------------- the plugin

function makeWarn(ctx) {
  const said = new Set();
  return async (message) => {
    const line = `${SERVICE}: ${message}`;
    if (said.has(line)) return;
    said.add(line);
    try {
      await ctx.client.app.log({ body: { service: SERVICE, level: "warn", message: line } });
    } catch {
      try {
        console.error(line);
      } catch {
        // nowhere left to say it; never let a warning break OpenCode
      }
    }
  };
}

const OFF = "per-step demos are off; the agent uses the demos in its prompt";

const reason = (e) => (e && e.message ? e.message : String(e));

async function create(ctx, config) {
  const warn = makeWarn(ctx || {});
  let pool;
  let prepared;
  let where = config.pool;
  try {
    const url = new URL(config.pool, import.meta.url);
    where = url.protocol === "file:" ? decodeURIComponent(url.pathname) : String(url);
    pool = loadPool(url, config.agent, config.version);
    prepared = pool.demos.map(prepare);
  } catch (e) {
    await warn(`${where}: ${reason(e)}; ${OFF}`);
    return {};
  }
  const pending = new Map();
  return {
    "experimental.chat.messages.transform": async (_input, output) => {
      let session;
      try {
        const messages = output && Array.isArray(output.messages) ? output.messages : [];
        session = infoOf(messages[messages.length - 1]).sessionID;
        if (!isString(session)) return;
        pending.delete(session);
        if (requestAgent(messages) !== config.agent) return;
        const state = stateFromMessages(messages);
        if (!state) return;
        const text = renderSelection(pool, selectDemos(pool, state, prepared));
        if (!text) return;
        if (pending.size >= MAX_PENDING) pending.delete(pending.keys().next().value);
        pending.set(session, text);
      } catch (e) {
        if (isString(session)) pending.delete(session);
        warn(`choosing demos failed: ${reason(e)}; nothing added`);
      }
    },
    "experimental.chat.system.transform": async (input, output) => {
      try {
        const text = input && isString(input.sessionID) ? pending.get(input.sessionID) : undefined;
        if (text && output && Array.isArray(output.system)) output.system.push(text);
      } catch (e) {
        warn(`adding demos failed: ${reason(e)}; nothing added`);
      }
    },
  };
}

// The plugin factory: the module's only export, since OpenCode calls every export as a plugin
// factory. It never throws.
export default async function OcdspyDemos(ctx) {
  try {
    return await create(ctx, CONFIG);
  } catch (e) {
    try {
      console.error(`${SERVICE}: ${reason(e)}; ${OFF}`);
    } catch {
      // never let a warning break OpenCode
    }
    return {};
  }
}

// For tests and tools; properties, not exports (OpenCode would call exports as plugins).
Object.assign(OcdspyDemos, {
  CONFIG,
  create,
  words,
  stateFeatures,
  score,
  compareScores,
  selectDemos,
  renderSelection,
  stateFromMessages,
  requestAgent,
  checkPool,
  loadPool,
});
