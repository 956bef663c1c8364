// The projects list: every project with its region and environments, and a form for a new one.

import { api, apiAll, seg } from './api.js';
import { byId, h, replace } from './dom.js';
import { initChrome, notify } from './ui.js';

function projectCard(p) {
  const href = `/projects/${seg(p.name)}`;
  return h('article', { class: 'card project' },
    h('h2', {}, h('a', { href }, p.name)),
    h('p', { class: 'muted' }, `Region ${p.region}`),
    h('ul', { class: 'env-links', 'aria-label': `Environments of ${p.name}` },
      p.environments.map((e) => h('li', {},
        h('a', { href: `${href}?env=${seg(e.name)}`, class: 'chip' }, e.name)))));
}

async function loadProjects() {
  const box = byId('projects');
  try {
    const projects = await apiAll('/projects');
    replace(box, projects.length
      ? projects.map(projectCard)
      : h('p', { class: 'empty' }, 'No project yet: press ', h('strong', {}, 'New project'),
        ' below to create one.'));
  } catch (err) {
    replace(box, h('p', { class: 'error-text' }, err.message));
  } finally {
    box.removeAttribute('aria-busy');
  }
}

async function loadRegions() {
  const select = byId('project-region');
  try {
    const regions = await api('GET', '/regions');
    replace(select, regions.map((r) => h('option', { value: r.name, selected: r.name === 'local' },
      `${r.name} (${r.family})`)));
  } catch (err) {
    notify(err.message, 'error');
  }
}

function setUpForm() {
  const form = byId('new-project-form');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const created = await api('POST', '/projects', {
        name: form.elements.name.value.trim(), region: form.elements.region.value,
        database: form.elements.database.checked,
      });
      location.assign(`/projects/${seg(created.name)}`);
    } catch (err) {
      notify(err.message, 'error');
      button.disabled = false;
    }
  });
  byId('new-project').addEventListener('toggle', (event) => {
    if (event.target.open) loadRegions();
  });
}

initChrome([['Projects', '/']]);
setUpForm();
loadProjects();
