// Operators' page: the clusters (kind, region, version, shared or private, whether Tether can
// administer each right now, how many instances each holds) and a form to register one. The
// form sends exactly what `tether cluster add` sends (POST /api/v1/clusters), so Tether checks
// it the same way and refuses it with the same message.

import { api } from './api.js';
import { byId, h, replace } from './dom.js';
import { requireAdmin } from './operators.js';
import { browserText, initChrome, notify } from './ui.js';

const FAMILIES = ['local', 's3', 'azure'];
let kinds = [];

/** `KEY=VALUE` lines as `tether cluster add --setting` reads them: JSON values decoded. */
export function parseSettings(text) {
  const settings = {};
  for (const raw of text.split('\n')) {
    const pair = raw.trim();
    if (!pair) continue;
    const at = pair.indexOf('=');
    if (at <= 0) {
      throw new Error(`invalid setting ${JSON.stringify(pair)}: use KEY=VALUE, one a line, ` +
        'e.g. endpoint=https://s3.example.com');
    }
    const value = pair.slice(at + 1);
    try {
      settings[pair.slice(0, at)] = JSON.parse(value);
    } catch (err) {
      settings[pair.slice(0, at)] = value;
    }
  }
  return settings;
}

// The CLI's options named in the API's messages ("pick another --name"), as this form's fields.
const FIELDS = [[/--region-family\b/g, 'Region family'], [/--region\b/g, 'Region'],
  [/--name\b/g, 'Name'], [/--url\b/g, 'Admin URL'], [/--setting\b/g, 'Settings'],
  [/--private\b/g, 'Private']];

/** A message of `tether cluster add` in this form's words (the same message otherwise). */
export function formText(message) {
  return FIELDS.reduce((text, [re, label]) => text.replace(re, label), browserText(message));
}

// Health checks log in to each server: a few at a time, whatever the number of clusters.
const CHECKS_AT_ONCE = 4;
let checking = 0;
const waiting = [];

async function limited(task) {
  if (checking >= CHECKS_AT_ONCE) await new Promise((resolve) => waiting.push(resolve));
  else checking += 1;
  try {
    return await task();
  } finally {
    const next = waiting.shift();
    if (next) next();  // its slot handed on
    else checking -= 1;
  }
}

function healthCell() {
  return h('td', { class: 'health', 'data-label': 'Reachability', dataset: { health: 'checking' } },
    h('span', { class: 'op' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), 'checking…'));
}

async function checkHealth(cluster, cell) {
  try {
    const health = await limited(() => api('GET', `/clusters/${cluster.id}/health`));
    cell.dataset.health = health.reachable ? 'reachable' : 'unreachable';
    replace(cell, health.reachable
      ? [h('span', { class: 'badge status-succeeded' }, 'reachable'),
        h('span', { class: 'muted small' }, ` ${Math.round(health.seconds * 1000)} ms`)]
      : [h('span', { class: 'badge status-failed' }, 'unreachable'),
        h('p', { class: 'reason small' }, browserText(health.message))]);
  } catch (err) {
    cell.dataset.health = 'unknown';
    replace(cell, h('span', { class: 'error-text small' }, err.message));
  }
}

function clusterRow(c) {
  const health = healthCell();
  const visibility = c.visibility === 'private' && c.owner_instance_id
    ? `private (instance ${c.owner_instance_id})` : c.visibility;
  const cell = (label, text, props = {}) => h('td', { ...props, 'data-label': label }, text);
  const row = h('tr', { dataset: { cluster: c.name } },
    h('th', { scope: 'row', tabindex: '-1', class: 'prefix', 'data-label': 'Name' }, c.name),
    cell('Kind', c.kind), cell('Region', c.region), cell('Version', c.version || '–'),
    cell('Visibility', visibility), health,
    cell('Instances', String(c.instances), { class: 'count' }),
    cell('Location', c.location, { class: 'value' }),
    cell('Run by', c.managed ? 'Tether' : 'registered'));
  checkHealth(c, health);
  return row;
}

async function loadClusters(focusName = null) {
  const box = byId('cluster-list');
  try {
    const clusters = await api('GET', '/clusters');
    replace(box, clusters.length
      ? h('div', { class: 'table-scroll' }, h('table', { class: 'clusters responsive' },
        h('caption', { class: 'visually-hidden' }, 'Clusters, with their health and load'),
        h('thead', {}, h('tr', {}, ['Name', 'Kind', 'Region', 'Version', 'Visibility',
          'Reachability', 'Instances', 'Location', 'Run by'].map((title) =>
          h('th', { scope: 'col' }, title)))),
        h('tbody', {}, clusters.map(clusterRow))))
      : h('p', { class: 'empty' }, 'No cluster yet: register one below.'));
    if (focusName) {
      box.querySelector(`tr[data-cluster="${CSS.escape(focusName)}"] th`)?.focus();
    }
  } catch (err) {
    replace(box, h('p', { class: 'error-text' }, err.message));
  } finally {
    box.removeAttribute('aria-busy');
  }
}

function field(id, label, control, help) {
  control.id = id;
  if (help) control.setAttribute('aria-describedby', `${id}-help`);
  return h('div', { class: 'field' }, h('label', { for: id }, label), control,
    help ? h('p', { id: `${id}-help`, class: 'help' }, help) : null);
}

function settingsHelp(kind) {
  const k = kinds.find((x) => x.kind === kind);
  const names = k?.settings || [];
  return names.length
    ? `One KEY=VALUE a line. ${kind} takes: ${names.join(', ')}.`
    : `One KEY=VALUE a line; ${kind} needs none.`;
}

function registerForm(regions) {
  const kind = h('select', { name: 'kind' }, kinds.map((k) => h('option', {
    value: k.kind, disabled: !k.available, selected: k.kind === 'postgres',
  }, k.available ? `${k.kind} – ${k.title}` : `${k.kind} (disabled: ${k.disabled_reason})`)));
  const region = h('input', { name: 'region', required: true, autocomplete: 'off',
    spellcheck: 'false', list: 'known-regions', value: 'local' });
  const family = h('select', { name: 'region_family' },
    h('option', { value: '' }, 'From its name (local; *azure*: azure; else s3)'),
    FAMILIES.map((f) => h('option', { value: f }, f)));
  const url = h('input', { name: 'url', required: true, autocomplete: 'off', spellcheck: 'false',
    placeholder: 'postgres://admin:PASSWORD@db.example.com:5432/postgres' });
  const name = h('input', { name: 'name', autocomplete: 'off', spellcheck: 'false' });
  const settings = h('textarea', { name: 'settings', rows: '3', spellcheck: 'false' });
  const privateBox = h('input', { type: 'checkbox', id: 'cluster-private', name: 'private',
    'aria-describedby': 'cluster-private-help' });
  const error = h('p', { class: 'error-text', role: 'alert', id: 'cluster-error' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Register cluster');
  const form = h('form', { id: 'cluster-form', class: 'form-grid', novalidate: true },
    field('cluster-kind', 'Kind', kind),
    field('cluster-region', 'Region', region,
      'A region listed here or a new one: lower-case letters, digits and “-”.'),
    field('cluster-family', 'Region family', family,
      'Only for a new region: decides the media storage it offers.'),
    field('cluster-url', 'Admin URL', url,
      'With the credentials of an admin of the server. Tether checks it now and never shows it again.'),
    field('cluster-name', 'Name (optional)', name, 'Default: KIND-REGION-NUMBER.'),
    field('cluster-settings', 'Settings (optional)', settings, settingsHelp(kind.value)),
    h('div', { class: 'field check' }, privateBox,
      h('label', { for: 'cluster-private' }, 'Private: reserve it for one service instance'),
      h('p', { id: 'cluster-private-help', class: 'help' },
        'Instead of sharing it between the services of its region.')),
    error,
    h('div', { class: 'buttons' }, submit));
  kind.addEventListener('change', () => {
    byId('cluster-settings-help').textContent = settingsHelp(kind.value);
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    for (const [input, say] of [[region, 'Enter the region it serves, e.g. local.'],
      [url, 'Enter its admin URL, with credentials.']]) {
      input.removeAttribute('aria-invalid');
      if (!input.value.trim()) {
        error.textContent = say;
        input.setAttribute('aria-invalid', 'true');
        input.focus();
        return;
      }
    }
    let body;
    try {
      body = {
        kind: kind.value, region: region.value.trim(), url: url.value.trim(),
        private: privateBox.checked, settings: parseSettings(settings.value),
        region_family: family.value || null,
      };
    } catch (err) {
      error.textContent = err.message;
      settings.focus();
      return;
    }
    if (name.value.trim()) body.name = name.value.trim();
    submit.disabled = true;
    submit.textContent = `Checking the ${kind.value} cluster…`;
    try {
      const c = await api('POST', '/clusters', body);
      notify(`Added cluster ${c.name}: ${c.kind} ${c.version} in ${c.region} (${c.visibility}) ` +
        `at ${c.location}`, 'success');
      url.value = '';
      name.value = '';
      settings.value = '';
      await loadClusters(c.name);
    } catch (err) {
      error.textContent = formText(err.message);
      submit.disabled = false;
      submit.focus();
    } finally {
      submit.disabled = false;
      submit.textContent = 'Register cluster';
    }
  });
  return h('details', { class: 'card add', id: 'register-cluster' },
    h('summary', {}, 'Register a cluster'),
    h('datalist', { id: 'known-regions' }, regions.map((r) => h('option', { value: r.name }))),
    form);
}

async function main() {
  const box = byId('operators');
  if (!(await requireAdmin(box))) return;
  let regions = [];
  try {
    [kinds, regions] = await Promise.all([api('GET', '/kinds'), api('GET', '/regions')]);
  } catch (err) {
    notify(err.message, 'error');
  }
  replace(box,
    h('section', { 'aria-labelledby': 'clusters-title' },
      h('div', { class: 'section-head' },
        h('h2', { id: 'clusters-title' }, 'Registered clusters'),
        h('button', { type: 'button', class: 'small', id: 'check-again',
          onclick: () => loadClusters() }, 'Check again')),
      h('p', { class: 'muted' }, 'The real servers Tether provisions services on. ',
        'Reachability is checked now, with the admin URL, as registering does.'),
      h('div', { id: 'cluster-list', 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading…'))),
    registerForm(regions));
  box.removeAttribute('aria-busy');
  await loadClusters();
}

initChrome([['Projects', '/'], ['Clusters', null]]);
main();
