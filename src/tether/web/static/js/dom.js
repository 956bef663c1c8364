// Building the page from API data without ever parsing HTML: every value goes into a text node
// or an attribute, never through innerHTML, so a value such as `<img onerror=…>` stays text.

/**
 * Create an element. `props`: `class`, `text` (textContent), `on<event>` handlers, `dataset`,
 * and any other attribute (true → present, false/null/undefined → absent). Children may be
 * nodes, strings (as text), arrays, or null (skipped).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, ...children);
  return el;
}

/** Append children (nodes, text, arrays; null skipped) to `el`. */
export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace all of `el`'s children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, ...children);
}

export const byId = (id) => document.getElementById(id);

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
