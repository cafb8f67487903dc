// Live room: a host on camera, an audience, seats (ROOMS.md, Live rooms).
//
// The host creates the room (seatMode "apply": only the host puts people on
// the mic). An audience member asks for the mic with a signaling invitation
// to the host whose data is a seat request ({"businessID":"live_seat",
// "cmd":"takeSeat","roomID":…}); the host's accept makes the server switch
// them to anchor, and their camera and microphone reach every page. The
// host may also invite an audience member ("cmd":"pickSeat"), take someone
// off the mic (kickSeat); an anchor may leave the mic (leaveSeat).

import { h, avatar, toast, errorText } from './ui.js';
import { Stage, validRoomID } from './stage.js';

const REQUEST_SECONDS = 60;

function seatData(data) {
  try {
    const d = JSON.parse(data);
    if (d?.businessID === 'live_seat' && (d.cmd === 'takeSeat' || d.cmd === 'pickSeat') && d.roomID) return d;
  } catch {
    // not a seat invitation
  }
  return null;
}

export class Live {
  constructor(app) {
    this.app = app;
    this.root = document.querySelector('#panel-live');
    this.roomID = app.params.get('live') ?? 'live-1';
    this.stage = new Stage(app, 'live-stage', () => this.render());
    this.reset();
  }

  reset() {
    this.requests = []; // the host's pending mic requests: {inviteID, from}
    this.invite = null; // a mic invitation to this page: {inviteID, from}
    this.myRequest = ''; // the inviteID of this page's pending request
    this.busy = false;
    this.stage.leave();
    this.render();
  }

  attach(sb) {
    const on = (name, fn) => sb.on(name, (d) => sb === this.app.sb && fn.call(this, d));
    on('onReceiveNewInvitation', this.#onInvitation);
    for (const name of ['onInvitationCancelled', 'onInvitationTimeout', 'onInviteeAccepted', 'onInviteeRejected']) on(name, this.#onEnded);
  }

  get room() {
    return this.stage.room;
  }

  #onInvitation(inv) {
    const d = seatData(inv.data);
    if (!d || d.roomID !== this.room?.roomID || inv.inviter === this.app.me) return;
    if (d.cmd === 'takeSeat' && this.room.info.host === this.app.me) {
      if (!this.requests.some((r) => r.inviteID === inv.inviteID)) this.requests.push({ inviteID: inv.inviteID, from: inv.inviter });
    } else if (d.cmd === 'pickSeat') {
      this.invite = { inviteID: inv.inviteID, from: inv.inviter };
    }
    this.render();
  }

  #onEnded(d) {
    this.requests = this.requests.filter((r) => r.inviteID !== d.inviteID);
    if (this.invite?.inviteID === d.inviteID) this.invite = null;
    if (this.myRequest === d.inviteID) this.myRequest = '';
    this.render();
  }

  async #open(host) {
    const id = this.root.querySelector('[data-testid="live-room-id"]').value.trim();
    if (!validRoomID(id)) {
      toast('A room ID is 1-64 letters, digits, _ or -', { error: true });
      return;
    }
    this.roomID = id;
    this.busy = true;
    this.render();
    const room = await this.stage.enter(id, host ? { role: 'anchor', seats: 4, seatMode: 'apply', media: true } : { role: 'audience' });
    this.busy = false;
    if (room && !host && room.info.host === this.app.me) {
      // This page created the room: it is nobody's show yet.
      await this.stage.leave();
      toast(`Room ${id} has no host yet: the host opens it first`, { error: true });
    }
    this.render();
  }

  async #requestMic() {
    const host = this.room?.info.host;
    if (!host) return;
    try {
      await this.stage.startMedia(); // published once the host accepts
      this.myRequest = await this.app.sb.invite({
        invitee: host, timeout: REQUEST_SECONDS,
        data: JSON.stringify({ businessID: 'live_seat', cmd: 'takeSeat', roomID: this.room.roomID }),
      });
    } catch (err) {
      toast(`Could not ask for the mic: ${errorText(err)}`, { error: true });
    }
    this.render();
  }

  async #inviteToMic(user) {
    try {
      await this.app.sb.invite({
        invitee: user, timeout: REQUEST_SECONDS,
        data: JSON.stringify({ businessID: 'live_seat', cmd: 'pickSeat', roomID: this.room.roomID, userID: user }),
      });
      toast(`${user} is invited to the mic`);
    } catch (err) {
      toast(`Could not invite ${user}: ${errorText(err)}`, { error: true });
    }
  }

  async #answer(inviteID, yes) {
    try {
      if (yes) await this.app.sb.accept(inviteID);
      else await this.app.sb.reject(inviteID);
    } catch (err) {
      toast(`Could not answer: ${errorText(err)}`, { error: true });
    }
    this.requests = this.requests.filter((r) => r.inviteID !== inviteID);
    this.render();
  }

  async #acceptInvite() {
    const inv = this.invite;
    this.invite = null;
    await this.stage.startMedia();
    await this.#answer(inv.inviteID, true);
  }

  async #act(what, f) {
    try {
      await f();
    } catch (err) {
      toast(`Could not ${what}: ${errorText(err)}`, { error: true });
    }
    this.render();
  }

  #publish() {
    const r = this.room;
    this.app.state.live = {
      roomID: r?.roomID ?? '', role: r?.role ?? '', host: r?.info.host ?? '',
      seats: (r?.info.seats ?? []).map((s) => s.userID), audience: [...(r?.info.audience ?? [])],
      requests: this.requests.map((x) => x.from), invitedBy: this.invite?.from ?? '', stage: this.stage.users(),
    };
  }

  render() {
    this.#publish();
    if (!this.root) return;
    const me = this.app.me;
    const r = this.room;
    const parts = [];
    if (!r) {
      parts.push(h('div', { class: 'card class-setup' },
        h('h2', {}, 'Live room'),
        h('p', { class: 'muted small' }, 'The host is on camera; the audience watches and may ask for the mic. The host accepts, and everyone hears them.'),
        h('label', { for: 'live-room-id' }, 'Room ID'),
        h('input', { id: 'live-room-id', testid: 'live-room-id', value: this.roomID, spellcheck: 'false', autocapitalize: 'off' }),
        h('div', { class: 'two' },
          h('button', { class: 'btn primary', type: 'button', testid: 'live-host', disabled: this.busy, onclick: () => this.#open(true) }, 'Host this room'),
          h('button', { class: 'btn', type: 'button', testid: 'live-join', disabled: this.busy, onclick: () => this.#open(false) }, 'Join the audience'))));
      this.root.replaceChildren(...parts);
      return;
    }
    const isHost = r.info.host === me;
    const onMic = r.role === 'anchor';
    parts.push(h('div', { class: 'card class-bar' },
      h('div', { class: 'grow' },
        h('div', { class: 'title' }, `Room ${r.roomID}`),
        h('div', { class: 'sub', testid: 'live-role', data: { role: isHost ? 'host' : r.role } },
          isHost ? 'You are the host' : onMic ? 'You are on the mic' : `You are in the audience · host ${r.info.host || 'none'}`)),
      h('button', { class: 'btn ghost small', type: 'button', testid: 'live-leave', onclick: () => this.reset() }, 'Leave')));
    parts.push(this.stage.el);

    if (!isHost && !onMic) {
      parts.push(this.myRequest
        ? h('p', { class: 'muted', testid: 'live-request-pending' }, 'You asked for the mic; waiting for the host.')
        : h('button', { class: 'btn primary wide', type: 'button', testid: 'live-request-mic', onclick: () => this.#requestMic() }, 'Ask for the mic'));
    }
    if (!isHost && onMic) {
      parts.push(h('button', { class: 'btn wide', type: 'button', testid: 'live-leave-mic', onclick: () => this.#act('leave the mic', () => r.leaveSeat()) }, 'Leave the mic'));
    }
    if (this.invite && !onMic) {
      parts.push(h('div', { class: 'prompt', testid: 'live-mic-invite' },
        h('h3', {}, `${this.invite.from} invites you to the mic`),
        h('div', { class: 'row' },
          h('button', { class: 'btn green', type: 'button', testid: 'live-accept-invite', onclick: () => this.#acceptInvite() }, 'Go on the mic'),
          h('button', { class: 'btn', type: 'button', testid: 'live-decline-invite', onclick: () => { const i = this.invite; this.invite = null; this.#answer(i.inviteID, false); } }, 'Not now'))));
    }
    if (isHost && this.requests.length) {
      parts.push(h('div', { class: 'panel-head' }, h('h2', {}, 'Asking for the mic')));
      parts.push(h('ul', { class: 'list', testid: 'live-requests' }, this.requests.map((q) =>
        h('li', { testid: 'live-request', data: { user: q.from } }, avatar(q.from),
          h('div', { class: 'grow' }, h('div', { class: 'title' }, q.from)),
          h('button', { class: 'btn small green', type: 'button', testid: 'live-accept-request', data: { user: q.from }, onclick: () => this.#answer(q.inviteID, true) }, 'Accept'),
          h('button', { class: 'btn small', type: 'button', testid: 'live-reject-request', data: { user: q.from }, onclick: () => this.#answer(q.inviteID, false) }, 'Decline')))));
    }
    parts.push(h('div', { class: 'panel-head' }, h('h2', {}, 'Seats')));
    parts.push(h('ul', { class: 'list', testid: 'live-seats' }, (r.info.seats ?? []).map((s) =>
      h('li', { testid: 'live-seat', data: { index: String(s.index), user: s.userID } },
        s.userID ? avatar(s.userID) : h('span', { class: 'avatar empty-seat' }, String(s.index + 1)),
        h('div', { class: 'grow' }, h('div', { class: 'title' }, s.userID ? (s.userID === me ? `${s.userID} (you)` : s.userID) : 'free')),
        isHost && s.userID && h('button', { class: 'btn small', type: 'button', testid: 'live-kick', data: { user: s.userID },
          onclick: () => this.#act(`take ${s.userID} off`, () => r.kickSeat(s.userID)) }, 'Take off')))));
    if (isHost) {
      const audience = r.info.audience ?? [];
      parts.push(h('div', { class: 'panel-head' }, h('h2', {}, `Audience (${audience.length})`)));
      parts.push(h('ul', { class: 'list', testid: 'live-audience' }, audience.map((u) =>
        h('li', { testid: 'live-audience-member', data: { user: u } }, avatar(u),
          h('div', { class: 'grow' }, h('div', { class: 'title' }, u)),
          h('button', { class: 'btn small primary', type: 'button', testid: 'live-invite-mic', data: { user: u }, onclick: () => this.#inviteToMic(u) }, 'Invite to the mic')))));
    }
    this.root.replaceChildren(...parts);
  }
}
