// The terminal: xterm.js (window.Terminal, from Debian's node-xterm) over the daemon's
// WebSocket `GET /v1/instances/{name}/terminal`: binary frames carry the terminal's bytes
// both ways, `{"resize":{"cols":C,"rows":R}}` sizes it, `{"exit":CODE}` ends it.
import { path, words } from './api.js';
import { h, show, flash, field } from './dom.js';

let current = null;

/** Closes the open terminal, if any (leaving its view). */
export function closeTerminal() {
  if (!current) return;
  const { socket, term, onResize } = current;
  current = null;
  window.removeEventListener('resize', onResize);
  if (socket.readyState <= WebSocket.OPEN) socket.close();
  term.destroy();
}

/**
 * The terminal of instance `name`; `opts` as `mayfly exec -t` takes them: `command` (a shell
 * command line), `user`, `workdir`, `env` (KEY=VALUE words).
 */
export function openTerminal(name, opts = {}) {
  const status = h('span', { id: 'terminal-status', class: 'muted' }, 'connecting…');
  const box = h('div', { id: 'terminal' });
  const back = h('a', { href: `#/instances/${encodeURIComponent(name)}` }, `← ${name}`);
  const again = h('button', { type: 'button', id: 'terminal-again', hidden: true, onclick: () => { closeTerminal(); openTerminal(name, opts); } }, 'Open another');
  const form = h('form', { class: 'inline', id: 'terminal-form' },
    h('input', { name: 'command', placeholder: 'command (a login shell when empty)', size: 28, value: opts.command || '' }),
    h('input', { name: 'user', placeholder: 'user[:group]', size: 12, value: opts.user || '' }),
    h('input', { name: 'workdir', placeholder: 'working directory', size: 14, value: opts.workdir || '' }),
    h('input', { name: 'env', placeholder: 'KEY=VALUE …', size: 24, value: opts.env || '' }),
    h('button', { type: 'submit' }, 'Open with these'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const next = { command: field(form, 'command'), user: field(form, 'user'), workdir: field(form, 'workdir'), env: field(form, 'env') };
    try { words(next.env); } catch (e) { flash(e); return; }
    closeTerminal();
    openTerminal(name, next);
  });
  show(h('p', { class: 'inline' }, back, h('strong', {}, `Terminal: ${name}`), status, again), form, box);

  if (!window.Terminal) {
    status.textContent = 'xterm.js did not load';
    return;
  }
  if (window.TerminalFit && !window.Terminal.prototype.fit) window.Terminal.applyAddon(window.TerminalFit);
  // The DOM renderer keeps the screen's text in the page (readable, selectable, testable).
  const term = new window.Terminal({ rendererType: 'dom', cursorBlink: true, fontSize: 14, scrollback: 5000 });
  term.open(box);
  if (term.fit) term.fit();
  const env = opts.env ? words(opts.env) : [];
  const query = { cols: term.cols, rows: term.rows, command: opts.command, user: opts.user, workdir: opts.workdir,
    env: env.length ? JSON.stringify(env) : undefined };
  const url = new URL(path('instance.terminal', [name], query), location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const socket = new WebSocket(url.href);
  socket.binaryType = 'arraybuffer';
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  let ended = false;
  const onResize = () => { if (term.fit) term.fit(); };
  current = { socket, term, onResize };
  window.addEventListener('resize', onResize);

  socket.addEventListener('open', () => {
    status.textContent = 'connected';
    box.dataset.connected = 'true';
    term.focus();
  });
  socket.addEventListener('message', (msg) => {
    if (typeof msg.data !== 'string') {
      term.write(decoder.decode(new Uint8Array(msg.data), { stream: true }));
      return;
    }
    let control;
    try { control = JSON.parse(msg.data); } catch (_) { return; }
    if ('exit' in control) {
      ended = true;
      status.textContent = `exited with status ${control.exit}`;
      status.dataset.exit = control.exit;
      term.write(`\r\n[the process exited with status ${control.exit}]\r\n`);
      again.hidden = false;
    } else if (control.error) {
      status.textContent = `error: ${control.error}`;
    }
  });
  socket.addEventListener('close', () => {
    if (!ended && current && current.socket === socket) {
      status.textContent = 'disconnected (is the instance running?)';
      again.hidden = false;
    }
  });
  term.on('data', (data) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
  });
  term.on('resize', ({ cols, rows }) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ resize: { cols, rows } }));
  });
}
