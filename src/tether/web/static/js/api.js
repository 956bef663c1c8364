// The one way the pages talk to Tether: the same REST API as the CLI (/api/v1), with the
// browser's *session* as a bearer token. Signing in (sign-in.js) trades the access token typed
// into the form for a session (`POST /api/v1/sessions`), kept in this origin's localStorage.
// No cookie is ever used: cookies ignore ports, so every application and media file served on
// another port of this host would receive a session cookie (and a browser sends cookies with
// forged requests too); localStorage belongs to this exact origin, and a header is sent only by
// these scripts. Signing out ends the session in Tether and forgets it here.

const SESSION_KEY = 'tether.session';

export class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The session of this browser: `{ id, secret }`, or null when signed out. */
export function session() {
  try {
    const saved = JSON.parse(localStorage.getItem(SESSION_KEY) || 'null');
    return saved && typeof saved.secret === 'string' ? saved : null;
  } catch (err) {
    return null;
  }
}

export function saveSession(value) {
  localStorage.setItem(SESSION_KEY, JSON.stringify({ id: value.id, secret: value.session }));
}

export function forgetSession() {
  localStorage.removeItem(SESSION_KEY);
}

/** Send the browser to the sign-in page, coming back here afterwards. */
export function signInAgain() {
  forgetSession();
  const next = location.pathname + location.search;
  location.assign('/sign-in?next=' + encodeURIComponent(next).replace(/%2F/g, '/'));
}

/** A signed-in page: without a session, go and sign in (the page shows no data before). */
export function requireSession() {
  if (session() === null) {
    signInAgain();
    return false;
  }
  return true;
}

/** Sign out: the session ends in Tether (a copied secret is worthless), then here. */
export async function signOut() {
  const current = session();
  if (current) {
    try {
      await fetch(`/api/v1/sessions/${encodeURIComponent(current.id)}`, {
        method: 'DELETE',
        headers: { Authorization: `Bearer ${current.secret}`, Accept: 'application/json' },
        credentials: 'omit',
        cache: 'no-store',
      });
    } catch (err) {
      // unreachable: the session ends on its own; forget it here anyway
    }
  }
  forgetSession();
  location.assign('/sign-in');
}

/**
 * Call the API; answers the decoded JSON, or throws ApiError with the API's own message.
 * A GET of a paged list that names no `limit` answers every row: the pages read lists whole
 * (backups, variables, sessions…), and a list answers one page unless its next is followed.
 */
export async function api(method, path, body) {
  const first = await call(method, path, body);
  if (method !== 'GET' || !Array.isArray(first.data) || /[?&]limit=/.test(path)) {
    return first.data;
  }
  const rows = [...first.data];
  let after = nextCursor(first.response.headers.get('Link'));
  while (after !== null) {
    const sep = path.includes('?') ? '&' : '?';
    const page = await call('GET', `${path}${sep}after=${encodeURIComponent(after)}`);
    rows.push(...page.data);
    after = nextCursor(page.response.headers.get('Link'));
  }
  return rows;
}

/**
 * Every row of a paged list: its pages, followed through each answer's
 * `Link: <…?after=CURSOR>; rel="next"` (the API answers a page of at most `limit` rows).
 */
export async function apiAll(path, limit = 1000) {
  const rows = [];
  let after = null;
  for (;;) {
    const sep = path.includes('?') ? '&' : '?';
    const page = await call('GET', `${path}${sep}limit=${limit}` +
      (after === null ? '' : `&after=${encodeURIComponent(after)}`));
    rows.push(...page.data);
    after = nextCursor(page.response.headers.get('Link'));
    if (after === null) return rows;
  }
}

/**
 * One page of a paged list: its `rows` (at most `limit`) and the `after` cursor of the next
 * page (from the answer's `Link: <…>; rel="next"`), null after the last page.
 */
export async function apiPage(path, limit, after = null) {
  const sep = path.includes('?') ? '&' : '?';
  const page = await call('GET', `${path}${sep}limit=${limit}` +
    (after === null ? '' : `&after=${encodeURIComponent(after)}`));
  return { rows: page.data, after: nextCursor(page.response.headers.get('Link')) };
}

/** The `after` of a `Link` header's rel="next" URL, or null. */
function nextCursor(link) {
  const found = /<([^>]*)>\s*;\s*rel="next"/.exec(link || '');
  return found ? new URL(found[1], location.href).searchParams.get('after') : null;
}

async function call(method, path, body) {
  const current = session();
  if (current === null) {
    signInAgain();
    throw new ApiError('You are not signed in.', 401, 'unauthorized');
  }
  const headers = { Accept: 'application/json', Authorization: `Bearer ${current.secret}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch('/api/v1' + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (err) {
    throw new ApiError('Tether cannot be reached: is `tether up` still running?', 0, 'offline');
  }
  if (response.status === 401) {
    signInAgain();
    throw new ApiError('Your session has ended: please sign in again.', 401, 'unauthorized');
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = data?.error?.message || `Tether answered HTTP ${response.status}`;
    throw new ApiError(message, response.status, data?.error?.code);
  }
  return { data, response };
}

/** One URL path segment, quoted: a name can never reach another route. */
export const seg = (value) => encodeURIComponent(String(value));

export const envPath = (project, env) => `/projects/${seg(project)}/environments/${seg(env)}`;
