// What the views share: the refresh of a view by live events, and how an instance's
// state, template, resources and addresses are shown.
import { human } from './api.js';
import { h } from './dom.js';

// ---- refreshing ----------------------------------------------------------------------------

let cleanups = [];

/** Ends what the current view started (timers, listeners, streams). */
export function stopTimers() {
  for (const c of cleanups) c();
  cleanups = [];
}

/**
 * Calls `refresh` when a live event arrives (coalesced), and every 4 s besides while no live
 * events arrive (a daemon without the event stream).
 */
export function keepFresh(refresh, relevant = () => true) {
  let pending = null;
  const onEvent = (e) => {
    if (!relevant(e.detail) || pending) return;
    pending = setTimeout(() => { pending = null; refresh(); }, 150);
  };
  window.addEventListener('mayfly-event', onEvent);
  const timer = setInterval(() => {
    import('./app.js').then((app) => { if (!app.live) refresh(); });
  }, 4000);
  cleanups.push(() => {
    window.removeEventListener('mayfly-event', onEvent);
    clearInterval(timer);
    clearTimeout(pending);
  });
}

/** Runs `f` when the view changes. */
export function onLeave(f) {
  cleanups.push(f);
}

// ---- how instances are shown ---------------------------------------------------------------

export function stateBadge(state) {
  return h('span', { class: `state state-${state}` }, state);
}

export function templateOf(i) {
  const v = i.running_version ?? i.pinned_version;
  const pin = i.pinned_version !== undefined ? ' (pinned)' : '';
  return `${i.template}${v !== undefined ? `@${v}` : ''}${pin}`;
}

export function resourcesOf(i) {
  const parts = [];
  if (i.flavor) parts.push(i.flavor);
  const l = i.limits || {};
  if (l.cpus !== undefined) parts.push(`${l.cpus} CPU`);
  if (l.memory !== undefined) parts.push(human(l.memory));
  if (l.pids !== undefined) parts.push(`${l.pids} pids`);
  if (l.disk !== undefined) parts.push(`disk ${human(l.disk)}`);
  return parts.join(', ') || '—';
}

export function addressesOf(i) {
  const parts = [];
  for (const n of i.interfaces || []) {
    parts.push(`${n.name} ${n.ipv4}${n.ipv6 ? ` ${n.ipv6}` : ''}`);
  }
  for (const p of i.publish || []) {
    parts.push(`${p.host_ip}:${p.host_port}→${p.port}/${p.proto}`);
  }
  return parts.length ? parts.map((p) => h('div', { class: 'tag' }, p)) : '—';
}

/** Pairs of a name and a value as a definition list (empty values left out). */
export function info(pairs) {
  return h('dl', { class: 'info' }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

/** A table that a refresh rewrites, over a form that stays (what is typed in it too). */
export function listCard(title, columns, form) {
  const list = h('div', {});
  const card = h('div', { class: 'card' }, h('h2', {}, title), list, form);
  const update = (rows) => list.replaceChildren(rows.length
    ? h('table', {}, h('thead', {}, h('tr', {}, columns.map((t) => h('th', {}, t)))), h('tbody', {}, rows))
    : h('p', { class: 'muted' }, 'None.'));
  return { card, update };
}

/** The choice of a mode (`withSame`: or the source's). */
export function modeSelect(withSame) {
  return h('select', { name: 'mode' },
    withSame && h('option', { value: '' }, 'the same as its source'),
    ['transient', 'persistent', 'ephemeral'].map((m) => h('option', { value: m }, m)));
}
