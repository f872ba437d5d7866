// The terminal: xterm.js (window.Terminal, from Debian's node-xterm) over the daemon's
// WebSocket `GET /v1/instances/{name}/terminal`: binary frames carry the terminal's bytes
// both ways, `{"resize":{"cols":C,"rows":R}}` sizes it, `{"exit":CODE}` ends it.
import { path } from './api.js';
import { h, show } from './dom.js';

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

export function openTerminal(name) {
  const status = h('span', { id: 'terminal-status', class: 'muted' }, 'connecting…');
  const box = h('div', { id: 'terminal' });
  const back = h('a', { href: `#/instances/${encodeURIComponent(name)}` }, `← ${name}`);
  const again = h('button', { type: 'button', id: 'terminal-again', hidden: true, onclick: () => { closeTerminal(); openTerminal(name); } }, 'Open another');
  show(h('p', { class: 'inline' }, back, h('strong', {}, `Terminal: ${name}`), status, again), box);

  if (!window.Terminal) {
    status.textContent = 'xterm.js did not load';
    return;
  }
  if (window.TerminalFit && !window.Terminal.prototype.fit) window.Terminal.applyAddon(window.TerminalFit);
  // The DOM renderer keeps the screen's text in the page (readable, selectable, testable).
  const term = new window.Terminal({ rendererType: 'dom', cursorBlink: true, fontSize: 14, scrollback: 5000 });
  term.open(box);
  if (term.fit) term.fit();
  const url = new URL(path('instance.terminal', [name], { cols: term.cols, rows: term.rows }), location.href);
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
