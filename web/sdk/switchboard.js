// Switchboard browser SDK: one ES module, no dependencies, no build step.
// Served by the server at /sdk/switchboard.js. Wire protocol:
// signaling/PROTOCOL.md (signaling) and signaling/ROOMS.md (rooms, media).
//
//   import { Switchboard } from '/sdk/switchboard.js';
//   const sb = await Switchboard.connect({ token, getToken });
//   sb.on('onReceiveNewInvitation', (inv) => sb.accept(inv.inviteID));
//   const room = await sb.enterRoom('r1', { roomToken, localStream });
//   room.on('remoteStream', ({ userID, stream }) => { video.srcObject = stream; });
//
// See web/sdk/README.md for the reference.

/** Connection states reported by the 'connectionState' event. */
export const ConnectionState = Object.freeze({
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  RECONNECTING: 'reconnecting',
  DISCONNECTED: 'disconnected',
});

/** WebSocket close codes the server uses (PROTOCOL.md, "Close codes"). */
export const CloseCode = Object.freeze({
  GOING_AWAY: 1001,
  INVALID_UTF8: 1007,
  TOO_MANY_CONNECTIONS: 1008,
  MESSAGE_TOO_BIG: 1009,
  TOKEN_EXPIRED: 4001,
  SLOW_READER: 4002,
});

/** onExitRoom reasons; CONNECTION_LOST is also emitted by the SDK itself
 * when the WebSocket is gone for good (no reconnection), or when a room
 * could not be entered again after a reconnection. MEDIA_NODE_LOST (the
 * room's media node was lost, or the room moved: cluster mode) is handled
 * by the SDK, which enters the room again; the app sees it on onExitRoom
 * only when that failed for reenterTimeout. */
export const ExitReason = Object.freeze({ LEFT: 0, KICKED: 1, DISMISSED: 2, CONNECTION_LOST: 3, MEDIA_NODE_LOST: 4 });

// Server errors after which entering a room again is retried: the room's
// media node did not answer (11015), Redis is unreachable (9500).
const RETRY_ENTER_CODES = new Set([11015, 9500]);

// Client-side error reasons (code 0: not a server error code).
const CLIENT_ERRORS = Object.freeze({
  connect_failed: 'could not open the WebSocket (network error, invalid or expired token, or too many connections)',
  connection_lost: 'the connection was lost before the reply arrived',
  closed: 'the client was closed',
  timeout: 'no reply in time',
  negotiation_failed: 'WebRTC negotiation failed',
});

const DEFAULTS = Object.freeze({
  requestTimeout: 15000, // ms a request waits for its reply (also while reconnecting)
  connectTimeout: 10000, // ms one WebSocket open may take
  reconnect: true,
  backoffInitial: 500, // ms before the first reconnect attempt
  backoffMax: 30000, // cap of the exponential backoff
  backoffFactor: 2,
  maxReconnectAttempts: Infinity,
  // ms a room's connection may stay disconnected before the SDK restarts
  // its ICE (at once when it failed), and between two restarts until it is
  // connected again.
  iceRestartAfter: 2000,
  // Cap of the reconnect backoff while rooms wait to resume, so that they
  // come back within the server's media.rejoin_grace; also the cap of the
  // backoff between a room's attempts to enter again.
  roomBackoffMax: 2000,
  // ms a room keeps trying to enter again (after onExitRoom reason 4, or a
  // resume the server could not serve yet: 11015, 9500, timeout) before it
  // gives up with onExitRoom; about the server's calls.setup_timeout (30 s).
  reenterTimeout: 30000,
  // ms before a room's second attempt to enter again (the first is at
  // once); doubles up to roomBackoffMax, with jitter.
  reenterBackoffInitial: 250,
});

/**
 * The error of a failed request: `code` and `reason` are the server's error
 * (PROTOCOL.md "Error codes", ROOMS.md), or code 0 with a client reason
 * (connect_failed, connection_lost, closed, timeout, negotiation_failed).
 */
export class SwitchboardError extends Error {
  constructor(code, reason, message, extra = {}) {
    super(message || CLIENT_ERRORS[reason] || reason);
    this.name = 'SwitchboardError';
    this.code = code;
    this.reason = reason;
    Object.assign(this, extra);
  }
}

function clientError(reason, message, extra) {
  return new SwitchboardError(0, reason, message || CLIENT_ERRORS[reason], extra);
}

/** A minimal event emitter; a throwing handler never stops the others. */
class Emitter {
  #handlers = new Map();

  /** Calls handler(data) for each event `name`; returns a function that removes it. */
  on(name, handler) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    let set = this.#handlers.get(name);
    if (!set) this.#handlers.set(name, (set = new Set()));
    set.add(handler);
    return () => this.off(name, handler);
  }

  /** Calls handler once for the next event `name`. */
  once(name, handler) {
    const off = this.on(name, (data) => {
      off();
      handler(data);
    });
    return off;
  }

  /** Removes handler, or every handler of `name` when handler is omitted. */
  off(name, handler) {
    if (handler === undefined) this.#handlers.delete(name);
    else this.#handlers.get(name)?.delete(handler);
  }

  /** Resolves with the data of the next event `name` that passes filter. */
  waitFor(name, filter, timeoutMs = 0) {
    filter ??= () => true;
    return new Promise((resolve, reject) => {
      let timer;
      const off = this.on(name, (data) => {
        if (!filter(data)) return;
        off();
        clearTimeout(timer);
        resolve(data);
      });
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          off();
          reject(clientError('timeout', `no ${name} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
    });
  }

  emit(name, data) {
    for (const h of [...(this.#handlers.get(name) ?? []), ...(this.#handlers.get('*') ?? [])]) {
      try {
        h(data, name);
      } catch (err) {
        console.error(`switchboard: a handler of ${name} threw`, err);
      }
    }
  }
}

function defaultURL() {
  const loc = globalThis.location;
  if (!loc) throw new TypeError('Switchboard.connect needs a url outside a browser page');
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

// Only the named keys of args, without undefined values: the server refuses
// unknown fields, so a stray option never reaches it.
function pick(args, keys) {
  const out = {};
  for (const k of keys) if (args?.[k] !== undefined) out[k] = args[k];
  return out;
}

const ROOM_EVENTS = new Set([
  'onEnterRoom',
  'onExitRoom',
  'onRemoteUserEnterRoom',
  'onRemoteUserLeaveRoom',
  'onUserVideoAvailable',
  'onUserAudioAvailable',
  'onRtcSignal',
  'onSwitchRole',
  'onSeatListChange',
  'onAnchorEnterSeat',
  'onAnchorLeaveSeat',
  'onRoomHostChanged',
  'onAudienceListChange',
]);

/**
 * A connection to a Switchboard server. Create it with Switchboard.connect.
 *
 * Events (sb.on(name, handler)): the server's events by name
 * (onReceiveNewInvitation, onInviteeAccepted, onInviteeRejected,
 * onInvitationCancelled, onInvitationTimeout, onInvitationModified,
 * onMemberEnter, onMemberLeave, onMemberKicked, onGroupDismissed,
 * onUserStatusChanged ({userStatusList: [{userID, statusType, customStatus}]}), room
 * events, the call events onCallBegin, onCallEnd, onCallMissed,
 * onCallMediaTypeChanged), 'connectionState' ({state, code, reason,
 * attempt, delay}), and '*' for every event (handler(data, name)).
 */
export class Switchboard extends Emitter {
  #opts;
  #token;
  #ws = null;
  #nextID = 1;
  #pending = new Map(); // id → {resolve, reject, timer, frame}
  #queue = []; // frames waiting for a connection
  #attempt = 0;
  #reconnectTimer = null;
  #closed = false;
  #rooms = new Map(); // roomID → Room
  #statusSubs = new Set(); // users subscribed to (subscribeUserStatus), renewed after a reconnect

  /** @private use Switchboard.connect */
  constructor(opts) {
    super();
    this.#opts = { ...DEFAULTS, ...opts };
    this.#token = opts.token;
    this.url = opts.url || defaultURL();
    this.state = ConnectionState.CONNECTING;
    /** The user ID of the token (its `sub`), when it can be read. */
    this.userID = tokenSubject(this.#token);
  }

  /**
   * Opens a connection. Options: url (default: this page's host, /ws; a
 * relative or http(s) URL is turned into ws(s)),
   * token (a session JWT), getToken (async () => token, called for a fresh
   * token when the server closes with 4001 or a reconnect attempt fails),
   * reconnect (default true), backoffInitial, backoffMax, backoffFactor,
   * maxReconnectAttempts, requestTimeout, connectTimeout (ms),
   * iceRestartAfter, roomBackoffMax, reenterTimeout, reenterBackoffInitial
   * (ms; rooms: see Room).
   * Rejects with a SwitchboardError (reason connect_failed) when the first
   * connection cannot be opened.
   */
  static async connect(opts = {}) {
    let token = opts.token;
    if (!token && opts.getToken) token = await opts.getToken();
    if (!token) throw new TypeError('Switchboard.connect needs a token or getToken');
    const sb = new Switchboard({ ...opts, token });
    await sb.#open();
    return sb;
  }

  /**
   * getUserMedia with clear errors. constraints default to
   * {audio: true, video: true}.
   */
  static async getCameraStream(constraints = { audio: true, video: true }) {
    const md = globalThis.navigator?.mediaDevices;
    if (!md?.getUserMedia) {
      throw new SwitchboardError(0, 'media_unsupported', 'this page cannot use the camera: getUserMedia needs a secure context (https or localhost)');
    }
    try {
      return await md.getUserMedia(constraints);
    } catch (err) {
      const messages = {
        NotAllowedError: 'camera or microphone permission denied',
        SecurityError: 'camera or microphone permission denied',
        NotFoundError: 'no camera or microphone found',
        NotReadableError: 'the camera or microphone is in use by another program',
        OverconstrainedError: `no camera or microphone satisfies the constraints${err.constraint ? ` (${err.constraint})` : ''}`,
        AbortError: 'the camera or microphone could not be started',
      };
      throw new SwitchboardError(0, 'media_' + (err.name || 'error'), messages[err.name] || `getUserMedia failed: ${err.message}`, { cause: err });
    }
  }

  // ---- requests ----

  /**
   * Sends op with args and resolves with the reply's result; an error reply
   * rejects with a SwitchboardError carrying code, reason, message. While the
   * connection is being re-established the request waits (up to
   * requestTimeout). A request in flight when the connection drops rejects
   * with reason connection_lost: the server may or may not have performed it.
   */
  request(op, args, { timeout = this.#opts.requestTimeout } = {}) {
    if (this.#closed) return Promise.reject(clientError('closed'));
    const id = `js-${this.#nextID++}`;
    const frame = JSON.stringify(args === undefined ? { id, op } : { id, op, args });
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, frame, op, sent: false };
      entry.timer = setTimeout(() => {
        this.#pending.delete(id);
        this.#queue = this.#queue.filter((q) => q !== id);
        reject(clientError('timeout', `no reply to ${op} within ${timeout} ms`));
      }, timeout);
      this.#pending.set(id, entry);
      if (this.state === ConnectionState.CONNECTED && this.#ws?.readyState === WebSocket.OPEN) {
        this.#send(id, entry);
      } else {
        this.#queue.push(id);
      }
    });
  }

  // Invitation ops (PROTOCOL.md "Invitation ops").

  /** invite({invitee, data, onlineUserOnly, timeout}) → inviteID. timeout in s. */
  async invite(args) {
    const r = await this.request('invite', { data: '', ...pick(args, ['invitee', 'data', 'onlineUserOnly', 'timeout']) });
    return r.inviteID;
  }

  /** inviteInGroup({groupID, inviteeList, data, onlineUserOnly, timeout}) → inviteID. */
  async inviteInGroup(args) {
    const r = await this.request('inviteInGroup', {
      data: '',
      ...pick(args, ['groupID', 'inviteeList', 'data', 'onlineUserOnly', 'timeout']),
    });
    return r.inviteID;
  }

  /** cancel(inviteID, data) */
  async cancel(inviteID, data = '') {
    await this.request('cancel', { inviteID, data });
  }

  /** accept(inviteID, data) */
  async accept(inviteID, data = '') {
    await this.request('accept', { inviteID, data });
  }

  /** reject(inviteID, data) */
  async reject(inviteID, data = '') {
    await this.request('reject', { inviteID, data });
  }

  /** modifyInvitation(inviteID, data) */
  async modifyInvitation(inviteID, data = '') {
    await this.request('modifyInvitation', { inviteID, data });
  }

  // Group ops (PROTOCOL.md "Groups").

  /** createGroup({groupID?, name, memberList, joinOption}) → groupID. */
  async createGroup(args) {
    const r = await this.request('createGroup', pick(args, ['groupID', 'name', 'memberList', 'joinOption']));
    return r.groupID;
  }

  /** joinGroup(groupID) */
  async joinGroup(groupID) {
    await this.request('joinGroup', { groupID });
  }

  /** quitGroup(groupID) */
  async quitGroup(groupID) {
    await this.request('quitGroup', { groupID });
  }

  /** inviteUserToGroup(groupID, userList) */
  async inviteUserToGroup(groupID, userList) {
    await this.request('inviteUserToGroup', { groupID, userList });
  }

  /** kickGroupMember(groupID, memberList, reason) */
  async kickGroupMember(groupID, memberList, reason = '') {
    await this.request('kickGroupMember', { groupID, memberList, reason });
  }

  /** dismissGroup(groupID) */
  async dismissGroup(groupID) {
    await this.request('dismissGroup', { groupID });
  }

  /** getGroupMemberList(groupID) → [{userID, role, joinTime}] */
  async getGroupMemberList(groupID) {
    const r = await this.request('getGroupMemberList', { groupID });
    return r.memberList;
  }

  /** getJoinedGroupList() → [{groupID, name, owner, joinOption, memberCount, role}] */
  async getJoinedGroupList() {
    const r = await this.request('getJoinedGroupList');
    return r.groupList;
  }

  // Presence ops (PROTOCOL.md "Presence"), Tencent IM's names. A status is
  // {userID, statusType: 'online' | 'offline' | 'unknown', customStatus}.
  // Subscriptions end on the server when the connection closes; this SDK
  // subscribes again after a reconnect and emits onUserStatusChanged with
  // the statuses then, so the app misses no change.

  /** getUserStatus(userIDList) → [{userID, statusType, customStatus}] */
  async getUserStatus(userIDList) {
    const r = await this.request('getUserStatus', { userIDList });
    return r.userStatusList;
  }

  /** subscribeUserStatus(userIDList) → the listed users' statuses now; changes come as onUserStatusChanged */
  async subscribeUserStatus(userIDList) {
    const r = await this.request('subscribeUserStatus', { userIDList });
    for (const u of userIDList) this.#statusSubs.add(u);
    return r.userStatusList;
  }

  /** unsubscribeUserStatus(userIDList) (empty or absent: every subscription) */
  async unsubscribeUserStatus(userIDList = []) {
    await this.request('unsubscribeUserStatus', { userIDList });
    if (userIDList.length === 0) this.#statusSubs.clear();
    for (const u of userIDList) this.#statusSubs.delete(u);
  }

  /** setSelfStatus(customStatus): the custom status text others see ('' clears it) */
  async setSelfStatus(customStatus) {
    await this.request('setSelfStatus', { customStatus });
  }

  #resubscribeStatus() {
    const userIDList = [...this.#statusSubs];
    if (userIDList.length === 0) return;
    this.request('subscribeUserStatus', { userIDList }).then(
      (r) => this.emit('onUserStatusChanged', { userStatusList: r.userStatusList }),
      () => {}, // the next reconnect tries again; getUserStatus still works
    );
  }

  // Call ops (CALLS.md "Convenience ops"). A call is an invitation whose
  // data is call data: the callee rings with onReceiveNewInvitation (parse
  // its data with Switchboard.parseCallData). The caller enters the call's
  // room right after call/groupCall resolves; a callee accepts first (the
  // accept admits it to the room), then enters. Room events come through
  // the Room; onCallBegin, onCallEnd, onCallMissed and
  // onCallMediaTypeChanged come through this object.

  /**
   * call({invitee, mediaType ('video' default or 'audio'), timeout (s),
   * roomID?, userData?}) → {callID, roomID, inviteID, merged?}. merged is
   * true when the invitee's call to this user was ringing (glare): this
   * user accepted it instead, and callID/roomID are that call's.
   */
  async call(args) {
    return this.request('call', pick(args, ['invitee', 'mediaType', 'timeout', 'roomID', 'userData']));
  }

  /** groupCall({groupID, inviteeList, mediaType, timeout, roomID?, userData?}) → {callID, roomID, inviteID}. */
  async groupCall(args) {
    return this.request('groupCall', pick(args, ['groupID', 'inviteeList', 'mediaType', 'timeout', 'roomID', 'userData']));
  }

  /**
   * hangup(callID): before the call begins the caller cancels it and a
   * ringing invitee rejects it; once it runs this user leaves its room.
   */
  async hangup(callID) {
    await this.request('hangup', { callID });
  }

  /** inviteUser(callID, userList, {timeout}) → {inviteID, userList (the users actually rung)}: group calls only. */
  async inviteUser(callID, userList, { timeout } = {}) {
    return this.request('inviteUser', pick({ callID, userList, timeout }, ['callID', 'userList', 'timeout']));
  }

  /** joinCall(callID) → {callID, roomID, mediaType}: a group member joins a running group call, then enters its room. */
  async joinCall(callID) {
    return this.request('joinCall', { callID });
  }

  /**
   * getGroupCalls(groupID) → [{callID, roomID, caller, mediaType, createdAt,
   * startTime, participants}]: the group's running calls (members only), to
   * offer a joinCall to a member who was not rung.
   */
  async getGroupCalls(groupID) {
    return (await this.request('getGroupCalls', { groupID })).calls ?? [];
  }

  /** switchCallMediaType(callID, 'audio'|'video'): the others get onCallMediaTypeChanged. */
  async switchCallMediaType(callID, mediaType) {
    await this.request('switchCallMediaType', { callID, mediaType });
  }

  /**
   * getCallHistory({limit (1-100, default 20), cursor, filter ('all',
   * 'missed', 'incoming', 'outgoing')}) → {calls, nextCursor}; newest
   * first, nextCursor "" after the last page.
   */
  async getCallHistory(args = {}) {
    return this.request('getCallHistory', pick(args, ['limit', 'cursor', 'filter']));
  }

  /**
   * Reads an invitation's data as call data (CALLS.md "Call data"):
   * {roomID, mediaType ('audio'|'video'), cmd ('videoCall', 'audioCall',
   * 'hangup', …), callEnd (seconds, on the call-end invitation; else null),
   * lineBusy (a busy line's reject data), callID (on the call-end
   * invitation; else ''), fromServer (true only on data the server
   * composed, "sender":"server": a call end, cmd 'hangup' or callEnd, is the
   * server's only then; an app can send anyone call-end data, which the
   * server marks "sender":"client" — CALLS.md "Who composed a call end"),
   * or null when the data is not a call's.
   */
  static parseCallData(str) {
    // "av\u005fcall" is av_call too: data with an escape is parsed in full.
    if (typeof str !== 'string' || (!str.includes('av_call') && !str.includes('\\u'))) return null;
    let d;
    try {
      d = JSON.parse(str);
    } catch {
      return null;
    }
    if (!d || typeof d !== 'object' || d.businessID !== 'av_call') return null;
    const inner = d.data && typeof d.data === 'object' ? d.data : {};
    const roomOf = (v) => (typeof v === 'string' || typeof v === 'number' ? String(v) : '');
    const cmd = typeof inner.cmd === 'string' ? inner.cmd : '';
    return {
      roomID: roomOf(d.room_id) || roomOf(inner.room_id),
      mediaType: d.call_type === 1 || cmd === 'audioCall' ? 'audio' : 'video',
      cmd,
      callEnd: typeof d.call_end === 'number' ? d.call_end : null,
      lineBusy: typeof d.line_busy === 'string' && d.line_busy !== '',
      callID: typeof inner.call_id === 'string' ? inner.call_id : '',
      fromServer: d.sender === 'server',
    };
  }

  // ---- rooms ----

  /** The rooms this connection is in, by room ID. */
  get rooms() {
    return new Map(this.#rooms);
  }

  /**
   * Enters a media room (ROOMS.md) and resolves with a Room once the server
   * accepted (media connects afterwards: room 'onEnterRoom'). Options: role
   * ('anchor' default, or 'audience'), roomToken, localStream (a
   * MediaStream to publish while an anchor: an audience member's is kept
   * and published once it is switched to anchor), rtcConfig (extra
   * RTCConfiguration fields), and for the entry that creates the room,
   * seats and seatMode ('free' or 'apply'; ROOMS.md, Live rooms).
   */
  async enterRoom(roomID, { role = 'anchor', roomToken, localStream = null, rtcConfig = {}, seats, seatMode } = {}) {
    if (this.#rooms.has(roomID)) throw new SwitchboardError(0, 'already_in_room', `already in room ${roomID}`);
    // The room's state exists before enterRoom is sent: the server's first
    // subscriber offer may arrive before the reply.
    const { iceRestartAfter, reenterTimeout, reenterBackoffInitial, roomBackoffMax } = this.#opts;
    const room = new Room(this, roomID, role, localStream, rtcConfig, { roomToken, iceRestartAfter, reenterTimeout, reenterBackoffInitial, reenterBackoffMax: roomBackoffMax });
    this.#rooms.set(roomID, room);
    let result;
    try {
      result = await this.request('enterRoom', pick({ roomID, role, roomToken, seats, seatMode }, ['roomID', 'role', 'roomToken', 'seats', 'seatMode']));
    } catch (err) {
      room._fail(err);
      this.#rooms.delete(roomID);
      throw err;
    }
    room._entered(result);
    return room;
  }

  /** @private */
  _forgetRoom(room) {
    if (this.#rooms.get(room.roomID) === room) this.#rooms.delete(room.roomID);
  }

  // ---- connection ----

  /** Closes the connection for good; pending requests reject (reason closed). */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#reconnectTimer);
    for (const room of this.#rooms.values()) room._lost();
    this.#failPending(clientError('closed'), true);
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      detach(ws);
      ws.close(1000, 'client closed');
    }
    this.#setState(ConnectionState.DISCONNECTED, { code: 1000, reason: 'client closed' });
  }

  #setState(state, detail = {}) {
    this.state = state;
    this.emit('connectionState', { state, ...detail });
  }

  // Opens one WebSocket; resolves when it is open, rejects when it fails
  // before that. Failures after open go to #onClose.
  #open() {
    return new Promise((resolve, reject) => {
      const url = new URL(this.url, globalThis.location?.href);
      if (url.protocol === 'http:') url.protocol = 'ws:';
      if (url.protocol === 'https:') url.protocol = 'wss:';
      url.searchParams.set('token', this.#token);
      let ws;
      try {
        ws = new WebSocket(url.toString());
      } catch (err) {
        reject(clientError('connect_failed', `${CLIENT_ERRORS.connect_failed}: ${err.message}`));
        return;
      }
      this.#ws = ws;
      let opened = false;
      const timer = setTimeout(() => {
        if (!opened) ws.close();
      }, this.#opts.connectTimeout);
      ws.onopen = () => {
        opened = true;
        clearTimeout(timer);
        this.#attempt = 0;
        this.#setState(ConnectionState.CONNECTED);
        // Rooms enter again first (resuming their places), then the
        // requests queued meanwhile go out.
        for (const room of this.#rooms.values()) room._resume();
        this.#flushQueue();
        this.#resubscribeStatus();
        resolve();
      };
      ws.onmessage = (ev) => this.#onFrame(ev.data);
      ws.onerror = () => {}; // onclose follows and says more
      ws.onclose = (ev) => {
        clearTimeout(timer);
        if (this.#ws === ws) this.#ws = null;
        if (!opened) {
          reject(clientError('connect_failed', undefined, { closeCode: ev.code }));
          return;
        }
        this.#onClose(ev.code, ev.reason);
      };
    });
  }

  #onClose(code, reason) {
    if (this.#closed) return;
    const again = this.#opts.reconnect && code !== CloseCode.TOO_MANY_CONNECTIONS;
    // With a reconnection coming, rooms keep their media and enter again
    // once the connection is back (ROOMS.md, Reconnecting); without, the
    // server forgets the memberships with the connection.
    for (const room of this.#rooms.values()) {
      if (again) room._suspend();
      else room._lost();
    }
    // Requests in flight may or may not have been performed: fail them.
    // Requests not yet sent stay queued for the next connection.
    this.#failPending(clientError('connection_lost', `${CLIENT_ERRORS.connection_lost} (close ${code})`, { closeCode: code }), false);
    if (!this.#opts.reconnect || code === CloseCode.TOO_MANY_CONNECTIONS) {
      this.#closed = true;
      this.#failPending(clientError('closed', `connection closed with ${code}${reason ? ': ' + reason : ''}`), true);
      this.#setState(ConnectionState.DISCONNECTED, { code, reason });
      return;
    }
    this.#scheduleReconnect(code, reason, code === CloseCode.TOKEN_EXPIRED);
  }

  #scheduleReconnect(code, reason, needToken) {
    this.#attempt++;
    if (this.#attempt > this.#opts.maxReconnectAttempts) {
      this.#closed = true;
      for (const room of this.#rooms.values()) room._lost();
      this.#failPending(clientError('closed', `gave up after ${this.#attempt - 1} reconnect attempts`), true);
      this.#setState(ConnectionState.DISCONNECTED, { code, reason, attempt: this.#attempt - 1 });
      return;
    }
    const { backoffInitial, backoffFactor, roomBackoffMax } = this.#opts;
    const backoffMax = this.#rooms.size > 0 ? Math.min(this.#opts.backoffMax, roomBackoffMax) : this.#opts.backoffMax;
    const base = Math.min(backoffMax, backoffInitial * backoffFactor ** (this.#attempt - 1));
    const delay = Math.round(base / 2 + Math.random() * (base / 2)); // "equal jitter"
    this.#setState(ConnectionState.RECONNECTING, { code, reason, attempt: this.#attempt, delay });
    this.#reconnectTimer = setTimeout(() => this.#reconnect(needToken, code), delay);
  }

  async #reconnect(needToken, lastCode) {
    if (this.#closed) return;
    if (needToken) {
      if (!this.#opts.getToken) {
        this.#closed = true;
        for (const room of this.#rooms.values()) room._lost();
        this.#failPending(clientError('closed', 'the token expired and no getToken was given'), true);
        this.#setState(ConnectionState.DISCONNECTED, { code: lastCode, reason: 'token expired' });
        return;
      }
      try {
        this.#token = await this.#opts.getToken();
        this.userID = tokenSubject(this.#token) ?? this.userID;
      } catch (err) {
        console.warn('switchboard: getToken failed', err);
        this.#scheduleReconnect(lastCode, `getToken failed: ${err.message}`, true);
        return;
      }
      if (this.#closed) return;
    }
    try {
      await this.#open();
    } catch (err) {
      // A failed upgrade (e.g. 401 for an expired token) looks like a
      // network error to a browser: with getToken, fetch a fresh token.
      this.#scheduleReconnect(err.closeCode ?? 1006, 'reconnect failed', Boolean(this.#opts.getToken));
    }
  }

  #send(id, entry) {
    entry.sent = true;
    this.#ws.send(entry.frame);
  }

  #flushQueue() {
    const ids = this.#queue;
    this.#queue = [];
    for (const id of ids) {
      const entry = this.#pending.get(id);
      if (entry) this.#send(id, entry);
    }
  }

  // Rejects the requests already sent, or with all also the queued ones.
  #failPending(err, all) {
    for (const [id, entry] of this.#pending) {
      if (!all && !entry.sent) continue;
      clearTimeout(entry.timer);
      this.#pending.delete(id);
      entry.reject(err);
    }
    if (all) this.#queue = [];
  }

  #onFrame(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      console.warn('switchboard: a frame that is not JSON', text);
      return;
    }
    if (typeof msg.event === 'string') {
      this.#onEvent(msg.event, msg.data ?? {});
      return;
    }
    const entry = this.#pending.get(msg.id);
    if (!entry) {
      if (msg.error) console.warn('switchboard: unmatched error reply', msg);
      return;
    }
    this.#pending.delete(msg.id);
    clearTimeout(entry.timer);
    if (msg.error) {
      const e = msg.error;
      entry.reject(new SwitchboardError(e.code, e.reason, e.message || e.reason, { op: entry.op }));
    } else {
      entry.resolve(msg.result ?? {});
    }
  }

  #onEvent(name, data) {
    if (ROOM_EVENTS.has(name)) {
      const room = this.#rooms.get(data.roomID);
      if (room) room._event(name, data);
      if (name === 'onRtcSignal') return; // internal to the room
      // The room enters again by itself: it is not left.
      if (name === 'onExitRoom' && data.reason === ExitReason.MEDIA_NODE_LOST && room && !room.exited && this.#opts.reenterTimeout > 0) return;
    }
    this.emit(name, data);
  }
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
}

function tokenSubject(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part)).sub ?? null;
  } catch {
    return null;
  }
}

/**
 * A media room, made by sb.enterRoom. Two RTCPeerConnections (ROOMS.md):
 * `publisher` (this client offers its tracks once; null for audience or
 * without localStream) and `subscriber` (the server offers the others'
 * tracks; this client answers).
 *
 * Events (room.on): 'remoteStream' {userID, stream}, 'remoteStreamRemoved'
 * {userID, stream}, the server's onEnterRoom, onExitRoom,
 * onRemoteUserEnterRoom, onRemoteUserLeaveRoom, onUserVideoAvailable,
 * onUserAudioAvailable, the live room's onSwitchRole, onSeatListChange,
 * onAnchorEnterSeat, onAnchorLeaveSeat, onRoomHostChanged,
 * onAudienceListChange, and 'error' (a failed negotiation step). Like TRTC,
 * the anchors already in the room when it is entered are announced with
 * onRemoteUserEnterRoom and onUserVideoAvailable/onUserAudioAvailable.
 *
 * Reconnection (ROOMS.md, Reconnecting): when the WebSocket drops and the
 * SDK reconnects, the room enters again by itself with its resumeToken
 * ('reconnecting', then 'resumed' {resumed}). When the server kept its
 * place (resumed true) the same connections go on; otherwise both are
 * made again and the local stream is published again. What changed
 * meanwhile among the others is reported with the usual events. ICE
 * restart: a connection that fails, or stays disconnected for
 * iceRestartAfter ms, restarts ICE on the same RTCPeerConnection (the
 * publisher offers with iceRestart; for the subscriber the server is asked
 * with a restartIce signal); 'iceRestart' {target} is emitted.
 *
 * Media node lost (cluster mode; ROOMS.md, onExitRoom reason 4): the room's
 * media node was lost, or the room moved. The SDK does not end the room: it
 * closes both connections ('remoteStreamRemoved' for each stream), emits
 * 'reconnecting' {reason: 4}, and enters the same room again (same role and
 * roomToken; a call's admission holds) with new connections, publishing the
 * local stream again; then 'resumed' {resumed: false, reason: 4}, and the
 * others' streams come again with 'remoteStream'. The first attempt is at
 * once; an attempt that fails with 11015 (room_node_unavailable), 9500
 * (store_unavailable) or no reply is tried again with backoff
 * (reenterBackoffInitial doubling to roomBackoffMax, with jitter) for up to
 * reenterTimeout ms, after which the room ends with onExitRoom reason 4.
 * A resume after a reconnection that fails this way is retried alike.
 */
export class Room extends Emitter {
  #sb;
  #rtcConfig;
  #localStream;
  #ready; // resolves with the enterRoom result
  #readyResolve;
  #readyReject;
  #chain = Promise.resolve(); // signals are handled one after another
  #held = []; // room events that arrived before the enterRoom reply
  #enteredReply = false;
  #remoteCandidates = { publisher: [], subscriber: [] };
  #localCandidates = { publisher: [], subscriber: [] };
  #canTrickle = { publisher: false, subscriber: false };
  #audioMuted = false;
  #videoMuted = false;
  #roomToken;
  #resumeToken = '';
  #suspended = false; // the WebSocket is down: signals are not sent
  #resuming = false; // enterRoom with the resumeToken is in flight
  #heldSignals = []; // onRtcSignal events that arrived while resuming
  #iceRestartAfter;
  #iceTimers = { publisher: null, subscriber: null };
  #reenter; // {timeout, initial, max}: the retries of entering again, ms
  #retryDeadline = 0; // performance.now() at which entering again gives up; 0: no failed attempt yet
  #retryAttempt = 0;
  #retryTimer = null;
  #lostData = null; // the onExitRoom reason 4 this room is entering again after

  /** @private use sb.enterRoom */
  constructor(sb, roomID, role, localStream, rtcConfig, { roomToken, iceRestartAfter = 2000, reenterTimeout = 30000, reenterBackoffInitial = 250, reenterBackoffMax = 2000 } = {}) {
    super();
    this.#sb = sb;
    this.#roomToken = roomToken;
    this.#iceRestartAfter = iceRestartAfter;
    this.#reenter = { timeout: reenterTimeout, initial: reenterBackoffInitial, max: reenterBackoffMax };
    this.roomID = roomID;
    this.role = role;
    this.#localStream = localStream;
    this.#rtcConfig = rtcConfig;
    /** @type {RTCPeerConnection|null} */
    this.publisher = null;
    /** @type {RTCPeerConnection|null} */
    this.subscriber = null;
    /** userID → MediaStream of that user's tracks. */
    this.remoteStreams = new Map();
    /** userID → {audio, video} of the anchors in the room. */
    this.participants = new Map();
    this.iceServers = [];
    /** The live room: {host, seatMode, seats: [{index, userID}], anchors, audience} (ROOMS.md), kept up to date by the events. */
    this.info = { host: '', seatMode: 'free', seats: [], anchors: [], audience: [] };
    /** This member's seat, -1 for none. */
    this.seatIndex = -1;
    /** The room's media node (the enterRoom reply's `node`, cluster mode; '' standalone). */
    this.node = '';
    /** true after onEnterRoom (media connected), false after exit. */
    this.connected = false;
    this.exited = false;
    this.#ready = new Promise((res, rej) => {
      this.#readyResolve = res;
      this.#readyReject = rej;
    });
    this.#ready.catch(() => {}); // a failed enterRoom is reported by enterRoom
  }

  get localStream() {
    return this.#localStream;
  }

  /** Mutes (true) or unmutes the local microphone: the track is disabled too. */
  async muteLocalAudio(mute) {
    this.#audioMuted = Boolean(mute);
    for (const t of this.#localStream?.getAudioTracks() ?? []) t.enabled = !mute;
    await this.#sb.request('muteLocalAudio', { roomID: this.roomID, mute: Boolean(mute) });
  }

  /** Mutes (true) or unmutes the local camera: the track is disabled too. */
  async muteLocalVideo(mute) {
    this.#videoMuted = Boolean(mute);
    for (const t of this.#localStream?.getVideoTracks() ?? []) t.enabled = !mute;
    await this.#sb.request('muteLocalVideo', { roomID: this.roomID, mute: Boolean(mute) });
  }

  /**
   * Sets the stream to publish while an anchor (published at once if this
   * member is an anchor and publishes nothing yet).
   */
  setLocalStream(stream) {
    this.#localStream = stream;
    if (this.role === 'anchor' && stream && !this.exited) this.#enqueue(() => this.#publish());
  }

  /**
   * switchRole('anchor' | 'audience') (ROOMS.md, Live rooms): the server
   * decides; as anchor this member takes a seat and publishes its local
   * stream (setLocalStream or enterRoom's), as audience its publisher
   * connection closes. Resolves with {role, seatIndex}; 'onSwitchRole' is
   * emitted too.
   */
  async switchRole(role) {
    return this.#switched(await this.#sb.request('switchRole', { roomID: this.roomID, role }));
  }

  /** takeSeat(index?): as switchRole('anchor'), on the seat asked for. */
  async takeSeat(index) {
    return this.#switched(await this.#sb.request('takeSeat', pick({ roomID: this.roomID, index }, ['roomID', 'index'])));
  }

  /** leaveSeat(): as switchRole('audience'). */
  async leaveSeat() {
    return this.#switched(await this.#sb.request('leaveSeat', { roomID: this.roomID }));
  }

  /** kickSeat(userID): the host takes an anchor off its seat. */
  async kickSeat(userID) {
    await this.#sb.request('kickSeat', { roomID: this.roomID, userID });
  }

  /** getRoomInfo() → {host, seatMode, seats, anchors, audience} (also kept in room.info). */
  async getRoomInfo() {
    const info = await this.#sb.request('getRoomInfo', { roomID: this.roomID });
    this.info = info;
    return info;
  }

  /** Leaves the room and closes both connections. The local stream is not stopped. */
  async exit() {
    if (this.exited) return;
    try {
      await this.#sb.request('exitRoom', { roomID: this.roomID });
    } catch (err) {
      if (err.reason !== 'not_in_room' && err.reason !== 'connection_lost' && err.reason !== 'closed') throw err;
    } finally {
      // onExitRoom normally arrived before the reply; if not, say it now.
      this.#finish(ExitReason.LEFT);
    }
  }

  // ---- called by Switchboard ----

  _entered(result) {
    this.iceServers = result.iceServers ?? [];
    this.#resumeToken = result.resumeToken ?? '';
    this.#roomState(result);
    this.#readyResolve(result);
    if (this.role !== 'audience' && this.#localStream && !this.exited) {
      this.#enqueue(() => this.#publish());
    }
    // The room's events are replayed in a later task, so that handlers
    // registered right after `await sb.enterRoom(…)` see all of them.
    setTimeout(() => this.#replay(result), 0);
  }

  #replay(result) {
    if (this.exited) return;
    this.#enteredReply = true;
    // Anchors already connected are announced like TRTC does, before the
    // events that were decided after the reply's snapshot.
    for (const p of result.participants ?? []) {
      this.#handleEvent('onRemoteUserEnterRoom', { roomID: this.roomID, userID: p.userID });
      if (p.video) this.#handleEvent('onUserVideoAvailable', { roomID: this.roomID, userID: p.userID, available: true });
      if (p.audio) this.#handleEvent('onUserAudioAvailable', { roomID: this.roomID, userID: p.userID, available: true });
    }
    const held = this.#held;
    this.#held = [];
    for (const [name, data] of held) this.#handleEvent(name, data);
  }

  _fail(err) {
    this.#readyReject(err);
    this.#close();
  }

  _lost() {
    this.#finish(ExitReason.CONNECTION_LOST);
  }

  // The WebSocket dropped and the SDK reconnects: keep the media, wait.
  _suspend() {
    if (this.exited) return;
    if (!this.#enteredReply && !this.#resumeToken) {
      // Never entered (the enterRoom reply was lost): nothing to resume.
      this.#finish(ExitReason.CONNECTION_LOST);
      return;
    }
    // A retry waiting for its turn: the connection's return tries at once.
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    if (!this.#suspended) this.emit('reconnecting', { roomID: this.roomID });
    this.#suspended = true;
    this.#resuming = false;
  }

  // The WebSocket is back: enter again, with the resumeToken if there is one.
  _resume() {
    this.#enterAgain();
  }

  // The room's media node was lost (onExitRoom reason 4): new connections
  // on the room's new media node, found by entering again.
  #mediaNodeLost(data) {
    const wasSuspended = this.#suspended;
    this.#lostData = data;
    this.#resumeToken = ''; // the place was on the lost node
    this.#heldSignals = [];
    this.#resetMedia();
    this.#suspended = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#retryDeadline = 0;
    this.#retryAttempt = 0;
    if (!wasSuspended) this.emit('reconnecting', { roomID: this.roomID, reason: ExitReason.MEDIA_NODE_LOST });
    this.#enterAgain();
  }

  // One attempt to enter again (after a reconnection or reason 4), unless
  // one is in flight or the WebSocket is down (its return calls _resume).
  #enterAgain() {
    this.#retryTimer = null;
    if (this.exited || !this.#suspended || this.#resuming) return;
    if (this.#sb.state !== ConnectionState.CONNECTED) return;
    this.#resuming = true;
    if (this.#lostData) this.#heldSignals = []; // of a failed attempt
    const args = pick({ roomID: this.roomID, role: this.role, roomToken: this.#roomToken, resumeToken: this.#resumeToken || undefined },
      ['roomID', 'role', 'roomToken', 'resumeToken']);
    this.#sb.request('enterRoom', args).then(
      (result) => this.#resumed(result),
      (err) => this.#enterAgainFailed(err),
    );
  }

  #enterAgainFailed(err) {
    if (this.exited) return;
    this.#resuming = false;
    // The connection dropped: its return tries again.
    if (err.reason === 'connection_lost' || (err.reason === 'timeout' && this.#sb.state !== ConnectionState.CONNECTED)) return;
    if (err.reason === 'timeout' || RETRY_ENTER_CODES.has(err.code)) {
      // The room's media node did not answer: again, with backoff, until reenterTimeout.
      const now = performance.now();
      if (!this.#retryDeadline) this.#retryDeadline = now + this.#reenter.timeout;
      if (now < this.#retryDeadline) {
        const base = Math.min(this.#reenter.max, this.#reenter.initial * 2 ** this.#retryAttempt++);
        const delay = Math.min(Math.round(base / 2 + Math.random() * (base / 2)), Math.ceil(this.#retryDeadline - now));
        this.emit('reenterRetry', { roomID: this.roomID, code: err.code, reason: err.reason, attempt: this.#retryAttempt, delay });
        this.#retryTimer = setTimeout(() => this.#enterAgain(), delay);
        return;
      }
    }
    this.emit('error', err);
    this.#finish(this.#lostData ? ExitReason.MEDIA_NODE_LOST : ExitReason.CONNECTION_LOST, this.#lostData ?? undefined);
  }

  #resumed(result) {
    if (this.exited) return;
    const lost = this.#lostData;
    this.#lostData = null;
    this.#retryDeadline = 0;
    this.#retryAttempt = 0;
    this.#suspended = false;
    this.#resuming = false;
    this.#resumeToken = result.resumeToken ?? '';
    this.iceServers = result.iceServers ?? this.iceServers;
    const roleBefore = this.role;
    this.#roomState(result);
    const held = this.#heldSignals;
    this.#heldSignals = [];
    // After reason 4 the connections are gone whatever the reply says.
    const resumed = Boolean(result.resumed) && !lost;
    if (!resumed) {
      // The server did not keep our place: new connections, published again.
      this.#resetMedia();
      if (this.role !== 'audience' && this.#localStream) this.#enqueue(() => this.#publish());
    }
    this.#reconcile(result.participants ?? []);
    for (const s of held) this.#enqueue(() => this.#onSignal(s));
    if (resumed) this.#enqueue(() => this.#afterResume());
    if (resumed && this.role !== roleBefore) this.#followRole(); // switched while away
    this.emit('resumed', lost ? { roomID: this.roomID, resumed: false, reason: ExitReason.MEDIA_NODE_LOST } : { roomID: this.roomID, resumed });
  }

  // After a resume: an offer or its answer may have been lost with the old
  // connection, and the network change may have broken ICE.
  async #afterResume() {
    const pub = this.publisher;
    if (pub && pub.signalingState === 'have-local-offer' && pub.localDescription) {
      this.#signal('publisher', 'offer', { sdp: pub.localDescription.sdp });
    }
    for (const target of ['publisher', 'subscriber']) {
      const pc = this[target];
      if (pc && pc.connectionState !== 'connected' && pc.connectionState !== 'new') await this.#restartIce(target);
    }
  }

  // Reports what changed among the others while the connection was down.
  #reconcile(list) {
    const now = new Map(list.map((p) => [p.userID, p]));
    for (const userID of [...this.participants.keys()]) {
      if (!now.has(userID)) this.#handleEvent('onRemoteUserLeaveRoom', { roomID: this.roomID, userID, reason: 1 });
    }
    for (const p of now.values()) {
      if (!this.participants.has(p.userID)) this.#handleEvent('onRemoteUserEnterRoom', { roomID: this.roomID, userID: p.userID });
      const known = this.participants.get(p.userID);
      if (known && known.video !== Boolean(p.video)) this.#handleEvent('onUserVideoAvailable', { roomID: this.roomID, userID: p.userID, available: Boolean(p.video) });
      if (known && known.audio !== Boolean(p.audio)) this.#handleEvent('onUserAudioAvailable', { roomID: this.roomID, userID: p.userID, available: Boolean(p.audio) });
    }
  }

  // Closes both connections for a new entry; the room goes on.
  #resetMedia() {
    for (const userID of [...this.remoteStreams.keys()]) this.#removeRemote(userID);
    for (const target of ['publisher', 'subscriber']) {
      clearTimeout(this.#iceTimers[target]);
      this.#iceTimers[target] = null;
      const pc = this[target];
      if (pc && pc.signalingState !== 'closed') pc.close();
      this[target] = null;
    }
    this.#remoteCandidates = { publisher: [], subscriber: [] };
    this.#localCandidates = { publisher: [], subscriber: [] };
    this.#canTrickle = { publisher: false, subscriber: false };
    this.connected = false;
  }

  // Restarts ICE on one connection, keeping it (ROOMS.md, ICE restart).
  async #restartIce(target) {
    const pc = this[target];
    if (this.exited || this.#suspended || !pc || pc.signalingState === 'closed') return;
    this.emit('iceRestart', { roomID: this.roomID, target });
    if (target === 'subscriber') {
      // The server offers on this connection: it sends an offer with new
      // ICE credentials, answered as any other.
      this.#signal('subscriber', 'restartIce', {});
      return;
    }
    pc.restartIce();
    const offer = await pc.createOffer({ iceRestart: true });
    this.#canTrickle.publisher = false; // the new candidates follow the new offer
    await pc.setLocalDescription(offer);
    if (this.exited || pc !== this.publisher) return;
    this.#signal('publisher', 'offer', { sdp: pc.localDescription.sdp });
    this.#startTrickle('publisher');
  }

  // Restarts ICE by itself: at once when pc failed, after iceRestartAfter
  // when it stays disconnected, then every iceRestartAfter until connected.
  #watchIce(target, pc) {
    const st = pc.connectionState;
    if (st === 'connected' || st === 'closed') {
      clearTimeout(this.#iceTimers[target]);
      this.#iceTimers[target] = null;
      return;
    }
    if (st === 'failed') this.#scheduleIceRestart(target, pc, 0);
    else if (st === 'disconnected') this.#scheduleIceRestart(target, pc, this.#iceRestartAfter);
  }

  #scheduleIceRestart(target, pc, delay) {
    if (this.#iceTimers[target] && delay > 0) return; // one pending already
    clearTimeout(this.#iceTimers[target]);
    this.#iceTimers[target] = setTimeout(() => {
      this.#iceTimers[target] = null;
      if (this.exited || pc !== this[target] || pc.connectionState === 'connected' || pc.connectionState === 'closed') return;
      // While the WebSocket is down the resume restarts ICE if needed.
      if (!this.#suspended) this.#enqueue(() => this.#restartIce(target));
      this.#scheduleIceRestart(target, pc, this.#iceRestartAfter);
    }, delay);
  }

  _event(name, data) {
    if (name === 'onRtcSignal') {
      if (this.#resuming || this.#suspended) {
        // Applied once the reply says whether these connections go on.
        this.#heldSignals.push(data);
        return;
      }
      this.#enqueue(() => this.#onSignal(data));
      return;
    }
    if (!this.#enteredReply) {
      this.#held.push([name, data]);
      return;
    }
    this.#handleEvent(name, data);
  }

  // ---- internals ----

  // The live room's state of an enterRoom reply.
  #roomState(result) {
    this.node = result.node ?? '';
    if (result.role) this.role = result.role;
    if (result.room) this.info = result.room;
    this.seatIndex = result.seatIndex ?? -1;
  }

  #switched(res) {
    if (!this.exited && res?.role) {
      const changed = res.role !== this.role;
      this.role = res.role;
      this.seatIndex = res.seatIndex ?? -1;
      if (changed) this.#followRole();
    }
    return res;
  }

  // Publishes while an anchor, stops publishing while audience.
  #followRole() {
    if (this.exited) return;
    if (this.role === 'anchor') {
      if (this.#localStream) this.#enqueue(() => this.#publish());
    } else {
      this.#enqueue(() => this.#unpublish());
    }
  }

  #unpublish() {
    const pc = this.publisher;
    if (!pc) return;
    clearTimeout(this.#iceTimers.publisher);
    this.#iceTimers.publisher = null;
    this.publisher = null;
    this.#remoteCandidates.publisher = [];
    this.#localCandidates.publisher = [];
    this.#canTrickle.publisher = false;
    if (pc.signalingState !== 'closed') pc.close();
  }

  #handleEvent(name, data) {
    switch (name) {
      case 'onSwitchRole':
        if (!data.code) this.#switched(data);
        break;
      case 'onSeatListChange':
        this.info = { ...this.info, seats: data.seats ?? [] };
        this.seatIndex = this.info.seats.find((s) => s.userID === this.#sb.userID)?.index ?? -1;
        break;
      case 'onRoomHostChanged':
        this.info = { ...this.info, host: data.host };
        break;
      case 'onAudienceListChange':
        this.info = { ...this.info, audience: data.audience ?? [] };
        break;
      case 'onEnterRoom':
        this.connected = true;
        break;
      case 'onExitRoom':
        if (data.reason === ExitReason.MEDIA_NODE_LOST && this.#reenter.timeout > 0) {
          this.#mediaNodeLost(data);
          return;
        }
        this.#finish(data.reason, data);
        return;
      case 'onRemoteUserEnterRoom':
        if (this.participants.has(data.userID)) return;
        this.participants.set(data.userID, { audio: false, video: false });
        break;
      case 'onRemoteUserLeaveRoom':
        this.participants.delete(data.userID);
        this.#removeRemote(data.userID);
        break;
      case 'onUserVideoAvailable':
      case 'onUserAudioAvailable': {
        const p = this.participants.get(data.userID);
        if (p) p[name === 'onUserVideoAvailable' ? 'video' : 'audio'] = Boolean(data.available);
        break;
      }
    }
    this.emit(name, data);
  }

  #enqueue(step) {
    this.#chain = this.#chain.then(step).catch((err) => {
      if (this.exited) return;
      console.error(`switchboard: room ${this.roomID}:`, err);
      this.emit('error', err instanceof SwitchboardError ? err : clientError('negotiation_failed', String(err?.message ?? err), { cause: err }));
    });
  }

  #pcConfig() {
    return { ...this.#rtcConfig, iceServers: this.iceServers.map((s) => ({ ...s })) };
  }

  #signal(target, type, payload) {
    // While the WebSocket is down, signals are dropped: the resume makes up
    // for them (offers sent again, ICE restarted).
    if (this.#suspended) return Promise.resolve();
    // Not awaited by the negotiation steps: requests go out in order and the
    // server performs them in order. Failures are reported as 'error'.
    return this.#sb
      .request('rtcSignal', { roomID: this.roomID, target, type, ...payload })
      .catch((err) => {
        if (!this.exited) this.emit('error', err);
      });
  }

  #newPC(target) {
    const pc = new RTCPeerConnection(this.#pcConfig());
    pc.onicecandidate = (ev) => {
      if (!ev.candidate || !ev.candidate.candidate) return; // end of candidates
      const c = ev.candidate.toJSON();
      if (this.#canTrickle[target]) this.#signal(target, 'candidate', { candidate: c });
      else this.#localCandidates[target].push(c);
    };
    pc.onconnectionstatechange = () => this.#watchIce(target, pc);
    return pc;
  }

  // After our description went out, our buffered candidates may follow it.
  #startTrickle(target) {
    this.#canTrickle[target] = true;
    const list = this.#localCandidates[target];
    this.#localCandidates[target] = [];
    for (const c of list) this.#signal(target, 'candidate', { candidate: c });
  }

  async #flushRemoteCandidates(target, pc) {
    const list = this.#remoteCandidates[target];
    this.#remoteCandidates[target] = [];
    for (const c of list) await pc.addIceCandidate(c);
  }

  #ensureSubscriber() {
    if (this.subscriber) return this.subscriber;
    const pc = this.#newPC('subscriber');
    pc.ontrack = (ev) => this.#onTrack(ev);
    this.subscriber = pc;
    return pc;
  }

  async #publish() {
    if (this.exited || this.publisher) return;
    const pc = this.#newPC('publisher');
    this.publisher = pc;
    for (const track of this.#localStream.getTracks()) {
      pc.addTransceiver(track, { direction: 'sendonly', streams: [this.#localStream] });
    }
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    if (this.exited) return;
    this.#signal('publisher', 'offer', { sdp: pc.localDescription.sdp });
    this.#startTrickle('publisher');
    if (this.#audioMuted || this.#videoMuted) {
      // A mute set before publishing is applied once the tracks exist.
      if (this.#audioMuted) this.#sb.request('muteLocalAudio', { roomID: this.roomID, mute: true }).catch(() => {});
      if (this.#videoMuted) this.#sb.request('muteLocalVideo', { roomID: this.roomID, mute: true }).catch(() => {});
    }
  }

  async #onSignal(s) {
    if (this.exited) return;
    // The iceServers come with the reply; the first subscriber offer can
    // be earlier, so it waits here.
    await this.#ready;
    if (this.exited) return;
    const target = s.target;
    if (target !== 'publisher' && target !== 'subscriber') return;
    switch (s.type) {
      case 'offer': {
        if (target !== 'subscriber') throw clientError('negotiation_failed', 'an offer for the publisher connection');
        const pc = this.#ensureSubscriber();
        await pc.setRemoteDescription({ type: 'offer', sdp: s.sdp });
        await this.#flushRemoteCandidates('subscriber', pc);
        const answer = await pc.createAnswer();
        this.#canTrickle.subscriber = false; // an ICE restart's candidates follow the answer
        await pc.setLocalDescription(answer);
        if (this.exited) return;
        this.#signal('subscriber', 'answer', { sdp: pc.localDescription.sdp });
        this.#startTrickle('subscriber');
        break;
      }
      case 'answer': {
        const pc = this.publisher;
        if (target === 'publisher' && !pc && this.role === 'audience') return; // switched off the mic meanwhile
        if (target !== 'publisher' || !pc) throw clientError('negotiation_failed', `an unexpected answer for ${target}`);
        await pc.setRemoteDescription({ type: 'answer', sdp: s.sdp });
        await this.#flushRemoteCandidates('publisher', pc);
        break;
      }
      case 'candidate': {
        if (!s.candidate || !s.candidate.candidate) return; // end of candidates
        const pc = target === 'publisher' ? this.publisher : this.subscriber;
        if (!pc || !pc.remoteDescription) this.#remoteCandidates[target].push(s.candidate);
        else await pc.addIceCandidate(s.candidate);
        break;
      }
    }
  }

  #onTrack(ev) {
    const stream = ev.streams[0];
    if (!stream) return; // the server always sets the stream ID to the user ID
    const userID = stream.id;
    const known = this.remoteStreams.get(userID);
    if (known === stream) return; // the second track of a known stream
    if (known) this.#removeRemote(userID);
    this.remoteStreams.set(userID, stream);
    stream.onremovetrack = () => {
      if (stream.getTracks().length === 0 && this.remoteStreams.get(userID) === stream) this.#removeRemote(userID);
    };
    this.emit('remoteStream', { userID, stream });
  }

  #removeRemote(userID) {
    const stream = this.remoteStreams.get(userID);
    if (!stream) return;
    this.remoteStreams.delete(userID);
    stream.onremovetrack = null;
    this.emit('remoteStreamRemoved', { userID, stream });
  }

  #finish(reason, data) {
    if (this.exited) return;
    this.#close();
    this.emit('onExitRoom', data ?? { roomID: this.roomID, reason });
  }

  #close() {
    this.exited = true;
    this.connected = false;
    clearTimeout(this.#retryTimer);
    for (const target of ['publisher', 'subscriber']) clearTimeout(this.#iceTimers[target]);
    this.#sb._forgetRoom(this);
    for (const userID of [...this.remoteStreams.keys()]) this.#removeRemote(userID);
    this.participants.clear();
    for (const pc of [this.publisher, this.subscriber]) {
      if (pc && pc.signalingState !== 'closed') pc.close();
    }
  }
}

export default Switchboard;
