// Operators' page: who may use Tether. Every token with its owner, role, project scope, status and
// expiry (the revoked ones on request), and a button to revoke one at once: every call with it
// is refused from then on and its browser sessions end. Tokens are made with the CLI (`tether
// token create`): a browser session may not mint one, so a stolen session cannot outlive its
// sign-out through a token of its own.

import { api, seg } from './api.js';
import { byId, h, replace } from './dom.js';
import { requireAdmin } from './operators.js';
import { initChrome, nextId, notify, when } from './ui.js';

let me = null;

/** Ask before revoking; resolves true only when "Revoke" was pressed (Enter presses it). */
function confirmRevoke(token) {
  return new Promise((resolve) => {
    const titleId = nextId('revoke-title');
    const yours = token.name === me.token;
    const confirm = h('button', { type: 'submit', value: 'revoke', class: 'danger' },
      `Revoke ${token.name}`);
    const cancel = h('button', { type: 'button' }, 'Cancel');
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': titleId },
      h('form', { method: 'dialog' },
        h('h2', { id: titleId }, `Revoke the token ${token.name}?`),
        h('p', { class: 'warning' }, `Every call with it is refused from now on and its ` +
          `browser sessions end. ${token.owner} needs a new token to go on.`),
        yours ? h('p', { class: 'warning' }, 'It is the token you are signed in with: ' +
          'this browser is signed out at once.') : null,
        h('div', { class: 'buttons' }, cancel, confirm)));
    cancel.addEventListener('click', () => dialog.close('cancel'));
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'revoke';
      dialog.remove();
      resolve(ok);
    });
    document.body.append(dialog);
    dialog.showModal();
    confirm.focus();
  });
}

function tokenRow(token) {
  const live = token.status !== 'revoked';
  const revoke = live ? h('button', { type: 'button', class: 'danger small',
    dataset: { revoke: token.name }, 'aria-label': `Revoke ${token.name}` }, 'Revoke…') : null;
  revoke?.addEventListener('click', async () => {
    if (!(await confirmRevoke(token))) {
      revoke.focus();
      return;
    }
    revoke.disabled = true;
    try {
      await api('DELETE', `/tokens/${seg(token.name)}`);
      notify(`Token ${token.name} revoked: it is refused from now on.`, 'success');
      await load();
      (byId('tokens').querySelector('button[data-revoke]') || byId('show-revoked')).focus();
    } catch (err) {
      notify(err.message, 'error');
      revoke.disabled = false;
      revoke.focus();
    }
  });
  const cell = (label, ...content) => h('td', { 'data-label': label }, ...content);
  return h('tr', { dataset: { token: token.name, status: token.status } },
    h('th', { scope: 'row', class: 'prefix', 'data-label': 'Name' }, token.name,
      token.name === me.token ? h('span', { class: 'chip' }, 'yours') : null),
    cell('Owner', token.owner), cell('Role', token.role),
    cell('Projects', token.projects ? token.projects.join(', ') : 'all'),
    cell('Status', h('span', { class: `badge token-${token.status}` }, token.status)),
    cell('Expires', token.expires_at ? when(token.expires_at) : 'never'),
    cell('Made', when(token.created_at), token.created_by ? ` by ${token.created_by}` : ''),
    h('td', { 'data-label': 'Action' }, revoke));
}

async function load() {
  const box = byId('tokens');
  const revoked = byId('show-revoked').checked;
  try {
    const tokens = await api('GET', `/tokens${revoked ? '?revoked=true' : ''}`);
    replace(box, h('table', { class: 'tokens responsive' },
      h('caption', { class: 'visually-hidden' }, 'Tokens'),
      h('thead', {}, h('tr', {}, ['Name', 'Owner', 'Role', 'Projects', 'Status', 'Expires',
        'Made'].map((title) => h('th', { scope: 'col' }, title)),
      h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Action')))),
      h('tbody', {}, tokens.map(tokenRow))));
  } catch (err) {
    replace(box, h('p', { class: 'error-text' }, err.message));
  } finally {
    box.removeAttribute('aria-busy');
  }
}

async function main() {
  const box = byId('operators');
  me = await requireAdmin(box);
  if (!me) return;
  const show = h('input', { type: 'checkbox', id: 'show-revoked' });
  show.addEventListener('change', load);
  replace(box,
    h('p', { class: 'muted' }, 'Who may use Tether: admins (everything), developers (their ',
      'projects: services, deploys, variables) and viewers (read only). Make one with ',
      h('code', {}, 'tether token create NAME --role developer --project P'),
      ': its secret is shown once, and never to a browser.'),
    h('div', { class: 'field check' }, show,
      h('label', { for: 'show-revoked' }, 'Show revoked tokens too')),
    h('div', { id: 'tokens', 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading…')));
  box.removeAttribute('aria-busy');
  await load();
}

initChrome([['Projects', '/'], ['Tokens', null]]);
main();
