// Small DOM helpers of the demo: element building, icons, formatting, toasts.

/**
 * h('button', {class: 'btn', testid: 'x', data: {user: 'bob'}, onclick}, ...children)
 * builds an element. testid sets data-testid; data sets data-* attributes;
 * on* keys add listeners; text children become text nodes (never HTML).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'testid') el.dataset.testid = v;
    else if (k === 'data') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'html') el.innerHTML = v; // only for the icon strings below
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

// Icons: static SVG strings (24x24, stroke currentColor).
const svg = (body) =>
  `<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">${body}</svg>`;
export const icons = {
  phone: svg('<path d="M22 16.9v3a2 2 0 0 1-2.2 2 19.8 19.8 0 0 1-8.6-3.1 19.5 19.5 0 0 1-6-6A19.8 19.8 0 0 1 2.1 4.2 2 2 0 0 1 4.1 2h3a2 2 0 0 1 2 1.7c.1.9.4 1.8.7 2.7a2 2 0 0 1-.5 2.1L8 9.8a16 16 0 0 0 6 6l1.3-1.3a2 2 0 0 1 2.1-.4c.9.3 1.8.6 2.7.7a2 2 0 0 1 1.7 2z"/>'),
  hangup: svg('<path d="M3.6 14.4c-.5-.5-.5-1.4 0-1.9a12.4 12.4 0 0 1 16.8 0c.5.5.5 1.4 0 1.9l-1.6 1.6a1.4 1.4 0 0 1-1.8.1l-2-1.5a1.4 1.4 0 0 1-.5-1.1v-1.6a9.3 9.3 0 0 0-5 0v1.6c0 .4-.2.8-.5 1.1l-2 1.5a1.4 1.4 0 0 1-1.8-.1z"/>'),
  video: svg('<path d="m22 8-6 4 6 4V8z"/><rect x="2" y="6" width="14" height="12" rx="2"/>'),
  videoOff: svg('<path d="M16 16v1a2 2 0 0 1-2 2H4a2 2 0 0 1-2-2V7a2 2 0 0 1 2-2h2m5.7 0H14a2 2 0 0 1 2 2v3.3l1 1L22 8v8"/><path d="m2 2 20 20"/>'),
  mic: svg('<rect x="9" y="2" width="6" height="12" rx="3"/><path d="M19 10v1a7 7 0 0 1-14 0v-1M12 18v4"/>'),
  micOff: svg('<path d="m2 2 20 20M9 9v2a3 3 0 0 0 5.1 2.1M15 9.3V5a3 3 0 0 0-5.9-.6"/><path d="M17 16.9A7 7 0 0 1 5 11v-1m14 0v1a7 7 0 0 1-.1 1.2M12 18v4"/>'),
  audio: svg('<path d="M3 14h3a2 2 0 0 1 2 2v3a2 2 0 0 1-2 2H4a1 1 0 0 1-1-1v-6a9 9 0 0 1 18 0v6a1 1 0 0 1-1 1h-2a2 2 0 0 1-2-2v-3a2 2 0 0 1 2-2h3"/>'),
  userPlus: svg('<path d="M16 21v-2a4 4 0 0 0-4-4H6a4 4 0 0 0-4 4v2"/><circle cx="9" cy="7" r="4"/><path d="M19 8v6M22 11h-6"/>'),
  close: svg('<path d="M18 6 6 18M6 6l12 12"/>'),
  hand: svg('<path d="M18 11V6a2 2 0 0 0-4 0v4M14 10V4a2 2 0 0 0-4 0v6M10 10.5V6a2 2 0 0 0-4 0v8"/><path d="M18 8a2 2 0 1 1 4 0v6a8 8 0 0 1-8 8h-2c-2.8 0-4.5-.9-6-2.3l-3.6-3.6a2 2 0 0 1 2.8-2.8L7 15"/>'),
  join: svg('<path d="M15 3h4a2 2 0 0 1 2 2v14a2 2 0 0 1-2 2h-4M10 17l5-5-5-5M15 12H3"/>'),
};

/** An avatar disc with the user's initial and a colour derived from the name. */
export function avatar(user, cls = '') {
  let hue = 0;
  for (const ch of user) hue = (hue * 31 + ch.codePointAt(0)) % 360;
  const el = h('span', { class: `avatar ${cls}`.trim(), 'aria-hidden': 'true' }, [...user][0] ?? '?');
  el.style.setProperty('--hue', String(hue));
  return el;
}

/** Seconds as mm:ss (h:mm:ss from an hour). */
export function fmtDuration(totalSeconds) {
  const s = Math.max(0, Math.floor(totalSeconds));
  const hh = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, '0');
  const ss = String(s % 60).padStart(2, '0');
  return hh > 0 ? `${hh}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** A unix-ms time as "14:05" today, else "3 Mar 14:05". */
export function fmtTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return d.toDateString() === new Date().toDateString() ? time : `${d.toLocaleDateString([], { day: 'numeric', month: 'short' })} ${time}`;
}

/** Shows a short message at the bottom for a few seconds. */
export function toast(text, { error = false, ms = 3500 } = {}) {
  const box = document.getElementById('toasts');
  const el = h('div', { class: error ? 'toast error' : 'toast', testid: 'toast' }, text);
  box.append(el);
  setTimeout(() => el.remove(), ms);
}

/** Describes an error of the SDK or the browser for people. */
export function errorText(err) {
  if (!err) return 'unknown error';
  if (err.code) return `${err.message} (${err.reason} ${err.code})`;
  return err.message || String(err);
}
