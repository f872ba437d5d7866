// The dashboard's views: instances (list and one), the launch form, templates (list and one,
// with patch, rollback and rollout), and the live events.
import { act, stream, path, words, size, human } from './api.js';
import { h, show, flash, busy, field, confirmDialog } from './dom.js';

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
function keepFresh(refresh, relevant = () => true) {
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

// ---- instances -----------------------------------------------------------------------------

function stateBadge(state) {
  return h('span', { class: `state state-${state}` }, state);
}

function templateOf(i) {
  const v = i.running_version ?? i.pinned_version;
  const pin = i.pinned_version !== undefined ? ' (pinned)' : '';
  return `${i.template}${v !== undefined ? `@${v}` : ''}${pin}`;
}

function resourcesOf(i) {
  const parts = [];
  if (i.flavor) parts.push(i.flavor);
  const l = i.limits || {};
  if (l.cpus !== undefined) parts.push(`${l.cpus} CPU`);
  if (l.memory !== undefined) parts.push(human(l.memory));
  if (l.pids !== undefined) parts.push(`${l.pids} pids`);
  if (l.disk !== undefined) parts.push(`disk ${human(l.disk)}`);
  return parts.join(', ') || '—';
}

function addressesOf(i) {
  const parts = [];
  for (const n of i.interfaces || []) {
    parts.push(`${n.name} ${n.ipv4}${n.ipv6 ? ` ${n.ipv6}` : ''}`);
  }
  for (const p of i.publish || []) {
    parts.push(`${p.host_ip}:${p.host_port}→${p.port}/${p.proto}`);
  }
  return parts.length ? parts.map((p) => h('div', { class: 'tag' }, p)) : '—';
}

/** Runs instance action `id` on `name` and flashes what happened. */
async function instanceAction(id, name, body) {
  const answer = await act(id, [name], body);
  const verb = id.split('.')[1];
  flash(`${name}: ${verb} done${answer && answer.note ? ` (${answer.note})` : ''}`);
  return answer;
}

function actionButton(label, id, name, after, body = {}) {
  const b = h('button', { type: 'button', 'data-action': id.split('.')[1] }, label);
  b.addEventListener('click', () => busy(b, async () => {
    await instanceAction(id, name, body);
    await after();
  }));
  return b;
}

function removeButton(name, after) {
  const b = h('button', { type: 'button', class: 'danger', 'data-action': 'remove' }, 'Remove');
  b.addEventListener('click', () => busy(b, async () => {
    const ok = await confirmDialog(`Remove instance ${name}? A running instance is stopped first; its snapshots are removed with it.`);
    if (!ok) return;
    await act('instance.remove', [name], undefined, { force: 'true', snapshots: 'true' });
    flash(`${name}: removed`);
    await after();
  }));
  return b;
}

function instanceButtons(i, after, all = false) {
  const running = i.state === 'running';
  const paused = i.state === 'paused';
  return h('div', { class: 'actions' },
    !running && !paused && actionButton('Start', 'instance.start', i.name, after),
    (running || paused) && actionButton('Stop', 'instance.stop', i.name, after),
    running && actionButton('Restart', 'instance.restart', i.name, after),
    all && running && actionButton('Pause', 'instance.pause', i.name, after),
    all && paused && actionButton('Resume', 'instance.resume', i.name, after),
    actionButton('Reset', 'instance.reset', i.name, after),
    running && h('a', { class: 'button', href: `#/instances/${encodeURIComponent(i.name)}/terminal`, 'data-action': 'terminal' }, 'Terminal'),
    removeButton(i.name, after));
}

export async function instancesView() {
  const body = h('tbody', {});
  const table = h('table', { id: 'instances' },
    h('thead', {}, h('tr', {}, ['Name', 'State', 'Mode', 'Template', 'Resources', 'Addresses', ''].map((t) => h('th', {}, t)))),
    body);
  show(h('div', { class: 'inline' }, h('h1', {}, 'Instances'),
    h('a', { class: 'button primary', href: '#/launch' }, 'Launch…')), table);
  const refresh = async () => {
    let list;
    try {
      list = await act('instance.list');
    } catch (e) {
      flash(e);
      return;
    }
    body.replaceChildren(...list.map((i) => h('tr', { 'data-instance': i.name },
      h('td', {}, h('a', { href: `#/instances/${encodeURIComponent(i.name)}` }, i.name)),
      h('td', { class: 'state-cell' }, stateBadge(i.state)),
      h('td', {}, i.mode),
      h('td', { class: 'tag' }, templateOf(i)),
      h('td', {}, resourcesOf(i)),
      h('td', {}, addressesOf(i)),
      h('td', {}, instanceButtons(i, refresh)))));
    if (!list.length) body.append(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No instances: launch one.')));
  };
  keepFresh(refresh, (e) => !e.subject || ['instance', 'snapshot'].includes(e.subject.kind));
  await refresh();
}

function info(pairs) {
  return h('dl', { class: 'info' }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

export async function instanceView(name) {
  const head = h('div', {});
  const snapshots = h('div', {});
  const forms = h('div', {});
  const log = h('pre', { class: 'log', hidden: true });
  show(h('p', {}, h('a', { href: '#/instances' }, '← Instances')), head, snapshots, forms,
    h('div', { class: 'card' }, h('h2', {}, 'Console log'),
      h('button', { type: 'button', onclick: (ev) => busy(ev.target, async () => {
        const r = await fetch(path('instance.logs', [name], { tail: 200 }), { credentials: 'same-origin' });
        log.textContent = r.ok ? await r.text() : `HTTP ${r.status}`;
        log.hidden = false;
      }) }, 'Show the last 200 lines'), log));
  let built = false;
  let snapshotList = null;
  let scheduleList = null;
  const refresh = async () => {
    let i;
    let snaps;
    try {
      [i, snaps] = await Promise.all([act('instance.info', [name]), act('snapshot.list', [name])]);
    } catch (e) {
      if (e.status === 404) {
        show(h('p', {}, `Instance ${name} does not exist (any more).`), h('a', { href: '#/instances' }, '← Instances'));
        stopTimers();
      } else flash(e);
      return;
    }
    const after = async () => {
      try { await act('instance.info', [name]); await refresh(); } catch (_) { location.hash = '#/instances'; }
    };
    head.replaceChildren(h('div', { class: 'card', id: 'instance', 'data-instance': i.name, 'data-state': i.state },
      h('div', { class: 'inline' }, h('h1', {}, i.name), stateBadge(i.state)),
      instanceButtons(i, after, true),
      h('h2', {}, 'Details'),
      info([
        ['Mode', i.mode], ['Template', templateOf(i)], ['Resources', resourcesOf(i)],
        ['Addresses', addressesOf(i)], ['Command', (i.command || []).join(' ')], ['User', i.user],
        ['Created', i.created_at], ['Started', i.started_at], ['PID', i.pid],
        ['Last exit', i.last_exit ? JSON.stringify(i.last_exit) : undefined],
        ['OOM kills', i.oom_kills || undefined], ['Error', i.error], ['Id', i.id],
      ])));
    if (!snapshotList) {
      snapshotList = snapshotCard(name, after);
      scheduleList = scheduleCard(name);
      snapshots.replaceChildren(snapshotList.card, scheduleList.card);
    }
    snapshotList.update(snaps);
    scheduleList.update();
    if (i.state === 'running') {
      act('stats', [], undefined, { instances: i.name }).then((list) => {
        const st = (list || [])[0];
        if (!st) return;
        const usage = h('div', { id: 'usage' }, info([
          ['CPU', `${st.cpu_percent.toFixed(1)} %`],
          ['Memory', `${human(st.memory_bytes)}${st.memory_limit ? ` of ${human(st.memory_limit)}` : ''}`],
          ['Processes', `${st.pids}${st.pids_limit ? ` of ${st.pids_limit}` : ''}`],
          ['Disk', st.disk_bytes !== undefined ? `${human(st.disk_bytes)}${st.disk_limit ? ` of ${human(st.disk_limit)}` : ''}` : undefined],
          ['I/O', `read ${human(st.io_read_bytes)}, written ${human(st.io_write_bytes)}`],
        ]));
        head.querySelector('#instance').append(h('h2', {}, 'Usage'), usage);
      }).catch(() => {});
    }
    if (!built) {
      built = true;
      forms.replaceChildren(cloneCard(i, snaps), publishCard(i, snaps), limitsCard(i, after), renameCard(i));
    }
    for (const select of forms.querySelectorAll('select.snapshot-choice')) snapshotOptions(select, snaps);
  };
  keepFresh(refresh, (e) => !e.subject || e.subject.name === name || e.subject.name.startsWith(`${name}/`));
  await refresh();
}

/** A table that a refresh rewrites, over a form that stays (what is typed in it too). */
function listCard(title, columns, form) {
  const list = h('div', {});
  const card = h('div', { class: 'card' }, h('h2', {}, title), list, form);
  const update = (rows) => list.replaceChildren(rows.length
    ? h('table', {}, h('thead', {}, h('tr', {}, columns.map((t) => h('th', {}, t)))), h('tbody', {}, rows))
    : h('p', { class: 'muted' }, 'None.'));
  return { card, update };
}

function snapshotCard(name, after) {
  const form = h('form', { class: 'inline', id: 'snapshot-form' },
    h('input', { name: 'snapshot', placeholder: 'snapshot name (optional)' }),
    h('button', { type: 'submit', 'data-action': 'snapshot' }, 'Take a snapshot'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form.querySelector('button'), async () => {
      const s = await act('snapshot.create', [name], { name: field(form, 'snapshot') || null });
      flash(`${name}: snapshot ${s.name} taken`);
      form.reset();
      await after();
    });
  });
  const { card, update } = listCard('Snapshots', ['Name', 'Taken', 'Template', 'Size', ''], form);
  return {
    card,
    update: (snaps) => update(snaps.map((s) => {
      const restore = h('button', { type: 'button', 'data-action': 'restore' }, 'Restore');
      restore.addEventListener('click', () => busy(restore, async () => {
        if (!(await confirmDialog(`Rewind ${name} to snapshot ${s.name}? What changed since is lost.`, 'Restore'))) return;
        await act('snapshot.restore', [name, s.name]);
        flash(`${name}: restored to ${s.name}`);
        await after();
      }));
      const remove = h('button', { type: 'button', class: 'danger' }, 'Remove');
      remove.addEventListener('click', () => busy(remove, async () => {
        if (!(await confirmDialog(`Remove snapshot ${s.name} of ${name}?`))) return;
        await act('snapshot.remove', [name, s.name]);
        flash(`${name}: snapshot ${s.name} removed`);
        await after();
      }));
      return h('tr', { 'data-snapshot': s.name }, h('td', {}, s.name), h('td', {}, s.created_at),
        h('td', { class: 'tag' }, `${s.template}@${s.template_version}`), h('td', {}, human(s.size)),
        h('td', {}, h('div', { class: 'actions' }, restore, remove)));
    })),
  };
}

function scheduleCard(name) {
  const form = h('form', { class: 'inline', id: 'schedule-form' },
    h('select', { name: 'action' }, ['reset', 'restart', 'snapshot'].map((a) => h('option', { value: a }, a))),
    h('input', { name: 'cron', placeholder: 'cron: 0 3 * * *', required: true }),
    h('input', { name: 'keep', type: 'number', min: 1, placeholder: 'snapshots kept' }),
    h('button', { type: 'submit' }, 'Add a schedule'));
  const { card, update } = listCard('Schedules', ['#', 'Action', 'When', 'Keep', 'Next', 'Last', 'Last error', ''], form);
  const refresh = async () => {
    let list = [];
    try { list = await act('schedule.list', [name]); } catch (e) { flash(e); return; }
    update(list.map((sc) => {
      const rm = h('button', { type: 'button', class: 'danger' }, 'Remove');
      rm.addEventListener('click', () => busy(rm, async () => {
        if (!(await confirmDialog(`Remove the ${sc.action} schedule \`${sc.cron}\` of ${name}?`))) return;
        await act('schedule.remove', [name, String(sc.id)]);
        await refresh();
      }));
      return h('tr', { 'data-schedule': sc.id }, h('td', {}, sc.id), h('td', {}, sc.action), h('td', { class: 'tag' }, sc.cron),
        h('td', {}, sc.keep ?? ''), h('td', {}, sc.next_run ?? ''), h('td', {}, sc.last_run ?? ''),
        h('td', { class: 'outcome-error' }, sc.last_error ?? ''), h('td', {}, rm));
    }));
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form.querySelector('button'), async () => {
      const keep = field(form, 'keep');
      await act('schedule.add', [name], { action: field(form, 'action'), cron: field(form, 'cron'), keep: keep ? Number(keep) : undefined });
      form.reset();
      await refresh();
    });
  });
  return { card, update: refresh };
}

function renameCard(i) {
  const form = h('form', { class: 'inline', id: 'rename-form' },
    h('input', { name: 'name', required: true, placeholder: 'new name' }),
    h('button', { type: 'submit', 'data-action': 'rename' }, 'Rename'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form.querySelector('button'), async () => {
      const r = await act('instance.rename', [i.name], { name: field(form, 'name') });
      flash(`${i.name}: renamed to ${r.name}`);
      location.hash = `#/instances/${encodeURIComponent(r.name)}`;
    });
  });
  return h('div', { class: 'card' }, h('h2', {}, 'Rename'), form);
}

function snapshotOptions(select, snaps) {
  const chosen = select.value;
  select.replaceChildren(h('option', { value: '' }, select.dataset.none),
    ...snaps.map((s) => h('option', { value: s.name }, s.name)));
  if (snaps.some((s) => s.name === chosen)) select.value = chosen;
}

/** A choice of the instance's snapshots, kept current by the instance's view. */
function snapshotSelect(snaps, none) {
  const select = h('select', { name: 'snapshot', class: 'snapshot-choice', 'data-none': none });
  snapshotOptions(select, snaps);
  return select;
}

function modeSelect(withSame) {
  return h('select', { name: 'mode' },
    withSame && h('option', { value: '' }, 'the same as its source'),
    ['transient', 'persistent', 'ephemeral'].map((m) => h('option', { value: m }, m)));
}

function cloneCard(i, snaps) {
  const form = h('form', { class: 'grid', id: 'clone-form' },
    h('label', {}, 'New name'), h('input', { name: 'name', required: true }),
    h('label', {}, 'From'), snapshotSelect(snaps, 'its current state'),
    h('label', {}, 'Mode'), modeSelect(true),
    h('label', {}, 'Start it'), h('input', { type: 'checkbox', name: 'start', checked: true }),
    h('div', { class: 'full' }, h('button', { type: 'submit', 'data-action': 'clone' }, 'Clone')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form.querySelector('button'), async () => {
      const c = await act('instance.clone', [i.name], {
        name: field(form, 'name'), snapshot: field(form, 'snapshot') || null,
        mode: field(form, 'mode') || null, start: form.elements.namedItem('start').checked,
      });
      flash(`${i.name}: cloned as ${c.name}`);
      location.hash = `#/instances/${encodeURIComponent(c.name)}`;
    });
  });
  return h('div', { class: 'card' }, h('h2', {}, 'Clone'), form);
}

function publishCard(i, snaps) {
  const form = h('form', { class: 'grid', id: 'publish-form' },
    h('label', {}, 'Template'), h('input', { name: 'template', required: true, placeholder: 'NAME (a new version if it exists)' }),
    h('label', {}, 'From'), snapshotSelect(snaps, 'its current state'),
    h('label', {}, 'Message'), h('input', { name: 'message' }),
    h('label', {}, 'Keep its limits'), h('input', { type: 'checkbox', name: 'limits' }),
    h('div', { class: 'full' }, h('button', { type: 'submit', 'data-action': 'publish' }, 'Publish')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form.querySelector('button'), async () => {
      const t = await act('instance.publish', [i.name], {
        template: field(form, 'template'), snapshot: field(form, 'snapshot') || null,
        message: field(form, 'message') || null, limits: form.elements.namedItem('limits').checked,
      });
      flash(`${i.name}: published as ${t.name}@${t.current_version}`);
    });
  });
  return h('div', { class: 'card' }, h('h2', {}, 'Publish as a template'), form);
}

function limitsCard(i, after) {
  const flavors = h('select', { name: 'flavor' }, h('option', { value: '-' }, 'unchanged'), h('option', { value: '' }, 'none'));
  act('flavor.list').then((list) => flavors.append(...list.map((f) => h('option', { value: f.name }, `${f.name} (${f.description})`)))).catch(() => {});
  const form = h('form', { class: 'grid', id: 'limits-form' },
    h('label', {}, 'Flavor'), flavors,
    h('label', {}, 'Changes'), h('input', { name: 'changes', placeholder: 'memory=512M cpus=1.5 pids=none' }),
    h('div', { class: 'full' }, h('button', { type: 'submit', 'data-action': 'limits' }, 'Change limits')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form.querySelector('button'), async () => {
      const changes = words(field(form, 'changes')).map((w) => {
        const eq = w.indexOf('=');
        if (eq < 1) throw new Error(`\`${w}\` is not KEY=VALUE (e.g. memory=512M)`);
        return [w.slice(0, eq), w.slice(eq + 1)];
      });
      const flavor = field(form, 'flavor');
      const out = await act('instance.limits', [i.name], { flavor: flavor === '-' ? undefined : flavor, changes });
      const later = out.next_start.map(([k, why]) => `${k} (${why})`).join(', ');
      flash(`${i.name}: applied ${out.applied.join(', ') || 'nothing now'}${later ? `; at the next start: ${later}` : ''}`);
      await after();
    });
  });
  return h('div', { class: 'card' }, h('h2', {}, 'Limits'), form);
}

// ---- launch --------------------------------------------------------------------------------

export async function launchView() {
  let templates = [];
  let flavors = [];
  let networks = [];
  const sources = [];
  try {
    [templates, flavors, networks] = await Promise.all([
      act('template.list'), act('flavor.list').catch(() => []), act('network.list').catch(() => [])]);
    const instances = await act('instance.list');
    const lists = await Promise.all(instances.map((i) => act('snapshot.list', [i.name]).catch(() => [])));
    for (const l of lists) for (const s of l) sources.push(s);
  } catch (e) {
    flash(e);
  }
  const versions = h('select', { name: 'version' });
  const templateSelect = h('select', { name: 'template', id: 'launch-template' },
    templates.map((t) => h('option', { value: t.name }, t.name)));
  const fillVersions = () => {
    const t = templates.find((x) => x.name === templateSelect.value);
    versions.replaceChildren(h('option', { value: '' }, 'the current one (follow it)'),
      ...(t ? t.versions.map((v) => h('option', { value: v.version }, `@${v.version} (pinned)${v.message ? ` — ${v.message}` : ''}`)) : []));
  };
  templateSelect.addEventListener('change', fillVersions);
  fillVersions();
  const snapshotSelect = h('select', { name: 'from_snapshot', id: 'launch-snapshot' },
    sources.map((s) => h('option', { value: `${s.instance}/${s.name}` }, `${s.instance}/${s.name}`)));
  const form = h('form', { class: 'grid', id: 'launch-form' },
    h('label', {}, 'From'),
    h('div', { class: 'inline' },
      h('label', {}, h('input', { type: 'radio', name: 'source', value: 'template', checked: true }), ' a template'),
      h('label', {}, h('input', { type: 'radio', name: 'source', value: 'snapshot', disabled: !sources.length }), ' a snapshot (a clone)')),
    h('label', { class: 'from-template' }, 'Template'), h('div', { class: 'inline from-template' }, templateSelect, versions),
    h('label', { class: 'from-snapshot', hidden: true }, 'Snapshot'), h('div', { class: 'from-snapshot', hidden: true }, snapshotSelect),
    h('label', { class: 'from-template' }, 'Applications'),
    h('input', { name: 'apps', class: 'from-template', placeholder: 'application templates stacked over it, in order (NAME or NAME@N)' }),
    h('label', {}, 'Name'), h('input', { name: 'name', id: 'launch-name', placeholder: 'generated when empty' }),
    h('label', {}, 'Mode'), modeSelect(false),
    h('label', { class: 'from-template' }, 'Flavor'),
    h('select', { name: 'flavor', class: 'from-template' }, h('option', { value: '' }, 'none'),
      flavors.map((f) => h('option', { value: f.name }, `${f.name} (${f.description})`))),
    h('label', { class: 'from-template' }, 'Limits'),
    h('div', { class: 'inline from-template' },
      h('input', { name: 'cpus', placeholder: 'CPUs (1.5)', size: 8 }),
      h('input', { name: 'memory', placeholder: 'memory (512M)', size: 10 }),
      h('input', { name: 'pids', placeholder: 'pids (256)', size: 8 })),
    h('label', { class: 'from-template' }, 'Network'),
    h('select', { name: 'network', class: 'from-template' }, h('option', { value: '' }, 'the default network'),
      h('option', { value: 'none' }, 'none (only lo)'), networks.map((n) => h('option', { value: n.name }, n.name))),
    h('label', { class: 'from-template' }, 'Command'),
    h('input', { name: 'command', id: 'launch-command', class: 'from-template', placeholder: "the template's default; e.g. sleep infinity" }),
    h('label', { class: 'from-template' }, 'User data'),
    h('textarea', { name: 'user_data', id: 'launch-user-data', class: 'from-template', placeholder: '#!/bin/sh … or #cloud-config …' }),
    h('div', { class: 'full' }, h('button', { type: 'submit', class: 'primary', id: 'launch' }, 'Launch')));
  const switchSource = () => {
    const snap = form.elements.namedItem('source').value === 'snapshot';
    for (const el of form.querySelectorAll('.from-template')) el.hidden = snap;
    for (const el of form.querySelectorAll('.from-snapshot')) el.hidden = !snap;
  };
  for (const r of form.querySelectorAll('input[name=source]')) r.addEventListener('change', switchSource);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form.querySelector('button[type=submit]'), async () => {
      const name = field(form, 'name') || null;
      const mode = field(form, 'mode');
      let created;
      if (form.elements.namedItem('source').value === 'snapshot') {
        const [instance, snapshot] = field(form, 'from_snapshot').split('/');
        if (!name) throw new Error('a clone needs a name');
        created = await act('instance.clone', [instance], { name, snapshot, mode, start: true });
      } else {
        const limits = {};
        const cpus = field(form, 'cpus');
        if (cpus) {
          limits.cpus = Number(cpus);
          if (!(limits.cpus > 0)) throw new Error(`CPUs: \`${cpus}\` is not a positive number`);
        }
        const memory = size(field(form, 'memory'), 'memory');
        if (memory !== undefined) limits.memory = memory;
        const pids = field(form, 'pids');
        if (pids) {
          limits.pids = Number(pids);
          if (!Number.isInteger(limits.pids) || limits.pids < 1) throw new Error(`pids: \`${pids}\` is not a positive whole number`);
        }
        const version = field(form, 'version');
        const network = field(form, 'network');
        const userData = form.elements.namedItem('user_data').value;
        created = await act('instance.create', [], {
          template: version ? `${field(form, 'template')}@${version}` : field(form, 'template'),
          name, mode, command: words(field(form, 'command')), apps: words(field(form, 'apps')),
          flavor: field(form, 'flavor') || undefined, limits,
          networks: network ? [network] : undefined,
          user_data: userData.trim() ? userData : undefined,
        });
      }
      flash(`${created.name}: launched (${created.state})`);
      location.hash = `#/instances/${encodeURIComponent(created.name)}`;
    });
  });
  show(h('h1', {}, 'Launch an instance'), h('div', { class: 'card' }, form));
}

// ---- templates -----------------------------------------------------------------------------

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
    h('p', { class: 'muted' }, 'Import archives and images with ', h('code', {}, 'mayfly template import'), ' on the daemon\'s host (it reads files there).'));
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

/** Runs a streaming template job, showing its lines in `out`. */
async function job(id, name, body, out) {
  out.hidden = false;
  out.textContent = '';
  let failed = null;
  await stream(id, [name], body, (ev) => {
    if (ev.error) failed = ev.error;
    out.append(`${progressLine(ev)}\n`);
    out.scrollTop = out.scrollHeight;
  });
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

// ---- resources: networks, flavors, volumes, channels ---------------------------------------

/** A card listing one noun with a remove button per row and a create form. */
function nounCard({ title, list, remove, columns, row, form, create }) {
  const body = h('tbody', {});
  const card = h('div', { class: 'card', id: `${title.toLowerCase()}-card` }, h('h2', {}, title),
    h('table', {}, h('thead', {}, h('tr', {}, [...columns, ''].map((c) => h('th', {}, c)))), body), form);
  const refresh = async () => {
    let items;
    try { items = await act(list); } catch (e) { flash(e); return; }
    body.replaceChildren(...items.map((it) => {
      const rm = h('button', { type: 'button', class: 'danger' }, 'Remove');
      rm.addEventListener('click', () => busy(rm, async () => {
        if (!(await confirmDialog(`Remove ${title.toLowerCase().replace(/s$/, '')} ${it.name}?`))) return;
        await act(remove, [it.name]);
        flash(`${it.name} removed`);
        await refresh();
      }));
      return h('tr', { 'data-name': it.name }, row(it).map((c) => h('td', {}, c)), h('td', {}, it.builtin ? '' : rm));
    }));
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form.querySelector('button'), async () => {
      const made = await act(create, [], form.body());
      flash(`${made.name} created`);
      form.reset();
      await refresh();
    });
  });
  refresh();
  return card;
}

function formOf(id, fields, body) {
  const form = h('form', { class: 'inline', id }, fields, h('button', { type: 'submit' }, 'Create'));
  form.body = () => body(form);
  return form;
}

export function resourcesView() {
  const limitsOf = (form) => {
    const l = {};
    const cpus = field(form, 'cpus');
    if (cpus) l.cpus = Number(cpus);
    const memory = size(field(form, 'memory'), 'memory');
    if (memory !== undefined) l.memory = memory;
    const pids = field(form, 'pids');
    if (pids) l.pids = Number(pids);
    return l;
  };
  const cards = [
    nounCard({
      title: 'Networks', list: 'network.list', remove: 'network.remove', create: 'network.create',
      columns: ['Name', 'Subnet', 'IPv6', 'Bridge', 'NAT', 'Isolated'],
      row: (n) => [n.name, n.subnet, n.subnet6 ?? '—', n.bridge, n.nat ? 'yes' : 'no', n.isolated ? 'yes' : 'no'],
      form: formOf('network-form', [
        h('input', { name: 'name', placeholder: 'name', required: true }),
        h('input', { name: 'subnet', placeholder: 'subnet (10.20.0.0/24; chosen when empty)' }),
        h('label', {}, h('input', { type: 'checkbox', name: 'isolated' }), ' isolated'),
        h('label', {}, h('input', { type: 'checkbox', name: 'nonat' }), ' no NAT'),
      ], (f) => ({ name: field(f, 'name'), subnet: field(f, 'subnet') || undefined,
        isolated: f.elements.namedItem('isolated').checked, nat: !f.elements.namedItem('nonat').checked })),
    }),
    nounCard({
      title: 'Flavors', list: 'flavor.list', remove: 'flavor.remove', create: 'flavor.create',
      columns: ['Name', 'Description', 'Limits', 'Used by'],
      row: (fl) => [fl.name, fl.description, resourcesOf({ limits: fl.limits }), (fl.used_by || []).join(', ') || '—'],
      form: formOf('flavor-form', [
        h('input', { name: 'name', placeholder: 'name', required: true }),
        h('input', { name: 'description', placeholder: 'description' }),
        h('input', { name: 'cpus', placeholder: 'CPUs', size: 6 }),
        h('input', { name: 'memory', placeholder: 'memory', size: 8 }),
        h('input', { name: 'pids', placeholder: 'pids', size: 6 }),
      ], (f) => ({ name: field(f, 'name'), description: field(f, 'description'), limits: limitsOf(f) })),
    }),
    nounCard({
      title: 'Volumes', list: 'volume.list', remove: 'volume.remove', create: 'volume.create',
      columns: ['Name', 'Size', 'Used', 'Attached to', 'Created'],
      row: (v) => [v.name, v.size ? human(v.size) : 'unbounded', v.used !== undefined ? human(v.used) : '',
        v.attached ? JSON.stringify(v.attached) : '—', v.created_at],
      form: formOf('volume-form', [
        h('input', { name: 'name', placeholder: 'name', required: true }),
        h('input', { name: 'size', placeholder: 'size (1G; unbounded when empty)' }),
      ], (f) => ({ name: field(f, 'name'), size: size(field(f, 'size'), 'size') })),
    }),
    nounCard({
      title: 'Channels', list: 'channel.list', remove: 'channel.remove', create: 'channel.create',
      columns: ['Name', 'Server', 'Client', 'Created'],
      row: (c) => [c.name, c.server, c.client, c.created_at],
      form: formOf('channel-form', [
        h('input', { name: 'name', placeholder: 'name', required: true }),
        h('input', { name: 'server', placeholder: 'server instance', required: true }),
        h('input', { name: 'client', placeholder: 'client instance', required: true }),
      ], (f) => ({ name: field(f, 'name'), server: field(f, 'server'), client: field(f, 'client') })),
    }),
  ];
  show(h('h1', {}, 'Resources'), cards);
}

// ---- events --------------------------------------------------------------------------------

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
  cleanups.push(() => window.removeEventListener('mayfly-event', onEvent));
}
