// Calls: the call screen (calling, ringing, in call, ended), one call at a
// time, one-to-one or group. The server's rules (signaling/CALLS.md):
//   - the caller enters the call's room as soon as call/groupCall replies;
//   - a callee accepts first (that admits it to the room), then enters;
//   - onCallBegin (startTime) when two participants' media is connected;
//   - a busy callee is rejected by the server at once: the caller gets
//     onInviteeRejected with line_busy data, the callee onCallMissed;
//   - at the end the party that left gets the call-end invitation
//     (data.cmd "hangup", call_end seconds) and everyone onCallEnd.

import { Switchboard } from '/sdk/switchboard.js';
import { h, $, avatar, icons, fmtDuration, toast, errorText } from './ui.js';

const ENDED_SCREEN_MS = 15000; // the "call ended" screen closes by itself after this
// A grid tile fills (object-fit: cover) only when its shape is within this
// factor of the video's, so that at most about a fifth is cut; otherwise,
// and always in a one-to-one call, the whole picture shows (contain).
const COVER_MAX_RATIO = 1.25;
const LINE_BUSY = JSON.stringify({ businessID: 'av_call', version: 4, line_busy: 'line_busy', data: { message: 'lineBusy' } });

/**
 * The ring tone: two sine waves (440 + 480 Hz), 1.2 s on, 1.8 s off, made
 * with WebAudio (no audio file). When the browser blocks autoplay the
 * AudioContext stays suspended: nothing breaks, and the first tap resumes it.
 */
class RingTone {
  state = 'off'; // off, playing, blocked, unsupported
  #ctx = null;
  #timer = null;
  #onTap = null;

  start() {
    this.stop();
    try {
      const AC = window.AudioContext ?? window.webkitAudioContext;
      if (!AC) {
        this.state = 'unsupported';
        return;
      }
      const ctx = new AC();
      this.#ctx = ctx;
      const gain = ctx.createGain();
      gain.gain.value = 0;
      gain.connect(ctx.destination);
      for (const f of [440, 480]) {
        const osc = ctx.createOscillator();
        osc.frequency.value = f;
        osc.connect(gain);
        osc.start();
      }
      const burst = () => {
        if (ctx.state !== 'running') return;
        const t = ctx.currentTime;
        gain.gain.setValueAtTime(0, t);
        gain.gain.linearRampToValueAtTime(0.12, t + 0.05);
        gain.gain.setValueAtTime(0.12, t + 1.2);
        gain.gain.linearRampToValueAtTime(0, t + 1.25);
      };
      const update = () => {
        this.state = ctx.state === 'running' ? 'playing' : 'blocked';
        $('#ring-hint').hidden = this.state !== 'blocked';
      };
      ctx.onstatechange = () => {
        if (this.#ctx !== ctx) return;
        update();
        burst();
      };
      this.#timer = setInterval(burst, 3000);
      ctx.resume().catch(() => {}).finally(() => this.#ctx === ctx && update());
      update();
      burst();
      this.#onTap = () => ctx.resume().catch(() => {});
      document.addEventListener('pointerdown', this.#onTap, { once: true });
      // Chromium blocks (and logs) vibrate before the user's first gesture.
      if (navigator.userActivation?.hasBeenActive ?? true) navigator.vibrate?.([400, 200, 400]);
    } catch (err) {
      console.warn('[demo] ring tone unavailable:', err);
      this.state = 'blocked';
    }
  }

  stop() {
    clearInterval(this.#timer);
    this.#timer = null;
    if (this.#onTap) document.removeEventListener('pointerdown', this.#onTap);
    this.#onTap = null;
    const ctx = this.#ctx;
    this.#ctx = null;
    if (ctx) ctx.close().catch(() => {});
    if (this.state !== 'unsupported') this.state = 'off';
    $('#ring-hint').hidden = true;
    if (navigator.userActivation?.hasBeenActive ?? true) {
      try {
        navigator.vibrate?.(0);
      } catch {
        // not allowed: nothing to stop then
      }
    }
  }
}

/** One call on the call screen. */
class Session {
  constructor(fields) {
    this.direction = 'outgoing'; // outgoing, incoming, join
    this.peers = []; // the other users we know of
    this.inviter = '';
    this.groupID = '';
    this.mediaType = 'video';
    this.callID = '';
    this.callIDKnown = false; // callID is the call's (an invitee first guesses its invitation's ID)
    this.roomID = '';
    this.inviteID = ''; // the invitation that rang us (incoming)
    this.inviteIDs = new Set(); // every invitation of this call we know
    this.state = 'calling'; // calling, ringing, connecting, active, ended
    this.status = '';
    this.streamPromise = Promise.resolve(null);
    this.stream = null;
    this.room = null;
    this.startTime = 0; // unix ms, from onCallBegin
    this.result = '';
    this.micMuted = false;
    this.camOff = false;
    this.audioOnly = false;
    this.canJoin = false; // the ended screen offers to join (a missed group call)
    this.tiles = new Map(); // userID → {fig, video}
    Object.assign(this, fields);
    this.audioOnly = this.mediaType === 'audio';
  }

  get isGroup() {
    return Boolean(this.groupID);
  }

  matches(d) {
    return Boolean(
      (d.callID && d.callID === this.callID) ||
        (d.roomID && d.roomID === this.roomID) ||
        (d.inviteID && this.inviteIDs.has(d.inviteID)),
    );
  }
}

/** Records when something first happened (unix ms), for the tests and the curious. */
function mark(app, name) {
  const t = (app.state.timings ??= {});
  t[name] ??= Date.now();
}

export class Calls {
  constructor(app) {
    this.app = app;
    /** @type {Session|null} the call on the screen (also when it has ended) */
    this.cur = null;
    this.ring = new RingTone();
    this.early = []; // invitation events that came before the reply naming their invitation
    this.timer = null;
    this.closeTimer = null;
    window.demo.room = () => this.cur?.room ?? null;
    this.tileSizes = new ResizeObserver(() => this.#fitTiles());
    $('#invite-cancel').addEventListener('click', () => ($('#invite-panel').hidden = true));
    $('#invite-submit').addEventListener('click', () => this.#submitInvite());
  }

  get sb() {
    return this.app.sb;
  }

  // ---- events ----

  attach(sb) {
    const on = (name, fn) => sb.on(name, (d) => sb === this.sb && fn.call(this, d));
    on('onReceiveNewInvitation', this.#onInvitation);
    on('onInviteeAccepted', this.#onAccepted);
    on('onInviteeRejected', this.#onRejected);
    on('onInvitationTimeout', this.#onTimeout);
    on('onInvitationCancelled', this.#onCancelled);
    on('onCallBegin', this.#onCallBegin);
    on('onCallEnd', this.#onCallEnd);
    on('onCallMissed', this.#onCallMissed);
    on('onCallMediaTypeChanged', this.#onMediaTypeChanged);
  }

  /** Events of invitations not known yet are kept a little while. */
  #keepEarly(name, d) {
    this.early.push({ name, d, t: Date.now() });
    this.early = this.early.filter((e) => Date.now() - e.t < 30000).slice(-30);
  }

  #replayEarly(c) {
    const mine = this.early.filter((e) => c.matches(e.d));
    this.early = this.early.filter((e) => !mine.includes(e));
    const handlers = {
      onInviteeAccepted: this.#onAccepted,
      onInviteeRejected: this.#onRejected,
      onInvitationTimeout: this.#onTimeout,
      onCallBegin: this.#onCallBegin,
      onCallEnd: this.#onCallEnd,
    };
    for (const e of mine) handlers[e.name]?.call(this, e.d);
  }

  #onInvitation(inv) {
    const cd = Switchboard.parseCallData(inv.data);
    if (!cd) return; // not a call (the classroom's rounds, for example)
    if (cd.cmd === 'hangup' || cd.callEnd !== null) {
      // Only the server's call end is real; anyone can send call-end data,
      // which the server marks as the client's (CALLS.md).
      if (cd.fromServer) this.#onCallEndNotice(inv, cd);
      return;
    }
    const me = this.app.me;
    if (inv.inviter === me || !cd.roomID) return; // a call placed from my other device
    const c0 = this.cur;
    if (c0?.inviteIDs.has(inv.inviteID)) return; // rung again after a reconnect
    const peers = [inv.inviter, ...(inv.inviteeList ?? [])].filter((u) => u !== me);
    if (c0 && c0.state !== 'ended') {
      // Already in a call. The server rejects calls to busy lines itself;
      // this is a ring that came while we were still ringing or dialling.
      if (inv.groupID) {
        this.app.groups.refreshCalls();
        toast(`${inv.inviter} started a call in ${this.app.groups.name(inv.groupID) ?? 'a group'}; you can join it from Groups`);
      } else {
        this.sb.reject(inv.inviteID, LINE_BUSY).catch(() => {});
        toast(`Missed call from ${inv.inviter}: you were in another call`);
      }
      return;
    }
    const c = new Session({
      direction: 'incoming', peers, inviter: inv.inviter, groupID: inv.groupID ?? '', mediaType: cd.mediaType,
      roomID: cd.roomID, inviteID: inv.inviteID, callID: inv.inviteID, state: 'ringing',
    });
    // A one-to-one call's ID is its (only) invitation's; a group call may
    // have rung us with a later invitation (inviteUser).
    c.callIDKnown = !c.isGroup;
    c.inviteIDs.add(inv.inviteID);
    this.#show(c);
    this.ring.start();
    this.app.state.timings = { ringing: Date.now() };
    this.#render(); // the ring tone's state
    // The camera stays off while it rings: it starts on accept.
    if (c.isGroup && !this.app.groups.name(c.groupID)) this.app.groups.load().then(() => c === this.cur && this.#render());
  }

  #onCallEndNotice(inv, cd) {
    const c = this.cur;
    const text = `Call ended, ${fmtDuration(cd.callEnd ?? 0)}`;
    if (c && ((cd.roomID && cd.roomID === c.roomID) || (cd.callID && cd.callID === c.callID))) {
      if (c.state === 'ended') {
        if (c.result !== 'completed' || c.endedLocally) this.#setEndedText(c, text, 'completed');
      } else {
        this.#end(c, { text, result: 'completed' });
      }
      return;
    }
    const other = inv.inviter === this.app.me ? (inv.inviteeList ?? [])[0] : inv.inviter;
    toast(`Your call with ${other ?? 'someone'} ended (${fmtDuration(cd.callEnd ?? 0)})`);
  }

  #onAccepted(d) {
    const c = this.cur;
    if (!c || !c.matches(d)) {
      this.#keepEarly('onInviteeAccepted', d);
      return;
    }
    if (d.invitee === this.app.me) {
      if (c.state === 'ringing') this.#close('Answered on another device');
      return;
    }
    if (c.state === 'calling') this.#setState(c, 'connecting');
    if (c.isGroup) this.#callNotice(`${d.invitee} accepted`);
  }

  #onRejected(d) {
    const c = this.cur;
    if (!c || !c.matches(d)) {
      this.#keepEarly('onInviteeRejected', d);
      return;
    }
    if (d.invitee === this.app.me) {
      if (c.state === 'ringing') this.#close('Declined on another device');
      return;
    }
    if (c.state === 'ended' || c.state === 'ringing') return;
    const busy = Switchboard.parseCallData(d.data)?.lineBusy ?? false;
    if (!c.isGroup) {
      this.#end(c, { text: busy ? 'Line busy' : `${d.invitee} declined`, result: busy ? 'busy' : 'rejected' });
    } else {
      this.#callNotice(busy ? `${d.invitee}'s line is busy` : `${d.invitee} declined`);
    }
  }

  #onTimeout(d) {
    const c = this.cur;
    if (!c || !c.matches(d)) {
      this.#keepEarly('onInvitationTimeout', d);
      return;
    }
    const list = d.inviteeList ?? [];
    if (c.state === 'ringing' && list.includes(this.app.me)) {
      this.app.groups.refreshCalls();
      this.#end(c, { text: c.isGroup ? `Missed group call from ${c.inviter}` : `Missed call from ${c.inviter}`, result: 'missed', canJoin: c.isGroup });
      return;
    }
    if (c.state === 'ended') return;
    if (!c.isGroup) this.#end(c, { text: 'No answer', result: 'no_answer' });
    else this.#callNotice(`${list.join(', ')} did not answer`);
  }

  #onCancelled(d) {
    const c = this.cur;
    if (!c || c.state !== 'ringing' || !c.inviteIDs.has(d.inviteID)) return;
    if (c.isGroup) this.app.groups.refreshCalls();
    this.#end(c, { text: c.isGroup ? `Missed group call from ${c.inviter}` : `Missed call from ${c.inviter}`, result: 'missed' });
  }

  #onCallBegin(d) {
    const c = this.cur;
    if (!c || !c.matches(d)) {
      this.#keepEarly('onCallBegin', d);
      return;
    }
    if (c.state === 'ended') return;
    c.callID = d.callID;
    c.callIDKnown = true;
    c.startTime = d.startTime;
    mark(this.app, 'begin');
    this.#setState(c, 'active');
  }

  #onCallEnd(d) {
    const c = this.cur;
    if (!c || !c.matches(d)) {
      this.#keepEarly('onCallEnd', d);
      return;
    }
    const peer = c.peers[0] ?? '';
    const texts = {
      completed: `Call ended, ${fmtDuration(d.duration ?? 0)}`,
      busy: 'Line busy',
      rejected: `${peer} declined`,
      no_answer: 'No answer',
      cancelled: 'Call cancelled',
      failed: 'The call could not connect',
      missed: 'Missed call',
    };
    const text = texts[d.result] ?? `Call ended (${d.reason})`;
    if (c.state === 'ended') {
      // The server's duration is the reference; keep "line busy" and the like.
      if (d.result === 'completed') this.#setEndedText(c, text, 'completed');
      return;
    }
    this.#end(c, { text, result: d.result });
  }

  #onCallMissed(d) {
    const why = d.reason === 'line_busy' ? 'your line was busy' : d.reason;
    const text = `Missed ${d.mediaType} call from ${d.caller}: ${why}`;
    this.app.state.missed = [...(this.app.state.missed ?? []), d];
    toast(text, { ms: 6000 });
    if (this.cur && this.cur.state !== 'ended') this.#callNotice(text);
  }

  #onMediaTypeChanged(d) {
    const c = this.cur;
    if (!c || c.state === 'ended' || (d.callID !== c.callID && c.callID)) return;
    if (d.mediaType === 'audio') {
      this.#callNotice(`${d.userID} switched the call to audio`);
      this.#toAudio(c, false);
    } else {
      this.#callNotice(`${d.userID} switched the call to video`);
    }
  }

  // ---- actions ----

  /** Calls user (from the contact list). */
  async startCall(user, mediaType) {
    if (!this.#free()) return;
    const c = new Session({ direction: 'outgoing', peers: [user], mediaType, state: 'calling' });
    await this.#dial(c, () => this.sb.call({ invitee: user, mediaType, timeout: this.#ringSeconds() }));
  }

  /** Calls the members of a group (except me). */
  async startGroupCall(groupID, members, mediaType) {
    if (!this.#free()) return;
    const invitees = members.filter((u) => u !== this.app.me);
    if (invitees.length === 0) {
      toast('Add members to the group first', { error: true });
      return;
    }
    const c = new Session({ direction: 'outgoing', peers: invitees, groupID, mediaType, state: 'calling' });
    await this.#dial(c, () => this.sb.groupCall({ groupID, inviteeList: invitees, mediaType, timeout: this.#ringSeconds() }));
  }

  /** How long a call rings: ?ring=N seconds when chosen, else undefined (the server's default). */
  #ringSeconds() {
    const n = Number(this.app.params.get('ring'));
    return Number.isInteger(n) && n > 0 ? n : undefined;
  }

  async #dial(c, place) {
    this.app.state.timings = { dial: Date.now() };
    this.#show(c);
    // The camera starts while the call is placed; the room is entered
    // once both are done.
    c.streamPromise = this.#getStream(c);
    c.streamPromise.then(() => c === this.cur && this.#render());
    let r;
    try {
      r = await place();
    } catch (err) {
      this.app.fail('call', err);
      this.#end(c, { text: `Could not call: ${errorText(err)}`, result: 'failed' });
      return;
    }
    c.callID = r.callID;
    c.callIDKnown = true;
    c.roomID = r.roomID;
    c.inviteIDs.add(r.inviteID);
    mark(this.app, 'placed');
    if (c.state === 'ended') {
      // Cancelled while the request was in flight.
      this.sb.hangup(r.callID).catch(() => {});
      return;
    }
    if (r.merged) {
      // Glare: the other side's call was ringing here; the server accepted it for us.
      this.#callNotice(`${c.peers[0]} was calling you too: joined their call`);
      this.#setState(c, 'connecting');
    }
    this.#render();
    this.#replayEarly(c);
    if (c.state === 'ended') return;
    await this.#enterRoom(c);
  }

  /** Accepts the ringing call: accept (admits us to the room), then enter it. */
  async accept() {
    const c = this.cur;
    if (!c || c.state !== 'ringing') return;
    this.ring.stop();
    mark(this.app, 'accepted');
    this.#setState(c, 'connecting');
    // The camera starts now (not while it rang), in parallel with the accept.
    c.streamPromise = this.#getStream(c);
    c.streamPromise.then(() => c === this.cur && this.#render());
    try {
      await this.sb.accept(c.inviteID);
    } catch (err) {
      const text = err.code === 12002 ? 'The call has already ended' : err.code === 8010 ? 'The call is no longer ringing' : `Could not accept: ${errorText(err)}`;
      this.#end(c, { text, result: 'failed' });
      return;
    }
    await this.#enterRoom(c);
    if (c.isGroup) this.#resolveCall(c);
  }

  /** Declines the ringing call. */
  async reject() {
    const c = this.cur;
    if (!c || c.state !== 'ringing') return;
    this.ring.stop();
    if (c.isGroup) this.app.groups.refreshCalls();
    this.sb.reject(c.inviteID).catch((err) => err.code !== 8010 && this.app.fail('reject', err));
    this.#end(c, { text: 'Call declined', result: 'rejected', quiet: true });
    this.#close();
  }

  /** Hangs up (or cancels while it rings). */
  async hangup() {
    const c = this.cur;
    if (!c || c.state === 'ended') return;
    if (c.state === 'ringing') return this.reject();
    const text = c.startTime ? `Call ended, ${fmtDuration((Date.now() - c.startTime) / 1000)}` : c.state === 'calling' ? 'Call cancelled' : 'You left the call';
    this.#end(c, { text, result: c.startTime ? 'completed' : 'cancelled', hangup: true });
    c.endedLocally = true;
  }

  /** Joins a running group call by its ID (roomID helps when the ID is an invitation's). */
  async joinCall(callID, { roomID = '', groupID = '' } = {}) {
    if (!this.#free()) return;
    this.app.state.timings = { join: Date.now() };
    const c = new Session({ direction: 'join', callID, groupID, roomID, state: 'connecting', status: 'Joining…' });
    this.#show(c);
    let r;
    try {
      r = await this.sb.joinCall(callID);
    } catch (err) {
      // An invitation that rang us may be a later one of the call: find
      // the call's ID in the history by its room.
      const found = err.code === 12001 && roomID ? await this.#historyEntry(roomID) : null;
      if (found && found.callID !== callID && !found.endedAt) {
        try {
          r = await this.sb.joinCall(found.callID);
        } catch (e2) {
          err = e2;
        }
      }
      if (!r) {
        this.#end(c, { text: err.code === 12001 ? 'That call has ended' : `Could not join: ${errorText(err)}`, result: 'failed' });
        return;
      }
    }
    Object.assign(c, { callID: r.callID, callIDKnown: true, roomID: r.roomID, mediaType: r.mediaType, audioOnly: r.mediaType === 'audio' });
    c.streamPromise = this.#getStream(c);
    this.#render();
    await this.#enterRoom(c);
    this.#resolveCall(c);
  }

  /** Ends everything at sign-out. */
  reset() {
    if (this.cur && this.cur.state !== 'ended') this.#end(this.cur, { text: 'Signed out', result: 'failed', quiet: true });
    this.#close();
    this.early = [];
  }

  #free() {
    if (this.cur && this.cur.state !== 'ended') {
      toast('You are already in a call', { error: true });
      return false;
    }
    return true;
  }

  // ---- media ----

  /** The local camera and microphone; null (with a notice) when they cannot be used. */
  async #getStream(c) {
    const video = c.mediaType === 'video' ? this.app.videoConstraints() : false;
    try {
      const stream = await Switchboard.getCameraStream({ audio: true, video });
      if (c.state === 'ended' || c !== this.cur) {
        for (const t of stream.getTracks()) t.stop();
        return null;
      }
      c.stream = stream;
      mark(this.app, 'camera');
      this.app.mediaError(null);
      return stream;
    } catch (err) {
      this.app.mediaError(err);
      return null;
    }
  }

  async #enterRoom(c) {
    const stream = await c.streamPromise;
    if (c.state === 'ended') return;
    if (c.audioOnly && stream) {
      for (const t of stream.getVideoTracks()) {
        t.stop();
        stream.removeTrack(t);
      }
    }
    let room;
    mark(this.app, 'enterRoom');
    try {
      room = await this.sb.enterRoom(c.roomID, { localStream: stream });
    } catch (err) {
      if (c.state === 'ended') return;
      this.app.fail('enterRoom', err);
      this.#end(c, { text: `Could not join the call: ${errorText(err)}`, result: 'failed', hangup: true });
      return;
    }
    c.room = room;
    if (c.state === 'ended') {
      room.exit().catch(() => {});
      return;
    }
    if (c.micMuted) room.muteLocalAudio(true).catch(() => {});
    if (c.camOff) room.muteLocalVideo(true).catch(() => {});
    room.on('remoteStream', ({ userID, stream: s }) => this.#tile(c, userID).setStream(s));
    room.on('remoteStreamRemoved', ({ userID, stream: s }) => {
      const t = c.tiles.get(userID);
      if (t && t.video.srcObject === s) t.video.srcObject = null;
    });
    room.on('onRemoteUserEnterRoom', ({ userID }) => {
      this.#tile(c, userID);
      if (!c.peers.includes(userID)) c.peers.push(userID);
      if (c.isGroup) this.#callNotice(`${userID} joined`);
      this.#render();
    });
    room.on('onRemoteUserLeaveRoom', ({ userID, reason }) => {
      this.#removeTile(c, userID);
      // reason 4: the room's media node let them go and they enter again
      // (cluster mode); the page's own "reconnecting" notice says it.
      if (c.state !== 'ended' && reason !== 4) this.#callNotice(reason === 1 ? `${userID} lost the connection` : `${userID} left the call`);
      this.#render();
    });
    room.on('onUserVideoAvailable', ({ userID }) => this.#tile(c, userID).update());
    room.on('onUserAudioAvailable', ({ userID, available }) => this.#tile(c, userID).fig.classList.toggle('no-audio', !available));
    room.on('onEnterRoom', () => {
      mark(this.app, 'mediaConnected');
      this.#maybeActive(c);
    });
    // Reason 4 (the room's media node was lost): the SDK enters the room
    // again by itself; the call goes on and the videos come back.
    room.on('reconnecting', ({ reason }) => {
      if (reason === 4 && c.state !== 'ended') this.#callNotice('Media server lost: reconnecting the call…');
    });
    room.on('resumed', ({ reason }) => {
      if (reason === 4 && c.state !== 'ended') this.#callNotice('Call reconnected');
    });
    room.on('onExitRoom', ({ reason }) => {
      if (c.state === 'ended') return;
      const texts = {
        1: 'You were removed from the call (or joined it on another device)',
        2: 'Call ended',
        3: 'Connection lost: the call was dropped',
        4: 'The media server was lost and the call could not be reconnected',
      };
      const dur = c.startTime ? `, ${fmtDuration((Date.now() - c.startTime) / 1000)}` : '';
      this.#end(c, { text: reason === 2 ? `Call ended${dur}` : texts[reason] ?? 'You left the call', result: reason === 2 ? 'completed' : 'failed' });
    });
    room.on('error', (err) => {
      this.app.fail('media', err);
      this.#callNotice(`Media problem: ${errorText(err)}`);
    });
    for (const [userID, s] of room.remoteStreams) this.#tile(c, userID).setStream(s);
    this.#render();
  }

  // A joiner gets no onCallBegin when the call had begun: it goes active
  // once its media is connected and the start time is known.
  #maybeActive(c) {
    if (c.state === 'connecting' && c.startTime && c.room?.connected) this.#setState(c, 'active');
  }

  async #historyEntry(roomID) {
    try {
      const { calls } = await this.sb.getCallHistory({ limit: 20 });
      return calls.find((x) => x.roomID === roomID) ?? null;
    } catch {
      return null;
    }
  }

  // Invitees rung with inviteUser, and joiners, learn the call's ID and
  // start time from the history (their invitation's ID is not the call's).
  async #resolveCall(c) {
    const found = await this.#historyEntry(c.roomID);
    if (!found || c.state === 'ended') return;
    c.callID = found.callID;
    c.callIDKnown = true;
    c.groupID ||= found.groupID;
    if (!c.startTime && found.beganAt) c.startTime = found.beganAt;
    this.#maybeActive(c);
    this.#render();
  }

  #toAudio(c, tellServer) {
    if (c.audioOnly) return;
    c.audioOnly = true;
    c.mediaType = 'audio';
    if (tellServer && c.callID) this.sb.switchCallMediaType(c.callID, 'audio').catch((err) => this.app.fail('switch to audio', err));
    // Stop sending video: no track on the sender, the camera off, and the
    // others told (onUserVideoAvailable false).
    const sender = c.room?.publisher?.getSenders().find((s) => s.track?.kind === 'video');
    sender?.replaceTrack(null).catch(() => {});
    for (const t of c.stream?.getVideoTracks() ?? []) {
      t.stop();
      c.stream.removeTrack(t);
    }
    c.room?.muteLocalVideo(true).catch(() => {});
    this.#render();
  }

  #toggleMic() {
    const c = this.cur;
    c.micMuted = !c.micMuted;
    if (c.room) c.room.muteLocalAudio(c.micMuted).catch((err) => this.app.fail('mute', err));
    else for (const t of c.stream?.getAudioTracks() ?? []) t.enabled = !c.micMuted;
    this.#render();
  }

  #toggleCamera() {
    const c = this.cur;
    c.camOff = !c.camOff;
    if (c.room) c.room.muteLocalVideo(c.camOff).catch((err) => this.app.fail('camera', err));
    else for (const t of c.stream?.getVideoTracks() ?? []) t.enabled = !c.camOff;
    this.#render();
  }

  #openInvite() {
    const c = this.cur;
    const members = this.app.groups.members(c.groupID);
    const inCall = new Set([this.app.me, ...c.tiles.keys()]);
    const options = members.filter((u) => !inCall.has(u));
    const box = $('#invite-options');
    box.replaceChildren(
      ...(options.length
        ? options.map((u) => h('label', {}, h('input', { type: 'checkbox', value: u, testid: 'invite-option', data: { user: u } }), u))
        : [h('span', { class: 'muted' }, 'Everyone in the group is in the call or ringing.')]),
    );
    $('#invite-panel').hidden = false;
  }

  async #submitInvite() {
    const c = this.cur;
    const users = [...document.querySelectorAll('#invite-options input:checked')].map((i) => i.value);
    $('#invite-panel').hidden = true;
    if (!c || users.length === 0) return;
    try {
      const r = await this.sb.inviteUser(c.callID, users, { timeout: this.#ringSeconds() });
      if (r.inviteID) c.inviteIDs.add(r.inviteID);
      this.#callNotice(r.userList.length ? `Ringing ${r.userList.join(', ')}…` : 'They are already in the call or ringing');
    } catch (err) {
      this.#callNotice(`Could not ring them: ${errorText(err)}`);
    }
  }

  // ---- ending ----

  #end(c, { text, result, hangup = false, canJoin = false, quiet = false }) {
    if (c.state === 'ended') return;
    c.state = 'ended';
    c.result = result;
    c.canJoin = canJoin;
    c.status = text;
    this.ring.stop();
    clearInterval(this.timer);
    this.timer = null;
    // hangup goes out before exitRoom: requests are performed in order.
    if (hangup && c.callID) {
      this.sb?.hangup(c.callID).catch((err) => {
        if (![12001, 12003].includes(err.code) && err.reason !== 'closed') this.app.fail('hangup', err);
      });
    }
    if (c.room && !c.room.exited) c.room.exit().catch(() => {});
    const stop = (s) => s?.getTracks().forEach((t) => t.stop());
    stop(c.stream);
    c.streamPromise.then(stop);
    for (const userID of [...c.tiles.keys()]) this.#removeTile(c, userID);
    $('#invite-panel').hidden = true;
    if (c === this.cur && !quiet) {
      this.#render();
      clearTimeout(this.closeTimer);
      if (!c.canJoin) this.closeTimer = setTimeout(() => c === this.cur && this.#close(), ENDED_SCREEN_MS);
    }
  }

  #setEndedText(c, text, result) {
    c.status = text;
    c.result = result;
    c.endedLocally = false;
    if (c === this.cur) this.#render();
  }

  #close(why) {
    clearTimeout(this.closeTimer);
    this.ring.stop();
    const c = this.cur;
    if (c && c.state !== 'ended') this.#end(c, { text: why ?? 'Closed', result: 'failed', quiet: true });
    this.cur = null;
    $('#call').hidden = true;
    $('#call').dataset.state = 'idle';
    $('#local-video').srcObject = null;
    this.app.state.call = null;
    if (why) toast(why);
  }

  /** A group's name for people (never its raw ID). */
  #groupName(groupID) {
    return this.app.groups.name(groupID) ?? 'Group call';
  }

  // ---- the screen ----

  #show(c) {
    clearTimeout(this.closeTimer);
    if (this.cur && this.cur !== c && this.cur.state !== 'ended') this.#end(this.cur, { text: 'Replaced', result: 'failed', quiet: true });
    this.cur = c;
    $('#call-notice').textContent = '';
    $('#call-grid').replaceChildren();
    $('#invite-panel').hidden = true;
    $('#call').hidden = false;
    this.#render();
  }

  #setState(c, s) {
    if (c.state === 'ended') return;
    c.state = s;
    if (s === 'active' && !this.timer) {
      this.timer = setInterval(() => this.#tick(), 1000);
    }
    if (c === this.cur) this.#render();
  }

  #tick() {
    const c = this.cur;
    if (!c || !c.startTime) return;
    $('#call-timer').textContent = fmtDuration((Date.now() - c.startTime) / 1000);
  }

  #callNotice(text) {
    $('#call-notice').textContent = text;
    this.app.state.callNotices = [...(this.app.state.callNotices ?? []), text].slice(-20);
  }

  #title(c) {
    if (c.isGroup) return this.#groupName(c.groupID);
    return c.peers[0] ?? 'Call';
  }

  #statusText(c) {
    const kind = c.mediaType === 'audio' || c.audioOnly ? 'audio' : 'video';
    switch (c.state) {
      case 'calling':
        return c.isGroup ? `Calling ${c.peers.join(', ')}…` : `Calling… (${kind})`;
      case 'ringing':
        return c.isGroup ? `${c.inviter} is calling the group (${kind})` : `Incoming ${kind} call`;
      case 'connecting':
        return c.status || 'Connecting…';
      case 'active': {
        const others = [...c.tiles.keys()];
        return others.length ? `In call with ${others.join(', ')}` : 'In call';
      }
      case 'ended':
        return c.status;
    }
    return '';
  }

  #render() {
    const c = this.cur;
    if (!c) return;
    const screen = $('#call');
    screen.dataset.state = c.state;
    screen.dataset.mediaType = c.audioOnly ? 'audio' : c.mediaType;
    screen.dataset.group = c.isGroup ? 'true' : 'false';
    $('#call-title').textContent = this.#title(c);
    $('#call-status').textContent = this.#statusText(c);
    screen.dataset.callId = c.callIDKnown ? c.callID : ''; // for tests and the curious; people see names
    const timer = $('#call-timer');
    timer.hidden = c.state !== 'active' || !c.startTime;
    if (!timer.hidden) this.#tick();
    const heroUser = c.isGroup ? this.#groupName(c.groupID) : (c.peers[0] ?? '?');
    if ($('#call-avatar').dataset.user !== heroUser) {
      const a = Object.assign(avatar(heroUser, 'huge'), { id: 'call-avatar' });
      a.dataset.user = heroUser;
      $('#call-avatar').replaceWith(a);
    }
    const grid = $('#call-grid');
    grid.dataset.count = String(c.tiles.size);
    this.#fitTiles();
    $('#call-hero').hidden = c.tiles.size > 0 && c.state !== 'ended';
    const local = $('#local-video');
    const showLocal = c.state !== 'ended' && c.stream && c.stream.getVideoTracks().length > 0 && !c.camOff && !c.audioOnly;
    if (showLocal && local.srcObject !== c.stream) local.srcObject = c.stream;
    local.hidden = !showLocal;
    this.#renderControls(c);
    this.app.state.call = {
      state: c.state, direction: c.direction, peers: [...c.peers], groupID: c.groupID, callID: c.callID, roomID: c.roomID,
      mediaType: c.audioOnly ? 'audio' : c.mediaType, status: $('#call-status').textContent, result: c.result,
      remoteUsers: [...c.tiles.keys()], startTime: c.startTime, micMuted: c.micMuted, camOff: c.camOff, ringTone: this.ring.state,
    };
  }

  #renderControls(c) {
    // Rebuilt only when they change: a button replaced between the press
    // and the release of a click would lose the click.
    const key = JSON.stringify([c.state, c.mediaType, c.audioOnly, c.micMuted, c.camOff, c.callIDKnown, c.isGroup, c.canJoin, c.peers[0] ?? '', c.direction]);
    if (this.controlsFor === c && this.controlsKey === key) return;
    this.controlsFor = c;
    this.controlsKey = key;
    const ctl = (testid, label, icon, onclick, { cls = '', pressed, disabled = false } = {}) =>
      h('button', { class: `ctl ${cls}`, type: 'button', testid, 'aria-pressed': pressed === undefined ? undefined : String(pressed), disabled, onclick },
        h('span', { class: 'disc', html: icon }), h('span', {}, label));
    let controls = [];
    switch (c.state) {
      case 'calling':
        controls = [ctl('call-cancel', 'Cancel', icons.hangup, () => this.hangup(), { cls: 'red big' })];
        break;
      case 'ringing':
        controls = [
          ctl('incoming-reject', 'Decline', icons.hangup, () => this.reject(), { cls: 'red big' }),
          ctl('incoming-accept', 'Accept', c.mediaType === 'audio' ? icons.phone : icons.video, () => this.accept(), { cls: 'green big' }),
        ];
        break;
      case 'connecting':
      case 'active': {
        const video = !c.audioOnly;
        controls = [
          ctl('call-mute-mic', c.micMuted ? 'Unmute' : 'Mute', c.micMuted ? icons.micOff : icons.mic, () => this.#toggleMic(), { pressed: c.micMuted }),
          video && ctl('call-camera', c.camOff ? 'Camera on' : 'Camera off', c.camOff ? icons.videoOff : icons.video, () => this.#toggleCamera(), { pressed: c.camOff }),
          video && ctl('call-switch-audio', 'Audio only', icons.audio, () => this.#toAudio(c, true), { disabled: !c.callIDKnown }),
          c.isGroup && ctl('call-invite', 'Add', icons.userPlus, () => this.#openInvite(), { disabled: !c.callIDKnown }),
          ctl('call-hangup', 'Hang up', icons.hangup, () => this.hangup(), { cls: 'red' }),
        ];
        break;
      }
      case 'ended':
        controls = [
          c.canJoin && ctl('call-join', 'Join', icons.join, () => {
            const inviteID = c.inviteID;
            this.#close();
            this.joinCall(inviteID, { roomID: c.roomID, groupID: c.groupID });
          }, { cls: 'green' }),
          !c.isGroup && c.peers[0] && c.direction !== 'join' && ctl('call-back', 'Call again', icons.phone, () => {
            const peer = c.peers[0];
            this.#close();
            this.startCall(peer, c.mediaType);
          }),
          ctl('call-close', 'Close', icons.close, () => this.#close()),
        ];
        break;
    }
    $('#call-controls').replaceChildren(...controls.filter(Boolean));
  }

  // ---- tiles: one per remote participant ----

  #tile(c, userID) {
    let t = c.tiles.get(userID);
    if (t) return t;
    const video = h('video', { autoplay: true, playsinline: true, testid: 'remote-video', data: { user: userID } });
    const unmute = h('button', { class: 'btn small unmute', type: 'button', testid: 'tile-unmute', hidden: true }, 'Tap to unmute');
    const fig = h('figure', { class: 'tile no-video', testid: 'remote-tile', data: { user: userID } },
      video,
      h('div', { class: 'placeholder' }, avatar(userID, 'huge')),
      h('figcaption', {}, h('span', {}, userID), h('span', { class: 'muted-mic', html: icons.micOff })),
      unmute);
    video.addEventListener('resize', () => t.fit());
    unmute.addEventListener('click', () => {
      video.muted = false;
      video.play().catch(() => {});
      unmute.hidden = true;
    });
    t = {
      fig,
      video,
      // contain or cover: see COVER_MAX_RATIO.
      fit: () => {
        const r = fig.getBoundingClientRect();
        const { videoWidth: vw, videoHeight: vh } = video;
        let fit = 'contain';
        if (c.tiles.size > 1 && vw && vh && r.width && r.height) {
          const k = vw / vh / (r.width / r.height);
          if (k < COVER_MAX_RATIO && k > 1 / COVER_MAX_RATIO) fit = 'cover';
        }
        if (fig.dataset.fit !== fit) fig.dataset.fit = fit;
      },
      // The placeholder shows while there is no video track, or the
      // participant's video is unavailable (camera off, audio only).
      update: () => {
        const p = c.room?.participants.get(userID);
        const tracks = video.srcObject?.getVideoTracks().length ?? 0;
        fig.classList.toggle('no-video', tracks === 0 || (p !== undefined && !p.video));
      },
      setStream: (stream) => {
        if (video.srcObject === stream) return;
        video.srcObject = stream;
        mark(this.app, `stream.${userID}`);
        const firstFrame = () => mark(this.app, `frame.${userID}`);
        if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(firstFrame);
        else video.addEventListener('loadeddata', firstFrame, { once: true });
        // The stream is announced with its first track: the video may follow.
        stream.addEventListener('addtrack', () => t.update());
        stream.addEventListener('removetrack', () => t.update());
        t.update();
        video.muted = false;
        video.play().catch((err) => {
          if (err.name !== 'NotAllowedError') return;
          // Autoplay with sound needs a gesture: play muted, offer to unmute.
          video.muted = true;
          video.play().catch(() => {});
          unmute.hidden = false;
        });
      },
    };
    c.tiles.set(userID, t);
    this.tileSizes.observe(fig);
    if (c === this.cur) {
      $('#call-grid').append(fig);
      this.#render();
    }
    return t;
  }

  #fitTiles() {
    for (const t of this.cur?.tiles.values() ?? []) t.fit();
  }

  #removeTile(c, userID) {
    const t = c.tiles.get(userID);
    if (!t) return;
    t.video.srcObject = null;
    this.tileSizes.unobserve(t.fig);
    t.fig.remove();
    c.tiles.delete(userID);
  }
}
