// The one way the pages talk to Tether: the same REST API as the CLI (/api/v1). The browser
// authenticates with its HttpOnly session cookie (which no script can read); every change also
// carries the session's CSRF token in `X-CSRF-Token`. The server writes that token into each page
// (`<meta name="tether-csrf">`), never into a cookie: cookies ignore ports, so a page of another
// origin on this host could read a cookie, but it cannot read this page.

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

export class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The session's CSRF token, from the page the server rendered. */
export function csrfToken() {
  const meta = document.querySelector('meta[name="tether-csrf"]');
  return meta ? meta.content : '';
}

/** Send the browser to the sign-in page, coming back here afterwards. */
export function signInAgain() {
  const next = location.pathname + location.search;
  location.assign('/sign-in?next=' + encodeURIComponent(next));
}

/** Call the API; answers the decoded JSON, or throws ApiError with the API's own message. */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (!SAFE.has(method)) headers['X-CSRF-Token'] = csrfToken();
  let response;
  try {
    response = await fetch('/api/v1' + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
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
  return data;
}

/** One URL path segment, quoted: a name can never reach another route. */
export const seg = (value) => encodeURIComponent(String(value));

export const envPath = (project, env) => `/projects/${seg(project)}/environments/${seg(env)}`;
