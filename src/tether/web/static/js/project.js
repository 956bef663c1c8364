// A project: one tab per environment, each with its services, deployments and variables.
// While anything is under way (a provision, a removal, a deployment) the active tab polls the
// API every second, so states and progress update without a reload; otherwise every 5 seconds.

import { api, apiAll, apiPage, envPath, seg } from './api.js';
import { EnvironmentBackups } from './backups.js';
import { append, byId, h, replace, sleep } from './dom.js';
import {
  actionButtons,
  browserText,
  focusKey,
  initChrome,
  isBusy,
  notify,
  operationText,
  parseTime,
  restoreFocus,
  stateBadge,
  statusBadge,
  when,
  yesNo,
} from './ui.js';

const PREFIX_RE = /^[A-Z][A-Z0-9_]{0,29}$/;
const DEPLOYMENTS_PAGE = 10;
const ACTIVITY_PAGE = 20;
const FINISHED = new Set(['succeeded', 'failed']);
const FAST_MS = 1000;
const SLOW_MS = 5000;

const projectName = decodeURIComponent(location.pathname.split('/')[2] || '');

function field(label, control, ...extra) {
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, extra);
}

function checkbox(control, label, help) {
  return h('div', { class: 'field check' }, control,
    h('label', { for: control.id }, label), help);
}

function table(caption, headings, body, cls = '') {
  return h('table', { class: `responsive ${cls}` },
    h('caption', { class: 'visually-hidden' }, caption),
    h('thead', {}, h('tr', {}, headings.map((t) => h('th', { scope: 'col' }, t)))),
    body);
}

/** A table cell; its content sits in one box so stacked rows (narrow screens) keep it whole. */
const cell = (label, ...content) => h('td', { 'data-label': label },
  h('div', { class: 'cell' }, content));

/** Upper-case what is typed into `input` as it is typed, keeping the caret where it was. */
function upperCase(input) {
  const { selectionStart, selectionEnd, value } = input;
  if (value === value.toUpperCase()) return;
  input.value = value.toUpperCase();
  input.setSelectionRange(selectionStart, selectionEnd);
}

function timeOnly(iso) {
  return iso ? parseTime(iso).toLocaleTimeString(undefined, { hour12: false }) : '';
}

/**
 * A list shown newest first from a paged list of the API (cursor paging): `refresh` loads its
 * first page again, `more` adds the next page after the last one shown. Rows are kept by id,
 * so a row the refreshed first page no longer holds (newer ones came) stays shown.
 */
class PagedRows {
  constructor(path, limit) {
    this.path = path;
    this.limit = limit;
    this.rows = new Map();
    this.extended = false;  // a page after the first was shown
    this.after = null;  // the next page's cursor; null: no more
  }

  async refresh() {
    const page = await apiPage(this.path, this.limit);
    if (!this.extended) {
      this.rows.clear();
      this.after = page.after;
    }
    for (const r of page.rows) this.rows.set(r.id, r);
    return this.list();
  }

  async more() {
    if (this.after === null) return this.list();
    const page = await apiPage(this.path, this.limit, this.after);
    this.extended = true;
    this.after = page.after;
    for (const r of page.rows) this.rows.set(r.id, r);
    return this.list();
  }

  list() {
    return [...this.rows.values()].sort((a, b) => b.id - a.id);
  }
}

/** A "Show more" button under a paged list; hidden when it has no more. */
function moreButton(id, label, load) {
  const button = h('button', { type: 'button', class: 'small more', id, hidden: true }, label);
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await load();
    } catch (err) {
      notify(err.message, 'error');
    } finally {
      button.disabled = false;
      if (button.hidden) button.closest('section')?.querySelector('table')?.focus?.();
    }
  });
  return button;
}

/** One environment's tab panel: it loads, renders and polls its own data. */
class EnvironmentPanel {
  constructor(project, env, tab) {
    this.project = project;
    this.env = env;
    this.name = env.name;
    this.path = envPath(project.name, env.name);
    this.instances = [];
    this.catalog = [];
    this.rows = new Map();
    this.following = null;
    this.active = false;
    this.started = false;
    this.lastError = '';
    this.varSignature = null;
    this.variables = [];
    // custom variables changed or unset in this page since the last successful deploy, that the
    // running release has: the API says which variables each release has, not their values
    this.changedVars = new Set();
    this.unsetVars = new Set();
    this.wake = null;
    this.el = h('section', {
      id: `panel-${env.name}`, role: 'tabpanel', 'aria-labelledby': tab.id, class: 'panel',
      hidden: true, dataset: { env: env.name },
    });
    this.backups = new EnvironmentBackups(project.name, env.name,
      project.environments.map((e) => e.name));
    this.deployments = new PagedRows(`${this.path}/deployments`, DEPLOYMENTS_PAGE);
    this.activity = new PagedRows(`${this.path}/history`, ACTIVITY_PAGE);
    append(this.el, this.header(), this.servicesSection(), this.deploySection(),
      this.backups.el, this.variablesSection(), this.activitySection());
  }

  id(part) {
    return `${part}-${this.name}`;
  }

  header() {
    this.deployButton = h('button', {
      type: 'button', class: 'primary', id: this.id('deploy'),
      onclick: () => this.deploy(),
    }, `Deploy ${this.name}`);
    this.pendingList = h('ul');
    this.pending = h('div', { class: 'pending-changes', id: this.id('pending'), hidden: true,
      role: 'status', 'aria-labelledby': this.id('pending-title') },
    h('h3', { id: this.id('pending-title') }, 'Pending changes'),
    h('p', {}, `The next deploy of ${this.name} will:`), this.pendingList);
    this.deployButton.setAttribute('aria-describedby', this.pending.id);
    return h('div', { class: 'panel-head' },
      h('div', {},
        h('h2', {}, `Environment ${this.name}`),
        h('p', { class: 'muted' }, 'Stable address: ',
          h('a', { href: this.env.url, rel: 'noopener noreferrer' }, this.env.url))),
      h('div', { class: 'deploy-box' }, this.deployButton, this.pending));
  }

  /**
   * What the next deploy will change, beside the Deploy button: instances it attaches or
   * detaches (from their states), variables it adds or removes (`next_release` against
   * `in_running_release`), and custom variables changed or unset in this page since.
   */
  renderPending() {
    const items = [];
    const names = (list) => list.map((n) => h('code', {}, n)).reduce(
      (acc, el, i) => (i ? [...acc, ', ', el] : [el]), []);
    const say = (...parts) => items.push(h('li', {}, parts));
    const listed = new Set();  // their variables go with them: not listed one by one
    for (const inst of this.instances) {
      const what = { new: 'provision and attach', 'pending attachment': 'attach',
        'pending detachment': 'detach' }[inst.state];
      if (!what) continue;
      listed.add(inst.prefix);
      say(`${what} `, h('strong', { class: 'prefix' }, inst.prefix));
    }
    const added = new Map();
    const removed = new Map();
    for (const v of this.variables) {
      const next = v.next_release ?? true;
      const target = next && !v.in_running_release ? added
        : !next && v.in_running_release ? removed : null;
      if (!target || (v.source === 'service' && listed.has(v.prefix))) continue;
      const group = v.source === 'service' ? `${v.prefix}'s variables` : 'variables';
      if (!target.has(group)) target.set(group, []);
      target.get(group).push(v.name);
    }
    const changed = [...this.changedVars].filter((n) => this.variables.some(
      (v) => v.name === n && v.in_running_release));
    for (const [verb, groups] of [['add', added], ['remove', removed]]) {
      for (const [group, list] of groups) say(`${verb} ${group} `, names(list));
    }
    if (changed.length) say('change variables ', names(changed));
    if (this.unsetVars.size) say('remove variables ', names([...this.unsetVars]));
    replace(this.pendingList, items);
    this.pending.hidden = items.length === 0;
  }

  // --- services -----------------------------------------------------------------------------

  servicesSection() {
    this.servicesBody = h('tbody');
    this.servicesTable = table(`Services of ${this.name}`,
      ['Prefix', 'Service', 'Cluster', 'State', 'Actions'], this.servicesBody, 'services');
    this.servicesEmpty = h('p', { class: 'empty', hidden: true },
      `No service in ${this.name} yet: add one below.`);
    return h('section', { class: 'card', 'aria-labelledby': this.id('services-title') },
      h('h3', { id: this.id('services-title') }, 'Services'),
      this.servicesTable, this.servicesEmpty, this.addForm());
  }

  serviceRow(inst) {
    const href = `/projects/${seg(this.project.name)}/${seg(this.name)}/services/` +
      seg(inst.prefix);
    const op = operationText(inst);
    return h('tr', { dataset: { prefix: inst.prefix, state: inst.state } },
      h('th', { scope: 'row', 'data-label': 'Prefix' },
        h('a', { href, class: 'prefix', dataset: { focusKey: `${inst.prefix}:link` },
          'aria-label': `${inst.prefix}: details` }, inst.prefix)),
      cell('Service', inst.service),
      cell('Cluster', inst.visibility,
        inst.cluster ? h('span', { class: 'muted' }, ` · ${inst.cluster.name}`) : null),
      cell('State', h('div', { class: 'state-cell' }, stateBadge(inst),
        op ? h('span', { class: 'op' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }),
          op) : null,
        inst.last_error && !op
          ? h('span', { class: 'error-text small' }, browserText(inst.last_error))
          : null)),
      cell('Actions', actionButtons(this.project.name, this.name, inst,
        (answer) => this.applied(answer), { deploying: this.following })));
  }

  /**
   * After a row action: the instance as the API answered it is shown at once (a removal says
   * `removing` even when it ends before the next poll), then everything is loaded again.
   */
  applied(answer) {
    if (answer?.prefix && answer.state) {
      const index = this.instances.findIndex((i) => i.prefix === answer.prefix);
      if (index >= 0) {
        const { message, ...inst } = answer;
        this.instances[index] = { ...this.instances[index], ...inst };
        this.renderServices();
      }
    }
    return this.refresh();
  }

  renderServices() {
    const key = focusKey();
    const seen = new Set();
    for (const inst of this.instances) {
      seen.add(inst.prefix);
      // a deployment starting or ending changes what Attach and Detach may do
      const signature = JSON.stringify([inst, this.following]);
      const old = this.rows.get(inst.prefix);
      if (old && old.signature === signature) continue;
      const row = this.serviceRow(inst);
      if (old) old.row.replaceWith(row);
      else this.servicesBody.append(row);
      this.rows.set(inst.prefix, { row, signature });
    }
    for (const [prefix, { row }] of this.rows) {
      if (!seen.has(prefix)) {
        row.remove();
        this.rows.delete(prefix);
      }
    }
    this.servicesEmpty.hidden = this.instances.length > 0;
    this.servicesTable.hidden = this.instances.length === 0;
    restoreFocus(key, this.servicesBody, key ? `${key.split(':')[0]}:link` : null);
    this.suggestPrefix();
    this.checkPrefix();
  }

  addForm() {
    this.serviceSelect = h('select', { id: this.id('add-service'), name: 'service',
      'aria-describedby': this.id('add-service-help') });
    this.serviceHelp = h('p', { id: this.id('add-service-help'), class: 'help' },
      `Services offered in region ${this.project.region}.`);
    this.prefixInput = h('input', {
      id: this.id('add-prefix'), name: 'prefix', value: '', autocomplete: 'off',
      spellcheck: 'false', autocapitalize: 'characters', maxlength: '30', required: true,
      'aria-describedby': this.id('add-prefix-help'),
    });
    this.prefixHelp = h('p', { id: this.id('add-prefix-help'), class: 'help',
      'aria-live': 'polite' });
    this.privateBox = h('input', { type: 'checkbox', id: this.id('add-private'),
      name: 'private', 'aria-describedby': this.id('add-private-help') });
    this.privateHelp = h('p', { id: this.id('add-private-help'), class: 'help' });
    this.provisionBox = h('input', { type: 'checkbox', id: this.id('add-provision'),
      name: 'provision', 'aria-describedby': this.id('add-provision-help') });
    this.addButton = h('button', { type: 'submit', class: 'primary' }, 'Add service');
    const form = h('form', { class: 'form-grid', novalidate: true,
      'aria-label': `Add a service to ${this.name}` },
    field('Service', this.serviceSelect, this.serviceHelp),
    field('Prefix', this.prefixInput, this.prefixHelp),
    checkbox(this.privateBox, 'Private cluster', this.privateHelp),
    checkbox(this.provisionBox, 'Provision now',
      h('p', { id: this.id('add-provision-help'), class: 'help' },
        'Create it at once, to fill it with data before a deployment gives the application ' +
        'its variables.')),
    h('div', { class: 'buttons' }, this.addButton));
    this.prefixInput.addEventListener('input', () => {
      this.prefixTouched = true;
      upperCase(this.prefixInput);
      this.checkPrefix();
    });
    this.serviceSelect.addEventListener('change', () => {
      this.showPrivate();
      this.suggestPrefix();
    });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.add();
    });
    this.addDetails = h('details', { class: 'add', id: this.id('add') },
      h('summary', {}, 'Add service'), form);
    return this.addDetails;
  }

  /**
   * A prefix no service of this environment has, for the selected service: DEFAULT if free,
   * else DATABASE, DB2, DB3… for a database (MEDIA, MEDIA2… for media, and so on).
   */
  freePrefix() {
    const taken = new Set(this.instances.map((i) => i.prefix));
    const service = this.serviceSelect.value || '';
    const database = /^(postgres|mysql|mariadb)/.test(service);
    const word = database ? 'DATABASE'
      : /media$/.test(service) ? 'MEDIA'
        : service.replace(/-\d+$/, '').toUpperCase().replace(/[^A-Z0-9]+/g, '_') || 'SERVICE';
    const short = database ? 'DB' : word;
    if (!taken.has('DEFAULT')) return 'DEFAULT';
    if (!taken.has(word)) return word;
    for (let n = 2; ; n += 1) {
      if (!taken.has(`${short}${n}`)) return `${short}${n}`;
    }
  }

  /** Prefill the prefix with a free one, unless the user typed one of their own. */
  suggestPrefix() {
    if (this.prefixTouched && this.prefixInput.value !== this.suggested) return;
    this.prefixTouched = false;
    this.suggested = this.freePrefix();
    this.prefixInput.value = this.suggested;
    this.checkPrefix();
  }

  /** The prefix as typed: its format and that no service of this environment has it. */
  checkPrefix() {
    const value = this.prefixInput.value;
    let problem = '';
    if (!value) problem = 'Enter a prefix, e.g. DEFAULT or ANALYTICS.';
    else if (!PREFIX_RE.test(value)) {
      problem = 'Use 1–30 upper-case letters, digits and underscores, starting with a letter ' +
        '(e.g. DEFAULT, ANALYTICS).';
    } else if (this.instances.some((i) => i.prefix === value)) {
      problem = `${value} already exists in ${this.name}: pick another prefix.`;
    }
    this.prefixInput.setAttribute('aria-invalid', problem ? 'true' : 'false');
    this.prefixHelp.textContent = problem || `${value} is free in ${this.name}.`;
    this.prefixHelp.className = problem ? 'help bad' : 'help good';
    this.addButton.disabled = Boolean(problem) || this.catalog.length === 0;
    return !problem;
  }

  showPrivate() {
    const offer = this.catalog.find((o) => o.service === this.serviceSelect.value);
    if (!offer) return;
    const only = offer.private && !offer.shared;
    this.privateBox.disabled = !offer.private || only;
    this.privateBox.checked = only;
    this.privateHelp.textContent = !offer.private
      ? `No private cluster offers ${offer.service} in region ${offer.region}: it goes to a ` +
        'shared one.'
      : only ? `Only private clusters offer ${offer.service} here.`
        : 'Give it a server of its own instead of a shared one.';
  }

  async loadCatalog() {
    try {
      this.catalog = await api('GET', `/catalog?project=${seg(this.project.name)}`);
    } catch (err) {
      notify(err.message, 'error');
      return;
    }
    replace(this.serviceSelect, this.catalog.map((o) => h('option', { value: o.service },
      `${o.service} — ${o.kind} ${o.version}`)));
    // PostgreSQL first: the region's newest postgres-N, as `postgres` alone resolves
    const postgres = this.catalog.filter((o) => /^postgres-\d+$/.test(o.service))
      .sort((a, b) => Number(a.service.split('-')[1]) - Number(b.service.split('-')[1])).pop();
    if (postgres) this.serviceSelect.value = postgres.service;
    if (!this.catalog.length) {
      this.serviceHelp.textContent = `No service is offered in region ${this.project.region}: ` +
        'an operator has to register a cluster first.';
    }
    this.showPrivate();
    this.suggestPrefix();
  }

  async add() {
    if (!this.checkPrefix()) {
      this.prefixInput.focus();
      return;
    }
    const body = {
      service: this.serviceSelect.value, prefix: this.prefixInput.value,
      private: this.privateBox.checked, provision: this.provisionBox.checked,
    };
    this.addButton.disabled = true;
    let added = null;
    try {
      added = await api('POST', `${this.path}/services`, body);
      notify(body.provision
        ? `${added.prefix} added and being provisioned; deploy ${this.name} to attach it.`
        : `${added.prefix} added: deploy ${this.name} to provision and attach it.`, 'success');
      this.prefixTouched = false;  // the next free prefix is suggested by the re-render
      this.addDetails.open = false;
    } catch (err) {
      notify(err.message, 'error');
    }
    await this.refresh();
    // focus went to the body with the disabled button: to the new row, or back to the prefix
    const link = added && this.rows.get(added.prefix)?.row.querySelector('a.prefix');
    if (link) link.focus();
    else if (!added) this.prefixInput.focus();
  }

  // --- deployments --------------------------------------------------------------------------

  deploySection() {
    this.progress = h('progress', { max: '100', value: '0', id: this.id('progress'),
      'aria-labelledby': this.id('progress-title') });
    this.progressTitle = h('span', { id: this.id('progress-title'), class: 'progress-title' });
    this.percent = h('span', { class: 'percent', 'aria-live': 'off' }, '0 %');
    // a log region holding a list of lines (a role=log list's items would be in no list)
    this.logLines = h('ol', { class: 'lines' });
    this.log = h('div', { class: 'log', role: 'log', 'aria-label': 'Deployment log',
      tabindex: '0' }, this.logLines);
    this.result = h('p', { class: 'result', role: 'status' });
    this.live = h('div', { class: 'deploy-live', hidden: true },
      h('div', { class: 'progress-row' }, this.progressTitle, this.progress, this.percent),
      this.log, this.result);
    this.deploymentsBody = h('tbody');
    this.deploymentsTable = table(`Past deployments of ${this.name}`,
      ['#', 'Status', 'Asked by', 'Started', 'Finished', 'Result'], this.deploymentsBody,
      'deployments');
    this.deploymentsTable.tabIndex = -1;  // focus after its last page was shown
    this.deploymentsEmpty = h('p', { class: 'empty', hidden: true },
      `${this.name} was never deployed.`);
    this.deploymentsMore = moreButton(this.id('deployments-more'), 'Show more deployments',
      async () => this.renderDeployments(await this.deployments.more()));
    return h('section', { class: 'card', 'aria-labelledby': this.id('deployments-title') },
      h('h3', { id: this.id('deployments-title') }, 'Deployments'),
      this.live, h('h4', {}, 'Past deployments'), this.deploymentsTable,
      this.deploymentsEmpty, this.deploymentsMore, this.appLogSection());
  }

  /**
   * The running release's output, followed live while open (long polls of the API's logs:
   * each answers at a new line, or after 10 s); a deploy's new release continues it.
   */
  appLogSection() {
    this.appLogLines = h('ol', { class: 'lines' });
    this.appLog = h('div', { class: 'log', role: 'log', tabindex: '0', id: this.id('app-log'),
      'aria-label': `Output of the release ${this.name} runs` }, this.appLogLines);
    this.appLogNote = h('p', { class: 'muted', id: this.id('app-log-note'), 'aria-live': 'polite' });
    const box = h('details', { class: 'add app-log', id: this.id('app-log-box') },
      h('summary', {}, 'Live log of the running release'), this.appLogNote, this.appLog);
    box.addEventListener('toggle', () => {
      if (box.open) this.followAppLog(box);
    });
    return box;
  }

  async followAppLog(box) {
    if (this.appLogFollowing) return;
    this.appLogFollowing = true;
    let cursor = null;
    try {
      while (box.open && box.isConnected) {
        const answer = await api('GET', `${this.path}/logs?` + (cursor === null
          ? 'lines=200' : `after=${encodeURIComponent(cursor)}&wait=10`));
        if (!box.open) break;
        if (cursor === null) this.appLogLines.replaceChildren();
        cursor = answer.cursor;
        this.appLogNote.textContent = answer.note ? browserText(answer.note)
          : `Release ${answer.release_id} (${answer.release_status})` +
            (answer.missed ? ': some lines were rotated away before they were read' : '');
        for (const line of answer.lines) {
          this.appLogLines.append(h('li', {}, h('time', { datetime: line.at || '' },
            timeOnly(line.at)), ' ', line.line));
        }
        if (answer.lines.length) this.appLog.scrollTop = this.appLog.scrollHeight;
        if (answer.note) await sleep(SLOW_MS);  // nothing runs yet: look again later
        else if (!this.active || document.hidden) await sleep(FAST_MS);
      }
    } catch (err) {
      notify(err.message, 'error');
    } finally {
      this.appLogFollowing = false;
    }
  }

  // --- activity -----------------------------------------------------------------------------

  activitySection() {
    this.activityBody = h('tbody');
    this.activityTable = table(`Activity in ${this.name}, newest first`,
      ['When', 'Who', 'What', 'Service', 'State', 'Detail'], this.activityBody, 'activity');
    this.activityTable.tabIndex = -1;
    this.activityEmpty = h('p', { class: 'empty', hidden: true }, 'Nothing happened yet.');
    this.activityMore = moreButton(this.id('activity-more'), 'Show more activity',
      async () => this.renderActivity(await this.activity.more()));
    return h('section', { class: 'card', id: this.id('activity'),
      'aria-labelledby': this.id('activity-title') },
    h('h3', { id: this.id('activity-title') }, 'Activity'),
    h('p', { class: 'muted' }, `Who changed what in ${this.name}, and when: its services ` +
      '(removed ones too), variables and deploys.'),
    this.activityTable, this.activityEmpty, this.activityMore);
  }

  renderActivity(entries) {
    replace(this.activityBody, entries.map((e) => h('tr', { dataset: { id: e.id } },
      cell('When', when(e.at)),
      cell('Who', e.actor),
      cell('What', e.action),
      cell('Service', e.prefix ? h('span', { class: 'prefix' }, e.prefix) : '–'),
      cell('State', e.from || e.to ? `${e.from || '–'} → ${e.to || '–'}` : '–'),
      cell('Detail', e.detail ? browserText(e.detail) : '–'))));
    this.activityEmpty.hidden = entries.length > 0;
    this.activityTable.hidden = entries.length === 0;
    this.activityMore.hidden = this.activity.after === null;
  }

  renderDeployments(deployments) {
    const base = `/projects/${seg(this.project.name)}/${seg(this.name)}/deployments/`;
    replace(this.deploymentsBody, deployments.map((d) => h('tr', { dataset: { id: d.id } },
      h('th', { scope: 'row', 'data-label': '#' }, h('a', { href: base + d.id,
        'aria-label': `Deployment #${d.id}: details, log and changes` }, `#${d.id}`)),
      cell('Status', statusBadge(d.status)),
      cell('Asked by', d.requested_by || '–'),
      cell('Started', when(d.started_at || d.created_at)),
      cell('Finished', when(d.finished_at)),
      cell('Result', d.error ? h('span', { class: 'error-text' }, browserText(d.error))
        : d.success ? `release ${d.release_id ?? ''}`.trim() : '–'))));
    this.deploymentsEmpty.hidden = deployments.length > 0;
    this.deploymentsTable.hidden = deployments.length === 0;
    this.deploymentsMore.hidden = this.deployments.after === null;
  }

  async deploy() {
    // the button is disabled while the deployment runs: focus goes to its log meanwhile
    const focused = document.activeElement === this.deployButton;
    this.deployButton.disabled = true;
    this.live.dataset.status = 'starting';
    try {
      const dep = await api('POST', `${this.path}/deployments`);
      this.follow(dep.id, focused);
    } catch (err) {
      notify(err.message, 'error');
      this.deployButton.disabled = false;
      if (focused) this.deployButton.focus();
    }
  }

  /** Show a deployment's progress and log lines as they come, then its result. */
  async follow(id, focusLog = false) {
    if (this.following === id) {
      // a poll saw it running before the answer to Deploy came: focus its log all the same
      if (focusLog) this.log.focus();
      return;
    }
    this.following = id;
    let after = 0;
    this.live.hidden = false;
    this.live.dataset.status = 'running';
    this.logLines.replaceChildren();
    this.result.textContent = '';
    this.result.className = 'result';
    this.progressTitle.textContent = `Deploying ${this.name} (#${id})`;
    this.deployButton.disabled = true;
    this.deployButton.textContent = `Deploying ${this.name}…`;
    this.renderServices();  // Attach and Detach wait for the deployment
    if (focusLog) this.log.focus();
    this.poke();
    try {
      for (;;) {
        const d = await api('GET', `/deployments/${id}?logs_after=${after}`);
        for (const line of d.logs || []) {
          this.logLines.append(h('li', {}, h('time', { datetime: line.at }, timeOnly(line.at)),
            ' ', browserText(line.line)));
          after = line.id;
        }
        if (d.logs?.length) this.log.scrollTop = this.log.scrollHeight;
        this.progress.value = d.percent;
        this.percent.textContent = `${d.percent} %`;
        if (FINISHED.has(d.status)) {
          this.live.dataset.status = d.status;
          this.progressTitle.textContent = `Deployment #${id} of ${this.name}`;
          this.result.className = `result ${d.success ? 'ok' : 'failed'}`;
          if (d.success) {
            this.changedVars.clear();
            this.unsetVars.clear();
          }
          this.result.textContent = d.success
            ? `Deployment #${id} succeeded: ${this.name} runs the new release.`
            : `Deployment #${id} failed: ${browserText(d.error) || 'no reason recorded'}`;
          break;
        }
        await sleep(700);
      }
    } catch (err) {
      notify(err.message, 'error');
    } finally {
      this.following = null;
      this.deployButton.disabled = false;
      if (document.activeElement === document.body) this.deployButton.focus();
      this.deployButton.textContent = `Deploy ${this.name}`;
      await this.refresh();
    }
  }

  // --- variables ----------------------------------------------------------------------------

  variablesSection() {
    this.customBody = h('tbody');
    this.customTable = table(`Custom variables of ${this.name}`, ['Name', 'Value', 'Actions'],
      this.customBody, 'variables custom');
    this.customEmpty = h('p', { class: 'empty', hidden: true }, 'No custom variable yet.');
    this.varName = h('input', { id: this.id('var-name'), name: 'name', required: true,
      autocomplete: 'off', spellcheck: 'false', 'aria-describedby': this.id('var-name-help') });
    this.varValue = h('input', { id: this.id('var-value'), name: 'value', autocomplete: 'off',
      spellcheck: 'false' });
    const form = h('form', { class: 'form-grid inline', novalidate: true,
      'aria-label': `Set a custom variable of ${this.name}` },
    field('Name', this.varName, h('p', { id: this.id('var-name-help'), class: 'help' },
      'Letters, digits and _, e.g. DJANGO_DEBUG.')),
    field('Value', this.varValue),
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' },
      'Save variable')));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.setVariable();
    });
    this.serviceVarsBody = h('tbody');
    this.serviceVarsTable = table(`Variables given by Tether and the services of ${this.name}`,
      ['Name', 'Value', 'From', 'Next release', 'Running release'], this.serviceVarsBody,
      'variables given');
    return h('section', { class: 'card', 'aria-labelledby': this.id('variables-title') },
      h('h3', { id: this.id('variables-title') }, 'Variables'),
      h('p', { class: 'muted' }, 'They reach the application with the next deployment.'),
      h('h4', {}, 'Custom variables'), this.customTable, this.customEmpty, form,
      h('h4', {}, 'Given by Tether and the services (read-only)'), this.serviceVarsTable);
  }

  async loadVariables() {
    let all;
    try {
      all = await api('GET', `${this.path}/variables?all=true`);
    } catch (err) {
      notify(err.message, 'error');
      return;
    }
    this.variables = all;
    for (const name of this.unsetVars) {
      if (all.some((v) => v.name === name)) this.unsetVars.delete(name);  // set again
    }
    this.renderPending();
    const custom = all.filter((v) => v.source === 'custom');
    replace(this.customBody, custom.map((v) => h('tr', { dataset: { name: v.name } },
      h('th', { scope: 'row', 'data-label': 'Name' }, h('code', {}, v.name)),
      cell('Value', h('code', { class: 'value' }, v.value)),
      cell('Actions', h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'small', 'aria-label': `Edit ${v.name}`,
          onclick: () => this.editVariable(v) }, 'Edit'),
        h('button', { type: 'button', class: 'small danger-quiet', dataset: { action: 'unset' },
          'aria-label': `Unset ${v.name}`, onclick: () => this.unsetVariable(v.name) },
        'Unset'))))));
    this.customEmpty.hidden = custom.length > 0;
    this.customTable.hidden = custom.length === 0;
    replace(this.serviceVarsBody, all.filter((v) => v.source !== 'custom').map((v) => {
      const shown = h('code', { class: 'value masked' }, '••••••••');
      const toggle = h('button', { type: 'button', class: 'small quiet', 'aria-pressed': 'false',
        'aria-label': `Show the value of ${v.name}` }, 'Show');
      toggle.addEventListener('click', () => {
        const show = toggle.getAttribute('aria-pressed') !== 'true';
        toggle.setAttribute('aria-pressed', String(show));
        toggle.textContent = show ? 'Hide' : 'Show';
        shown.textContent = show ? v.value : '••••••••';
        shown.classList.toggle('masked', !show);
      });
      const from = v.source === 'service' ? `${v.prefix} (${v.state})`
        : v.source === 'stage' ? 'Tether: the environment' : 'Tether: a secret per environment';
      return h('tr', { dataset: { name: v.name } },
        h('th', { scope: 'row', 'data-label': 'Name' }, h('code', {}, v.name)),
        cell('Value', h('div', { class: 'value-cell' }, shown, toggle)),
        cell('From', from),
        cell('Next release', yesNo(v.next_release ?? true)),
        cell('Running release', yesNo(v.in_running_release)));
    }));
  }

  editVariable(v) {
    this.varName.value = v.name;
    this.varValue.value = v.value;
    this.varValue.focus();
    this.varValue.select();
  }

  async setVariable() {
    const name = this.varName.value.trim();
    if (!name) {
      notify('Enter the name of the variable.', 'error');
      this.varName.focus();
      return;
    }
    try {
      const before = this.variables.find((v) => v.name === name);
      const answer = await api('PUT', `${this.path}/variables/${seg(name)}`,
        { value: this.varValue.value });
      if (before?.in_running_release && before.value !== this.varValue.value) {
        this.changedVars.add(name);
      }
      notify(answer.message, 'success');
      this.varName.value = '';
      this.varValue.value = '';
    } catch (err) {
      notify(err.message, 'error');
    }
    await this.loadVariables();
  }

  async unsetVariable(name) {
    const index = [...this.customBody.rows].findIndex((r) => r.dataset.name === name);
    try {
      const before = this.variables.find((v) => v.name === name);
      const answer = await api('DELETE', `${this.path}/variables/${seg(name)}`);
      this.changedVars.delete(name);
      if (before?.in_running_release) this.unsetVars.add(name);
      notify(answer.message, 'success');
    } catch (err) {
      notify(err.message, 'error');
    }
    await this.loadVariables();
    // the pressed button went with the re-rendered rows: focus the row now in its place (its
    // own when the unset failed), and once the table is empty the form that sets one
    const rows = [...this.customBody.rows];
    const row = rows.find((r) => r.dataset.name === name) ||
      rows[Math.min(index, rows.length - 1)];
    (row?.querySelector('button[data-action=unset]') || this.varName).focus();
  }

  // --- live updates -------------------------------------------------------------------------

  /** Load everything again; calls arriving meanwhile make it run once more afterwards. */
  refresh() {
    if (this.inflight) {
      this.again = true;
      return this.inflight;
    }
    this.inflight = (async () => {
      do {
        this.again = false;
        await this.load();
      } while (this.again);
    })().finally(() => { this.inflight = null; });
    return this.inflight;
  }

  async load() {
    try {
      const [instances, deployments, activity] = await Promise.all([
        apiAll(`${this.path}/services`),
        this.deployments.refresh(),
        this.activity.refresh(),
      ]);
      this.lastError = '';
      this.instances = instances;
      this.renderServices();
      this.renderDeployments(deployments);
      this.renderActivity(activity);
      this.renderPending();
      const running = deployments.find((d) => !FINISHED.has(d.status));
      if (running && this.following === null) this.follow(running.id);
      await this.backups.refresh();
      // variables again when a state changed or a deployment ended (the running release's)
      const signature = JSON.stringify([instances.map((i) => [i.prefix, i.state]),
        deployments.map((d) => [d.id, d.status])]);
      if (signature !== this.varSignature) {
        this.varSignature = signature;
        await this.loadVariables();
      }
    } catch (err) {
      if (err.message !== this.lastError) notify(err.message, 'error');
      this.lastError = err.message;
    }
  }

  busy() {
    return this.following !== null || this.instances.some(isBusy) || this.backups.busy();
  }

  /** Cut the current wait short, e.g. when something was just asked. */
  poke() {
    this.wake?.();
  }

  async poll() {
    for (;;) {
      const ms = this.busy() ? FAST_MS : SLOW_MS;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, ms);
        this.wake = () => { clearTimeout(timer); resolve(); };
      });
      if (this.active && !document.hidden) await this.refresh();
    }
  }

  async activate() {
    this.active = true;
    if (!this.started) {
      this.started = true;
      await Promise.all([this.loadCatalog(), this.refresh()]);
      this.poll();
    } else {
      await this.refresh();
    }
  }

  deactivate() {
    this.active = false;
  }
}

function setUpTabs(project) {
  const tablist = byId('env-tabs');
  const container = byId('env-panels');
  const panels = new Map();
  const tabs = project.environments.map((env) => {
    const tab = h('button', {
      type: 'button', role: 'tab', id: `tab-${env.name}`, 'aria-controls': `panel-${env.name}`,
      'aria-selected': 'false', tabindex: '-1', dataset: { env: env.name },
    }, env.name);
    const panel = new EnvironmentPanel(project, env, tab);
    panels.set(env.name, panel);
    container.append(panel.el);
    tab.addEventListener('click', () => select(env.name));
    return tab;
  });
  replace(tablist, tabs);

  function select(name, focus = false) {
    for (const tab of tabs) {
      const on = tab.dataset.env === name;
      tab.setAttribute('aria-selected', String(on));
      tab.tabIndex = on ? 0 : -1;
      if (on && focus) tab.focus();
      const panel = panels.get(tab.dataset.env);
      panel.el.hidden = !on;
      if (on) panel.activate();
      else panel.deactivate();
    }
    const url = new URL(location.href);
    url.searchParams.set('env', name);
    history.replaceState(null, '', url);
  }

  // Arrow keys move between tabs (WAI-ARIA tabs pattern); Tab goes on into the panel.
  tablist.addEventListener('keydown', (event) => {
    const index = tabs.indexOf(document.activeElement);
    if (index < 0) return;
    const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 };
    if (!(event.key in moves)) return;
    event.preventDefault();
    const next = tabs[(moves[event.key] + tabs.length) % tabs.length];
    select(next.dataset.env, true);
  });

  const wanted = new URLSearchParams(location.search).get('env');
  const first = project.environments.find((e) => e.name === wanted) || project.environments[0];
  if (first) select(first.name);
}

/** The project's line under its title: region, application command, public id. */
function showMeta(project) {
  byId('project-meta').textContent = `Region ${project.region}` +
    (project.app_command ? ` · application: ${project.app_command}`
      : ' · no application command: set one under Application settings to deploy') +
    ` · id ${project.uuid} (the Divio CLI's --remote-id)`;
}

/**
 * The application settings of the project (command, health check, directory), changed with
 * the API's PATCH of the project: its rules and messages, each shown at its field. They take
 * effect with the next deploy of each environment; without a command, deploys are refused.
 */
class AppSettings {
  constructor(project, changed) {
    this.project = project;
    this.changed = changed;
    const input = (id, props = {}) => h('input', { id, autocomplete: 'off', spellcheck: 'false',
      'aria-describedby': `${id}-help`, ...props });
    this.inputs = {
      app_command: input('app-command', { placeholder: 'python app.py' }),
      health_path: input('app-health-path', { placeholder: '/health' }),
      health_timeout: input('app-health-timeout', { type: 'number', min: '1', max: '600',
        inputmode: 'numeric' }),
      app_dir: input('app-dir', { placeholder: '/srv/shop' }),
    };
    const help = {
      app_command: 'The command that serves the application on $PORT, e.g. python app.py. ' +
        'Without one, deploys are refused.',
      health_path: 'Answers 2xx once the application is ready, e.g. /health.',
      health_timeout: 'Seconds a new release may take to become healthy (1–600).',
      app_dir: 'An absolute path on the machine Tether runs on; each release runs from its own ' +
        'copy of it.',
    };
    this.helps = {};
    const fields = Object.entries({ app_command: 'Command', health_path: 'Health check path',
      health_timeout: 'Health timeout (s)', app_dir: 'Directory' }).map(([key, label]) => {
      this.helps[key] = h('p', { id: `${this.inputs[key].id}-help`, class: 'help' }, help[key]);
      this.inputs[key].addEventListener('input', () => this.mark(key, ''));
      return field(label, this.inputs[key], this.helps[key]);
    });
    this.saveButton = h('button', { type: 'submit', class: 'primary' }, 'Save settings');
    this.form = h('form', { class: 'form-grid', novalidate: true,
      'aria-label': `Application settings of ${project.name}` },
    fields, h('div', { class: 'buttons' }, this.saveButton));
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.save();
    });
    this.el = h('details', { class: 'card settings', id: 'app-settings',
      open: !project.app_command },
    h('summary', {}, 'Application settings'),
    h('p', { class: 'muted' }, 'They take effect with the next deploy of each environment.'),
    this.form);
    this.fill();
  }

  fill() {
    const p = this.project;
    this.inputs.app_command.value = p.app_command || '';
    this.inputs.health_path.value = p.health_path || '/';
    this.inputs.health_timeout.value = String(p.health_timeout ?? 30);
    this.inputs.app_dir.value = p.app_dir || '';
  }

  /** Show `problem` at the field of `key` (or its help again when there is none). */
  mark(key, problem) {
    const help = this.helps[key];
    if (!help.dataset.text) help.dataset.text = help.textContent;
    this.inputs[key].setAttribute('aria-invalid', problem ? 'true' : 'false');
    help.textContent = problem || help.dataset.text;
    help.className = problem ? 'help bad' : 'help';
  }

  /** The field an API message is about (the API names it: "invalid health path …"). */
  static fieldOf(message) {
    const text = message.toLowerCase();
    if (text.includes('health path') || text.includes('health_path')) return 'health_path';
    if (text.includes('health timeout') || text.includes('health_timeout')) {
      return 'health_timeout';
    }
    if (text.includes('app directory') || text.includes('app_dir')) return 'app_dir';
    if (text.includes('app command') || text.includes('app_command')) return 'app_command';
    return null;
  }

  async save() {
    const p = this.project;
    const body = {};
    const command = this.inputs.app_command.value;
    if (command !== (p.app_command || '')) body.app_command = command;
    const path = this.inputs.health_path.value;
    if (path !== p.health_path) body.health_path = path;
    const timeout = this.inputs.health_timeout.value.trim();
    // the API's own rule and message (tether.actions.projects), before a request is sent
    if (!/^\d+$/.test(timeout) || Number(timeout) < 1 || Number(timeout) > 600) {
      this.mark('health_timeout', 'invalid health timeout: use 1 to 600 seconds');
      this.inputs.health_timeout.focus();
      return;
    }
    if (Number(timeout) !== p.health_timeout) body.health_timeout = Number(timeout);
    const dir = this.inputs.app_dir.value.trim();
    if (dir !== (p.app_dir || '')) body.app_dir = dir;
    if (Object.keys(body).length === 0) {
      notify('Nothing to save: the settings are unchanged.', 'info');
      return;
    }
    for (const key of Object.keys(this.inputs)) this.mark(key, '');
    this.saveButton.disabled = true;
    try {
      this.project = await api('PATCH', `/projects/${seg(p.name)}`, body);
      this.fill();
      this.changed(this.project);
      notify(`Saved the application settings of ${p.name}: they take effect with the next ` +
        'deploy of each environment.', 'success');
    } catch (err) {
      const key = AppSettings.fieldOf(err.message);
      if (key) {
        this.mark(key, browserText(err.message));
        this.inputs[key].focus();
      } else {
        notify(err.message, 'error');
      }
    } finally {
      this.saveButton.disabled = false;
    }
  }
}

async function main() {
  initChrome([['Projects', '/'], [projectName, null]]);
  let project;
  try {
    project = await api('GET', `/projects/${seg(projectName)}`);
  } catch (err) {
    replace(byId('env-panels'), h('p', { class: 'error-text' }, browserText(err.message)));
    return;
  }
  document.title = `${project.name} · Tether`;
  byId('project-title').textContent = project.name;
  showMeta(project);
  replace(byId('project-settings'), new AppSettings(project, showMeta).el);
  setUpTabs(project);
}

main();
