// Small DOM helpers: elements are built with text nodes, never from HTML strings.

/** `h('button', {class: 'primary', onclick: f}, 'Start')`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces the main view. */
export function show(...children) {
  const main = document.getElementById('main');
  main.replaceChildren(...children.flat());
  return main;
}

let flashTimer = null;

/** Shows a message above the view (an ApiError shows its hint too). */
export function flash(message, kind = 'info') {
  const el = document.getElementById('flash');
  clearTimeout(flashTimer);
  if (!message) {
    el.hidden = true;
    return;
  }
  const text = message instanceof Error ? message.message : String(message);
  const children = [h('span', { class: 'message' }, text)];
  if (message && message.hint) children.push(h('span', { class: 'hint' }, message.hint));
  el.replaceChildren(...children);
  el.className = message instanceof Error ? 'error' : kind;
  el.hidden = false;
  if (!(message instanceof Error)) flashTimer = setTimeout(() => { el.hidden = true; }, 6000);
}

/** Asks to confirm `question`; resolves true or false. */
export function confirmDialog(question, yes = 'Remove') {
  return new Promise((resolve) => {
    const dialog = h('dialog', { id: 'confirm' },
      h('p', {}, question),
      h('div', { class: 'actions' },
        h('button', { class: 'danger', id: 'confirm-yes', onclick: () => { dialog.close(); resolve(true); } }, yes),
        h('button', { id: 'confirm-no', onclick: () => { dialog.close(); resolve(false); } }, 'Cancel')));
    dialog.addEventListener('close', () => { dialog.remove(); resolve(false); });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** Runs `work` with `button` disabled; errors are flashed. */
export async function busy(button, work) {
  if (button) button.disabled = true;
  try {
    return await work();
  } catch (e) {
    flash(e);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/** The value of form field `name`, trimmed. */
export function field(form, name) {
  const el = form.elements.namedItem(name);
  return el ? String(el.value).trim() : '';
}
