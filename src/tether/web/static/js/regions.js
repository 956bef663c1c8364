// Operators' page: every region, its family (which decides the media storage it offers), its
// clusters, and its catalog: the services developers can add there, shared or private.

import { api, seg } from './api.js';
import { byId, h, replace } from './dom.js';
import { requireAdmin } from './operators.js';
import { initChrome } from './ui.js';

const yes = (flag) => (flag ? 'yes' : 'no');

function regionCard(region, offers, clusters) {
  const titleId = `region-${region.name}`;
  const here = clusters.filter((c) => c.region === region.name);
  return h('section', { class: 'card region', 'aria-labelledby': titleId,
    dataset: { region: region.name } },
  h('h2', { id: titleId }, region.name),
  h('p', { class: 'muted' }, `${region.family} family · ${here.length} cluster` +
    `${here.length === 1 ? '' : 's'}: ${here.map((c) => c.name).join(', ') || 'none'}`),
  offers.length
    ? h('div', { class: 'table-scroll' }, h('table', { class: 'offers responsive' },
      h('caption', { class: 'visually-hidden' }, `What ${region.name} offers`),
      h('thead', {}, h('tr', {}, ['Service', 'Kind', 'Version', 'Shared', 'Private'].map(
        (title) => h('th', { scope: 'col' }, title)))),
      h('tbody', {}, offers.map((o) => h('tr', { dataset: { service: o.service } },
        h('th', { scope: 'row', class: 'prefix', 'data-label': 'Service' }, o.service),
        h('td', { 'data-label': 'Kind' }, o.kind),
        h('td', { 'data-label': 'Version' }, o.version || '–'),
        h('td', { 'data-label': 'Shared' }, yes(o.shared)),
        h('td', { 'data-label': 'Private' }, yes(o.private)))))))
    : h('p', { class: 'empty' }, 'It offers nothing yet: ',
      h('a', { href: '/clusters' }, 'register a cluster'), ' in it.'));
}

async function main() {
  const box = byId('operators');
  if (!(await requireAdmin(box))) return;
  try {
    const [regions, clusters] = await Promise.all([api('GET', '/regions'), api('GET', '/clusters')]);
    const catalogs = await Promise.all(regions.map((r) =>
      api('GET', `/catalog?region=${seg(r.name)}`)));
    replace(box, h('p', { class: 'muted' }, 'What developers can add in each region: its ',
      'catalog, derived from the clusters registered in it.'),
    regions.length
      ? h('div', { class: 'region-list' }, regions.map((r, i) => regionCard(r, catalogs[i], clusters)))
      : h('p', { class: 'empty' }, 'No region yet: ', h('a', { href: '/clusters' },
        'register a cluster'), ' and its region is made.'));
  } catch (err) {
    replace(box, h('p', { class: 'error-text' }, err.message));
  } finally {
    box.removeAttribute('aria-busy');
  }
}

initChrome([['Projects', '/'], ['Regions', null]]);
main();
