// Backups in the Services view: per environment (the project page) and per instance (its page).
// Everything goes through the REST API as the CLI's `tether backup …` does; what may be restored
// where, and the typed confirmation, are checked again by Tether. A backup, restore, copy or
// verification runs as an operation of the worker: its progress is followed until it ends.
//
// Downloads: the session is a bearer header (never a cookie), so a plain link to the download
// route cannot carry it. The file is fetched with the header and handed to the browser as a
// blob; the link keeps the route as its address, for what it is.

import { ApiError, api, envPath, seg, session, signInAgain } from './api.js';
import { h, replace } from './dom.js';
import { focusKey, nextId, notify, restoreFocus, statusBadge, when } from './ui.js';

const FINISHED = new Set(['succeeded', 'failed']);
const BUSY = new Set(['queued', 'running']);
const HHMM = /^([01][0-9]|2[0-3]):[0-5][0-9]$/;

/** Bytes in a unit a person reads at a glance. */
export function humanSize(bytes) {
  if (bytes === null || bytes === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = Number(bytes);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(value < 10 ? 1 : 0) : value} ${units[unit]}`;
}

const ORIGINS = {
  manual: 'on demand', scheduled: 'schedule', copy: 'copy', upload: 'uploaded dump',
};

function table(caption, headings, body, cls) {
  return h('table', { class: `responsive ${cls}` },
    h('caption', { class: 'visually-hidden' }, caption),
    h('thead', {}, h('tr', {}, headings.map((t) => h('th', { scope: 'col' }, t)))),
    body);
}

const cell = (label, ...content) => h('td', { 'data-label': label },
  h('div', { class: 'cell' }, content));

/** The operation under way on a backup (a backup, restore, copy or verification), if any. */
const activeOperation = (backup) => (backup.operation && BUSY.has(backup.operation.status)
  ? backup.operation : null);

/** A backup's verification: a badge (passed, failed, not verified) with its detail. */
export function verificationCell(backup) {
  if (!backup.verification) {
    return h('span', { class: 'badge verification-none' }, 'not verified');
  }
  const title = backup.verification_detail || backup.verification;
  return h('div', { class: 'verification' },
    h('span', { class: `badge status-${backup.verification === 'passed' ? 'succeeded' : 'failed'}`,
      title, tabindex: '0', 'aria-label': `verification ${backup.verification}: ${title}`,
      'data-tip': title, dataset: { verification: backup.verification } },
    backup.verification),
    ' ', h('span', { class: 'muted small' }, when(backup.verified_at)));
}

/** The newest verification among `backups`, in one sentence (the last verification result). */
function lastVerification(backups, where) {
  const verified = backups.filter((b) => b.verified_at)
    .sort((a, b) => (a.verified_at < b.verified_at ? 1 : -1));
  if (!verified.length) {
    return [`No backup ${where} was verified yet: tick “verify” when backing up, or press `,
      'Verify on a backup.'];
  }
  const b = verified[0];
  return [h('strong', {}, `Last verification: ${b.verification}`), ' (backup ',
    h('code', {}, `#${b.id}`), ', ', when(b.verified_at), ')',
    b.verification_detail ? h('span', { class: 'verification-detail' },
      `: ${b.verification_detail}`) : null];
}

/**
 * The file name the server gives in Content-Disposition, reduced to safe characters (it is made
 * of the project, environment and prefix names, and the backup's id).
 */
function fileName(response, fallback) {
  const match = /filename="([^"]+)"/.exec(response.headers.get('Content-Disposition') || '');
  return (match ? match[1] : fallback).replace(/[^A-Za-z0-9._-]/g, '_');
}

/** Download one service's file of a backup: fetched with the session header, saved as a blob. */
export async function downloadFile(backupId, prefix) {
  const current = session();
  if (current === null) {
    signInAgain();
    return;
  }
  const path = `/api/v1/backups/${seg(backupId)}/download?prefix=${seg(prefix)}`;
  let response;
  try {
    response = await fetch(path, {
      headers: { Authorization: `Bearer ${current.secret}` }, credentials: 'omit',
      cache: 'no-store',
    });
  } catch (err) {
    throw new ApiError('Tether cannot be reached: is `tether up` still running?', 0, 'offline');
  }
  if (response.status === 401) {
    signInAgain();
    throw new ApiError('Your session has ended: please sign in again.', 401, 'unauthorized');
  }
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    throw new ApiError(data?.error?.message || `Tether answered HTTP ${response.status}`,
      response.status, data?.error?.code);
  }
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: fileName(response, `backup-${backupId}.bin`),
    hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function downloadLink(backup, file) {
  const link = h('a', {
    href: `/api/v1/backups/${seg(backup.id)}/download?prefix=${seg(file.prefix)}`,
    class: 'download', 'aria-label': `Download ${file.prefix} of backup #${backup.id}`,
    dataset: { action: 'download', prefix: file.prefix,
      focusKey: `${backup.id}:${file.prefix}:download` },
  }, 'Download');
  link.addEventListener('click', async (event) => {
    event.preventDefault();
    if (link.getAttribute('aria-busy') === 'true') return;
    link.setAttribute('aria-busy', 'true');
    try {
      await downloadFile(backup.id, file.prefix);
    } catch (err) {
      notify(`Could not download ${file.prefix} of backup #${backup.id}: ${err.message}`, 'error');
    } finally {
      link.removeAttribute('aria-busy');
    }
  });
  return link;
}

/**
 * Ask the user to type `prefix` before an action that replaces data. Resolves to the chosen
 * value of `choice` (a <select>, e.g. the target environment) or `true`, once they typed it and
 * pressed the action's button — or pressed Enter in the field: the action's button is the form's
 * only submit button (Cancel is a plain button), so Enter confirms and never cancels, and does
 * nothing while the text is wrong (the button is disabled). Null when cancelled (Escape too).
 */
export function confirmTyped({ title, warning, prefix, action, choice = null }) {
  return new Promise((resolve) => {
    const inputId = nextId('confirm-typed');
    const titleId = nextId('confirm-title');
    const input = h('input', { id: inputId, autocomplete: 'off', spellcheck: 'false',
      autocapitalize: 'characters', required: true });
    const confirm = h('button', { type: 'submit', value: 'confirm', class: 'danger',
      disabled: true }, action);
    const cancel = h('button', { type: 'button' }, 'Cancel');
    const warningText = h('p', { class: 'warning' },
      typeof warning === 'function' ? warning(choice?.control.value) : warning);
    const form = h('form', { method: 'dialog' },
      h('h2', { id: titleId }, title),
      choice ? h('div', { class: 'field' }, h('label', { for: choice.control.id }, choice.label),
        choice.control) : null,
      warningText,
      h('div', { class: 'field' },
        h('label', { for: inputId }, 'Type ', h('strong', {}, prefix), ' to confirm'), input),
      h('div', { class: 'buttons' }, cancel, confirm));
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': titleId }, form);
    input.addEventListener('input', () => { confirm.disabled = input.value !== prefix; });
    choice?.control.addEventListener('change', () => {
      if (typeof warning === 'function') warningText.textContent = warning(choice.control.value);
    });
    cancel.addEventListener('click', () => dialog.close('cancel'));
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'confirm' && input.value === prefix;
      const value = choice ? choice.control.value : true;
      dialog.remove();
      resolve(ok ? value : null);
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

/**
 * The live view of one operation (a backup, restore, copy or verification): its progress as the
 * worker reports it, then its result. `data-status` says where it is (running, succeeded,
 * failed).
 */
class OperationLive {
  constructor(label) {
    this.title = h('span', { class: 'progress-title' });
    this.progress = h('progress', { 'aria-label': `${label} under way` });
    this.text = h('span', { class: 'op-progress', 'aria-live': 'polite' });
    this.result = h('p', { class: 'result', role: 'status' });
    this.el = h('div', { class: 'backup-live', hidden: true },
      h('div', { class: 'progress-row' }, this.title, this.progress), this.text, this.result);
    this.following = null;
  }

  /** Follow operation `op` (as the API answered it) until it ends; resolves to its last state. */
  async follow(op, title) {
    this.following = op.id;
    this.el.hidden = false;
    this.el.dataset.status = op.status;
    this.title.textContent = title;
    this.progress.removeAttribute('value');
    this.result.textContent = '';
    this.result.className = 'result';
    let last = op;
    try {
      while (!FINISHED.has(last.status)) {
        this.el.dataset.status = last.status;
        this.text.textContent = last.progress || last.message || `${last.kind} ${last.status}`;
        last = await api('GET', `/operations/${seg(op.id)}?wait=2`);
      }
    } catch (err) {
      notify(err.message, 'error');
      this.following = null;
      return null;
    }
    this.following = null;
    this.el.dataset.status = last.status;
    this.progress.max = 100;
    this.progress.value = 100;
    this.text.textContent = '';
    const ok = last.status === 'succeeded';
    this.result.className = `result ${ok ? 'ok' : 'failed'}`;
    this.result.textContent = ok
      ? `${title}: done. ${last.message || ''}`.trim()
      : `${title}: failed: ${last.error || last.message || 'no reason recorded'}`;
    return last;
  }
}

/** A <select> of environment names, `selected` chosen. */
function envSelect(id, names, selected) {
  return h('select', { id }, names.map((name) => h('option', { value: name,
    selected: name === selected }, name)));
}

/** Restore `file` of `backup` after the typed confirmation; `envs`: where it may go. */
async function askRestore(backup, file, envs, defaultEnv, live, after) {
  const control = envs.length > 1 ? envSelect(nextId('restore-to'), envs, defaultEnv) : null;
  const to = await confirmTyped({
    title: `Restore ${file.prefix} from backup #${backup.id}?`,
    warning: (env) => `This replaces all data of ${file.prefix} in ${env || defaultEnv} with ` +
      `the backup made in ${backup.environment} on ${when(backup.created_at).textContent}. ` +
      'What is there now is lost.',
    prefix: file.prefix,
    action: 'Restore',
    choice: control ? { label: 'Into environment', control } : null,
  });
  if (to === null) return;
  const target = typeof to === 'string' ? to : defaultEnv;
  try {
    const view = await api('POST', `/backups/${seg(backup.id)}/restore`,
      { to: target, prefix: file.prefix, confirm: file.prefix });
    notify(`Restoring ${file.prefix} in ${target} from backup #${backup.id}.`, 'success');
    after();
    if (view.operation) {
      await live.follow(view.operation,
        `Restore of ${file.prefix} in ${target} from backup #${backup.id}`);
    }
  } catch (err) {
    notify(err.message, 'error');
  }
  after();
}

async function askVerify(backup, live, after) {
  try {
    const view = await api('POST', `/backups/${seg(backup.id)}/verify`);
    after();
    if (view.operation) await live.follow(view.operation, `Verification of backup #${backup.id}`);
  } catch (err) {
    notify(err.message, 'error');
  }
  after();
}

/** The actions on one backup: per service file, Download and Restore…; Verify the set. */
function backupActions(backup, { envs, defaultEnv, onlyPrefix, live, after, busy }) {
  if (!backup.restorable) return h('span', { class: 'muted' }, '–');
  const files = backup.files.filter((f) => !onlyPrefix || f.prefix === onlyPrefix);
  const many = backup.files.length > 1;
  return h('div', { class: 'backup-actions' },
    files.map((file) => h('div', { class: 'actions', dataset: { prefix: file.prefix } },
      many ? h('code', { class: 'file-prefix' }, file.prefix) : null,
      downloadLink(backup, file),
      h('button', { type: 'button', class: 'small danger', disabled: busy,
        title: busy ? 'Wait for the operation under way.' : 'Replace the service\'s data ' +
          'with this backup (you will be asked to type the prefix).',
        'aria-label': `Restore ${file.prefix} from backup #${backup.id}`,
        dataset: { action: 'restore', prefix: file.prefix,
          focusKey: `${backup.id}:${file.prefix}:restore` },
        onclick: () => askRestore(backup, file, envs, defaultEnv, live, after) }, 'Restore…'))),
    onlyPrefix ? null : h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'small', disabled: busy,
        title: 'Restore it into a scratch copy, compare, record the result.',
        'aria-label': `Verify backup #${backup.id}`,
        dataset: { action: 'verify', focusKey: `${backup.id}:verify` },
        onclick: () => askVerify(backup, live, after) }, 'Verify')));
}

function backupRow(backup, options) {
  const op = activeOperation(backup);
  return h('tr', { dataset: { id: backup.id, status: backup.status } },
    h('th', { scope: 'row', 'data-label': 'Backup' }, h('div', { class: 'cell' },
      h('code', {}, `#${backup.id}`),
      backup.restorable ? null : [' ', statusBadge(backup.status)],
      op ? h('span', { class: 'op' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }),
        `${op.kind} ${op.status}${op.progress ? ': ' + op.progress : ''}`) : null,
      backup.error ? h('span', { class: 'error-text small' }, backup.error) : null)),
    options.showEnv ? cell('Environment', backup.environment) : null,
    cell('Services', h('ul', { class: 'plain' }, backup.files.map((f) => h('li', {},
      h('code', {}, f.prefix), h('span', { class: 'muted' }, ` ${f.service}`))))),
    cell('Origin', ORIGINS[backup.origin] || backup.origin),
    cell('Size', humanSize(backup.size)),
    cell('Created', when(backup.created_at),
      backup.requested_by ? h('span', { class: 'muted small' }, ` by ${backup.requested_by}`)
        : null),
    cell('Verification', verificationCell(backup)),
    cell('Actions', backupActions(backup, { ...options, busy: Boolean(op) })));
}

/** The backups table: rendered again only when what the API says changed. */
class BackupTable {
  constructor(caption, showEnv, emptyText) {
    this.body = h('tbody');
    const headings = ['Backup', ...(showEnv ? ['Environment'] : []), 'Services', 'Origin',
      'Size', 'Created', 'Verification', 'Actions'];
    this.table = table(caption, headings, this.body, 'backups');
    this.empty = h('p', { class: 'empty', hidden: true }, emptyText);
    this.signature = null;
    this.showEnv = showEnv;
  }

  render(backups, options) {
    const signature = JSON.stringify(backups);
    if (signature === this.signature) return;
    this.signature = signature;
    const key = focusKey();
    replace(this.body, backups.map((b) => backupRow(b, { ...options, showEnv: this.showEnv })));
    this.table.hidden = backups.length === 0;
    this.empty.hidden = backups.length > 0;
    restoreFocus(key, this.body);
  }
}

/** The list of backups shown: the restorable ones, and those under way or failed. */
async function loadBackups(project, env) {
  const all = await api('GET', `/projects/${seg(project)}/backups?env=${seg(env)}&all=true`);
  return all.filter((b) => b.status !== 'deleted');
}

// --- per environment (the project page) ---------------------------------------------------------

/** An environment's Backups section: back up now, the list, the schedule, the verification. */
export class EnvironmentBackups {
  constructor(project, env, envNames) {
    this.project = project;
    this.env = env;
    this.envNames = envNames;
    this.path = envPath(project, env);
    this.backups = [];
    this.lastError = '';
    this.live = new OperationLive(`Backup of ${env}`);
    this.list = new BackupTable(`Backups of ${env}`, false,
      `No backup of ${env} yet: back it up now, or set a schedule.`);
    this.verified = h('p', { class: 'last-verification', id: `last-verification-${env}` });
    this.el = h('section', { class: 'card backups-section', id: `backups-${env}`,
      'aria-labelledby': `backups-title-${env}` },
    h('h3', { id: `backups-title-${env}` }, 'Backups'),
    this.createForm(), this.live.el, this.verified, this.list.table, this.list.empty,
    this.scheduleSection());
    this.scheduleLoaded = false;
  }

  id(part) {
    return `${part}-${this.env}`;
  }

  createForm() {
    this.verifyBox = h('input', { type: 'checkbox', id: this.id('backup-verify'),
      'aria-describedby': this.id('backup-verify-help') });
    this.createButton = h('button', { type: 'submit', class: 'primary',
      id: this.id('backup-now') }, 'Back up now');
    const form = h('form', { class: 'backup-now', 'aria-label': `Back up ${this.env} now` },
      h('div', { class: 'field check' }, this.verifyBox,
        h('label', { for: this.verifyBox.id }, 'verify'),
        h('p', { id: this.id('backup-verify-help'), class: 'help' },
          'Then restore it into a scratch copy and compare, to prove it restorable.')),
      this.createButton);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.create();
    });
    return h('div', { class: 'section-head backup-head' },
      h('p', { class: 'muted' }, `Every provisioned service of ${this.env} as one set, kept ` +
        'encrypted on the region\'s backup storage.'), form);
  }

  async create() {
    this.createButton.disabled = true;
    try {
      const view = await api('POST', `${this.path}/backups`, { verify: this.verifyBox.checked });
      notify(`Backing up ${this.env} (backup #${view.id}).`, 'success');
      await this.refresh();
      if (view.operation) {
        await this.live.follow(view.operation, `Backup #${view.id} of ${this.env}`);
      }
    } catch (err) {
      notify(err.message, 'error');
    } finally {
      this.createButton.disabled = false;
    }
    await this.refresh();
  }

  // --- schedule ---------------------------------------------------------------------------

  scheduleSection() {
    this.scheduleText = h('p', { class: 'schedule-text', id: this.id('schedule-text'),
      'aria-live': 'polite' }, 'Loading…');
    this.atInput = h('input', { type: 'time', id: this.id('schedule-at'), value: '03:30',
      required: true, 'aria-describedby': this.id('schedule-at-help') });
    const number = (part, value, max) => h('input', { type: 'number', id: this.id(part),
      min: '0', max: String(max), value: String(value), required: true });
    this.keepDaily = number('keep-daily', 7, 366);
    this.keepWeekly = number('keep-weekly', 4, 520);
    this.keepMonthly = number('keep-monthly', 12, 1200);
    this.verifyEvery = number('verify-every', 7, 366);
    this.saveSchedule = h('button', { type: 'submit', class: 'primary' }, 'Save schedule');
    this.offButton = h('button', { type: 'button', class: 'danger-quiet', hidden: true,
      onclick: () => this.turnOff() }, 'Turn off');
    const field = (label, control, help) => h('div', { class: 'field' },
      h('label', { for: control.id }, label), control, help || null);
    const form = h('form', { class: 'form-grid schedule-form', novalidate: true,
      'aria-label': `Backup schedule of ${this.env}` },
    field('Daily at (UTC)', this.atInput, h('p', { id: this.id('schedule-at-help'),
      class: 'help' }, 'HH:MM, in UTC.')),
    field('Keep daily', this.keepDaily),
    field('Keep weekly', this.keepWeekly),
    field('Keep monthly', this.keepMonthly),
    field('Verify every (days)', this.verifyEvery),
    h('div', { class: 'buttons' }, this.offButton, this.saveSchedule));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.setSchedule();
    });
    return h('div', { class: 'schedule' },
      h('h4', { id: this.id('schedule-title') }, 'Schedule'), this.scheduleText, form);
  }

  renderSchedule(schedule) {
    this.offButton.hidden = !schedule.enabled;
    this.scheduleText.dataset.enabled = String(schedule.enabled);
    if (!schedule.enabled) {
      this.scheduleText.textContent = `No schedule: ${this.env} is backed up only on demand.`;
      return;
    }
    this.scheduleText.textContent = `Daily at ${schedule.at} UTC, keeping ` +
      `${schedule.keep_daily} daily, ${schedule.keep_weekly} weekly and ` +
      `${schedule.keep_monthly} monthly backups; one verified every ` +
      `${schedule.verify_every_days} days.` +
      (schedule.last_run_on ? ` Last run on ${schedule.last_run_on}.` : '');
    this.atInput.value = schedule.at;
    this.keepDaily.value = String(schedule.keep_daily);
    this.keepWeekly.value = String(schedule.keep_weekly);
    this.keepMonthly.value = String(schedule.keep_monthly);
    this.verifyEvery.value = String(schedule.verify_every_days);
  }

  async loadSchedule() {
    try {
      this.renderSchedule(await api('GET', `${this.path}/backup-schedule`));
      this.scheduleLoaded = true;
    } catch (err) {
      this.scheduleText.textContent = err.message;
    }
  }

  async setSchedule() {
    const at = this.atInput.value.slice(0, 5);
    if (!HHMM.test(at)) {
      notify('Give the time of the daily backup as HH:MM (UTC), e.g. 03:30.', 'error');
      this.atInput.focus();
      return;
    }
    this.saveSchedule.disabled = true;
    try {
      const schedule = await api('PUT', `${this.path}/backup-schedule`, {
        at, keep_daily: Number(this.keepDaily.value), keep_weekly: Number(this.keepWeekly.value),
        keep_monthly: Number(this.keepMonthly.value),
        verify_every_days: Number(this.verifyEvery.value),
      });
      this.renderSchedule(schedule);
      notify(`${this.env} is backed up daily at ${schedule.at} UTC.`, 'success');
    } catch (err) {
      notify(err.message, 'error');
    } finally {
      this.saveSchedule.disabled = false;
    }
  }

  async turnOff() {
    this.offButton.disabled = true;
    try {
      this.renderSchedule(await api('DELETE', `${this.path}/backup-schedule`));
      notify(`No more scheduled backups of ${this.env}; the ones made are kept.`, 'success');
    } catch (err) {
      notify(err.message, 'error');
    } finally {
      this.offButton.disabled = false;
    }
  }

  // --- list -------------------------------------------------------------------------------

  async refresh() {
    if (!this.scheduleLoaded) this.loadSchedule();
    try {
      this.backups = await loadBackups(this.project, this.env);
      this.lastError = '';
    } catch (err) {
      if (err.message !== this.lastError) notify(err.message, 'error');
      this.lastError = err.message;
      return;
    }
    replace(this.verified, lastVerification(this.backups, `of ${this.env}`));
    this.list.render(this.backups, {
      envs: this.envNames, defaultEnv: this.env, onlyPrefix: null, live: this.live,
      after: () => this.refresh(),
    });
  }

  /** Something is under way: the page polls faster. */
  busy() {
    return this.live.following !== null || this.backups.some((b) => activeOperation(b));
  }
}

// --- per instance (its page) --------------------------------------------------------------------

/** An instance's Backups section: the backups holding its prefix, restore, copy from another
 * environment. */
export class InstanceBackups {
  constructor(project, env, prefix) {
    this.project = project;
    this.env = env;
    this.prefix = prefix;
    this.envNames = [env];
    this.backups = [];
    this.lastError = '';
    this.live = new OperationLive(`Backup of ${prefix}`);
    this.list = new BackupTable(`Backups holding ${prefix}`, true,
      `No backup holds ${prefix} yet.`);
    this.verified = h('p', { class: 'last-verification', id: 'last-verification' });
    this.backupButton = h('button', { type: 'button', class: 'small', id: 'backup-instance',
      onclick: () => this.create() }, `Back up ${prefix} now`);
    this.el = h('section', { class: 'card backups-section', id: 'backups',
      'aria-labelledby': 'backups-title' },
    h('div', { class: 'section-head' }, h('h2', { id: 'backups-title' }, 'Backups'),
      this.backupButton),
    this.live.el, this.verified, this.list.table, this.list.empty, this.copyForm());
  }

  copyForm() {
    this.copySource = h('select', { id: 'copy-source' });
    this.copyButton = h('button', { type: 'submit', class: 'danger' }, 'Copy…');
    this.copyHelp = h('p', { class: 'help', id: 'copy-help' },
      `A backup of ${this.prefix} there, restored into this one in one operation: the data ` +
      `of ${this.prefix} in ${this.env} is replaced.`);
    const form = h('form', { class: 'form-grid inline copy-form',
      'aria-label': `Copy ${this.prefix} from another environment` },
    h('div', { class: 'field' }, h('label', { for: 'copy-source' }, 'Copy from environment'),
      this.copySource, this.copyHelp),
    h('div', { class: 'buttons' }, this.copyButton));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.copy();
    });
    this.copyDetails = h('details', { class: 'add', id: 'copy' },
      h('summary', {}, `Copy ${this.prefix} from another environment`), form);
    return this.copyDetails;
  }

  async loadEnvironments() {
    try {
      const project = await api('GET', `/projects/${seg(this.project)}`);
      this.envNames = project.environments.map((e) => e.name);
    } catch (err) {
      notify(err.message, 'error');
      return;
    }
    const others = this.envNames.filter((name) => name !== this.env);
    replace(this.copySource, others.map((name) => h('option', { value: name }, name)));
    this.copyButton.disabled = others.length === 0;
  }

  async create() {
    this.backupButton.disabled = true;
    try {
      const view = await api('POST', `${envPath(this.project, this.env)}/backups`,
        { prefixes: [this.prefix] });
      notify(`Backing up ${this.prefix} (backup #${view.id}).`, 'success');
      await this.refresh();
      if (view.operation) await this.live.follow(view.operation, `Backup #${view.id}`);
    } catch (err) {
      notify(err.message, 'error');
    } finally {
      this.backupButton.disabled = false;
    }
    await this.refresh();
  }

  async copy() {
    const source = this.copySource.value;
    if (!source) return;
    const ok = await confirmTyped({
      title: `Copy ${this.prefix} from ${source} into ${this.env}?`,
      warning: `This replaces all data of ${this.prefix} in ${this.env} with a copy of ` +
        `${this.prefix} in ${source} as it is now. What is in ${this.env} now is lost.`,
      prefix: this.prefix,
      action: 'Copy',
    });
    if (ok === null) return;
    this.copyButton.disabled = true;
    try {
      const view = await api('POST',
        `${envPath(this.project, this.env)}/services/${seg(this.prefix)}/copy`,
        { source, confirm: this.prefix });
      notify(`Copying ${this.prefix} from ${source} (backup #${view.id}).`, 'success');
      this.copyDetails.open = false;
      await this.refresh();
      if (view.operation) {
        await this.live.follow(view.operation, `Copy of ${this.prefix} from ${source}`);
      }
    } catch (err) {
      notify(err.message, 'error');
    } finally {
      this.copyButton.disabled = false;
    }
    await this.refresh();
  }

  async refresh() {
    let backups;
    try {
      const all = await api('GET', `/projects/${seg(this.project)}/backups?all=true`);
      backups = all.filter((b) => b.status !== 'deleted' &&
        b.files.some((f) => f.prefix === this.prefix));
      this.lastError = '';
    } catch (err) {
      if (err.message !== this.lastError) notify(err.message, 'error');
      this.lastError = err.message;
      return;
    }
    this.backups = backups;
    replace(this.verified, lastVerification(backups, `holding ${this.prefix}`));
    this.list.render(backups, {
      envs: [this.env], defaultEnv: this.env, onlyPrefix: this.prefix, live: this.live,
      after: () => this.refresh(),
    });
  }

  busy() {
    return this.live.following !== null || this.backups.some((b) => activeOperation(b));
  }
}
