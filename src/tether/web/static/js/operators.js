// What the operators' pages (clusters, regions, backups, tokens) share: they are for admin tokens only. Every
// valid token may read the cluster list through the API (it holds no secret), but these pages
// are where servers are registered and checked, so a developer or viewer is told plainly that
// they need an admin token, and shown nothing else.

import { api } from './api.js';
import { byId, h, replace } from './dom.js';

const PAGES = [['Clusters', '/clusters'], ['Regions', '/regions'], ['Backups', '/backups'],
  ['Tokens', '/tokens'], ['Sessions', '/sessions']];

/** The links between the operators' pages, the current one marked. */
function operatorNav() {
  const nav = byId('operator-nav');
  if (!nav) return;
  replace(nav, h('ul', {}, PAGES.map(([label, href]) => h('li', {},
    h('a', { href, 'aria-current': location.pathname === href ? 'page' : null }, label)))));
}

/**
 * The token's status when it is an admin's; else the page says why it shows nothing and how to
 * get in (null). `box` is where the page's content goes.
 */
export async function requireAdmin(box) {
  let status;
  try {
    status = await api('GET', '/status');
  } catch (err) {
    replace(box, h('p', { class: 'error-text', role: 'alert' }, err.message));
    box.removeAttribute('aria-busy');
    return null;
  }
  if (status.role === 'admin') {
    operatorNav();
    return status;
  }
  replace(box, h('div', { class: 'card refused', role: 'alert' },
    h('h2', {}, 'Operators only'),
    h('p', {}, `This page is for operators: it needs an admin token, and you are signed in ` +
      `with the token ${status.token} (${status.role}).`),
    h('p', {}, 'Sign out and sign in again with an admin token, or ask an operator. ',
      h('a', { href: '/' }, 'Back to your projects'), '.')));
  box.removeAttribute('aria-busy');
  return null;
}
