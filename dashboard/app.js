// hostlb's web dashboard: draws GET /v1/view (src/control/view/live-view.ts,
// LiveViewSnapshot) as it streams, once a second, and offers drain, undrain
// and rolling restart behind a confirmation. The data is hostlb's own; this
// page keeps none but the token (sessionStorage) and the last snapshot.
//
// The token comes from the URL fragment (#token=…, which a browser never
// sends), or the form; every request carries it as a bearer token. The
// stream is read with fetch (EventSource cannot send a header) and
// reconnects with backoff. Nothing from hostlb is ever put in as HTML.
/* global document, window, location, history, sessionStorage, fetch, TextDecoder, AbortController, ResizeObserver */

import uPlot from './uplot.js';

const TOKEN_KEY = 'hostlb-dashboard-token';
/** No byte from the stream for this long (views come every second): the connection is dead. */
const STALL_MS = 6000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const EVENTS_KEPT = 30;
const COLORS = ['#2563eb', '#db2777', '#16a34a', '#ea580c', '#7c3aed', '#0891b2', '#ca8a04', '#dc2626', '#4b5563', '#059669'];
const EVENT_WORDS = {
  daemon_up: 'up', daemon_down: 'down', daemon_drained: 'drained', daemon_restarted: 'restarted',
  weight_changed: 'weight changed', daemon_started: 'started', daemon_exited: 'exited',
};

const state = {
  token: null,
  view: null,
  /** The port whose share the chart draws. */
  port: null,
  events: [],
  lastEventId: 0,
  backoffMs: BACKOFF_MIN_MS,
  chart: null,
  chartKey: '',
  refreshing: false,
  refreshAgain: false,
  /** Actions waiting for their answer, by key, so their button stays disabled. */
  busy: new Set(),
};

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

// ------------------------------------------------------------------ DOM helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  node.append(...children);
  return node;
}

function setText(node, text) {
  const t = String(text);
  if (node.textContent !== t) node.textContent = t;
}

function setAttr(node, name, value) {
  const v = String(value);
  if (node.getAttribute(name) !== v) node.setAttribute(name, v);
}

/**
 * Keeps `parent`'s children in step with `items`, one per key, in order:
 * an existing child is updated in place (so a button keeps focus and a
 * <details> stays open), a new one made, a gone one removed.
 */
function sync(parent, items, keyOf, make, update) {
  const old = new Map();
  for (const child of parent.children) old.set(child.dataset.key, child);
  let previous = null;
  for (const item of items) {
    const key = keyOf(item);
    let node = old.get(key);
    if (node === undefined) {
      node = make(item);
      node.dataset.key = key;
    }
    old.delete(key);
    update(node, item);
    const want = previous === null ? parent.firstChild : previous.nextSibling;
    if (node !== want) parent.insertBefore(node, want);
    previous = node;
  }
  for (const node of old.values()) node.remove();
}

/** A row of `labels.length` cells, each labelled for the narrow-screen card layout; `first` spans the card. */
function makeRow(labels, classes = []) {
  return el('tr', {}, ...labels.map((label, i) => el('td', { 'data-label': label, class: [i === 0 ? 'first' : '', classes[i] ?? ''].join(' ').trim() || undefined })));
}

// ------------------------------------------------------------------ formatting

function duration(seconds) {
  if (seconds === null || seconds === undefined) return '–';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function bytes(n) {
  if (n === null || n === undefined) return '–';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

const number = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'));
const percent = (x, digits = 0) => `${(x * 100).toFixed(digits)}%`;
/** Effective weights are ×100 (two decimals on the configured weight's scale). */
const weight = (w) => String(Math.round(w) / 100);

function stateText(row) {
  return row.state === 'slow start' ? `slow start ${percent(row.ramp)}` : row.state;
}

/** Why the effective weight is not the configured one, when hostlb did not say. */
function weightWhy(row) {
  if (row.why) return row.why;
  const full = row.configuredWeight * 100;
  if (row.state === 'slow start') return `slow start: ${percent(row.ramp)} of its weight`;
  if (full > 0 && Math.abs(row.effectiveWeight - full) >= 1) {
    const factor = row.effectiveWeight / (full * (row.ramp || 1));
    return `weight manager: ×${factor.toFixed(2)}`;
  }
  return '';
}

/** "198.18.100.1:80/tcp" or "[2001:db8::100]:443/tcp" → its parts for the API's path. */
function splitPort(name) {
  const m = /^\[?(.*?)\]?:(\d+)\/(tcp|udp|any)$/.exec(name);
  return m ? { cluster: m[1], port: m[2], protocol: m[3] } : null;
}

// ------------------------------------------------------------------ status, notices, token

function setStatus(connected, text) {
  const status = $('status');
  setAttr(document.body, 'data-connected', connected ? 'true' : 'false');
  setAttr(status, 'data-connected', connected ? 'true' : 'false');
  setText(status, text);
}

let noticeTimer = null;
function notice(text, kind = 'info', sticky = false) {
  const n = $('notice');
  n.hidden = false;
  n.dataset.kind = kind;
  setText(n, text);
  window.clearTimeout(noticeTimer);
  if (!sticky) noticeTimer = window.setTimeout(() => { n.hidden = true; }, 8000);
}

/** Takes a token from the fragment (then removes it from the address bar), else the one kept for this tab. */
function initialToken() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (m && m[1] !== '') {
    let token = m[1];
    try {
      token = decodeURIComponent(token);
    } catch {
      // not percent-encoded: as written
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

let tokenWaiter = null;
/** Shows the form and resolves with the token typed into it. */
function askToken(why) {
  const form = $('login');
  form.hidden = false;
  setText($('login-why'), why);
  $('token-input').focus();
  return new Promise((resolve) => { tokenWaiter = resolve; });
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  const token = $('token-input').value.trim();
  if (token === '') return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token-input').value = '';
  $('login').hidden = true;
  if (tokenWaiter) {
    const resolve = tokenWaiter;
    tokenWaiter = null;
    resolve(token);
  }
});

// ------------------------------------------------------------------ the API

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${state.token}`, Accept: 'application/json', ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
    cache: 'no-store',
  });
  let answer = null;
  try {
    answer = await res.json();
  } catch {
    // not JSON: the status says enough
  }
  if (!res.ok) {
    const err = new Error(answer?.error?.message ?? `hostlb answered ${res.status}`);
    err.status = res.status;
    err.code = answer?.error?.code;
    throw err;
  }
  return answer;
}

/** A fresh snapshot now (after a daemon event), besides the stream's one a second. */
async function refreshSoon() {
  if (state.refreshing) {
    state.refreshAgain = true;
    return;
  }
  state.refreshing = true;
  try {
    do {
      state.refreshAgain = false;
      render(await api('GET', '/v1/view'));
    } while (state.refreshAgain);
  } catch {
    // the stream brings the next one within a second
  } finally {
    state.refreshing = false;
  }
}

function sleep(ms) {
  return new Promise((resolve) => window.setTimeout(resolve, ms));
}

async function backoff(why) {
  const wait = state.backoffMs;
  state.backoffMs = Math.min(BACKOFF_MAX_MS, state.backoffMs * 2);
  setStatus(false, `disconnected: ${why}; retrying in ${(wait / 1000).toFixed(1)} s`);
  await sleep(wait);
}

/** Splits server-sent events out of `buffer`; returns what is left (an event not yet whole). */
function takeEvents(buffer, onEvent) {
  const text = buffer.replace(/\r\n?/g, '\n');
  const blocks = text.split('\n\n');
  const rest = blocks.pop();
  for (const block of blocks) {
    let type = 'message';
    let id = null;
    const data = [];
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
      else if (field === 'id') id = value;
    }
    if (data.length > 0) onEvent(type, data.join('\n'), id);
  }
  return rest;
}

/** Reads GET /v1/view's stream until it ends, stalls or the page's token is refused. */
async function follow() {
  const controller = new AbortController();
  const headers = { Accept: 'text/event-stream', Authorization: `Bearer ${state.token}` };
  if (state.lastEventId > 0) headers['Last-Event-ID'] = String(state.lastEventId);
  let res;
  try {
    res = await fetch('/v1/view', { headers, signal: controller.signal, cache: 'no-store' });
  } catch (e) {
    return `cannot reach hostlb (${e.message})`;
  }
  if (res.status === 401) return 'unauthorized';
  if (!res.ok || res.body === null) {
    let message = `hostlb answered ${res.status}`;
    try {
      message = (await res.json()).error.message;
    } catch {
      // keep the status
    }
    return message;
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let lastByte = Date.now();
  let caughtUp = false;
  const watchdog = window.setInterval(() => {
    if (Date.now() - lastByte > STALL_MS) controller.abort();
  }, 1000);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return 'hostlb closed the stream';
      lastByte = Date.now();
      buffer = takeEvents(buffer + decoder.decode(value, { stream: true }), (type, data, id) => {
        if (type === 'view') {
          caughtUp = true;
          state.backoffMs = BACKOFF_MIN_MS;
          render(JSON.parse(data));
          return;
        }
        const event = JSON.parse(data);
        if (id !== null) state.lastEventId = Math.max(state.lastEventId, Number(id) || 0);
        addEvent(event);
        // The events before the first view are the kept ones (catching up); a new one redraws at once.
        if (caughtUp) void refreshSoon();
      });
    }
  } catch (e) {
    return controller.signal.aborted ? `no data for ${STALL_MS / 1000} s` : `the stream broke (${e.message})`;
  } finally {
    window.clearInterval(watchdog);
    controller.abort();
  }
}

async function run() {
  state.token = initialToken();
  for (;;) {
    if (!state.token) {
      setStatus(false, 'disconnected: no token');
      state.token = await askToken('Open the address hostlb dashboard printed, or give the admin token.');
    }
    setStatus(false, 'connecting…');
    const why = await follow();
    if (why === 'unauthorized') {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
      setStatus(false, 'disconnected: the token was refused');
      state.token = await askToken('hostlb refused the token (401). A token from `hostlb dashboard` is good for one run of it only.');
      continue;
    }
    await backoff(why);
  }
}

// ------------------------------------------------------------------ actions

let confirmWaiter = null;
/** The dialog: resolves true when the operator confirms. */
function confirmAction(title, text, label) {
  const dialog = $('confirm');
  setText($('confirm-title'), title);
  setText($('confirm-text'), text);
  setText($('confirm-ok'), label);
  if (confirmWaiter) confirmWaiter(false);
  if (!dialog.open) dialog.showModal();
  $('confirm-cancel').focus();
  return new Promise((resolve) => { confirmWaiter = resolve; });
}

function closeConfirm(answer) {
  const resolve = confirmWaiter;
  confirmWaiter = null;
  $('confirm').close();
  if (resolve) resolve(answer);
}

$('confirm-ok').addEventListener('click', () => closeConfirm(true));
$('confirm-cancel').addEventListener('click', () => closeConfirm(false));
$('confirm').addEventListener('cancel', () => closeConfirm(false));

const ACTIONS = {
  drain: {
    title: 'Drain', label: 'Drain',
    text: (d, p) => `Drain ${d} on ${p}? It takes no new connections; its open ones finish. (Undrain brings it back.)`,
  },
  undrain: {
    title: 'Undrain', label: 'Undrain',
    text: (d, p) => `Undrain ${d} on ${p}? It takes new connections again, at the weight it had before the drain.`,
  },
  restart: {
    title: 'Rolling restart', label: 'Restart',
    text: (_d, p) => `Restart every daemon of ${p}, one at a time (drain, stop, start, wait until up)? This can take minutes.`,
  },
};

async function act(kind, portName, daemon) {
  const parts = splitPort(portName);
  if (parts === null) return;
  const spec = ACTIONS[kind];
  const key = `${kind} ${portName} ${daemon ?? ''}`;
  if (state.busy.has(key)) return;
  if (!(await confirmAction(spec.title, spec.text(daemon, portName), spec.label))) return;
  const base = `/v1/clusters/${enc(parts.cluster)}/ports/${enc(parts.port)}/${enc(parts.protocol)}`;
  const path = kind === 'restart' ? `${base}/restart` : `${base}/daemons/${enc(daemon)}/${kind}`;
  state.busy.add(key);
  if (state.view) render(state.view);
  notice(kind === 'restart' ? `Restarting ${portName}…` : `${spec.title} ${daemon}…`, 'info', true);
  try {
    const answer = await api('POST', path, {});
    if (kind === 'restart') notice(`Restarted ${answer.restarted?.join(', ') || 'nothing'} on ${portName}.`, 'ok');
    else if (kind === 'drain') notice(`Draining ${daemon}: ${answer.activeFlows ?? 0} connection(s) to finish.`, 'ok');
    else notice(`${daemon} takes new connections again.`, 'ok');
  } catch (e) {
    notice(`${spec.title} failed: ${e.message}${e.code ? ` (${e.code})` : ''}`, 'error', true);
  } finally {
    state.busy.delete(key);
    void refreshSoon();
  }
}

/** A button that acts on what its data-action, data-port and data-daemon say when clicked (a row changes them). */
function actionButton(kind, portName, daemon) {
  const button = el('button', { type: 'button', 'data-action': kind, 'data-port': portName, 'data-daemon': daemon ?? undefined, class: kind === 'undrain' ? undefined : 'danger' });
  button.addEventListener('click', () => void act(button.dataset.action, button.dataset.port, button.dataset.daemon ?? null));
  return button;
}

// ------------------------------------------------------------------ panels

const DAEMON_LABELS = ['Daemon', 'State', 'Weight', 'Why', 'Since', 'Active', 'New/s', 'Share', ''];
const DAEMON_CLASSES = ['addr', '', 'num', '', 'num', 'num', 'num', 'num', ''];

function renderDaemons(view) {
  sync($('ports'), view.ports, (p) => p.port, (p) => {
    const restart = actionButton('restart', p.port, null);
    setText(restart, 'Rolling restart');
    const table = el('table', { class: 'cards daemons' },
      el('thead', {}, el('tr', {}, ...DAEMON_LABELS.map((l, i) => el('th', { class: DAEMON_CLASSES[i] === 'num' ? 'num' : undefined, text: l })))),
      el('tbody'));
    return el('div', { class: 'port', 'data-port': p.port },
      el('div', { class: 'port-head' }, el('h3'), el('span', { class: 'muted meta' }), restart),
      el('div', { class: 'scroll' }, table));
  }, (node, p) => {
    const head = node.querySelector('.port-head');
    setText(head.querySelector('h3'), p.port);
    setText(head.querySelector('.meta'), `${p.scheduler}${p.supervised ? ' · supervised' : ''} · ${p.daemons.length} daemon${p.daemons.length === 1 ? '' : 's'}`);
    const restart = head.querySelector('button');
    restart.hidden = !p.supervised;
    restart.disabled = state.busy.has(`restart ${p.port} `);
    setText(restart, restart.disabled ? 'Restarting…' : 'Rolling restart');
    sync(node.querySelector('tbody'), p.daemons, (d) => d.daemon, () => {
      const row = makeRow(DAEMON_LABELS, DAEMON_CLASSES);
      row.cells[1].append(el('span', { class: 'badge' }));
      row.cells[8].append(actionButton('drain', p.port, null));
      return row;
    }, (row, d) => updateDaemonRow(row, p.port, d));
  });
}

function updateDaemonRow(row, portName, d) {
  setAttr(row, 'data-daemon', d.daemon);
  setAttr(row, 'data-port', portName);
  setAttr(row, 'data-state', d.state);
  const c = row.cells;
  setText(c[0], d.daemon);
  const badge = c[1].firstChild;
  setAttr(badge, 'class', `badge state-${d.state.replace(' ', '-')}`);
  setText(badge, stateText(d));
  setText(c[2], `${d.configuredWeight} → ${weight(d.effectiveWeight)}`);
  setText(c[3], weightWhy(d));
  setText(c[4], duration(d.sinceSeconds));
  setText(c[5], number(d.activeFlows));
  setText(c[6], d.newPerSecond.toFixed(1));
  setText(c[7], percent(d.share, 1));
  const button = c[8].firstChild;
  const kind = d.state === 'draining' || d.state === 'quiesced' ? 'undrain' : 'drain';
  setAttr(button, 'data-action', kind);
  setAttr(button, 'data-port', portName);
  setAttr(button, 'data-daemon', d.daemon);
  setAttr(button, 'class', kind === 'undrain' ? '' : 'danger');
  button.hidden = d.state === 'removed';
  button.disabled = state.busy.has(`${kind} ${portName} ${d.daemon}`);
  setText(button, kind === 'drain' ? 'Drain' : 'Undrain');
}

const HEALTH_LABELS = ['Daemon', 'Advisor', 'Last check', 'Response', 'Failures', 'Flaps', 'Passive'];

function renderHealth(view) {
  const rows = view.ports.flatMap((p) => p.daemons.map((d) => ({ port: p.port, d })));
  const many = view.ports.length > 1;
  $('health-table').parentElement.hidden = rows.length === 0;
  sync($('health-table').tBodies[0], rows, (r) => `${r.port} ${r.d.daemon}`, () => {
    const row = makeRow(HEALTH_LABELS, ['addr', '', '', 'num', 'num', 'num', '']);
    row.cells[0].append(el('span'), el('span', { class: 'muted sub' }));
    return row;
  }, (row, { port, d }) => {
    const h = d.health;
    const c = row.cells;
    setAttr(row, 'data-daemon', d.daemon);
    setText(c[0].firstChild, d.daemon);
    setText(c[0].lastChild, many ? port : '');
    setText(c[1], h.advisor);
    setAttr(c[1], 'class', `state-${h.advisor === 'up' ? 'up' : h.advisor === 'down' ? 'down' : 'quiesced'}`);
    setText(c[2], h.lastCheck === null ? '–' : h.lastCheck.ok ? 'ok' : `failed: ${h.lastCheck.reason}`);
    setText(c[3], h.responseMs === null ? '–' : `${h.responseMs.toFixed(1)} ms`);
    setText(c[4], number(h.failures));
    setText(c[5], number(h.flaps));
    setText(c[6], h.passive.down ? `down: ${h.passive.reason}` : 'ok');
    row.classList.toggle('hot', h.passive.down || (h.lastCheck !== null && !h.lastCheck.ok));
  });
}

function renderConnections(view) {
  const totals = $('conn-totals');
  const t = view.totals;
  if (totals.childElementCount === 0) {
    for (const label of ['active', 'new per second', 'daemons up']) totals.append(el('span', {}, el('b'), ` ${label}`));
  }
  const [active, fresh, up] = totals.querySelectorAll('b');
  setText(active, number(t.activeFlows));
  setText(fresh, t.newPerSecond.toFixed(1));
  setText(up, `${t.up}/${t.daemons}`);

  const select = $('port-select');
  const names = view.ports.map((p) => p.port);
  if (state.port === null || !names.includes(state.port)) state.port = names[0] ?? null;
  sync(select, names, (n) => n, (n) => el('option', { value: n, text: n }), () => {});
  if (select.value !== state.port && state.port !== null) select.value = state.port;
  const port = view.ports.find((p) => p.port === state.port);
  drawShares(port ?? null);
}

$('port-select').addEventListener('change', (e) => {
  state.port = e.target.value;
  state.chartKey = '';
  if (state.view) renderConnections(state.view);
});

function chartWidth() {
  return Math.max(200, $('share-chart').clientWidth || 300);
}

/** The share chart: each daemon's new connections per second over the last minute, oldest left. */
function drawShares(port) {
  const box = $('share-chart');
  const daemons = port ? port.daemons : [];
  const points = daemons.reduce((n, d) => Math.max(n, d.series.length), 0);
  const x = Array.from({ length: points }, (_, i) => i - (points - 1));
  // Series of different lengths (a daemon added lately) are aligned on the newest second.
  const ys = daemons.map((d) => [...Array(points - d.series.length).fill(null), ...d.series]);
  const sum = ys.reduce((s, y) => s + y.reduce((a, b) => a + (b ?? 0), 0), 0);
  setAttr(box, 'data-points', points);
  setAttr(box, 'data-sum', sum);
  setAttr(box, 'data-port', port ? port.port : '');
  const key = `${port?.port ?? ''}|${daemons.map((d) => d.daemon).join(',')}`;
  if (state.chart === null || state.chartKey !== key) {
    state.chart?.destroy();
    state.chartKey = key;
    state.chart = new uPlot({
      width: chartWidth(),
      height: 200,
      scales: { x: { time: false } },
      axes: [
        { values: (_u, ticks) => ticks.map((v) => `${v}s`) },
        { label: 'new/s', size: 50 },
      ],
      series: [
        { label: 'seconds ago' },
        ...daemons.map((d, i) => ({ label: d.daemon, stroke: COLORS[i % COLORS.length], width: 2, points: { show: false } })),
      ],
      legend: { live: false },
    }, [x, ...ys], box);
  } else {
    state.chart.setData([x, ...ys]);
  }
  sync($('share-bars'), daemons, (d) => d.daemon, () => el('li', {},
    el('span', { class: 'label mono' }),
    el('span', { class: 'track' }, el('span', { class: 'fill' })),
    el('span', { class: 'num' })), (li, d) => {
    const i = daemons.indexOf(d);
    setText(li.children[0], d.daemon);
    const fill = li.children[1].firstChild;
    fill.style.display = 'block';
    fill.style.width = percent(Math.min(1, Math.max(0, d.share)), 1);
    fill.style.background = COLORS[i % COLORS.length];
    setText(li.children[2], percent(d.share, 1));
  });
}

new ResizeObserver(() => {
  if (state.chart) state.chart.setSize({ width: chartWidth(), height: 200 });
}).observe($('share-chart'));

function renderErrors(view) {
  const rows = [...view.errors].sort((a, b) => b.perSecond - a.perSecond || b.total - a.total || a.reason.localeCompare(b.reason));
  $('errors-none').hidden = rows.length > 0;
  $('errors-table').parentElement.hidden = rows.length === 0;
  sync($('errors-table').tBodies[0], rows, (r) => r.reason, () => makeRow(['Reason', 'Per second', 'Total'], ['mono', 'num', 'num']), (row, r) => {
    setAttr(row, 'data-reason', r.reason);
    setText(row.cells[0], r.reason);
    setText(row.cells[1], r.perSecond.toFixed(1));
    setText(row.cells[2], number(r.total));
    row.classList.toggle('hot', r.perSecond > 0 && r.reason.startsWith('drop.'));
  });
}

const PROCESS_LABELS = ['Daemon', 'PID', 'State', 'CPU', 'Memory', 'Restarts', 'Uptime', 'Last exit', 'Log'];

function lastExit(e) {
  if (e === null) return '–';
  const how = e.signal !== null ? e.signal : `exit ${e.code}`;
  return `${how}, ${new Date(e.at).toLocaleTimeString()}`;
}

function renderProcesses(view) {
  $('processes-none').hidden = view.processes.length > 0;
  $('processes-table').parentElement.hidden = view.processes.length === 0;
  sync($('processes-table').tBodies[0], view.processes, (p) => `${p.port} ${p.index}`, () => {
    const row = makeRow(PROCESS_LABELS, ['addr', 'num', '', 'num', 'num', 'num', 'num', '', 'wide']);
    row.cells[8].append(el('details', {}, el('summary', { text: 'log' }), el('pre')));
    return row;
  }, (row, p) => {
    const c = row.cells;
    setAttr(row, 'data-daemon', p.daemon);
    setAttr(row, 'data-pid', p.pid ?? '');
    setText(c[0], `${p.daemon} #${p.index}`);
    setText(c[1], p.pid ?? '–');
    setText(c[2], p.state);
    setText(c[3], p.cpuPercent === null ? '–' : `${p.cpuPercent.toFixed(1)}%`);
    setText(c[4], bytes(p.rssBytes));
    setText(c[5], number(p.restarts));
    setText(c[6], duration(p.uptimeSeconds));
    setText(c[7], lastExit(p.lastExit));
    const details = c[8].firstChild;
    setText(details.firstChild, p.log.length === 0 ? 'log (empty)' : `log (last ${p.log.length})`);
    setText(details.lastChild, p.log.join('\n'));
  });
}

const ACTIVITY_LABELS = ['Daemon', 'What', 'Phase', 'Connections left', 'Elapsed'];

function renderActivity(view) {
  $('activity-none').hidden = view.activity.length > 0;
  $('activity-table').parentElement.hidden = view.activity.length === 0;
  const many = view.ports.length > 1;
  sync($('activity-table').tBodies[0], view.activity, (a) => `${a.port} ${a.daemon} ${a.kind}`, () => {
    const row = makeRow(ACTIVITY_LABELS, ['addr', '', '', 'num', 'num']);
    row.cells[0].append(el('span'), el('span', { class: 'muted sub' }));
    return row;
  }, (row, a) => {
    setAttr(row, 'data-daemon', a.daemon);
    setAttr(row, 'data-kind', a.kind);
    setText(row.cells[0].firstChild, a.daemon);
    setText(row.cells[0].lastChild, many ? a.port : '');
    setText(row.cells[1], a.kind);
    setText(row.cells[2], a.phase);
    setText(row.cells[3], number(a.connectionsLeft));
    setText(row.cells[4], duration(a.elapsedSeconds));
  });
}

function addEvent(e) {
  if (state.events.some((x) => x.id === e.id)) return;
  state.events.push(e);
  state.events.sort((a, b) => a.id - b.id);
  if (state.events.length > EVENTS_KEPT) state.events.splice(0, state.events.length - EVENTS_KEPT);
  const newest = [...state.events].reverse();
  sync($('events'), newest, (x) => String(x.id), (item) => el('li', { 'data-type': item.type }), (li, x) => {
    const words = EVENT_WORDS[x.type] ?? x.type;
    setText(li, `${new Date(x.at).toLocaleTimeString()} ${x.daemon} ${words}${x.reason ? `: ${x.reason}` : ''}`);
  });
}

function renderPlane(view) {
  const p = view.dataplane;
  const t = p.table;
  const capacity = t.capacity ?? t.limit;
  const use = capacity > 0 ? t.records / capacity : 0;
  const facts = [
    ['plane', p.kind],
    ['table', `${number(t.records)} of ${capacity > 0 ? number(capacity) : '–'} (${percent(use, 1)})`],
    ['evictions', number(t.evictions)],
    ['repairs', Object.keys(p.repairs).length === 0 ? 'none' : Object.entries(p.repairs).map(([k, v]) => `${k} ${v}`).join(', ')],
  ];
  sync($('plane'), facts.flatMap(([k, v]) => [{ key: `t ${k}`, text: k, tag: 'dt' }, { key: `d ${k}`, text: v, tag: 'dd' }]), (f) => f.key, (f) => el(f.tag), (node, f) => setText(node, f.text));
  const meter = $('table-meter');
  meter.firstChild.style.width = percent(Math.min(1, use), 1);
  setAttr(meter, 'aria-valuenow', Math.round(use * 100));
  setAttr(meter, 'data-level', use >= 0.95 ? 'full' : use >= 0.8 ? 'high' : 'ok');
  const counters = Object.entries(p.counters).map(([name, value]) => ({ name, value }));
  sync($('plane-table').tBodies[0], counters, (c) => c.name, () => makeRow(['Counter', 'Value'], ['mono', 'num']), (row, c) => {
    setText(row.cells[0], c.name);
    setText(row.cells[1], number(c.value));
    row.classList.toggle('hot', /overruns|rejected|refused/.test(c.name) && c.value > 0);
  });
}

function render(view) {
  if (!view || !Array.isArray(view.ports)) return;
  // A snapshot fetched after an event may arrive after a newer one from the stream.
  if (state.view && view.at < state.view.at) return;
  state.view = view;
  setStatus(true, `connected · ${new Date(view.at).toLocaleTimeString()}`);
  setText($('summary'), `${view.device} · ${view.dataplane.kind} plane · pid ${view.pid} · v${view.version} · up ${duration(view.uptimeSeconds)}`);
  renderDaemons(view);
  renderHealth(view);
  renderConnections(view);
  renderErrors(view);
  renderProcesses(view);
  renderActivity(view);
  renderPlane(view);
}

// For tests and curious operators: the last snapshot and the chart (read-only use).
window.hostlbDashboard = {
  get view() { return state.view; },
  get chart() { return state.chart; },
};

void run();
