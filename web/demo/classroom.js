// Classroom: raise hands and pick a speaker, with plain group invitations.
//
// Design. A class is a group (joinOption "any": students join it by its ID).
// Two rounds, each one inviteInGroup from the teacher:
//
//  1. "raise_hand": the teacher invites every student, data
//     {"cmd":"raise_hand"}. A student raises their hand by accepting. An
//     invitation's events go to its inviter and all its invitees, so the
//     teacher AND every student see the list of raised hands grow
//     (onInviteeAccepted). Students who do nothing time out.
//
//  2. "speak": the teacher picks one student. Because an invitation's events
//     reach only the inviter and the invitees, inviting only the chosen
//     student would leave the rest of the class blind. So the teacher invites
//     the WHOLE class again, with data {"cmd":"speak","speaker":"s2"}: every
//     student's page shows "the teacher asked s2 to speak" on receiving it;
//     only s2 is offered to accept; s2's accept (onInviteeAccepted from s2)
//     makes every page show "s2 is speaking". The others never answer; their
//     part of the invitation times out (SPEAK_SECONDS), which ends the round.
//
// The invitations are stored (not onlineUserOnly), so a student who reloads
// the page gets the open round again when they reconnect.
//
// Media: the class has a live room, "class-<classID>" (ROOMS.md, Live
// rooms). The teacher creates it as its host (an anchor, camera and
// microphone on; seats approved by the host) and tells each student with a
// "class_live" invitation, which the student's page rejects at once after
// entering the room as audience: every student sees and hears the teacher.
// The "speak" round's data is a seat invitation (businessID live_seat, cmd
// pickSeat, userID the speaker): the speaker's accept makes the server put
// them on a seat, so they publish, and every page sees and hears them. The
// teacher's "Take off the mic" is kickSeat: their tracks end on every page.

import { h, $, avatar, icons, toast, errorText } from './ui.js';
import { Stage, validRoomID } from './stage.js';

const RAISE_SECONDS = 120;
const SPEAK_SECONDS = 60;

const LIVE_SECONDS = 30;

function parseRound(data) {
  try {
    const d = JSON.parse(data);
    if (d?.businessID === 'live_seat' && d.cmd === 'pickSeat') return { cmd: 'speak', speaker: d.userID, roomID: d.roomID };
    if (d && (d.cmd === 'raise_hand' || d.cmd === 'speak' || d.cmd === 'class_live')) return d;
  } catch {
    // not a classroom invitation
  }
  return null;
}

export class Classroom {
  constructor(app) {
    this.app = app;
    this.root = $('#panel-classroom');
    this.classID = app.params.get('class') ?? 'class-1';
    this.stage = new Stage(app, 'class-stage', () => {
      this.#onStage();
      this.render();
    });
    this.reset();
  }

  /** The class's room ID ('' when the class ID cannot be one). */
  roomID() {
    const id = `class-${this.classID}`;
    return validRoomID(id) ? id : '';
  }

  reset() {
    this.told = new Set(); // students told the class is live
    this.role = null; // teacher or student
    this.members = [];
    this.owner = '';
    this.raise = null; // {inviteID, from, hands: [], mine: pending|raised|declined|'', open}
    this.speak = null; // {inviteID, speaker, confirmed}
    this.busy = false;
    this.stage.leave();
    this.#publish();
    this.render();
  }

  signedIn() {
    this.render();
  }

  reconnected() {
    if (this.role) this.#loadMembers();
  }

  attach(sb) {
    const on = (name, fn) => sb.on(name, (d) => sb === this.app.sb && fn.call(this, d));
    on('onReceiveNewInvitation', this.#onInvitation);
    on('onInviteeAccepted', this.#onAccepted);
    on('onInvitationTimeout', this.#onEnded);
    on('onInvitationCancelled', this.#onEnded);
    const members = (d) => this.role && d.groupID === this.classID && this.#loadMembers();
    on('onMemberEnter', members);
    on('onMemberLeave', members);
  }

  // ---- events ----

  #onInvitation(inv) {
    const round = parseRound(inv.data);
    if (!round || !inv.groupID || inv.inviter === this.app.me) return;
    if (round.cmd === 'class_live') {
      // Only a signal to enter the room: answered at once.
      this.app.sb.reject(inv.inviteID).catch(() => {});
      if (this.role !== 'student' || this.classID !== inv.groupID) {
        this.classID = inv.groupID;
        this.role = 'student';
        this.#loadMembers();
      }
      this.#enterStage();
      return;
    }
    if (this.role !== 'student' || this.classID !== inv.groupID) {
      // An invitation from a class we are a member of: follow it.
      this.classID = inv.groupID;
      this.role = 'student';
      this.#loadMembers();
    }
    this.#enterStage(); // a round: the class is live
    if (round.cmd === 'raise_hand') {
      if (this.raise?.inviteID === inv.inviteID) return; // delivered again after a reconnect
      this.raise = { inviteID: inv.inviteID, from: inv.inviter, hands: [], mine: 'pending', open: true };
      toast(`${inv.inviter} asks who wants to speak`);
    } else {
      if (this.speak?.inviteID === inv.inviteID) return;
      this.speak = { inviteID: inv.inviteID, speaker: String(round.speaker ?? ''), confirmed: false };
    }
    this.#markTab();
    this.render();
  }

  #onAccepted(d) {
    if (this.raise?.inviteID === d.inviteID && !this.raise.hands.includes(d.invitee)) {
      this.raise.hands.push(d.invitee);
      this.render();
    }
    if (this.speak?.inviteID === d.inviteID && d.invitee === this.speak.speaker) {
      this.speak.confirmed = true;
      this.render();
    }
  }

  // A round ends by timeout or cancel: a pending prompt goes away.
  #onEnded(d) {
    const r = this.raise;
    if (r?.inviteID !== d.inviteID) return;
    r.open = false;
    if (r.mine === 'pending') r.mine = '';
    this.render();
  }

  // ---- actions ----

  async #open(role) {
    const sb = this.app.sb;
    const classID = this.root.querySelector('[data-testid="class-id"]').value.trim();
    if (!classID) return;
    this.busy = true;
    this.render();
    try {
      if (role === 'teacher') {
        try {
          await sb.createGroup({ groupID: classID, name: `Class ${classID}`, joinOption: 'any' });
        } catch (err) {
          if (err.code !== 10021) throw err; // group_exists: teach the existing class
          await sb.joinGroup(classID).catch((e) => {
            if (e.code !== 10013) throw e; // already_member
          });
        }
      } else {
        try {
          await sb.joinGroup(classID);
        } catch (err) {
          if (err.code === 10010) throw new Error(`there is no class "${classID}" yet: the teacher opens it first`);
          if (err.code !== 10013) throw err;
        }
      }
      this.classID = classID;
      this.role = role;
      this.raise = null;
      this.speak = null;
      if (role === 'teacher' && this.roomID()) {
        // The teacher's room: camera and microphone on, seats given by the teacher.
        await this.stage.enter(this.roomID(), { role: 'anchor', seats: 4, seatMode: 'apply', media: true });
      } else if (role === 'student') {
        this.#enterStage(); // if the teacher is live already
      }
      await this.#loadMembers();
    } catch (err) {
      toast(`Could not open the class: ${errorText(err)}`, { error: true });
    } finally {
      this.busy = false;
      this.render();
    }
  }

  async #loadMembers() {
    try {
      const list = await this.app.sb.getGroupMemberList(this.classID);
      this.members = list.map((m) => m.userID);
      this.owner = list.find((m) => m.role === 'owner')?.userID ?? '';
    } catch (err) {
      if (err.reason !== 'connection_lost') this.app.fail('class members', err);
    }
    this.#tellLive();
    this.render();
  }

  // The teacher tells every student not told yet that the class is live.
  #tellLive() {
    if (this.role !== 'teacher' || !this.stage.room || this.stage.room.exited) return;
    const fresh = this.#students().filter((u) => !this.told.has(u));
    if (fresh.length === 0) return;
    for (const u of fresh) this.told.add(u);
    this.app.sb.inviteInGroup({
      groupID: this.classID, inviteeList: fresh, timeout: LIVE_SECONDS,
      data: JSON.stringify({ cmd: 'class_live', class: this.classID, roomID: this.roomID() }),
    }).catch((err) => {
      for (const u of fresh) this.told.delete(u);
      if (err.reason !== 'connection_lost') this.app.fail('class live', err);
    });
  }

  // A student enters the class's room as audience, once the teacher hosts
  // it: a room this page would create itself (host: this student) is left.
  async #enterStage() {
    if (this.role !== 'student' || !this.roomID() || this.stage.room) return;
    const room = await this.stage.enter(this.roomID(), { role: 'audience' });
    if (room && room.info.host === this.app.me) await this.stage.leave(); // the teacher is not live yet
  }

  // Room events: the speaker left the mic (taken off, or left): the round is over.
  #onStage() {
    const s = this.speak;
    const room = this.stage.room;
    if (!s?.confirmed || !room) return;
    const onMic = room.info.seats?.some((x) => x.userID === s.speaker);
    if (onMic) s.seated = true;
    else if (s.seated) this.speak = { ...s, confirmed: false, ended: true };
  }

  async #takeOff(user) {
    try {
      await this.stage.room?.kickSeat(user);
    } catch (err) {
      toast(`Could not take ${user} off the mic: ${errorText(err)}`, { error: true });
    }
  }

  #students() {
    return this.members.filter((u) => u !== this.app.me);
  }

  async #askHands() {
    const students = this.#students();
    if (students.length === 0) {
      toast('No students in the class yet', { error: true });
      return;
    }
    const sb = this.app.sb;
    // A round nobody answered is cancelled; answered rounds simply time out.
    if (this.raise?.open && this.raise.hands.length === 0) sb.cancel(this.raise.inviteID).catch(() => {});
    try {
      const inviteID = await sb.inviteInGroup({
        groupID: this.classID, inviteeList: students, data: JSON.stringify({ cmd: 'raise_hand', class: this.classID }), timeout: RAISE_SECONDS,
      });
      this.raise = { inviteID, from: this.app.me, hands: [], mine: '', open: true };
      this.speak = null;
    } catch (err) {
      toast(`Could not ask: ${errorText(err)}`, { error: true });
    }
    this.render();
  }

  async #pick(user) {
    try {
      // A seat invitation naming the speaker: their accept puts them on the mic.
      const data = { businessID: 'live_seat', cmd: 'pickSeat', roomID: this.roomID(), userID: user, speaker: user, class: this.classID };
      const inviteID = await this.app.sb.inviteInGroup({
        groupID: this.classID, inviteeList: this.#students(), data: JSON.stringify(data), timeout: SPEAK_SECONDS,
      });
      this.speak = { inviteID, speaker: user, confirmed: false };
    } catch (err) {
      toast(`Could not pick ${user}: ${errorText(err)}`, { error: true });
    }
    this.render();
  }

  async #answerRaise(raise) {
    const r = this.raise;
    try {
      if (raise) await this.app.sb.accept(r.inviteID, JSON.stringify({ cmd: 'raise_hand' }));
      else await this.app.sb.reject(r.inviteID);
      r.mine = raise ? 'raised' : 'declined';
      if (raise && !r.hands.includes(this.app.me)) r.hands.push(this.app.me);
    } catch (err) {
      r.mine = '';
      toast(err.code === 8010 ? 'That question has closed' : `Could not answer: ${errorText(err)}`, { error: true });
    }
    this.render();
  }

  async #startSpeaking() {
    const s = this.speak;
    try {
      // The camera and microphone first: published once the server puts us on the mic.
      await this.#enterStage();
      await this.stage.startMedia();
      await this.app.sb.accept(s.inviteID, JSON.stringify({ cmd: 'speak' }));
      s.confirmed = true;
    } catch (err) {
      toast(`Could not accept: ${errorText(err)}`, { error: true });
    }
    this.render();
  }

  // ---- view ----

  #markTab() {
    const tab = $('[data-testid="tab-classroom"]');
    if (this.app.state.tab !== 'classroom' && !tab.querySelector('.badge')) tab.append(h('span', { class: 'badge' }));
  }

  #publish() {
    this.app.state.classroom = {
      classID: this.classID, role: this.role, members: [...this.members],
      hands: this.raise ? [...this.raise.hands] : [], myHand: this.raise?.mine ?? '',
      speaker: this.speak?.speaker ?? '', speakerConfirmed: this.speak?.confirmed ?? false,
      roomID: this.stage?.room?.roomID ?? '', roomRole: this.stage?.room?.role ?? '', stage: this.stage?.users() ?? [],
      onMic: (this.stage?.room?.info.seats ?? []).filter((x) => x.userID).map((x) => x.userID),
    };
  }

  render() {
    const typed = this.root.querySelector('[data-testid="class-id"]')?.value.trim();
    if (typed && !this.role) this.classID = typed; // keep what is being typed
    this.#publish();
    if (this.app.state.tab === 'classroom') $('[data-testid="tab-classroom"] .badge')?.remove();
    const me = this.app.me;
    const teacher = this.role === 'teacher';
    const parts = [];

    if (this.role) {
      parts.push(h('div', { class: 'card class-bar' },
        h('div', { class: 'grow' },
          h('div', { class: 'title' }, `Class ${this.classID}`),
          h('div', { class: 'sub', testid: 'class-role', data: { role: this.role } },
            `You are ${teacher ? 'the teacher' : 'a student'} · ${this.members.length} in the class`)),
        h('button', { class: 'btn ghost small', type: 'button', testid: 'class-change', onclick: () => this.reset() }, 'Change')));
    } else {
      parts.push(h('div', { class: 'card class-setup' },
        h('h2', {}, 'Classroom'),
        h('p', { class: 'muted small' }, 'The teacher asks the class who wants to speak; students raise their hands; the teacher picks one, and everyone sees who speaks. Built from group invitations only.'),
        h('label', { for: 'class-id' }, 'Class ID'),
        h('input', { id: 'class-id', testid: 'class-id', value: this.classID, spellcheck: 'false', autocapitalize: 'off' }),
        h('div', { class: 'two' },
          h('button', { class: 'btn primary', type: 'button', testid: 'class-teach', disabled: this.busy, onclick: () => this.#open('teacher') }, 'Teach this class'),
          h('button', { class: 'btn', type: 'button', testid: 'class-join', disabled: this.busy, onclick: () => this.#open('student') }, 'Join as student'))));
    }

    if (!this.role) {
      this.root.replaceChildren(...parts);
      return;
    }

    // Who speaks: seen by everyone who was invited to the speak round.
    parts.push(this.stage.el);
    if (this.speak?.speaker && !this.speak.ended) {
      const s = this.speak;
      const who = s.speaker === me ? 'You' : s.speaker;
      parts.push(h('div', { class: 'speaker', testid: 'class-speaker', data: { state: s.confirmed ? 'speaking' : 'asked', speaker: s.speaker } },
        h('span', { class: 'hand', html: s.confirmed ? icons.mic : icons.hand }),
        avatar(s.speaker),
        h('div', {},
          h('div', { class: 'label' }, s.confirmed ? 'Now speaking' : 'Invited to speak'),
          h('div', { class: 'who' }, s.confirmed ? `${who} ${s.speaker === me ? 'are' : 'is'} speaking` : `The teacher asked ${s.speaker} to speak`)),
        teacher && s.confirmed && h('button', { class: 'btn small', type: 'button', testid: 'class-take-off', data: { user: s.speaker }, onclick: () => this.#takeOff(s.speaker) }, 'Take off the mic')));
      if (!teacher && s.speaker === me && !s.confirmed) {
        parts.push(h('div', { class: 'prompt', testid: 'class-speak-prompt' },
          h('h3', {}, 'The teacher invites you to speak'),
          h('button', { class: 'btn green', type: 'button', testid: 'class-accept-speak', onclick: () => this.#startSpeaking() }, 'Start speaking')));
      }
    }

    if (!teacher && this.raise?.mine === 'pending') {
      parts.push(h('div', { class: 'prompt', testid: 'class-prompt' },
        h('h3', {}, `${this.raise.from} asks: who wants to speak?`),
        h('div', { class: 'row' },
          h('button', { class: 'btn primary', type: 'button', testid: 'class-raise-hand', onclick: () => this.#answerRaise(true) }, [h('span', { class: 'hand', html: icons.hand }), 'Raise hand']),
          h('button', { class: 'btn', type: 'button', testid: 'class-decline', onclick: () => this.#answerRaise(false) }, 'Not now'))));
    } else if (!teacher && this.raise?.mine === 'raised') {
      parts.push(h('p', { class: 'muted', testid: 'class-my-hand' }, 'Your hand is up.'));
    }

    if (teacher) {
      const n = this.#students().length;
      parts.push(h('div', { class: 'card' },
        h('button', { class: 'btn primary wide', type: 'button', testid: 'class-ask-hands', onclick: () => this.#askHands() }, [h('span', { class: 'hand', html: icons.hand }), 'Ask who wants to speak']),
        h('p', { class: 'small muted', testid: 'class-round-status' },
          this.raise ? (this.raise.open ? `Asked ${n} student${n === 1 ? '' : 's'}; waiting for hands.` : 'The question has closed.') : `${n} student${n === 1 ? '' : 's'} in the class.`)));
    }

    if (this.raise) {
      parts.push(h('div', { class: 'panel-head' }, h('h2', {}, 'Raised hands')));
      parts.push(this.raise.hands.length
        ? h('ul', { class: 'list', testid: 'class-hands' },
          this.raise.hands.map((u) => h('li', { testid: 'class-hand', data: { user: u } },
            h('span', { class: 'hand', html: icons.hand }), avatar(u),
            h('div', { class: 'grow' }, h('div', { class: 'title' }, u === me ? `${u} (you)` : u)),
            teacher && h('button', { class: 'btn small primary', type: 'button', testid: 'class-pick', data: { user: u }, onclick: () => this.#pick(u) },
              this.speak?.speaker === u ? 'Asked' : 'Let speak'))))
        : h('p', { class: 'empty', testid: 'class-hands-empty' }, 'No hands yet.'));
    }

    parts.push(h('div', { class: 'panel-head' }, h('h2', {}, `Class members (${this.members.length})`)));
    parts.push(h('ul', { class: 'list', testid: 'class-members' },
      this.members.map((u) => h('li', { testid: 'class-member', data: { user: u } }, avatar(u),
        h('div', { class: 'grow' }, h('div', { class: 'title' }, u === me ? `${u} (you)` : u),
          h('div', { class: 'sub' }, u === this.owner ? 'teacher' : 'student'))))));

    this.root.replaceChildren(...parts);
  }
}
