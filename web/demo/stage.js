// A media stage for the classroom and the live room: one room of the SDK
// with a room token from the dev server, a tile per remote anchor (video
// with sound), and the local preview while this page publishes.
//
// Who is on the stage follows the server: the anchors' streams come and go
// with room events; this page publishes its camera and microphone only
// while the server has it as an anchor (the SDK follows onSwitchRole).

import { Switchboard } from '/sdk/switchboard.js';
import { h, avatar, errorText } from './ui.js';

const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;

export const validRoomID = (id) => ROOM_RE.test(id);

/** A room token for the signed-in user (dev servers). */
async function roomToken(user, roomID) {
  const res = await fetch(`/api/dev/token?user=${encodeURIComponent(user)}&room=${encodeURIComponent(roomID)}`, { cache: 'no-store' });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body?.error?.message ?? `room token: HTTP ${res.status}`);
  return body.token;
}

export class Stage {
  /** onChange is called after anything shown changed. */
  constructor(app, testid, onChange) {
    this.app = app;
    this.onChange = onChange;
    this.el = h('div', { class: 'stage', testid });
    this.room = null;
    this.stream = null; // the local camera and microphone, while wanted
    this.tiles = new Map(); // userID → {fig, video}
    this.entering = null;
  }

  /** Enters roomID (once); resolves with the room, or null on failure (reported). */
  enter(roomID, { role = 'audience', seats, seatMode, media = false } = {}) {
    if (this.room && !this.room.exited) return Promise.resolve(this.room);
    this.entering ??= this.#enter(roomID, { role, seats, seatMode, media }).finally(() => (this.entering = null));
    return this.entering;
  }

  async #enter(roomID, { role, seats, seatMode, media }) {
    const sb = this.app.sb;
    try {
      if (media) await this.startMedia();
      const token = await roomToken(this.app.me, roomID);
      const room = await sb.enterRoom(roomID, { role, roomToken: token, localStream: this.stream, seats, seatMode });
      this.room = room;
      room.on('remoteStream', ({ userID, stream }) => this.#setStream(userID, stream));
      room.on('remoteStreamRemoved', ({ userID }) => this.#removeTile(userID));
      room.on('onExitRoom', () => {
        if (this.room === room) this.leave();
      });
      room.on('onSwitchRole', (d) => {
        if (!d.code && d.role === 'audience') this.stopMedia();
        this.#changed();
      });
      for (const name of ['onSeatListChange', 'onRoomHostChanged', 'onAudienceListChange', 'onRemoteUserLeaveRoom', 'onRemoteUserEnterRoom']) {
        room.on(name, () => this.#changed());
      }
      room.on('error', (err) => this.app.fail(`room ${roomID}`, err));
      this.#changed();
      return room;
    } catch (err) {
      this.stopMedia();
      this.app.toast(`Could not enter the room: ${errorText(err)}`, { error: true });
      if (err.reason !== 'connection_lost' && err.reason !== 'closed') this.app.fail(`enter ${roomID}`, err);
      return null;
    }
  }

  /** Turns the camera and microphone on (kept for when this page is on mic). */
  async startMedia() {
    if (this.stream) return this.stream;
    try {
      this.stream = await Switchboard.getCameraStream({ audio: true, video: this.app.videoConstraints() });
      this.app.mediaError(null);
    } catch (err) {
      this.app.mediaError(err);
      return null;
    }
    this.room?.setLocalStream(this.stream);
    this.#changed();
    return this.stream;
  }

  stopMedia() {
    for (const t of this.stream?.getTracks() ?? []) t.stop();
    this.stream = null;
    this.#changed();
  }

  async leave() {
    const room = this.room;
    this.room = null;
    for (const u of [...this.tiles.keys()]) this.#removeTile(u);
    this.stopMedia();
    if (room && !room.exited) await room.exit().catch(() => {});
    this.#changed();
  }

  /** The users whose streams play on this page. */
  users() {
    return [...this.tiles.keys()];
  }

  #setStream(userID, stream) {
    let t = this.tiles.get(userID);
    if (!t) {
      const video = h('video', { autoplay: true, playsinline: true, testid: 'stage-video', data: { user: userID } });
      const fig = h('figure', { class: 'tile stage-tile', testid: 'stage-tile', data: { user: userID } },
        video, h('figcaption', {}, avatar(userID, 'small'), h('span', {}, userID)));
      t = { fig, video };
      this.tiles.set(userID, t);
    }
    if (t.video.srcObject !== stream) {
      t.video.srcObject = stream;
      t.video.muted = false;
      t.video.play().catch(() => {
        // Autoplay with sound needs a gesture: play muted rather than not at all.
        t.video.muted = true;
        t.video.play().catch(() => {});
      });
    }
    this.#changed();
  }

  #removeTile(userID) {
    const t = this.tiles.get(userID);
    if (!t) return;
    t.video.srcObject = null;
    t.fig.remove();
    this.tiles.delete(userID);
    this.#changed();
  }

  #changed() {
    this.render();
    this.onChange?.();
  }

  /** Redraws the tiles and the local preview into this.el. */
  render() {
    const kids = [];
    if (this.stream && this.room?.role === 'anchor') {
      if (this.localFig?.stream !== this.stream) {
        const video = h('video', { autoplay: true, playsinline: true, muted: true, testid: 'stage-local' });
        video.muted = true;
        video.srcObject = this.stream;
        this.localFig = { stream: this.stream, fig: h('figure', { class: 'tile stage-tile local' }, video, h('figcaption', {}, h('span', {}, 'You'))) };
      }
      kids.push(this.localFig.fig);
    }
    for (const t of this.tiles.values()) kids.push(t.fig);
    if (kids.length === 0) kids.push(h('p', { class: 'empty' }, this.room ? 'Nobody is on the stage yet.' : 'Not in the room.'));
    this.el.replaceChildren(...kids);
  }
}
