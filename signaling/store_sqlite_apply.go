package signaling

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/sqlitedb"
)

// Statements run by the writer; each is prepared once per connection.
const (
	sqlBegin         = `BEGIN IMMEDIATE`
	sqlCommit        = `COMMIT`
	sqlRollback      = `ROLLBACK`
	sqlSavepoint     = `SAVEPOINT apply`
	sqlRelease       = `RELEASE apply`
	sqlRollbackTo    = `ROLLBACK TO apply`
	sqlPutInvitation = `INSERT INTO sig_invitations (id, inviter, group_id, data, created_at, deadline, push_info, invitees)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`
	// sqlSetInviteeState changes the state and time of the first element
	// of the invitation's invitees naming the user (?4); none: nothing.
	sqlSetInviteeState = `UPDATE sig_invitations
		SET invitees = json_replace(invitees, '$[' || e.key || '][1]', ?1, '$[' || e.key || '][2]', ?2)
		FROM (SELECT j.key FROM sig_invitations AS i, json_each(i.invitees) AS j
			WHERE i.id = ?3 AND j.value ->> 0 = ?4 LIMIT 1) AS e
		WHERE id = ?3`
	sqlSetInvitationData = `UPDATE sig_invitations SET data = ? WHERE id = ?`
	sqlDeleteInvitation  = `DELETE FROM sig_invitations WHERE id = ?`
	sqlPutGroup          = `INSERT INTO sig_groups (id, name, owner, join_option, created_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	// sqlAddMember adds nothing when the group does not exist or the user is
	// already a member.
	sqlAddMember = `INSERT INTO sig_group_members (group_id, user_id, role, joined_at, added_by)
		SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM sig_groups WHERE id = ?1)
		ON CONFLICT (group_id, user_id) DO NOTHING`
	sqlRemoveMember = `DELETE FROM sig_group_members WHERE group_id = ? AND user_id = ?`
	sqlDeleteGroup  = `DELETE FROM sig_groups WHERE id = ?`
	sqlAppendOutbox = `INSERT INTO sig_outbox (seq, user_id, sender, event, data, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`
	sqlDeleteOutbox      = `DELETE FROM sig_outbox WHERE user_id = ? AND seq <= ?`
	sqlDeleteOutboxEntry = `DELETE FROM sig_outbox WHERE user_id = ? AND seq = ?`
	sqlPurgeOutbox       = `DELETE FROM sig_outbox WHERE expires_at <= ?`
	sqlPutUser           = `INSERT INTO sig_users (user_id) VALUES (?) ON CONFLICT (user_id) DO NOTHING`
	sqlSetCustomStatus   = `INSERT INTO sig_user_status (user_id, custom_status) VALUES (?, ?)
		ON CONFLICT (user_id) DO UPDATE SET custom_status = excluded.custom_status`
	sqlDeleteCustomStatus = `DELETE FROM sig_user_status WHERE user_id = ?`
)

func (s *SQLiteStore) applyAll(ctx context.Context, muts []Mutation) error {
	for _, m := range muts {
		if err := s.apply(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// apply runs one mutation inside the writer's transaction.
func (s *SQLiteStore) apply(ctx context.Context, m Mutation) error {
	switch m := m.(type) {
	case PutInvitation:
		inv := m.Invitation
		op := func() string { return fmt.Sprintf("put invitation %q", inv.ID) } // only on failure
		created, err := sqlitedb.Time(inv.CreatedAt)
		if err != nil {
			return sqliteErr(op(), err)
		}
		deadline, err := sqlitedb.Time(inv.Deadline)
		if err != nil {
			return sqliteErr(op(), err)
		}
		invitees, err := sqliteInviteesJSON(s.jsonBuf[:0], inv.Invitees)
		if err != nil {
			return sqliteErr(op(), err)
		}
		s.jsonBuf = invitees
		if err := s.exec(ctx, sqlPutInvitation, inv.ID, inv.Inviter, inv.GroupID, inv.Data, created, deadline, inv.PushInfo, string(invitees)); err != nil {
			return sqliteErr(op(), err)
		}
	case SetInviteeState:
		op := func() string { return fmt.Sprintf("set state of invitee %q of invitation %q", m.UserID, m.InviteID) }
		if _, err := ParseInviteeState(m.State.String()); err != nil {
			return sqliteErr(op(), sqlitedb.Invalid("invalid state %v", m.State))
		}
		at, err := sqlitedb.Time(m.At)
		if err != nil {
			return sqliteErr(op(), err)
		}
		if err := s.exec(ctx, sqlSetInviteeState, m.State.String(), at, m.InviteID, m.UserID); err != nil {
			return sqliteErr(op(), err)
		}
	case SetInvitationData:
		if err := s.exec(ctx, sqlSetInvitationData, m.Data, m.InviteID); err != nil {
			return sqliteErr(fmt.Sprintf("set data of invitation %q", m.InviteID), err)
		}
	case DeleteInvitation:
		if err := s.exec(ctx, sqlDeleteInvitation, m.InviteID); err != nil {
			return sqliteErr(fmt.Sprintf("delete invitation %q", m.InviteID), err)
		}
	case PutGroup:
		g := m.Group
		op := func() string { return fmt.Sprintf("put group %q", g.ID) }
		created, err := sqlitedb.Time(g.CreatedAt)
		if err != nil {
			return sqliteErr(op(), err)
		}
		res, err := s.execResult(ctx, sqlPutGroup, g.ID, g.Name, g.Owner, string(g.JoinOption), created)
		if err != nil {
			return sqliteErr(op(), err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return sqliteErr(op(), err)
		} else if n == 0 {
			return sqliteErr(op(), protocol.ErrGroupExists)
		}
		if err := s.addMembers(ctx, g.ID, g.Members); err != nil {
			return sqliteErr(op(), err)
		}
	case AddGroupMembers:
		if err := s.addMembers(ctx, m.GroupID, m.Members); err != nil {
			return sqliteErr(fmt.Sprintf("add members to group %q", m.GroupID), err)
		}
	case RemoveGroupMembers:
		for _, u := range m.UserIDs {
			if err := s.exec(ctx, sqlRemoveMember, m.GroupID, u); err != nil {
				return sqliteErr(fmt.Sprintf("remove member %q from group %q", u, m.GroupID), err)
			}
		}
	case DeleteGroup:
		if err := s.exec(ctx, sqlDeleteGroup, m.GroupID); err != nil {
			return sqliteErr(fmt.Sprintf("delete group %q", m.GroupID), err)
		}
	case AppendOutbox:
		e := m.Entry
		op := func() string { return fmt.Sprintf("append outbox entry %d for %q", e.Seq, e.UserID) }
		created, err := sqlitedb.Time(e.CreatedAt)
		if err != nil {
			return sqliteErr(op(), err)
		}
		expires, err := sqlitedb.Time(e.ExpiresAt)
		if err != nil {
			return sqliteErr(op(), err)
		}
		var data any // NULL for nil Data
		if e.Data != nil {
			data = []byte(e.Data)
		}
		if err := s.exec(ctx, sqlAppendOutbox, e.Seq, e.UserID, e.Sender, e.Event, data, created, expires); err != nil {
			return sqliteErr(op(), err)
		}
	case DeleteOutbox:
		if err := s.exec(ctx, sqlDeleteOutbox, m.UserID, m.UpTo); err != nil {
			return sqliteErr(fmt.Sprintf("delete outbox of %q up to %d", m.UserID, m.UpTo), err)
		}
	case DeleteOutboxEntry:
		if err := s.exec(ctx, sqlDeleteOutboxEntry, m.UserID, m.Seq); err != nil {
			return sqliteErr(fmt.Sprintf("delete outbox entry %d of %q", m.Seq, m.UserID), err)
		}
	case PutUser:
		if err := s.exec(ctx, sqlPutUser, m.UserID); err != nil {
			return sqliteErr(fmt.Sprintf("put user %q", m.UserID), err)
		}
	case SetCustomStatus:
		var err error
		if m.Text == "" {
			err = s.exec(ctx, sqlDeleteCustomStatus, m.UserID)
		} else {
			err = s.exec(ctx, sqlSetCustomStatus, m.UserID, m.Text)
		}
		if err != nil {
			return sqliteErr(fmt.Sprintf("set custom status of %q", m.UserID), err)
		}
	case PurgeOutbox:
		// Entries without an expiry (zero ExpiresAt, NULL) never match.
		before, err := sqlitedb.Time(m.Before)
		if err != nil {
			return sqliteErr("purge outbox", err)
		}
		if err := s.exec(ctx, sqlPurgeOutbox, before); err != nil {
			return sqliteErr("purge outbox", err)
		}
	default:
		return sqliteErr("apply", sqlitedb.Invalid("unknown mutation %T", m))
	}
	return nil
}

// sqliteInviteesJSON appends the invitees column of an invitation to b: a
// JSON array of [user_id, state, updated_at (unix ns, null for the zero
// time), pushed (0 or 1)], in the invitees' order. A user named twice is
// refused, as the primary key of sig_invitees did before version 5.
func sqliteInviteesJSON(b []byte, invitees []InviteeRecord) ([]byte, error) {
	var seen map[string]bool // for long lists; short ones are scanned
	if len(invitees) > 16 {
		seen = make(map[string]bool, len(invitees))
	}
	b = append(b, '[')
	for i, e := range invitees {
		if _, err := ParseInviteeState(e.State.String()); err != nil {
			return nil, sqlitedb.Invalid("invitee %q: invalid state %v", e.UserID, e.State)
		}
		dup := seen[e.UserID]
		if seen != nil {
			seen[e.UserID] = true
		} else {
			for _, o := range invitees[:i] {
				dup = dup || o.UserID == e.UserID
			}
		}
		if dup {
			return nil, sqlitedb.Invalid("invitee %q named twice", e.UserID)
		}
		at, err := sqlitedb.Time(e.UpdatedAt)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = appendJSONString(b, e.UserID)
		b = append(b, ',')
		b = appendJSONString(b, e.State.String())
		b = append(b, ',')
		if at == nil {
			b = append(b, "null"...)
		} else {
			b = strconv.AppendInt(b, at.(int64), 10)
		}
		if e.Pushed {
			b = append(b, ",1]"...)
		} else {
			b = append(b, ",0]"...)
		}
	}
	return append(b, ']'), nil
}

// appendJSONString appends s as a JSON string: as it is when it has
// nothing to escape, through json.Marshal otherwise.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func (s *SQLiteStore) addMembers(ctx context.Context, groupID string, members []MemberRecord) error {
	for _, m := range members {
		at, err := sqlitedb.Time(m.JoinedAt)
		if err != nil {
			return err
		}
		if err := s.exec(ctx, sqlAddMember, groupID, m.UserID, string(m.Role), at, m.AddedBy); err != nil {
			return fmt.Errorf("member %q: %w", m.UserID, err)
		}
	}
	return nil
}
