// Signing in: the access token typed into the form is traded for a session of this browser
// (`POST /api/v1/sessions`), kept in this origin's localStorage and sent as a bearer token by
// api.js. The token itself is not kept. A browser with a live session goes on to the page that
// was asked for at once.

import { forgetSession, saveSession, session } from './api.js';

const form = document.getElementById('sign-in-form');
const error = document.getElementById('sign-in-error');

/** Where to go after signing in: a path of this site only (never `//host` or a URL). */
function nextPath() {
  const next = form.elements.next.value || '/';
  const bad = !next.startsWith('/') || next.startsWith('//') || next.includes('\\')
    || /[\u0000-\u001f]/.test(next);
  return bad ? '/' : next;
}

async function alreadySignedIn() {
  const current = session();
  if (!current) return;
  try {
    const response = await fetch('/api/v1/status', {
      headers: { Authorization: `Bearer ${current.secret}`, Accept: 'application/json' },
      credentials: 'omit', cache: 'no-store',
    });
    if (response.ok) location.replace(nextPath());
    else forgetSession();
  } catch (err) {
    // Tether unreachable: stay on the form
  }
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  error.textContent = '';
  try {
    const response = await fetch('/api/v1/sessions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ token: form.elements.token.value.trim() }),
      credentials: 'omit', cache: 'no-store',
    });
    const data = await response.json().catch(() => null);
    if (response.ok && data && data.session) {
      saveSession(data);
      form.elements.token.value = '';
      location.replace(nextPath());
      return;
    }
    error.textContent = data?.error?.message || `Tether answered HTTP ${response.status}`;
  } catch (err) {
    error.textContent = 'Tether cannot be reached: is `tether up` still running?';
  }
  button.disabled = false;
  form.elements.token.focus();
});

alreadySignedIn();
