// Operators' page: every project's backups in one list, newest first — which environment each
// is of, what it holds, its size, who made it and when, and its last verification — with the
// running and failed ones on request. Each links to its project, whose Backups section
// downloads, verifies and restores it (with the typed confirmation): this page only shows.

import { api } from './api.js';
import { humanSize, verificationCell } from './backups.js';
import { byId, h, replace } from './dom.js';
import { requireAdmin } from './operators.js';
import { initChrome, statusBadge, when } from './ui.js';

const ORIGINS = {
  manual: 'on demand', scheduled: 'schedule', copy: 'copy', upload: 'uploaded dump',
};

function backupRow(backup) {
  const cell = (label, ...content) => h('td', { 'data-label': label }, ...content);
  const where = `${backup.project} / ${backup.environment}`;
  return h('tr', { dataset: { backup: String(backup.id), status: backup.status } },
    h('th', { scope: 'row', 'data-label': 'Backup' }, `#${backup.id}`),
    cell('Environment', h('a', { href: `/projects/${encodeURIComponent(backup.project)}` },
      where)),
    cell('Services', backup.files.map((f) => f.prefix).join(', ') || '–'),
    cell('Status', statusBadge(backup.status === 'completed' ? 'succeeded' : backup.status),
      backup.status === 'completed' ? '' : ` ${backup.status}`),
    cell('Size', humanSize(backup.size)),
    cell('Made', when(backup.created_at), ` (${ORIGINS[backup.origin] || backup.origin}`,
      backup.requested_by ? `, ${backup.requested_by})` : ')'),
    cell('Verification', verificationCell(backup)));
}

async function load() {
  const box = byId('backups');
  const everything = byId('show-unfinished').checked;
  box.setAttribute('aria-busy', 'true');
  try {
    const backups = await api('GET', `/backups${everything ? '?all=true' : ''}`);
    if (!backups.length) {
      replace(box, h('p', { class: 'muted' }, everything ? 'No backup yet.'
        : 'No restorable backup yet: open a project, then press Back up in its Backups section.'));
      return;
    }
    replace(box, h('table', { class: 'backups responsive' },
      h('caption', { class: 'visually-hidden' }, 'Every project\u2019s backups'),
      h('thead', {}, h('tr', {}, ['Backup', 'Environment', 'Services', 'Status', 'Size', 'Made',
        'Verification'].map((title) => h('th', { scope: 'col' }, title)))),
      h('tbody', {}, backups.map(backupRow))));
  } catch (err) {
    replace(box, h('p', { class: 'error-text' }, err.message));
  } finally {
    box.removeAttribute('aria-busy');
  }
}

async function main() {
  const box = byId('operators');
  if (!(await requireAdmin(box))) return;
  const show = h('input', { type: 'checkbox', id: 'show-unfinished' });
  show.addEventListener('change', load);
  replace(box,
    h('p', { class: 'muted' }, 'Every project\u2019s backups, newest first. Download, verify ',
      'or restore one from its project\u2019s Backups section.'),
    h('div', { class: 'field check' }, show,
      h('label', { for: 'show-unfinished' }, 'Show running and failed backups too')),
    h('div', { id: 'backups', 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading…')));
  box.removeAttribute('aria-busy');
  await load();
}

initChrome([['Projects', '/'], ['Backups', null]]);
main();
