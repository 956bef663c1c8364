// One deployment: its status and result, what its release changed (services attached and
// detached), the names of its release's variables (never their values) and its log, followed
// live while it runs.

import { api, seg } from './api.js';
import { byId, h, replace, sleep } from './dom.js';
import { browserText, initChrome, notify, parseTime, statusBadge, when } from './ui.js';

const parts = location.pathname.split('/').map(decodeURIComponent);
// /projects/{project}/{env}/deployments/{id}
const [project, env, id] = [parts[2], parts[3], parts[5]];
const projectHref = `/projects/${seg(project)}?env=${seg(env)}`;
const FINISHED = new Set(['succeeded', 'failed']);

function row(label, ...content) {
  return [h('dt', {}, label), h('dd', {}, content)];
}

const timeOnly = (iso) => (iso ? parseTime(iso).toLocaleTimeString(undefined, { hour12: false })
  : '');

function summary(dep, release) {
  return h('section', { class: 'card', 'aria-labelledby': 'summary-title' },
    h('h2', { id: 'summary-title' }, 'Summary'),
    h('dl', { class: 'facts' },
      row('Status', statusBadge(dep.status), dep.status === 'running' ? ` ${dep.percent} %` : null),
      row('Result', dep.error ? h('span', { class: 'error-text' }, browserText(dep.error))
        : dep.success ? `${env} runs release ${dep.release_id}` : '–'),
      row('Asked by', dep.requested_by || '–'),
      row('Asked', when(dep.created_at)),
      row('Started', when(dep.started_at)),
      row('Finished', when(dep.finished_at)),
      row('Release', release.release_id ? `#${release.release_id}`
        : FINISHED.has(dep.status) ? 'none (it failed before making one)' : 'not made yet'),
      row('Command', release.command ? h('code', {}, release.command) : '–'),
      row('ID', h('code', {}, dep.uuid))));
}

function services(list) {
  return list.length
    ? h('ul', { class: 'plain' }, list.map((i) => h('li', { dataset: { prefix: i.prefix } },
      h('strong', { class: 'prefix' }, i.prefix), ` (${i.service}, now ${i.state})`)))
    : null;
}

function changes(dep, release) {
  let body;
  if (!release.release_id) {
    body = h('p', { class: 'empty' }, FINISHED.has(dep.status)
      ? 'It made no release: nothing changed.' : 'Not known yet: it has made no release so far.');
  } else {
    const attached = services(release.attached);
    const detached = services(release.detached);
    body = [
      !release.applied && FINISHED.has(dep.status)
        ? h('p', { class: 'muted' }, 'It failed, so nothing changed: the previous release kept ' +
          'running and no service changed state. It would have:')
        : null,
      h('h3', {}, 'Attached'), attached || h('p', { class: 'empty' }, 'No service.'),
      h('h3', {}, 'Detached'), detached || h('p', { class: 'empty' }, 'No service.'),
      h('h3', {}, 'Services the release has'),
      services(release.services) || h('p', { class: 'empty' }, 'None.'),
    ];
  }
  return h('section', { class: 'card changes', id: 'changes',
    'aria-labelledby': 'changes-title' }, h('h2', { id: 'changes-title' }, 'What it changed'),
  body);
}

function variables(release) {
  return h('section', { class: 'card', id: 'variables', 'aria-labelledby': 'variables-title' },
    h('h2', { id: 'variables-title' }, 'Variables of its release'),
    h('p', { class: 'muted' }, 'Their names only: the values stay secret.'),
    release.variables.length
      ? h('ul', { class: 'names' }, release.variables.map((n) => h('li', {}, h('code', {}, n))))
      : h('p', { class: 'empty' }, 'None: it made no release.'));
}

const lines = h('ol', { class: 'lines' });
const log = h('div', { class: 'log', role: 'log', 'aria-label': 'Deployment log', tabindex: '0',
  id: 'deployment-log' }, lines);

function logSection() {
  return h('section', { class: 'card', 'aria-labelledby': 'log-title' },
    h('h2', { id: 'log-title' }, 'Log'), log);
}

function render(dep, release) {
  document.title = `Deployment #${dep.id} of ${project}/${env} · Tether`;
  byId('deployment-title').replaceChildren(`Deployment #${dep.id} of ${env} `,
    statusBadge(dep.status));
  byId('deployment-meta').textContent = `${project} / ${env}`;
  const box = byId('deployment');
  replace(box, summary(dep, release), changes(dep, release), variables(release), logSection());
  box.removeAttribute('aria-busy');
}

/** Load it, then follow its log until it has ended. */
async function main() {
  initChrome([['Projects', '/'], [project, `/projects/${seg(project)}`], [env, projectHref],
    [`Deployment #${id}`, null]]);
  let after = 0;
  let shown = null;
  for (;;) {
    let dep;
    let release;
    try {
      dep = await api('GET', `/deployments/${seg(id)}?logs_after=${after}` +
        (shown && !FINISHED.has(shown) ? `&wait=10&status=${seg(shown)}` : ''));
      if (dep.environment !== env || dep.project !== project) {
        throw Object.assign(new Error(`no deployment ${id} of ${project}/${env}`),
          { status: 404 });
      }
      if (dep.status !== shown) {
        release = await api('GET', `/deployments/${seg(id)}/release`);
        render(dep, release);
        shown = dep.status;
      }
    } catch (err) {
      if (err.status === 404) {
        replace(byId('deployment'), h('p', { class: 'error-text' }, browserText(err.message)),
          h('p', {}, h('a', { href: projectHref }, `Back to ${env}`)));
      } else {
        notify(err.message, 'error');
      }
      return;
    }
    for (const line of dep.logs || []) {
      lines.append(h('li', {}, h('time', { datetime: line.at }, timeOnly(line.at)), ' ',
        browserText(line.line)));
      after = line.id;
    }
    if (FINISHED.has(dep.status) && !dep.logs?.length) return;
    if (!dep.logs?.length) await sleep(500);
  }
}

main();
