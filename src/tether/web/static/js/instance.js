// The details of one service instance: what it is, where it lives, the variables it gives
// (values hidden until revealed), what can be done with it now and why not, and its history.

import { api, envPath, seg } from './api.js';
import { InstanceBackups } from './backups.js';
import { byId, h, replace } from './dom.js';
import {
  actionButtons,
  copyText,
  focusKey,
  initChrome,
  isBusy,
  notify,
  operationText,
  restoreFocus,
  stateBadge,
  when,
  yesNo,
} from './ui.js';

const parts = location.pathname.split('/').map(decodeURIComponent);
// /projects/{project}/{env}/services/{prefix}
const [project, env, prefix] = [parts[2], parts[3], parts[5]];
const path = `${envPath(project, env)}/services/${seg(prefix)}`;
const projectHref = `/projects/${seg(project)}?env=${seg(env)}`;

const MASK = '••••••••';
let revealed = null; // the variables' values, once the user asked to see them
let lastSignature = null;
let wake = null;
const backups = new InstanceBackups(project, env, prefix);

function row(label, ...content) {
  return [h('dt', {}, label), h('dd', {}, content)];
}

function summary(inst) {
  const op = operationText(inst);
  return h('section', { class: 'card', 'aria-labelledby': 'summary-title' },
    h('h2', { id: 'summary-title' }, 'Summary'),
    h('dl', { class: 'facts' },
      row('Prefix', h('code', {}, inst.prefix)),
      row('Service', `${inst.service} (${inst.kind})`),
      row('State', h('div', { class: 'state-cell' }, stateBadge(inst),
        h('span', { class: 'meaning' }, inst.meaning))),
      row('Functional', yesNo(inst.functional)),
      row('Usable by the application', yesNo(inst.usable)),
      row('Cluster', inst.cluster
        ? [`${inst.cluster.name} (${inst.visibility}) at `, h('code', {}, inst.cluster.location)]
        : `none yet (${inst.visibility}: chosen when it is provisioned)`),
      op ? row('Under way', h('span', { class: 'op' },
        h('span', { class: 'spinner', 'aria-hidden': 'true' }), op)) : null,
      inst.last_error ? row('Last error', h('span', { class: 'error-text' }, inst.last_error))
        : null,
      row('ID', h('code', { id: 'instance-uuid' }, inst.uuid)),
      row('Added', when(inst.created_at)),
      row('Changed', when(inst.updated_at))));
}

function actions(inst) {
  return h('section', { class: 'card', 'aria-labelledby': 'actions-title' },
    h('h2', { id: 'actions-title' }, 'Actions'),
    actionButtons(project, env, inst, () => refresh(), { explain: true }));
}

async function revealedValues() {
  if (!revealed) revealed = (await api('GET', `${path}?reveal=true`)).variables;
  return revealed;
}

function variables(inst) {
  const names = Object.keys(inst.variables);
  const reveal = h('button', { type: 'button', class: 'small', id: 'reveal',
    'aria-pressed': String(Boolean(revealed)), dataset: { focusKey: 'reveal' } },
  revealed ? 'Hide values' : 'Reveal values');
  reveal.addEventListener('click', async () => {
    try {
      if (revealed) revealed = null;
      else await revealedValues();
    } catch (err) {
      notify(err.message, 'error');
    }
    render(lastInstance, true);
  });
  const body = h('tbody', {}, names.map((name) => {
    const copy = h('button', { type: 'button', class: 'small quiet',
      'aria-label': `Copy the value of ${name}`, dataset: { focusKey: `copy:${name}` } },
    'Copy');
    copy.addEventListener('click', async () => {
      try {
        await copyText((await revealedValues())[name]);
        copy.textContent = 'Copied';
        notify(`${name} copied to the clipboard.`, 'success');
        setTimeout(() => { copy.textContent = 'Copy'; }, 1500);
      } catch (err) {
        notify(`Could not copy ${name}: ${err.message}`, 'error');
      }
    });
    return h('tr', { dataset: { name } },
      h('th', { scope: 'row', 'data-label': 'Name' }, h('code', {}, name)),
      h('td', { 'data-label': 'Value' }, h('div', { class: 'value-cell' },
        h('code', { class: revealed ? 'value' : 'value masked' }, revealed ? revealed[name] : MASK),
        copy)));
  }));
  return h('section', { class: 'card', 'aria-labelledby': 'variables-title' },
    h('div', { class: 'section-head' }, h('h2', { id: 'variables-title' }, 'Variables'),
      names.length ? reveal : null),
    names.length
      ? h('table', { class: 'responsive variables' },
        h('caption', { class: 'visually-hidden' }, `Variables ${inst.prefix} gives`),
        h('thead', {}, h('tr', {}, ['Name', 'Value'].map((t) => h('th', { scope: 'col' }, t)))),
        body)
      : h('p', { class: 'empty' }, 'None yet: they exist once the service is provisioned.'));
}

function history(inst) {
  return h('section', { class: 'card', 'aria-labelledby': 'history-title' },
    h('h2', { id: 'history-title' }, 'History'),
    h('table', { class: 'responsive history' },
      h('caption', { class: 'visually-hidden' }, `Who changed ${inst.prefix}, and when`),
      h('thead', {}, h('tr', {}, ['When', 'Who', 'What', 'State', 'Detail']
        .map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, [...inst.history].reverse().map((e) => h('tr', {},
        h('td', { 'data-label': 'When' }, when(e.at)),
        h('td', { 'data-label': 'Who' }, e.actor),
        h('td', { 'data-label': 'What' }, e.action),
        h('td', { 'data-label': 'State' },
          e.from || e.to ? `${e.from || '–'} → ${e.to || '–'}` : null),
        h('td', { 'data-label': 'Detail' }, e.detail || null))))));
}

let lastInstance = null;

function render(inst, force = false) {
  const signature = JSON.stringify(inst);
  if (!force && signature === lastSignature) return;
  lastSignature = signature;
  lastInstance = inst;
  const key = focusKey();
  document.title = `${inst.prefix} in ${project}/${env} · Tether`;
  byId('instance-title').replaceChildren(inst.prefix, ' ', stateBadge(inst));
  byId('instance-meta').textContent = `${inst.service} in ${project} / ${env}`;
  const box = byId('instance');
  // the backups section stays in place (never detached), so focus and what is typed there stay
  for (const child of [...box.childNodes]) if (child !== backups.el) child.remove();
  box.prepend(summary(inst), actions(inst));
  if (!backups.el.isConnected) box.append(backups.el);
  box.append(variables(inst), history(inst));
  box.removeAttribute('aria-busy');
  restoreFocus(key, box, 'reveal');
}

async function refresh() {
  try {
    render(await api('GET', path));
    await backups.refresh();
  } catch (err) {
    if (err.status === 404) {
      replace(byId('instance'), h('p', { class: 'error-text' }, err.message),
        h('p', {}, h('a', { href: projectHref }, `Back to ${env}`)));
    } else {
      notify(err.message, 'error');
    }
  }
  wake?.();
}

async function poll() {
  for (;;) {
    const ms = (lastInstance && isBusy(lastInstance)) || backups.busy() ? 1000 : 5000;
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      wake = () => { clearTimeout(timer); resolve(); };
    });
    wake = null;
    if (!document.hidden) await refresh();
  }
}

initChrome([['Projects', '/'], [project, `/projects/${seg(project)}`], [env, projectHref],
  [prefix, null]]);
backups.loadEnvironments().then(refresh).then(poll);
