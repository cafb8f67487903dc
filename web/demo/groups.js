// Groups: create a group, add members (inviteUserToGroup), start a group
// call (groupCall), and see each group's running calls (getGroupCalls) with
// a Join button (joinCall): a member who was not rung, or declined, joins.

import { h, $, avatar, icons, toast, errorText } from './ui.js';

const HIDDEN_GROUPS = new Set(['lobby']); // the lobby is the contact list, not a group to call
const CALLS_POLL_MS = 10000; // the running calls are fetched again this often while the tab shows

export class Groups {
  constructor(app) {
    this.app = app;
    this.list = []; // [{groupID, name, owner, joinOption, memberCount, role}]
    this.memberLists = new Map(); // groupID → [userID]
    this.calls = new Map(); // groupID → its running calls [{callID, caller, mediaType, startTime, participants}]
    this.seq = 0;
    this.callsSeq = 0;
    setInterval(() => this.app.state.tab === 'groups' && this.refreshCalls(), CALLS_POLL_MS);
    $('#group-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.#create();
    });
    $('#groups-refresh').addEventListener('click', () => this.load());
  }

  attach(sb) {
    const reload = (d) => sb === this.app.sb && !HIDDEN_GROUPS.has(d.groupID) && this.load();
    for (const name of ['onMemberEnter', 'onMemberLeave', 'onMemberKicked', 'onGroupDismissed']) sb.on(name, reload);
    // A group call that rang here, began or ended: its group's calls changed.
    const calls = () => sb === this.app.sb && this.refreshCalls();
    for (const name of ['onReceiveNewInvitation', 'onCallBegin', 'onCallEnd', 'onInvitationTimeout', 'onInvitationCancelled']) sb.on(name, calls);
  }

  /** The name of a group this user is in, or undefined. */
  name(groupID) {
    return this.list.find((g) => g.groupID === groupID)?.name;
  }

  /** The members of a group this user is in (as last loaded). */
  members(groupID) {
    return this.memberLists.get(groupID) ?? [];
  }

  async load() {
    const sb = this.app.sb;
    if (!sb) return;
    const seq = ++this.seq;
    try {
      const list = (await sb.getJoinedGroupList()).filter((g) => !HIDDEN_GROUPS.has(g.groupID));
      const members = await Promise.all(list.map((g) => sb.getGroupMemberList(g.groupID).catch(() => [])));
      if (seq !== this.seq || sb !== this.app.sb) return;
      this.list = list;
      this.memberLists = new Map(list.map((g, i) => [g.groupID, members[i].map((m) => m.userID)]));
      this.render();
      await this.refreshCalls();
    } catch (err) {
      if (err.reason !== 'connection_lost' && err.reason !== 'closed') this.app.fail('groups', err);
    }
  }

  /** Fetches the running calls of every group (getGroupCalls) and shows them. */
  async refreshCalls() {
    const sb = this.app.sb;
    if (!sb || this.list.length === 0) return;
    const seq = ++this.callsSeq;
    const list = this.list;
    const found = await Promise.all(list.map((g) => sb.getGroupCalls(g.groupID).catch(() => null)));
    if (seq !== this.callsSeq || sb !== this.app.sb) return;
    list.forEach((g, i) => found[i] && this.calls.set(g.groupID, found[i]));
    this.app.state.groupCalls = Object.fromEntries(this.calls);
    this.render();
  }

  render() {
    const me = this.app.me;
    $('#group-list').replaceChildren(
      ...this.list.map((g) => {
        const members = this.members(g.groupID);
        const input = h('input', { placeholder: 'user name', testid: 'group-add-member-input', 'aria-label': `Add a member to ${g.name}`, autocapitalize: 'off', spellcheck: 'false' });
        const add = async (ev) => {
          ev.preventDefault();
          const users = input.value.split(',').map((u) => u.trim()).filter(Boolean);
          if (!users.length) return;
          try {
            await this.app.sb.inviteUserToGroup(g.groupID, users);
            input.value = '';
            toast(`Added ${users.join(', ')} to ${g.name}`);
            await this.load();
          } catch (err) {
            toast(`Could not add: ${errorText(err)}`, { error: true });
          }
        };
        const call = (mediaType) => this.app.calls.startGroupCall(g.groupID, members, mediaType);
        return h('div', { class: 'card group-card', testid: 'group-card', data: { groupId: g.groupID, name: g.name } },
          h('div', { class: 'head' }, h('h3', {}, g.name), h('span', { class: 'id' }, `${members.length} member${members.length === 1 ? '' : 's'}`)),
          this.#runningCalls(g),
          h('div', { class: 'members', testid: 'group-members-list' },
            members.map((u) => h('span', { class: 'chip', testid: 'group-member', data: { user: u } }, avatar(u), u === me ? `${u} (you)` : u))),
          h('form', { class: 'row', onsubmit: add }, input, h('button', { class: 'btn', type: 'submit', testid: 'group-add-member' }, 'Add')),
          h('div', { class: 'row' },
            h('button', { class: 'btn primary', type: 'button', testid: 'group-video-call', html: `${icons.video}<span>Video call</span>`, onclick: () => call('video') }),
            h('button', { class: 'btn', type: 'button', testid: 'group-audio-call', html: `${icons.phone}<span>Audio call</span>`, onclick: () => call('audio') })),
        );
      }),
    );
    $('#group-empty').hidden = this.list.length > 0;
  }

  /** The group's running calls, each with who is in it and a Join button. */
  #runningCalls(g) {
    const me = this.app.me;
    const calls = this.calls.get(g.groupID) ?? [];
    if (calls.length === 0) return null;
    const cur = this.app.state.call;
    return h('ul', { class: 'list compact running' },
      calls.map((c) => {
        const inIt = cur && cur.state !== 'ended' && cur.callID === c.callID;
        const who = c.participants.length ? c.participants.map((u) => (u === me ? 'you' : u)).join(', ') : `${c.caller} (ringing)`;
        return h('li', { testid: 'group-call', data: { callId: c.callID, caller: c.caller } },
          h('span', { class: 'live-dot', 'aria-hidden': 'true' }),
          h('div', { class: 'grow' },
            h('div', { class: 'title' }, `${c.mediaType === 'audio' ? 'Audio' : 'Video'} call in progress`),
            h('div', { class: 'sub', testid: 'group-call-who' }, who)),
          inIt
            ? h('span', { class: 'pill completed' }, 'You are in it')
            : h('button', { class: 'btn small green', type: 'button', testid: 'group-call-join', data: { callId: c.callID },
              html: `${icons.join}<span>Join</span>`, onclick: () => this.app.calls.joinCall(c.callID, { roomID: c.roomID, groupID: g.groupID }) }),
        );
      }));
  }

  async #create() {
    const name = $('#group-name').value.trim();
    const memberList = [...new Set($('#group-members').value.split(',').map((u) => u.trim()).filter(Boolean))];
    if (!name) return;
    try {
      await this.app.sb.createGroup({ name, memberList, joinOption: 'invite' });
      $('#group-name').value = '';
      $('#group-members').value = '';
      toast(`Group ${name} created`);
      await this.load();
    } catch (err) {
      toast(`Could not create the group: ${errorText(err)}`, { error: true });
    }
  }
}
