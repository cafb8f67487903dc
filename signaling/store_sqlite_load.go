package signaling

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/switchboard-rtc/switchboard/signaling/sqlitedb"
)

// Load implements Store. It reads in one transaction, so it sees the state
// after some commit, never half of one.
func (s *SQLiteStore) Load(ctx context.Context) (*Snapshot, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, errSQLiteClosed
	}
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, sqliteErr("load", err)
	}
	defer func() { _ = tx.Rollback() }() // read-only: nothing to keep
	snap := &Snapshot{}
	if err := loadInvitations(ctx, tx, snap); err != nil {
		return nil, sqliteErr("load invitations", err)
	}
	if err := loadGroups(ctx, tx, snap); err != nil {
		return nil, sqliteErr("load groups", err)
	}
	if err := loadUsers(ctx, tx, snap); err != nil {
		return nil, sqliteErr("load users", err)
	}
	if err := loadCustomStatus(ctx, tx, snap); err != nil {
		return nil, sqliteErr("load custom status", err)
	}
	if err := loadOutboxIndex(ctx, tx, snap); err != nil {
		return nil, sqliteErr("load outbox", err)
	}
	return snap, nil
}

// LoadOutbox implements Store.
func (s *SQLiteStore) LoadOutbox(ctx context.Context, user string, afterSeq int64, limit int) ([]OutboxEntry, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, errSQLiteClosed
	}
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := s.db.QueryContext(ctx, `SELECT seq, sender, event, data, created_at, expires_at FROM sig_outbox
		WHERE user_id = ? AND seq > ? ORDER BY seq LIMIT ?`, user, afterSeq, limit)
	if err != nil {
		return nil, sqliteErr("load outbox", err)
	}
	defer rows.Close()
	var out []OutboxEntry
	for rows.Next() {
		e := OutboxEntry{UserID: user}
		var data []byte
		var created, expires sql.NullInt64
		if err := rows.Scan(&e.Seq, &e.Sender, &e.Event, &data, &created, &expires); err != nil {
			return nil, sqliteErr("load outbox", err)
		}
		if data != nil {
			e.Data = data
		}
		e.CreatedAt, e.ExpiresAt = sqlitedb.TimeOf(created), sqlitedb.TimeOf(expires)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, sqliteErr("load outbox", err)
	}
	return out, nil
}

func loadInvitations(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	return sqliteRows(ctx, tx, `SELECT id, inviter, group_id, data, created_at, deadline, push_info, invitees
		FROM sig_invitations ORDER BY rowid`,
		func(rows *sql.Rows) error {
			var r InvitationRecord
			var created, deadline sql.NullInt64
			var invitees []byte
			if err := rows.Scan(&r.ID, &r.Inviter, &r.GroupID, &r.Data, &created, &deadline, &r.PushInfo, &invitees); err != nil {
				return err
			}
			r.CreatedAt, r.Deadline = sqlitedb.TimeOf(created), sqlitedb.TimeOf(deadline)
			var err error
			if r.Invitees, err = sqliteParseInvitees(invitees); err != nil {
				return fmt.Errorf("invitation %q: %w", r.ID, err)
			}
			snap.Invitations = append(snap.Invitations, r)
			return nil
		})
}

// sqliteParseInvitees is the inverse of sqliteInviteesJSON.
func sqliteParseInvitees(b []byte) ([]InviteeRecord, error) {
	var elems [][]json.RawMessage
	if err := json.Unmarshal(b, &elems); err != nil {
		return nil, fmt.Errorf("invitees: %w", err)
	}
	var out []InviteeRecord
	for _, el := range elems {
		var e InviteeRecord
		var state string
		var at *int64
		var pushed int
		if len(el) != 4 {
			return nil, fmt.Errorf("invitees: element of %d values, want 4", len(el))
		}
		for i, dst := range []any{&e.UserID, &state, &at, &pushed} {
			if err := json.Unmarshal(el[i], dst); err != nil {
				return nil, fmt.Errorf("invitees: %w", err)
			}
		}
		var err error
		if e.State, err = ParseInviteeState(state); err != nil {
			return nil, fmt.Errorf("invitee %q: %w", e.UserID, err)
		}
		if at != nil {
			e.UpdatedAt = sqlitedb.TimeOf(sql.NullInt64{Int64: *at, Valid: true})
		}
		e.Pushed = pushed != 0
		out = append(out, e)
	}
	return out, nil
}

func loadGroups(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	index := make(map[string]int)
	err := sqliteRows(ctx, tx, `SELECT id, name, owner, join_option, created_at FROM sig_groups ORDER BY rowid`,
		func(rows *sql.Rows) error {
			var g GroupRecord
			var created sql.NullInt64
			if err := rows.Scan(&g.ID, &g.Name, &g.Owner, &g.JoinOption, &created); err != nil {
				return err
			}
			g.CreatedAt = sqlitedb.TimeOf(created)
			index[g.ID] = len(snap.Groups)
			snap.Groups = append(snap.Groups, g)
			return nil
		})
	if err != nil {
		return err
	}
	return sqliteRows(ctx, tx, `SELECT group_id, user_id, role, joined_at, added_by FROM sig_group_members
		ORDER BY group_id, role <> 'owner', joined_at, rowid`,
		func(rows *sql.Rows) error {
			var id string
			var m MemberRecord
			var at sql.NullInt64
			if err := rows.Scan(&id, &m.UserID, &m.Role, &at, &m.AddedBy); err != nil {
				return err
			}
			m.JoinedAt = sqlitedb.TimeOf(at)
			i, ok := index[id]
			if !ok {
				return fmt.Errorf("member %q of missing group %q", m.UserID, id)
			}
			snap.Groups[i].Members = append(snap.Groups[i].Members, m)
			return nil
		})
}

func loadUsers(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	return sqliteRows(ctx, tx, `SELECT user_id FROM sig_users`, func(rows *sql.Rows) error {
		var u string
		if err := rows.Scan(&u); err != nil {
			return err
		}
		snap.Users = append(snap.Users, u)
		return nil
	})
}

func loadCustomStatus(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	return sqliteRows(ctx, tx, `SELECT user_id, custom_status FROM sig_user_status`, func(rows *sql.Rows) error {
		var u, text string
		if err := rows.Scan(&u, &text); err != nil {
			return err
		}
		if snap.CustomStatus == nil {
			snap.CustomStatus = make(map[string]string)
		}
		snap.CustomStatus[u] = text
		return nil
	})
}

// loadOutboxIndex reads the outbox without its data.
func loadOutboxIndex(ctx context.Context, tx *sql.Tx, snap *Snapshot) error {
	return sqliteRows(ctx, tx, `SELECT seq, user_id, sender, length(CAST(event AS BLOB)) + coalesce(length(data), 0), expires_at
		FROM sig_outbox ORDER BY seq`,
		func(rows *sql.Rows) error {
			var e OutboxInfo
			var expires sql.NullInt64
			if err := rows.Scan(&e.Seq, &e.UserID, &e.Sender, &e.Bytes, &expires); err != nil {
				return err
			}
			e.ExpiresAt = sqlitedb.TimeOf(expires)
			snap.Outbox = append(snap.Outbox, e)
			return nil
		})
}

// sqliteRows calls f for each row of q.
func sqliteRows(ctx context.Context, tx *sql.Tx, q string, f func(*sql.Rows) error) error {
	rows, err := tx.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := f(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
