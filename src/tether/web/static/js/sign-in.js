// A browser that is signed in already but arrived here from a link on another site: its
// SameSite=Strict session cookie was not sent with that cross-site navigation, so the server
// could not see it. A same-origin request does send it: if the session is valid, go on to the
// page that was asked for instead of asking for the token again.

const next = document.querySelector('input[name=next]')?.value || '/';

fetch('/api/v1/status', { credentials: 'same-origin', cache: 'no-store' })
  .then((response) => {
    if (response.ok && next.startsWith('/') && !next.startsWith('//')) location.replace(next);
  })
  .catch(() => {});
