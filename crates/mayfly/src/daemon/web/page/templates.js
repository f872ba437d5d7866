// The templates: the list with a build form, and one template's history with patch,
// rollback and rollout (their progress streamed).
import { act, stream, words, human } from './api.js';
import { h, show, flash, busy, field, confirmDialog } from './dom.js';
import { keepFresh } from './shared.js';

export async function templatesView() {
  const body = h('tbody', {});
  const gc = h('button', { type: 'button', id: 'gc' }, 'Collect unused layers');
  gc.addEventListener('click', () => busy(gc, async () => {
    const r = await act('layer.gc');
    flash(`garbage collection: ${JSON.stringify(r)}`);
  }));
  const bases = h('select', { name: 'from' });
  const out = h('pre', { class: 'log', id: 'build-log', hidden: true });
  const build = h('form', { class: 'grid', id: 'build-form' },
    h('label', {}, 'Name'), h('input', { name: 'name', required: true }),
    h('label', {}, 'From'),
    h('div', { class: 'inline' },
      h('label', {}, h('input', { type: 'radio', name: 'kind', value: 'app', checked: true }), ' an application over '), bases,
      h('label', {}, h('input', { type: 'radio', name: 'kind', value: 'debian' }), ' Debian '),
      h('input', { name: 'suite', placeholder: 'bookworm', size: 10 })),
    h('label', {}, 'Packages'), h('input', { name: 'packages', placeholder: 'nginx curl' }),
    h('label', {}, 'Script'), h('textarea', { name: 'run', placeholder: 'shell commands run in the new template' }),
    h('label', {}, 'Command'), h('input', { name: 'command', placeholder: "its init command (the base's when empty)" }),
    h('label', {}, 'Message'), h('input', { name: 'message' }),
    h('div', { class: 'full' }, h('button', { type: 'submit', 'data-action': 'build' }, 'Build')));
  build.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(build.querySelector('button'), async () => {
      const name = field(build, 'name');
      const debian = build.elements.namedItem('kind').value === 'debian';
      const command = words(field(build, 'command'));
      await job('template.build', name, {
        debian: debian ? (field(build, 'suite') || 'bookworm') : undefined,
        from: debian ? undefined : field(build, 'from'),
        packages: words(field(build, 'packages')),
        run: build.elements.namedItem('run').value.trim() || undefined,
        command: command.length ? command : undefined,
        message: field(build, 'message') || undefined,
      }, out);
      flash(`${name}: built`);
      await refresh();
    });
  });
  show(h('div', { class: 'inline' }, h('h1', {}, 'Templates'), gc),
    h('table', { id: 'templates' }, h('thead', {}, h('tr', {}, ['Name', 'Current', 'Versions', 'Used by', 'Kind'].map((t) => h('th', {}, t)))), body),
    h('div', { class: 'card' }, h('h2', {}, 'Build a template'), build, out),
    importCard(() => refresh()));
  const refresh = async () => {
    let list;
    try { list = await act('template.list'); } catch (e) { flash(e); return; }
    const chosen = bases.value;
    bases.replaceChildren(...list.map((t) => h('option', { value: t.name }, t.name)));
    if (list.some((t) => t.name === chosen)) bases.value = chosen;
    body.replaceChildren(...list.map((t) => h('tr', { 'data-template': t.name },
      h('td', {}, h('a', { href: `#/templates/${encodeURIComponent(t.name)}` }, t.name)),
      h('td', {}, `@${t.current_version}`), h('td', {}, t.versions.length),
      h('td', {}, t.used_by.join(', ') || '—'),
      h('td', {}, t.builtin ? 'built in' : (t.versions.some((v) => v.app) ? 'application' : 'OS')))));
  };
  keepFresh(refresh, (e) => !e.subject || e.subject.kind === 'template');
  await refresh();
}

/**
 * Import, as `mayfly template import` does: a path on the daemon's host (a root directory,
 * an archive of one, an OCI layout or a `docker save` / OCI archive; `PATH:TAG` or a tag
 * for one image of several) sent as JSON, or an archive from this computer uploaded as the
 * body (`?name=`); the daemon's progress lines shown as they come.
 */
function importCard(refresh) {
  const out = h('pre', { class: 'log', id: 'import-log', hidden: true });
  const form = h('form', { class: 'grid', id: 'import-form' },
    h('label', {}, 'Name'), h('input', { name: 'name', required: true }),
    h('label', {}, 'From'),
    h('div', { class: 'inline' },
      h('label', {}, h('input', { type: 'radio', name: 'source', value: 'upload', checked: true }), ' an archive from this computer '),
      h('input', { type: 'file', name: 'file', accept: '.tar,.tar.gz,.tgz,.tar.zst,.tzst,application/x-tar' })),
    h('label', {}, ''),
    h('div', { class: 'inline' },
      h('label', {}, h('input', { type: 'radio', name: 'source', value: 'path' }), ' a path on the daemon\'s host '),
      h('input', { name: 'path', placeholder: '/srv/images/rootfs.tar.zst, an OCI layout, PATH:TAG', size: 40 })),
    h('label', {}, 'Image tag'), h('input', { name: 'tag', placeholder: 'one image of several (a tag, a name, a digest)' }),
    h('label', {}, 'Command'), h('input', { name: 'command', placeholder: "its init command (the image's or /sbin/init when empty)" }),
    h('label', {}, 'Message'), h('input', { name: 'message' }),
    h('div', { class: 'full' }, h('button', { type: 'submit', 'data-action': 'import' }, 'Import')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form.querySelector('button'), async () => {
      const name = field(form, 'name');
      const command = words(field(form, 'command'));
      const tag = field(form, 'tag') || undefined;
      const message = field(form, 'message') || undefined;
      const accept = 'application/x-ndjson';
      if (form.elements.namedItem('source').value === 'path') {
        const p = field(form, 'path');
        if (!p.startsWith('/')) throw new Error('give an absolute path on the daemon\'s host (e.g. /srv/rootfs.tar)');
        await job('template.import', null, {
          name, path: p, tag, command: command.length ? command : undefined, message,
        }, out, { accept });
      } else {
        const file = form.elements.namedItem('file').files[0];
        if (!file) throw new Error('choose an archive (.tar, .tar.gz or .tar.zst of a root filesystem, or an image archive)');
        const query = { name, tag, message, command: command.length ? JSON.stringify(command) : undefined };
        await job('template.import', null, undefined, out,
          { query, raw: file, contentType: 'application/x-tar', accept, note: `uploading ${file.name} (${human(file.size)})` });
      }
      flash(`${name}: imported`);
      await refresh();
    });
  });
  return h('div', { class: 'card' }, h('h2', {}, 'Import a template'), form, out);
}

function progressLine(ev) {
  const [kind, v] = Object.entries(ev)[0] || ['?', ''];
  switch (kind) {
    case 'log': return v.line;
    case 'progress': return `${v.entries} entries, ${human(v.bytes)}`;
    case 'done': return v.version !== undefined ? `done: version ${v.version}, reset ${(v.reset || []).join(', ') || 'none'}` : `done: ${v.name}@${v.current_version}`;
    case 'error': return `error: ${v.message}${v.hint ? ` (${v.hint})` : ''}`;
    case 'wave': return `wave ${v.number}: ${v.instances.join(', ')}`;
    case 'instance': return `${v.name}: ${v.status} ${v.detail}`;
    case 'rolled_back': return `rolled back to version ${v.to}`;
    default: return `${kind}: ${JSON.stringify(v)}`;
  }
}

/**
 * Runs a streaming template job (of template `name`, or none), showing its lines in `out`;
 * `options` go to `stream` (`note`: a first line).
 */
async function job(id, name, body, out, options = {}) {
  out.hidden = false;
  out.textContent = options.note ? `${options.note}\n` : '';
  let failed = null;
  await stream(id, name === null ? [] : [name], body, (ev) => {
    if (ev.error) failed = ev.error;
    out.append(`${progressLine(ev)}\n`);
    out.scrollTop = out.scrollHeight;
  }, options);
  if (failed) {
    const e = new Error(failed.message);
    e.hint = failed.hint;
    throw e;
  }
}

export async function templateView(name) {
  const head = h('div', {});
  const patchOut = h('pre', { class: 'log', id: 'patch-log', hidden: true });
  const rolloutOut = h('pre', { class: 'log', id: 'rollout-log', hidden: true });
  const patch = h('form', { class: 'grid', id: 'patch-form' },
    h('label', {}, 'Packages'), h('input', { name: 'packages', placeholder: 'curl jq (Debian templates)' }),
    h('label', {}, 'Script'), h('textarea', { name: 'run', placeholder: 'shell commands run in a copy of the template' }),
    h('label', {}, 'Message'), h('input', { name: 'message' }),
    h('div', { class: 'full' }, h('button', { type: 'submit', 'data-action': 'patch' }, 'Patch into a new version')));
  const rollout = h('form', { class: 'grid', id: 'rollout-form' },
    h('label', {}, 'Wave size'), h('input', { name: 'wave', placeholder: 'all at once', type: 'number', min: 1 }),
    h('label', {}, 'Health check'), h('input', { name: 'health', placeholder: 'a shell command run in each reset instance' }),
    h('label', {}, 'Timeout (s)'), h('input', { name: 'timeout', type: 'number', min: 1 }),
    h('div', { class: 'full' }, h('button', { type: 'submit', 'data-action': 'rollout' }, 'Roll out the current version')));
  show(h('p', {}, h('a', { href: '#/templates' }, '← Templates')), head,
    h('div', { class: 'card' }, h('h2', {}, 'Patch'), patch, patchOut),
    h('div', { class: 'card' }, h('h2', {}, 'Rollout'), rollout, rolloutOut));
  const refresh = async () => {
    let t;
    try { t = await act('template.info', [name]); } catch (e) { flash(e); return; }
    const rows = [...t.versions].reverse().map((v) => {
      const back = h('button', { type: 'button', 'data-action': 'rollback' }, 'Make current');
      back.disabled = v.version === t.current_version;
      back.addEventListener('click', () => busy(back, async () => {
        await act('template.rollback', [name], { to: v.version });
        flash(`${name}: version ${v.version} is current`);
        await refresh();
      }));
      const rm = h('button', { type: 'button', class: 'danger' }, 'Remove');
      rm.addEventListener('click', () => busy(rm, async () => {
        if (!(await confirmDialog(`Remove version ${v.version} of ${name}?`))) return;
        await act('template.remove', [`${name}@${v.version}`]);
        flash(`${name}@${v.version} removed`);
        await refresh();
      }));
      return h('tr', { 'data-version': v.version },
        h('td', {}, `@${v.version}${v.version === t.current_version ? ' (current)' : ''}${v.version === t.previous_version ? ' (previous)' : ''}`),
        h('td', {}, v.created_at), h('td', {}, v.message), h('td', {}, (v.packages || []).join(' ')),
        h('td', {}, (v.used_by || []).join(', ') || '—'), h('td', {}, h('div', { class: 'actions' }, back, rm)));
    });
    const removeAll = h('button', { type: 'button', class: 'danger', 'data-action': 'remove-template' }, 'Remove the template');
    removeAll.addEventListener('click', () => busy(removeAll, async () => {
      if (!(await confirmDialog(`Remove template ${name} and every version of it?`))) return;
      await act('template.remove', [name]);
      flash(`${name} removed`);
      location.hash = '#/templates';
    }));
    const back = h('button', { type: 'button' }, 'Roll back to the previous version');
    back.disabled = t.previous_version === undefined;
    back.addEventListener('click', () => busy(back, async () => {
      const r = await act('template.rollback', [name], {});
      flash(`${name}: version ${r.current_version} is current`);
      await refresh();
    }));
    head.replaceChildren(h('div', { class: 'card', id: 'template', 'data-template': name },
      h('div', { class: 'inline' }, h('h1', {}, name), h('span', { class: 'tag' }, `current @${t.current_version}`)),
      h('div', { class: 'actions' }, back, !t.builtin && removeAll),
      h('p', { class: 'muted' }, `Used by: ${t.used_by.join(', ') || 'nothing'}`),
      h('h2', {}, 'Versions'),
      h('table', { id: 'versions' }, h('thead', {}, h('tr', {}, ['Version', 'Created', 'Message', 'Packages', 'Used by', ''].map((x) => h('th', {}, x)))), h('tbody', {}, rows))));
  };
  patch.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(patch.querySelector('button'), async () => {
      await job('template.patch', name, {
        packages: words(field(patch, 'packages')), run: patch.elements.namedItem('run').value.trim() || null,
        message: field(patch, 'message') || null,
      }, patchOut);
      flash(`${name}: patched`);
      await refresh();
    });
  });
  rollout.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(rollout.querySelector('button'), async () => {
      const num = (k) => (field(rollout, k) ? Number(field(rollout, k)) : null);
      await job('template.rollout', name, { wave: num('wave'), health: field(rollout, 'health') || null, timeout: num('timeout') }, rolloutOut);
      flash(`${name}: rolled out`);
      await refresh();
    });
  });
  keepFresh(refresh, (e) => !e.subject || e.subject.name === name);
  await refresh();
}
