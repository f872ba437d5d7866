// Networks, flavors, volumes and channels: list, create, remove.
import { act, size, human } from './api.js';
import { h, show, flash, busy, field, confirmDialog } from './dom.js';
import { resourcesOf } from './shared.js';

function nounCard({ title, list, remove, columns, row, form, create, extra }) {
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
      return h('tr', { 'data-name': it.name }, row(it).map((c) => h('td', {}, c)),
        h('td', {}, h('div', { class: 'actions' }, extra ? extra(it, refresh) : '', it.builtin ? '' : rm)));
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

/**
 * Attach (to a stopped instance: a path, read-only or not) or detach, as `mayfly volume
 * attach|detach` do.
 */
function volumeActions(v, refresh) {
  if (v.attached) {
    const detach = h('button', { type: 'button', 'data-action': 'detach' }, 'Detach');
    detach.addEventListener('click', () => busy(detach, async () => {
      await act('volume.detach', [v.name], { instance: v.attached.instance });
      flash(`${v.name} detached from ${v.attached.instance}`);
      await refresh();
    }));
    return detach;
  }
  const form = h('form', { class: 'inline attach-form' },
    h('input', { name: 'instance', placeholder: 'stopped instance', required: true, size: 12 }),
    h('input', { name: 'path', placeholder: '/srv/data', required: true, size: 12 }),
    h('label', {}, h('input', { type: 'checkbox', name: 'readonly' }), ' read-only'),
    h('button', { type: 'submit', 'data-action': 'attach' }, 'Attach'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form.querySelector('button'), async () => {
      const instance = field(form, 'instance');
      await act('volume.attach', [v.name], { instance, path: field(form, 'path'),
        readonly: form.elements.namedItem('readonly').checked });
      flash(`${v.name} attached to ${instance}`);
      await refresh();
    });
  });
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
        h('span', { class: 'attached' }, v.attached
          ? `${v.attached.instance}:${v.attached.path}${v.attached.readonly ? ' (read-only)' : ''}` : '—'),
        v.created_at],
      extra: volumeActions,
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
