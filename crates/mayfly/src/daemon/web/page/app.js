// The dashboard: a router over the views, the login, and the live event stream that keeps
// the views up to date.
import { act, login, stream } from './api.js';
import { h, show, flash, busy, field } from './dom.js';
import * as views from './views.js';
import { openTerminal, closeTerminal } from './terminal.js';

/** The newest events, newest last (at most KEEP). */
export const events = [];
const KEEP = 500;
let eventsStream = null;
let lastSeq = null;
/** Whether live events arrive (else the views refresh on a timer). */
export let live = false;

function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const parts = hash.split('/').map(decodeURIComponent);
  return parts[0] ? parts : ['instances'];
}

function setNav(active) {
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.view === active);
  }
}

let authenticated = false;

async function render() {
  closeTerminal();
  views.stopTimers();
  flash(null);
  const [view, name, sub] = route();
  if (!authenticated) {
    if (!(await checkSession())) return loginView();
  }
  setNav(view);
  switch (view) {
    case 'instances':
      if (name && sub === 'terminal') return openTerminal(name);
      return name ? views.instanceView(name) : views.instancesView();
    case 'launch': return views.launchView();
    case 'templates': return name ? views.templateView(name) : views.templatesView();
    case 'events': return views.eventsView(events);
    case 'resources': return views.resourcesView();
    default:
      location.hash = '#/instances';
      return undefined;
  }
}

/** Whether calls are authenticated (a session cookie, or the unix socket's bridge). */
async function checkSession() {
  try {
    const info = await act('info');
    authenticated = true;
    document.getElementById('daemon').textContent = `mayfly ${info.version}`;
    document.getElementById('nav').hidden = false;
    document.getElementById('logout').hidden = false;
    startEvents();
    return true;
  } catch (e) {
    if (e.status !== 401) flash(e);
    return false;
  }
}

function loginView() {
  document.getElementById('nav').hidden = true;
  document.getElementById('logout').hidden = true;
  const form = h('form', { class: 'card login', id: 'login-form' },
    h('h1', {}, 'Log in'),
    h('p', { class: 'muted' }, 'Give an API token (made on the daemon\'s host with ',
      h('code', {}, 'mayfly token create NAME'), ').'),
    h('p', {}, h('input', { type: 'password', name: 'token', id: 'token', autocomplete: 'off',
      placeholder: 'token', required: true })),
    h('button', { class: 'primary', type: 'submit', id: 'login' }, 'Log in'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form.querySelector('button'), async () => {
      await login(field(form, 'token'));
      authenticated = false;
      if (await checkSession()) {
        if (!location.hash || location.hash === '#/login') location.hash = '#/instances';
        else render();
      }
    });
  });
  show(form);
  form.querySelector('input').focus();
}

function startEvents() {
  if (eventsStream) return;
  const controller = new AbortController();
  eventsStream = controller;
  const query = { follow: 'true', since: lastSeq === null ? '1h' : undefined, after: lastSeq ?? undefined };
  stream('events', [], undefined, (ev) => {
    live = true;
    if (typeof ev.seq === 'number') lastSeq = ev.seq;
    events.push(ev);
    if (events.length > KEEP) events.splice(0, events.length - KEEP);
    window.dispatchEvent(new CustomEvent('mayfly-event', { detail: ev }));
  }, { query, signal: controller.signal }).catch(() => {}).finally(() => {
    live = false;
    if (eventsStream !== controller) return;
    eventsStream = null;
    // Reconnect (resuming after the last event seen) unless logged out.
    if (authenticated) setTimeout(startEvents, 3000);
  });
}

function stopEvents() {
  if (eventsStream) eventsStream.abort();
  eventsStream = null;
}

window.addEventListener('mayfly-unauthenticated', () => {
  if (!authenticated) return;
  authenticated = false;
  stopEvents();
  // The call that found out flashes the daemon's word for it (logged out, expired, revoked).
  closeTerminal();
  views.stopTimers();
  loginView();
});

document.getElementById('logout').addEventListener('click', async () => {
  try { await act('logout'); } catch (_) { /* the session may be gone already */ }
  authenticated = false;
  stopEvents();
  location.hash = '#/login';
  loginView();
});

window.addEventListener('hashchange', render);
render();
