// Pieces every signed-in page shares: the top bar, notices, state badges, the action buttons of
// an instance and the typed confirmation of a removal. What an action may do comes from the API
// (`instance.actions`, decided by Tether's lifecycle rules); nothing here decides it.

import { api, envPath, requireSession, seg, session, signOut } from './api.js';
import { byId, h, replace } from './dom.js';

export const ACTIONS = ['provision', 'detach', 'attach', 'remove'];
const ACTION_LABELS = {
  provision: 'Provision', detach: 'Detach', attach: 'Attach', remove: 'Remove…',
};
const BUSY = new Set(['queued', 'running']);
// What an action is for, shown beside an enabled button (a disabled one shows why it is not).
const ACTION_HELP = {
  provision: 'Create it on its cluster now, to fill it before the application gets it.',
  detach: 'The next deployment takes its variables from the application; its data is kept.',
  attach: 'The next deployment gives the application its variables.',
  remove: 'Delete it and all of its data for good (you will be asked to type the prefix).',
};

/** Breadcrumb links (label, href) and the sign-out button; without a session, sign in first. */
export function initChrome(crumbs = []) {
  requireSession();
  const form = document.querySelector('form.sign-out');
  if (form) {
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      form.querySelector('button').disabled = true;
      signOut();
    });
  }
  showOperatorsLink();
  const nav = byId('crumbs');
  if (nav) {
    replace(nav, h('ol', {}, crumbs.map(([label, href], i) => h('li', {},
      href && i < crumbs.length - 1
        ? h('a', { href }, label)
        : h('span', { 'aria-current': 'page' }, label)))));
  }
}

/** The top bar's link to the operators' pages, shown to admin tokens only. */
async function showOperatorsLink() {
  const link = document.querySelector('.operators-link');
  if (!link || !session()) return;
  try {
    const status = await api('GET', '/status');
    link.hidden = status.role !== 'admin';
  } catch (err) {
    // the page's own requests say what went wrong
  }
}

// The API's messages are shared with the CLI and end in the command to run ("(`tether deploy
// test`)"); in the browser they name the button to press instead.
const CLI_HINTS = [
  [/^tether deploy (\S+)/, (m) => `press Deploy ${m[1]}`],
  [/^tether service (provision|detach|attach) /, (m) => `press ${ACTION_LABELS[m[1]]}`],
  [/^tether service remove /, () => `press ${ACTION_LABELS.remove}`],
  [/^tether service add /, () => 'press Add service'],
  [/^tether service wait /, () => 'this page shows when it is done'],
  [/^tether service (list|show)/, () => 'see the Services table'],
  [/^tether service catalog/, () => 'see the Service list under Add service'],
  [/^tether cluster add/, () => 'an operator registers one'],
  [/^tether project update .*--app-command/, () => 'enter it under Application settings'],
  [/^tether up/, () => 'Tether'],
];

/** A message of the API (or the CLI) in the browser's words: buttons, not commands. */
export function browserText(message) {
  if (!message) return message;
  let text = message.replace(/ with --prefix\b/g, '').replace(/`([^`]*)`/g, (whole, code) => {
    for (const [re, say] of CLI_HINTS) {
      const m = code.match(re);
      if (m) return say(m);
    }
    return code.startsWith('tether ') ? '\u0000' : whole;  // any other command: dropped
  });
  text = text.replace(/, then press /g, ', then ')
    .replace(/ with press /g, ': press ')
    .replace(/\bsee see /g, 'see ')
    .replace(/ ?\((?:[^()]*\u0000[^()]*)\)/g, '')  // a hint that was only commands
    .replace(/ ?(?:with |see |: )?\u0000/g, '');
  return text;
}

/** Show a message at the top of the page; errors are announced at once (role=alert). */
export function notify(message, kind = 'info') {
  const box = byId('notices');
  if (!box) return;
  const close = h('button', { type: 'button', class: 'quiet close', 'aria-label': 'Dismiss',
    text: '×' });
  const note = h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('p', { text: browserText(message) }), close);
  close.addEventListener('click', () => note.remove());
  box.replaceChildren(note);
  if (kind !== 'error') setTimeout(() => note.remove(), 8000);
}

export const yesNo = (flag) => (flag ? 'yes' : 'no');

/** What a state means, in one sentence: the tooltip of its badge. */
export function stateTitle(inst) {
  return `${inst.state}: ${inst.meaning}. Functional: ${yesNo(inst.functional)}. ` +
    `Usable by the application: ${yesNo(inst.usable)}.`;
}

/** Whether the instance is being removed (its removal queued or running). */
export const isRemoving = (inst) => inst.operation?.kind === 'remove' &&
  BUSY.has(inst.operation.status);

/**
 * A coloured badge for an instance's state (`removing` while its removal runs), with a
 * tooltip saying what the state means: a real element (role=tooltip, the badge's
 * description), shown by CSS at once on hover and on focus, not the browser's delayed `title`;
 * Escape hides it (WCAG 1.4.13).
 */
export function stateBadge(inst) {
  const removing = isRemoving(inst);
  const label = removing ? 'removing' : inst.state;
  const text = removing
    ? `removing: being deleted for good, with all of its data (${inst.state} until it is ` +
      `gone). Functional: ${yesNo(inst.functional)}. Usable by the application: ` +
      `${yesNo(inst.usable)}.`
    : stateTitle(inst);
  const tipId = nextId('state-tip');
  const badge = h('span', {
    class: `badge state-${label.replace(/\s+/g, '-')}`, tabindex: '0',
    'aria-describedby': tipId, dataset: { state: inst.state },
  }, label);
  const wrap = h('span', { class: 'tipped' }, badge,
    h('span', { role: 'tooltip', id: tipId, class: 'tip' }, text));
  badge.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') wrap.classList.add('tip-off');
  });
  for (const type of ['blur', 'mouseleave']) {
    (type === 'blur' ? badge : wrap).addEventListener(type, () => wrap.classList.remove('tip-off'));
  }
  return wrap;
}

/** A small badge for an operation or a deployment status. */
export function statusBadge(status) {
  return h('span', { class: `badge status-${status}` }, status);
}

export function isBusy(inst) {
  return inst.state === 'provisioning' || Boolean(inst.operation && BUSY.has(inst.operation.status));
}

/** "provision running", or nothing when no operation is under way. */
export function operationText(inst) {
  const op = inst.operation;
  if (!op || !BUSY.has(op.status)) return null;
  return `${op.kind} ${op.status}${op.message ? ': ' + op.message : ''}`;
}

/** An API time (UTC, ISO 8601) as a Date; times without an offset are UTC too. */
export function parseTime(iso) {
  return new Date(/Z$|[+-]\d\d:\d\d$/.test(iso) ? iso : iso + 'Z');
}

const pad = (n) => String(n).padStart(2, '0');

/** A compact local time, e.g. 2026-11-28 12:08:53, in a <time> element. */
export function when(iso) {
  if (!iso) return '–';
  const d = parseTime(iso);
  const text = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return h('time', { datetime: d.toISOString() }, text);
}

let uid = 0;
export const nextId = (base) => `${base}-${++uid}`;

/**
 * The four action buttons of an instance, as the API says: an action that is refused or would
 * change nothing is disabled, its reason in the button's title and description (and, with
 * `explain`, as visible text beside it). While `deploying` (a deployment's id) runs, Attach
 * and Detach wait for it. `after(answer)` runs once an action was asked (with the API's answer,
 * the instance as it now is, when it was accepted).
 */
export function actionButtons(project, env, inst, after,
  { explain = false, deploying = null } = {}) {
  const busy = isBusy(inst);
  const items = ACTIONS.map((action) => {
    const info = inst.actions?.[action] || { allowed: false, changes: false, message: '' };
    // attaching or detaching while a deployment runs would not be in its release: wait for it
    const held = deploying !== null && (action === 'attach' || action === 'detach') &&
      info.allowed && info.changes;
    const usable = info.allowed && info.changes && !busy && !held;
    const reason = busy && info.allowed && info.changes
      ? `wait: ${operationText(inst) || 'an operation is running'}`
      : held ? `wait: deployment #${deploying} of ${env} is running; ` +
        `${ACTION_LABELS[action].toLowerCase()} ${inst.prefix} once it has ended`
        : browserText(info.message);
    const reasonId = nextId(`reason-${action}`);
    const button = h('button', {
      type: 'button',
      class: action === 'remove' ? 'danger small' : 'small',
      disabled: !usable,
      title: usable ? ACTION_HELP[action] : reason,
      'aria-describedby': reasonId,
      dataset: { action, prefix: inst.prefix, focusKey: `${inst.prefix}:${action}` },
      onclick: () => runAction(project, env, inst, action, button, after),
    }, ACTION_LABELS[action]);
    const text = h('span', { id: reasonId, class: explain ? 'reason' : 'visually-hidden' },
      usable ? ACTION_HELP[action] : `${explain ? '' : 'Not available: '}${reason}`);
    return explain ? h('li', { class: usable ? 'ok' : 'no' }, button, text) : [button, text];
  });
  return explain ? h('ul', { class: 'action-list' }, items) : h('div', { class: 'actions' }, items);
}

async function runAction(project, env, inst, action, button, after) {
  const base = `${envPath(project, env)}/services/${seg(inst.prefix)}`;
  let answer;
  try {
    if (action === 'remove') {
      if (!(await confirmRemove(inst))) return;
      button.focus();
      keepFocus(button);
      button.disabled = true;
      answer = await api('DELETE', `${base}?confirm=${seg(inst.prefix)}`);
    } else {
      keepFocus(button);
      button.disabled = true;
      answer = await api('POST', `${base}/${action}`);
    }
    notify(answer.message || `${inst.prefix}: ${action} asked`, 'success');
  } catch (err) {
    notify(err.message, 'error');
  } finally {
    await after?.(answer);
  }
}

/**
 * Ask the user to type the prefix before a removal; resolves true only when they did and
 * pressed "Remove for good". The dialog says plainly that the data is deleted for good.
 */
export function confirmRemove(inst) {
  return new Promise((resolve) => {
    const inputId = nextId('confirm-prefix');
    const titleId = nextId('confirm-title');
    const input = h('input', { id: inputId, autocomplete: 'off', spellcheck: 'false',
      autocapitalize: 'characters', required: true });
    const confirm = h('button', { type: 'submit', value: 'remove', class: 'danger',
      disabled: true }, 'Remove for good');
    // Cancel is a plain button: the confirm button is the form's only (so default) submit
    // button, and Enter in the field confirms once the prefix is typed, never cancels
    const cancel = h('button', { type: 'button' }, 'Cancel');
    const form = h('form', { method: 'dialog' },
      h('h2', { id: titleId }, `Remove ${inst.prefix}?`),
      h('p', { class: 'warning' },
        `This deletes ${inst.prefix} (${inst.service}) and all of its data for good. ` +
        'It cannot be undone.'),
      h('div', { class: 'field' },
        h('label', { for: inputId }, 'Type ', h('strong', {}, inst.prefix), ' to confirm'),
        input),
      h('div', { class: 'buttons' },
        cancel, confirm));
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': titleId }, form);
    input.addEventListener('input', () => { confirm.disabled = input.value !== inst.prefix; });
    cancel.addEventListener('click', () => dialog.close('cancel'));
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'remove' && input.value === inst.prefix;
      dialog.remove();
      resolve(ok);
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

/** Copy text to the clipboard, also where the async clipboard API is unavailable (plain http). */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = h('textarea', { class: 'visually-hidden', readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  document.execCommand('copy');
  area.remove();
}

// The key of a control that had focus when it was disabled for a request (Chromium then moves
// focus to the body): the re-render after the request gives focus back to it (or its row).
let lostKey = null;
document.addEventListener('focusin', () => { lostKey = null; });

/** Call before disabling the focused `el`: its focus is given back after the re-render. */
export function keepFocus(el) {
  if (el && el === document.activeElement && el.dataset?.focusKey) lostKey = el.dataset.focusKey;
}

/** Remember which keyed control has focus, to give it back after a part was re-rendered. */
export function focusKey() {
  const el = document.activeElement;
  if (el && el !== document.body) return el.dataset?.focusKey || null;
  return lostKey;
}

/** The add form of the section `el` is in: its summary when closed, else its first field. */
function addFormOf(el) {
  const add = el.closest('section')?.querySelector('details.add');
  if (!add) return null;
  return (add.open && add.querySelector('input:not([disabled]), select:not([disabled])')) ||
    add.querySelector('summary');
}

/**
 * Give focus back to the control with `key` after a re-render, if focus was lost with it; when
 * that control is now disabled, to the `fallback` key (e.g. the row's link) instead.
 */
export function restoreFocus(key, root = document, fallback = null) {
  if (!key || (document.activeElement && document.activeElement !== document.body)) return;
  const find = (k) => [...root.querySelectorAll('[data-focus-key]')]
    .find((e) => e.dataset.focusKey === k);
  const el = find(key);
  const other = fallback && find(fallback);
  // a control that went with its row (a removal): the first keyed control left, if any; when
  // no row is left (the table was emptied), the add form of the same section, which is what
  // one does next in an empty table
  const target = el && !el.disabled ? el
    : other || (fallback
      ? [...root.querySelectorAll('[data-focus-key]')].find((e) => !e.disabled) ||
        addFormOf(root) : null);
  if (target) {
    target.focus();
    lostKey = null;
  }
}
