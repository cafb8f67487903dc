// The Switchboard demo app: sign-in, connection state, the lobby (contact
// list), tabs; calls, groups, history and the classroom live in their own
// modules. State the browser tests read is in window.demoState; the live
// objects (SDK client, current room) are in window.demo.

import { Switchboard, ConnectionState } from '/sdk/switchboard.js';
import { h, $, avatar, icons, toast, errorText } from './ui.js';
import { Calls } from './call.js';
import { Groups } from './groups.js';
import { History } from './history.js';
import { Classroom } from './classroom.js';
import { Live } from './live.js';

const LOBBY = 'lobby';
const USER_RE = /^[A-Za-z0-9_.@-]{1,64}$/;
const STORAGE_KEY = 'switchboard-demo-user';

const params = new URLSearchParams(location.search);

/** What the tests (and curious people, in the console) can read. */
const state = {
  me: null,
  connection: 'signed-out',
  tab: null,
  lobby: [], // user IDs of the lobby's members, me excluded
  presence: {}, // user ID → {statusType, customStatus}: live, from subscribeUserStatus
  errors: [], // uncaught errors and failed actions
  events: [], // the last server events: {name, t, ...data}
  notices: [],
  call: null, // the call screen's state, kept by call.js
  classroom: null, // kept by classroom.js
  live: null, // kept by live.js
  myStatus: '', // the custom status text this page set (setSelfStatus)
};
window.demoState = state;

const app = {
  sb: null,
  me: null,
  params,
  state,
  /** getUserMedia video constraints: modest by default, 320x240@15 with ?lowres=1. */
  videoConstraints() {
    if (params.get('lowres') === '1') return { width: { ideal: 320 }, height: { ideal: 240 }, frameRate: { ideal: 15, max: 15 } };
    return { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24, max: 30 } };
  },
  lobbyMembers: () => state.lobby,
  notice,
  mediaError,
  fail,
  toast,
};
window.demo = app;

// ---- errors ----

function fail(where, err) {
  const text = `${where}: ${errorText(err)}`;
  state.errors.push(text);
  console.error(`[demo] ${text}`, err);
  return text;
}
window.addEventListener('error', (ev) => fail('uncaught', ev.error ?? ev.message));
window.addEventListener('unhandledrejection', (ev) => fail('unhandled rejection', ev.reason));

/** Shows (or with null hides) the informational banner; ms > 0 hides it later. */
let noticeTimer;
function notice(text, { ms = 0 } = {}) {
  const el = $('#notice');
  clearTimeout(noticeTimer);
  el.hidden = !text;
  el.textContent = text ?? '';
  if (text) state.notices.push(text);
  if (text && ms > 0) noticeTimer = setTimeout(() => (el.hidden = true), ms);
}

/** Shows why the camera or microphone could not be used (null hides it). */
function mediaError(err) {
  const el = $('#media-error');
  if (!err) {
    el.hidden = true;
    return;
  }
  let text;
  if (err.reason === 'media_NotAllowedError' || err.reason === 'media_SecurityError') {
    text = 'Camera and microphone are blocked (permission denied). Allow them for this site in the browser (the icon left of the address bar), then call again. You can still see and hear the others.';
  } else {
    text = `The camera or microphone cannot be used: ${err.message}. You can still see and hear the others.`;
  }
  el.replaceChildren(h('span', {}, text), h('button', { class: 'btn ghost small', type: 'button', testid: 'media-error-close', onclick: () => (el.hidden = true) }, 'Dismiss'));
  el.hidden = false;
  state.errors.push(`media: ${err.reason ?? ''} ${err.message}`);
}

// ---- sign-in ----

/** Fetches a dev session token; a server without dev tokens answers 404. */
async function devToken(user) {
  const res = await fetch(`/api/dev/token?user=${encodeURIComponent(user)}`, { cache: 'no-store' });
  if (res.status === 404) {
    const err = new Error('this server issues no dev tokens (auth.dev is false): paste a session token');
    err.noDevTokens = true;
    throw err;
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body?.error?.message ?? `HTTP ${res.status}`);
  return body.token;
}

let tokenRefreshed = false;

async function signIn(user, pastedToken) {
  const errEl = $('#signin-error');
  errEl.textContent = '';
  if (!USER_RE.test(user)) {
    showSignIn();
    errEl.textContent = 'A user name is 1-64 letters, digits or . _ @ -';
    return;
  }
  const submit = $('[data-testid="signin-submit"]');
  submit.disabled = true;
  submit.textContent = 'Signing in…';
  try {
    const opts = pastedToken ? { token: pastedToken } : { getToken: () => devToken(user) };
    const sb = await Switchboard.connect(opts);
    if (pastedToken && sb.userID && sb.userID !== user) {
      toast(`The token is for ${sb.userID}: signed in as ${sb.userID}`);
      user = sb.userID;
    }
    app.sb = sb;
    app.me = state.me = user;
    sessionStorage.setItem(STORAGE_KEY, user);
    wire(sb);
    showMain();
    await enterLobby();
    await Promise.all([app.groups.load(), app.classroom.signedIn()]);
  } catch (err) {
    if (app.sb) signOut();
    else showSignIn();
    if (err.noDevTokens) $('#signin-token-row').hidden = false;
    errEl.textContent = err.noDevTokens ? err.message : `Could not sign in: ${errorText(err)}`;
  } finally {
    submit.disabled = false;
    submit.textContent = 'Sign in';
  }
}

function signOut() {
  const sb = app.sb;
  app.sb = null;
  app.calls.reset();
  app.classroom.reset();
  app.live.reset();
  sb?.close();
  app.me = state.me = null;
  state.lobby = [];
  state.presence = {};
  state.connection = 'signed-out';
  sessionStorage.removeItem(STORAGE_KEY);
  notice(null);
  $('#connection-banner').hidden = true;
  showSignIn();
}

function showSignIn() {
  $('#me').hidden = true;
  $('#screen-main').hidden = true;
  $('#screen-signin').hidden = false;
  $('#signin-name').focus();
}

// Every handler of one client; a new sign-in makes a new client.
function wire(sb) {
  sb.on('*', (data, name) => {
    state.events.push({ name, t: Date.now(), ...data });
    if (state.events.length > 300) state.events.splice(0, 100);
  });
  sb.on('connectionState', (s) => onConnectionState(sb, s));
  sb.on('onMemberEnter', (d) => d.groupID === LOBBY && refreshLobby());
  sb.on('onMemberLeave', (d) => d.groupID === LOBBY && refreshLobby());
  sb.on('onUserStatusChanged', (d) => {
    if (sb !== app.sb) return;
    for (const st of d.userStatusList ?? []) state.presence[st.userID] = st;
    renderLobby();
  });
  app.calls.attach(sb);
  app.groups.attach(sb);
  app.classroom.attach(sb);
  app.live.attach(sb);
  setConn('connected');
}

function setConn(s) {
  state.connection = s;
  const el = $('#conn-state');
  el.dataset.state = s;
  el.textContent = { connected: 'online', reconnecting: 'reconnecting', disconnected: 'offline', connecting: 'connecting' }[s] ?? s;
}

function onConnectionState(sb, s) {
  if (sb !== app.sb) return;
  setConn(s.state);
  const banner = $('#connection-banner');
  switch (s.state) {
    case ConnectionState.RECONNECTING:
      if (s.code === 4001) {
        tokenRefreshed = true;
        banner.textContent = 'Your session token expired: getting a fresh one and reconnecting…';
      } else {
        banner.textContent = `Connection lost${s.code ? ` (code ${s.code})` : ''}. Reconnecting in ${Math.ceil((s.delay ?? 0) / 1000)} s (attempt ${s.attempt})…`;
      }
      banner.hidden = false;
      break;
    case ConnectionState.CONNECTED:
      banner.hidden = true;
      if (tokenRefreshed) {
        notice('Your session had expired: you were signed in again with a fresh token.', { ms: 8000 });
        tokenRefreshed = false;
      } else {
        toast('Back online');
      }
      refreshLobby();
      app.groups.load();
      app.classroom.reconnected();
      break;
    case ConnectionState.DISCONNECTED: {
      const why = s.code === 1008 ? 'too many open connections for this user' : s.reason || `code ${s.code ?? '?'}`;
      banner.replaceChildren(
        h('span', {}, `Disconnected: ${why}.`),
        h('button', { class: 'btn ghost small', type: 'button', testid: 'reconnect', onclick: () => { const u = app.me; signOut(); signIn(u); } }, 'Sign in again'),
      );
      banner.hidden = false;
      break;
    }
  }
}

// ---- lobby: the contact list ----

/** Joins the well-known group "lobby" (creating it when it does not exist). */
async function enterLobby() {
  const sb = app.sb;
  try {
    await sb.createGroup({ groupID: LOBBY, name: 'Lobby', joinOption: 'any' });
  } catch (err) {
    if (err.code !== 10021) throw err; // group_exists: join it instead
    try {
      await sb.joinGroup(LOBBY);
    } catch (e) {
      if (e.code !== 10013) throw e; // already_member
    }
  }
  await refreshLobby();
}

let lobbySeq = 0;
async function refreshLobby() {
  const sb = app.sb;
  if (!sb) return;
  const seq = ++lobbySeq;
  let members;
  try {
    members = await sb.getGroupMemberList(LOBBY);
  } catch (err) {
    if (err.reason !== 'connection_lost' && err.reason !== 'closed') fail('lobby', err);
    return;
  }
  if (seq !== lobbySeq || sb !== app.sb) return;
  state.lobby = members.map((m) => m.userID).filter((u) => u !== app.me);
  renderLobby();
  // Live presence: the reply gives the statuses now, onUserStatusChanged
  // every change after (lobby members share a group: they may see each other).
  if (state.lobby.length === 0) return;
  let statuses;
  try {
    statuses = await sb.subscribeUserStatus(state.lobby);
  } catch (err) {
    if (err.reason !== 'connection_lost' && err.reason !== 'closed') fail('presence', err);
    return;
  }
  if (seq !== lobbySeq || sb !== app.sb) return;
  for (const st of statuses) state.presence[st.userID] = st;
  renderLobby();
}

/** The presence line of a contact: a coloured dot and online / offline, with the custom text. */
function presenceLine(user) {
  const st = state.presence[user];
  const type = st?.statusType ?? 'unknown';
  const label = { online: 'online', offline: 'offline' }[type] ?? '…';
  return h('div', { class: 'sub presence', testid: 'contact-presence', data: { status: type } },
    h('span', { class: 'presence-dot', testid: 'contact-presence-dot', 'aria-hidden': 'true' }),
    st?.customStatus ? `${label} · ${st.customStatus}` : label);
}

function renderLobby() {
  const list = $('#contact-list');
  list.replaceChildren(
    ...state.lobby.map((user) =>
      h('li', { testid: 'contact', data: { user } },
        avatar(user),
        h('div', { class: 'grow' }, h('div', { class: 'title' }, user), presenceLine(user)),
        h('div', { class: 'actions' },
          h('button', { class: 'btn icon-btn', type: 'button', title: `Video call ${user}`, 'aria-label': `Video call ${user}`,
            testid: 'contact-video-call', data: { user }, html: icons.video, onclick: () => app.calls.startCall(user, 'video') }),
          h('button', { class: 'btn icon-btn audio', type: 'button', title: `Audio call ${user}`, 'aria-label': `Audio call ${user}`,
            testid: 'contact-audio-call', data: { user }, html: icons.phone, onclick: () => app.calls.startCall(user, 'audio') }),
        ),
      ),
    ),
  );
  $('#contact-empty').hidden = state.lobby.length > 0;
}

// ---- screens and tabs ----

const TABS = ['lobby', 'groups', 'history', 'classroom', 'live'];

/** The main screen for user (also while a remembered user's sign-in still connects). */
function showMain(user = app.me) {
  $('#screen-signin').hidden = true;
  $('#screen-main').hidden = false;
  $('#me').hidden = false;
  $('#me-name').textContent = user;
  $('#me-avatar').replaceWith(Object.assign(avatar(user, 'small'), { id: 'me-avatar' }));
  route();
}

function route() {
  const tab = TABS.includes(location.hash.slice(1)) ? location.hash.slice(1) : 'lobby';
  state.tab = tab;
  for (const t of document.querySelectorAll('.tab')) t.classList.toggle('active', t.dataset.tab === tab);
  for (const p of document.querySelectorAll('[data-panel]')) p.hidden = p.dataset.panel !== tab;
  if (!app.sb) return;
  if (tab === 'history') app.history.load();
  if (tab === 'groups') {
    app.groups.render();
    app.groups.refreshCalls();
  }
  if (tab === 'classroom') app.classroom.render();
  if (tab === 'live') app.live.render();
}

// ---- my status text (presence custom status) ----

async function setMyStatus(ev) {
  ev.preventDefault();
  const text = $('#my-status').value.trim();
  try {
    await app.sb.setSelfStatus(text);
    state.myStatus = text;
    $('#my-status-saved').textContent = text ? `Others see: ${text}` : 'No status text';
    $('#my-status-saved').dataset.status = text;
  } catch (err) {
    toast(`Could not set your status: ${errorText(err)}`, { error: true });
  }
}

// ---- start ----

app.calls = new Calls(app);
app.groups = new Groups(app);
app.history = new History(app);
app.classroom = new Classroom(app);
app.live = new Live(app);

window.addEventListener('hashchange', route);
$('#signin-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  signIn($('#signin-name').value.trim(), $('#signin-token').value.trim());
});
$('#signout').addEventListener('click', signOut);
$('#lobby-refresh').addEventListener('click', refreshLobby);
$('#my-status-form').addEventListener('submit', setMyStatus);

const remembered = params.get('user') ?? sessionStorage.getItem(STORAGE_KEY);
if (remembered && USER_RE.test(remembered)) {
  // A remembered user (a reload, ?user=): the main screen shows at once,
  // connecting; the sign-in form shows only if signing in fails.
  $('#signin-name').value = remembered;
  setConn('connecting');
  showMain(remembered);
  signIn(remembered);
} else {
  showSignIn();
}
