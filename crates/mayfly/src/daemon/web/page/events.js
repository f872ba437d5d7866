// The live events.
import { h, show } from './dom.js';
import { onLeave } from './shared.js';

function eventRow(ev) {
  const ok = !ev.outcome || ev.outcome.status === 'ok';
  return h('tr', { 'data-seq': ev.seq },
    h('td', {}, ev.seq), h('td', {}, ev.time), h('td', { class: 'kind' }, ev.kind),
    h('td', {}, ev.subject ? `${ev.subject.kind} ${ev.subject.name}` : ''), h('td', {}, ev.actor),
    h('td', { class: ok ? 'outcome-ok' : 'outcome-error' }, ok ? 'ok' : `${ev.outcome.code}: ${ev.outcome.message}`),
    h('td', { class: 'tag' }, ev.details && Object.keys(ev.details).length ? JSON.stringify(ev.details) : ''));
}

export function eventsView(events) {
  const body = h('tbody', {}, [...events].reverse().map(eventRow));
  show(h('h1', {}, 'Events'), h('p', { class: 'muted' }, 'The last hour, then live (newest first).'),
    h('table', { id: 'events', class: 'events' },
      h('thead', {}, h('tr', {}, ['#', 'Time', 'Kind', 'Subject', 'Actor', 'Outcome', 'Details'].map((t) => h('th', {}, t)))), body));
  const onEvent = (e) => {
    body.prepend(eventRow(e.detail));
    while (body.children.length > 500) body.lastChild.remove();
  };
  window.addEventListener('mayfly-event', onEvent);
  onLeave(() => window.removeEventListener('mayfly-event', onEvent));
}
