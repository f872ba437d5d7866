// The launch form: from a template or from a snapshot (a clone).
import { act, words, size } from './api.js';
import { h, show, flash, busy, field } from './dom.js';
import { modeSelect } from './shared.js';

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
