// Groups: create a group, add members (inviteUserToGroup), start a group
// call (groupCall), and join a call in progress (joinCall) by its ID.

import { h, $, avatar, icons, toast, errorText } from './ui.js';

const HIDDEN_GROUPS = new Set(['lobby']); // the lobby is the contact list, not a group to call

export class Groups {
  constructor(app) {
    this.app = app;
    this.list = []; // [{groupID, name, owner, joinOption, memberCount, role}]
    this.memberLists = new Map(); // groupID → [userID]
    this.seq = 0;
    $('#group-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.#create();
    });
    $('#join-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const id = $('#join-call-id').value.trim();
      if (id) this.app.calls.joinCall(id);
    });
    $('#groups-refresh').addEventListener('click', () => this.load());
  }

  attach(sb) {
    const reload = (d) => sb === this.app.sb && !HIDDEN_GROUPS.has(d.groupID) && this.load();
    for (const name of ['onMemberEnter', 'onMemberLeave', 'onMemberKicked', 'onGroupDismissed']) sb.on(name, reload);
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
    } catch (err) {
      if (err.reason !== 'connection_lost' && err.reason !== 'closed') this.app.fail('groups', err);
    }
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
          h('div', { class: 'head' }, h('h3', {}, g.name), h('span', { class: 'id', title: 'group ID' }, g.groupID)),
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
