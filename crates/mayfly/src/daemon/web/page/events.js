// The events: the log since a chosen time (as `mayfly events --since`), then live ones.
import { stream } from './api.js';
import { h, show, busy } from './dom.js';
import { onLeave } from './shared.js';

/** Rows shown at most (the oldest go first). */
const MAX_ROWS = 1000;

function eventRow(ev) {
  const ok = !ev.outcome || ev.outcome.status === 'ok';
  return h('tr', { 'data-seq': ev.seq },
    h('td', {}, ev.seq), h('td', {}, ev.time), h('td', { class: 'kind' }, ev.kind),
    h('td', {}, ev.subject ? `${ev.subject.kind} ${ev.subject.name}` : ''), h('td', {}, ev.actor),
    h('td', { class: ok ? 'outcome-ok' : 'outcome-error' }, ok ? 'ok' : `${ev.outcome.code}: ${ev.outcome.message}`),
    h('td', { class: 'tag' }, ev.details && Object.keys(ev.details).length ? JSON.stringify(ev.details) : ''));
}

const CHOICES = [['10m', 'the last 10 minutes'], ['1h', 'the last hour'], ['1d', 'the last day'],
  ['all', 'all of the log'], ['other', 'since… (RFC 3339 or a duration)']];

export function eventsView(events) {
  const body = h('tbody', {}, [...events].reverse().map(eventRow));
  const choice = h('select', { name: 'since', id: 'events-since' },
    CHOICES.map(([v, label]) => h('option', { value: v, selected: v === '1h' }, label)));
  const other = h('input', { name: 'since-other', id: 'events-since-other', hidden: true,
    placeholder: '2026-12-07T05:00:00Z or 30m', size: 24 });
  const form = h('form', { class: 'inline', id: 'events-form' }, h('label', {}, 'Show '), choice, other,
    h('button', { type: 'submit' }, 'Show'), h('span', { class: 'muted' }, 'then live events (newest first)'));
  let newest = events.length ? events[events.length - 1].seq : -1;
  let loading = null;
  const load = async () => {
    if (loading) loading.abort();
    const controller = new AbortController();
    loading = controller;
    let since = choice.value === 'other' ? other.value.trim() : choice.value;
    if (choice.value === 'other' && !since) throw new Error('give a time (RFC 3339) or a duration (30m, 2h, 1d)');
    if (since === 'all') since = undefined;
    const log = [];
    await stream('events', [], undefined, (ev) => {
      log.push(ev);
      if (log.length > MAX_ROWS) log.shift();
    }, { query: { since }, signal: controller.signal });
    if (controller.signal.aborted) return;
    loading = null;
    body.replaceChildren(...log.reverse().map(eventRow));
    body.dataset.since = since ?? 'all';
    if (log.length) newest = Math.max(newest, log[0].seq);
  };
  choice.addEventListener('change', () => {
    other.hidden = choice.value !== 'other';
    if (choice.value !== 'other') busy(null, load);
  });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form.querySelector('button'), load);
  });
  show(h('h1', {}, 'Events'), form,
    h('table', { id: 'events', class: 'events' },
      h('thead', {}, h('tr', {}, ['#', 'Time', 'Kind', 'Subject', 'Actor', 'Outcome', 'Details'].map((t) => h('th', {}, t)))), body));
  const onEvent = (e) => {
    if (typeof e.detail.seq === 'number') {
      if (e.detail.seq <= newest) return;
      newest = e.detail.seq;
    }
    body.prepend(eventRow(e.detail));
    while (body.children.length > MAX_ROWS) body.lastChild.remove();
  };
  window.addEventListener('mayfly-event', onEvent);
  onLeave(() => {
    window.removeEventListener('mayfly-event', onEvent);
    if (loading) loading.abort();
  });
}
