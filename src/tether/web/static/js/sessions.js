// The browser sessions of the signed-in token (an admin sees all): where each signed in from,
// when it ends, and a button to end it at once.

import { api, seg, signOut } from './api.js';
import { byId, h, replace } from './dom.js';
import { initChrome, notify, when } from './ui.js';

function row(session) {
  const end = h('button', { type: 'button', class: 'quiet' },
    session.current ? 'Sign out here' : 'End session');
  end.addEventListener('click', async () => {
    end.disabled = true;
    if (session.current) {
      signOut();
      return;
    }
    try {
      await api('DELETE', `/sessions/${seg(session.id)}`);
      notify(`Session ${session.id} ended: that browser is signed out.`);
      await load();
      const first = document.querySelector('#sessions button');
      (first || byId('main')).focus();
    } catch (err) {
      notify(err.message, 'error');
      end.disabled = false;
    }
  });
  return h('tr', { 'data-session': String(session.id) },
    h('td', {}, String(session.id), session.current ? h('span', { class: 'chip' }, 'this browser') : ''),
    h('td', {}, session.owner), h('td', {}, session.token), h('td', {}, session.client),
    h('td', {}, when(session.created_at)), h('td', {}, when(session.expires_at)), h('td', {}, end));
}

async function load() {
  const box = byId('sessions');
  try {
    const sessions = await api('GET', '/sessions');
    replace(box, h('table', { class: 'sessions' },
      h('thead', {}, h('tr', {}, ['Session', 'Owner', 'Token', 'Signed in from', 'Since',
        'Ends'].map((title) => h('th', { scope: 'col' }, title)),
      h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Action')))),
      h('tbody', {}, sessions.map(row))));
  } catch (err) {
    replace(box, h('p', { class: 'error-text' }, err.message));
  } finally {
    box.removeAttribute('aria-busy');
  }
}

initChrome([['Projects', '/'], ['Sessions', null]]);
load();
