// The instances: the list, and one instance's page with its snapshots, schedules, clone,
// publish, limits and name.
import { act, path, words, human } from './api.js';
import { h, show, flash, busy, field, confirmDialog } from './dom.js';
import {
  keepFresh, onLeave, stopTimers, stateBadge, templateOf, resourcesOf, addressesOf, info, listCard, modeSelect,
} from './shared.js';

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

export async function instanceView(name) {
  const head = h('div', {});
  const snapshots = h('div', {});
  const forms = h('div', {});
  const log = h('pre', { class: 'log', id: 'log', hidden: true });
  let following = null;
  onLeave(() => { if (following) following.abort(); });
  // The last 200 lines, then what comes (`logs --follow`) until the view changes.
  const follow = h('button', { type: 'button', id: 'follow-log', onclick: () => {
    if (following) return;
    following = new AbortController();
    log.hidden = false;
    log.textContent = '';
    follow.disabled = true;
    const decoder = new TextDecoder();
    fetch(path('instance.logs', [name], { tail: 200, follow: 'true' }), { credentials: 'same-origin', signal: following.signal })
      .then(async (r) => {
        if (!r.ok) throw new Error(`the log: HTTP ${r.status}`);
        const reader = r.body.getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          log.append(decoder.decode(value, { stream: true }));
          if (log.textContent.length > 1 << 20) log.textContent = log.textContent.slice(-(1 << 19));
          log.scrollTop = log.scrollHeight;
        }
      })
      .catch((e) => { if (e.name !== 'AbortError') flash(e); })
      .finally(() => { following = null; follow.disabled = false; });
  } }, 'Follow the console log');
  show(h('p', {}, h('a', { href: '#/instances' }, '← Instances')), head, snapshots, forms,
    h('div', { class: 'card' }, h('h2', {}, 'Console log'), follow, log));
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

/** The instance's snapshots: restore or remove one, take one. */
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

/** The instance's schedules: remove one, add one. */
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
