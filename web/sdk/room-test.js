// The script of room-test.html (no inline script: the pages are served with
// a Content-Security-Policy). It runs as a module, after the page is parsed.
import { Switchboard } from './switchboard.js';

// State read by the browser tests (web/browser_test.go).
const state = {
  entered: false, // onEnterRoom: media connected
  remoteUsers: [], // users with a remote stream shown
  errors: [],
  events: [], // [{name, userID, available, reason, t}] of room events
  connectionStates: [],
  timings: {}, // ms since navigation start: connected, camera, enterReplied, entered, firstFrame.<user>
  exited: false,
};
window.sbState = state;

const params = new URLSearchParams(location.search);
const user = params.get('user');
const roomID = params.get('room');
const logEl = document.getElementById('log');
const statusEl = document.getElementById('status');
const now = () => Math.round(performance.now());

function log(text, isError = false) {
  const line = document.createElement('div');
  line.textContent = `${now()} ms  ${text}`;
  if (isError) line.className = 'error';
  logEl.append(line);
  (isError ? console.error : console.log)(`[room-test ${user}] ${text}`);
}

function fail(where, err) {
  const text = `${where}: ${err?.reason ? err.reason + ' ' : ''}${err?.message ?? err}`;
  state.errors.push(text);
  statusEl.textContent = 'error';
  log(text, true);
}

window.addEventListener('error', (ev) => fail('uncaught', ev.error ?? ev.message));
window.addEventListener('unhandledrejection', (ev) => fail('unhandled rejection', ev.reason));

async function devToken(query) {
  const res = await fetch(`/api/dev/token?${new URLSearchParams(query)}`, { cache: 'no-store' });
  const body = await res.json();
  if (!res.ok) throw new Error(`/api/dev/token: HTTP ${res.status} ${body?.error?.message ?? ''}`);
  return body.token;
}

function showRemote(userID, stream) {
  let fig = document.querySelector(`figure[data-user="${CSS.escape(userID)}"]`);
  if (!fig) {
    fig = document.createElement('figure');
    fig.dataset.user = userID;
    const video = document.createElement('video');
    video.autoplay = true;
    video.muted = true; // autoplay without a user gesture
    video.playsInline = true;
    video.dataset.user = userID;
    const cap = document.createElement('figcaption');
    cap.textContent = userID;
    fig.append(video, cap);
    document.getElementById('videos').append(fig);
  }
  const video = fig.querySelector('video');
  video.srcObject = stream;
  const mark = () => {
    if (state.timings[`firstFrame.${userID}`] === undefined) {
      state.timings[`firstFrame.${userID}`] = now();
      log(`first frame from ${userID}`);
    }
  };
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(mark);
  else video.addEventListener('loadeddata', mark, { once: true });
  if (!state.remoteUsers.includes(userID)) state.remoteUsers.push(userID);
}

function hideRemote(userID) {
  document.querySelector(`figure[data-user="${CSS.escape(userID)}"]`)?.remove();
  state.remoteUsers = state.remoteUsers.filter((u) => u !== userID);
}

async function main() {
  if (!user || !roomID) throw new Error('use ?user=NAME&room=ROOM');
  document.getElementById('room-name').textContent = roomID;
  document.getElementById('user-name').textContent = user;

  // The camera starts while the tokens are fetched and the socket opens.
  const camera = Switchboard.getCameraStream({ audio: true, video: true });
  camera.catch(() => {}); // reported below, where it is awaited
  const [roomToken, sessionToken] = await Promise.all([devToken({ user, room: roomID }), devToken({ user })]);
  // ?reenterTimeout=ms: how long a room tries to enter again (onExitRoom reason 4).
  const opts = params.has('reenterTimeout') ? { reenterTimeout: Number(params.get('reenterTimeout')) } : {};
  const sb = await Switchboard.connect({ token: sessionToken, getToken: () => devToken({ user }), ...opts });
  window.sb = sb;
  state.timings.connected = now();
  state.connectionStates.push('connected');
  sb.on('connectionState', (s) => {
    state.connectionStates.push(s.state);
    log(`connection ${s.state}${s.code ? ' (' + s.code + ')' : ''}`);
  });
  statusEl.textContent = 'connected';
  log('connected');

  const localStream = await camera;
  document.getElementById('local').srcObject = localStream;
  state.timings.camera = now();

  const record = (name) => (data) => {
    state.events.push({ name, userID: data.userID ?? '', available: data.available, reason: data.reason, t: now() });
    log(`${name} ${JSON.stringify(data)}`);
  };
  // ?relay=1: relay candidates only (TURN), as behind a firewall that lets no UDP through to the SFU.
  const rtcConfig = params.get('relay') === '1' ? { iceTransportPolicy: 'relay' } : {};
  const room = await sb.enterRoom(roomID, { roomToken, localStream, rtcConfig });
  window.sbRoom = room;
  state.timings.enterReplied = now();
  for (const name of ['onRemoteUserEnterRoom', 'onRemoteUserLeaveRoom', 'onUserVideoAvailable', 'onUserAudioAvailable', 'onExitRoom']) {
    room.on(name, record(name));
  }
  room.on('onEnterRoom', (data) => {
    record('onEnterRoom')(data);
    state.entered = true;
    state.timings.entered = now();
    statusEl.textContent = 'in room';
  });
  room.on('onExitRoom', () => {
    state.exited = true;
    state.entered = false;
    statusEl.textContent = 'left the room';
  });
  room.on('remoteStream', ({ userID, stream }) => showRemote(userID, stream));
  room.on('remoteStreamRemoved', ({ userID }) => hideRemote(userID));
  room.on('error', (err) => fail('room', err));
  // Reconnection and ICE restarts (ROOMS.md, Reconnecting), with their times.
  // Reason 4 (media node lost): entering again ('reconnecting' and 'resumed' with reason 4).
  room.on('reconnecting', (data) => record('reconnecting')({ reason: data.reason }));
  room.on('resumed', (data) => record('resumed')({ available: data.resumed, reason: data.reason }));
  room.on('reenterRetry', (data) => record('reenterRetry')({ reason: data.code }));
  room.on('iceRestart', (data) => record('iceRestart')({ userID: data.target }));
  // Streams and events that came between the reply and these handlers.
  for (const [userID, stream] of room.remoteStreams) showRemote(userID, stream);
  if (room.connected) {
    state.entered = true;
    state.timings.entered = now();
  }
}

main().catch((err) => fail('setup', err));
