// Call history of the signed-in user (getCallHistory), with a filter and
// paging.

import { h, $, avatar, fmtDuration, fmtTime, errorText } from './ui.js';

const RESULT_TEXT = {
  completed: 'completed',
  missed: 'missed',
  busy: 'busy',
  rejected: 'declined',
  cancelled: 'cancelled',
  no_answer: 'no answer',
  failed: 'failed',
};

export class History {
  constructor(app) {
    this.app = app;
    this.calls = [];
    this.cursor = '';
    this.seq = 0;
    $('#history-filter').addEventListener('change', () => this.load());
    $('#history-refresh').addEventListener('click', () => this.load());
    $('#history-more').addEventListener('click', () => this.load({ more: true }));
  }

  async load({ more = false } = {}) {
    const sb = this.app.sb;
    if (!sb) return;
    const seq = ++this.seq;
    const filter = $('#history-filter').value;
    try {
      const r = await sb.getCallHistory({ filter, limit: 20, cursor: more ? this.cursor : '' });
      if (seq !== this.seq) return;
      this.calls = more ? [...this.calls, ...r.calls] : r.calls;
      this.cursor = r.nextCursor;
      this.app.state.history = this.calls.map((c) => ({ callID: c.callID, caller: c.caller, result: c.result, duration: c.duration }));
      this.render();
    } catch (err) {
      $('#history-empty').hidden = false;
      $('#history-empty').textContent = `Could not load the history: ${errorText(err)}`;
    }
  }

  render() {
    const me = this.app.me;
    $('#history-list').replaceChildren(
      ...this.calls.map((c) => {
        const others = c.participants.map((p) => p.userID).filter((u) => u !== me);
        const who = c.groupID ? `${this.app.groups.name(c.groupID) ?? c.groupID}` : c.direction === 'incoming' ? c.caller : others.join(', ');
        const missed = ['missed', 'busy', 'no_answer'].includes(c.result) && c.direction === 'incoming';
        const details = [fmtTime(c.createdAt), `${c.mediaType}${c.groupID ? ' group' : ''} call`];
        if (c.result === 'completed') details.push(fmtDuration(c.duration));
        if (c.result === 'busy' && c.direction === 'incoming') details.push('your line was busy');
        return h('li', { testid: 'history-row', data: { callId: c.callID, result: c.result, direction: c.direction, caller: c.caller } },
          h('span', { class: `dir ${missed ? 'missed' : ''}`, title: c.direction, 'aria-label': c.direction }, c.direction === 'incoming' ? '↙' : '↗'),
          avatar(who || '?'),
          h('div', { class: 'grow' },
            h('div', { class: 'title' }, who || '(nobody)'),
            h('div', { class: 'sub' }, details.join(' · '))),
          h('span', { class: `pill ${c.result}`, testid: 'history-result' }, RESULT_TEXT[c.result] ?? c.result),
        );
      }),
    );
    const empty = $('#history-empty');
    empty.textContent = 'No calls.';
    empty.hidden = this.calls.length > 0;
    $('#history-more').hidden = !this.cursor;
  }
}
