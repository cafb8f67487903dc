package signaling

import (
	"context"
	"maps"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// MaxGroupNameLen bounds a group's name, in characters.
const MaxGroupNameLen = 100

// group is a group in the engine's view. The memory backend's are guarded
// by Engine.mu; a tx hands decisions copies (clone).
type group struct {
	id         string
	name       string
	owner      string
	joinOption protocol.JoinOption
	createdAt  time.Time
	members    map[string]MemberRecord
}

// clone is a copy of g sharing nothing changeable with it.
func (g *group) clone() *group {
	c := *g
	c.members = maps.Clone(g.members)
	return &c
}

func (g *group) has(user string) bool { _, ok := g.members[user]; return ok }

func (g *group) memberIDs() []string {
	out := make([]string, 0, len(g.members))
	for _, m := range g.sortedMembers() {
		out = append(out, m.UserID)
	}
	return out
}

// sortedMembers lists the owner first, then members by join time and ID.
func (g *group) sortedMembers() []MemberRecord {
	out := make([]MemberRecord, 0, len(g.members))
	for _, m := range g.members {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b MemberRecord) int {
		if (a.Role == protocol.RoleOwner) != (b.Role == protocol.RoleOwner) {
			if a.Role == protocol.RoleOwner {
				return -1
			}
			return 1
		}
		if c := a.JoinedAt.Compare(b.JoinedAt); c != 0 {
			return c
		}
		return compareStrings(a.UserID, b.UserID)
	})
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func groupFromRecord(r GroupRecord) *group {
	g := &group{id: r.ID, name: r.Name, owner: r.Owner, joinOption: r.JoinOption, createdAt: r.CreatedAt,
		members: make(map[string]MemberRecord, len(r.Members))}
	for _, m := range r.Members {
		g.members[m.UserID] = m
	}
	return g
}

func (e *Engine) putGroupLocked(g *group) {
	e.groups[g.id] = g
	for u := range g.members {
		e.indexMemberLocked(u, g.id)
	}
}

func (e *Engine) indexMemberLocked(user, groupID string) {
	m := e.userGroups[user]
	if m == nil {
		m = make(map[string]struct{})
		e.userGroups[user] = m
	}
	m[groupID] = struct{}{}
}

func (e *Engine) unindexMemberLocked(user, groupID string) {
	if m := e.userGroups[user]; m != nil {
		delete(m, groupID)
		if len(m) == 0 {
			delete(e.userGroups, user)
		}
	}
}

func (e *Engine) addMembersLocked(g *group, ms []MemberRecord) {
	for _, m := range ms {
		g.members[m.UserID] = m
		e.indexMemberLocked(m.UserID, g.id)
	}
}

func (e *Engine) removeMembersLocked(g *group, users []string) {
	for _, u := range users {
		delete(g.members, u)
		e.unindexMemberLocked(u, g.id)
	}
}

func (e *Engine) deleteGroupLocked(g *group) {
	for u := range g.members {
		e.unindexMemberLocked(u, g.id)
	}
	delete(e.groups, g.id)
}

// checkUserList validates a list of user IDs against the list limit and
// reports duplicates.
func (e *Engine) checkUserList(field string, users []string) error {
	if lim := e.cfg.Limits.MaxGroupMembers; lim > 0 && len(users) > lim {
		return protocol.ErrListTooLarge.WithMessage("%s has %d users; the limit is %d", field, len(users), lim)
	}
	seen := make(map[string]struct{}, len(users))
	for _, u := range users {
		if !protocol.ValidUserID(u) {
			return protocol.ErrInvalidParameter.WithMessage("invalid user ID %q in %s", u, field)
		}
		if _, dup := seen[u]; dup {
			return protocol.ErrInvalidParameter.WithMessage("user %q is listed twice in %s", u, field)
		}
		seen[u] = struct{}{}
	}
	return nil
}

// groupCountsLocked counts user's groups: those they created or joined by
// themselves (own), and those others added them to (added).
func (e *Engine) groupCountsLocked(user string) (own, added int) {
	for id := range e.userGroups[user] {
		if e.groups[id].members[user].AddedBy == "" {
			own++
		} else {
			added++
		}
	}
	return own, added
}

// checkRoom checks that g can take n more members.
func (r rules) checkRoom(g *group, n int) error {
	if lim := r.cfg.Limits.MaxGroupMembers; lim > 0 && len(g.members)+n > lim {
		return protocol.ErrGroupFull.WithMessage("group %q would have %d members; the limit is %d", g.id, len(g.members)+n, lim)
	}
	return nil
}

// checkOwnGroup checks that user may create or join one more group.
// Groups others added them to do not count.
func (r rules) checkOwnGroup(t tx, user string) error {
	if lim := r.cfg.Limits.MaxGroupsPerUser; lim > 0 {
		if own, _ := t.groupCounts(user); own >= lim {
			return protocol.ErrTooManyGroups.WithMessage("you created or joined %d groups; the limit is %d", own, lim)
		}
	}
	return nil
}

// checkAddedGroup checks that others may add each of users to one more
// group.
func (r rules) checkAddedGroup(t tx, users []string) error {
	if lim := r.cfg.Limits.MaxGroupsAddedByOthers; lim > 0 {
		for _, u := range users {
			if _, added := t.groupCounts(u); added >= lim {
				return protocol.ErrTooManyGroupsAdded.WithMessage("user %q was already added to %d groups by others; the limit is %d", u, added, lim)
			}
		}
	}
	return nil
}

// lookupGroup returns a copy of a group, which user must belong to if
// mustBeMember.
func lookupGroup(t tx, groupID, user string, mustBeMember bool) (*group, error) {
	if groupID == "" {
		return nil, protocol.ErrInvalidParameter.WithMessage("groupID is required")
	}
	g, ok := t.group(groupID)
	if !ok {
		return nil, protocol.ErrGroupNotFound.WithMessage("group %q not found", groupID)
	}
	if mustBeMember && !g.has(user) {
		return nil, protocol.ErrNotGroupMember.WithMessage("you are not a member of group %q", groupID)
	}
	return g, nil
}

// lookupGroupLocked finds a group that user must belong to (read-only ops).
func (e *Engine) lookupGroupLocked(groupID, user string, mustBeMember bool) (*group, error) {
	if groupID == "" {
		return nil, protocol.ErrInvalidParameter.WithMessage("groupID is required")
	}
	g := e.groups[groupID]
	if g == nil {
		return nil, protocol.ErrGroupNotFound.WithMessage("group %q not found", groupID)
	}
	if mustBeMember && !g.has(user) {
		return nil, protocol.ErrNotGroupMember.WithMessage("you are not a member of group %q", groupID)
	}
	return g, nil
}

// CreateGroup creates a group; its creator is owner and member.
func (e *Engine) CreateGroup(ctx context.Context, a protocol.Actor, args protocol.CreateGroupArgs) (string, error) {
	if args.GroupID != "" && !protocol.ValidGroupID(args.GroupID) {
		return "", protocol.ErrInvalidParameter.WithMessage("invalid groupID %q: 1-64 characters of [A-Za-z0-9_.@-]", args.GroupID)
	}
	if args.Name == "" || utf8.RuneCountInString(args.Name) > MaxGroupNameLen {
		return "", protocol.ErrInvalidParameter.WithMessage("name must be 1-%d characters", MaxGroupNameLen)
	}
	join := protocol.JoinOption(args.JoinOption)
	switch join {
	case "":
		join = protocol.JoinAny
	case protocol.JoinAny, protocol.JoinInvite:
	default:
		return "", protocol.ErrInvalidParameter.WithMessage("joinOption must be %q or %q", protocol.JoinAny, protocol.JoinInvite)
	}
	if err := e.checkUserList("memberList", args.MemberList); err != nil {
		return "", err
	}
	members := slices.DeleteFunc(slices.Clone(args.MemberList), func(u string) bool { return u == a.UserID })
	var id string
	h := txHint{counts: append([]string{a.UserID}, members...)}
	if args.GroupID != "" {
		h.groups = []string{args.GroupID}
	}
	err := e.doHint(ctx, h, func(t tx) error {
		var err error
		id, err = e.rules.createGroup(t, a, args.GroupID, args.Name, join, members)
		return err
	})
	if err != nil {
		return "", err
	}
	return id, nil
}

// createGroup decides a new group (id "": the backend makes one) of owner
// a with members (a not among them) and returns its ID.
func (r rules) createGroup(t tx, a protocol.Actor, id, name string, join protocol.JoinOption, members []string) (string, error) {
	if id == "" {
		id = t.newID("grp_")
	}
	if found, _ := t.groupMember(id, a.UserID); found {
		return "", protocol.ErrGroupExists.WithMessage("group %q already exists", id)
	}
	now := t.now()
	g := &group{id: id, name: name, owner: a.UserID, joinOption: join, createdAt: now,
		members: map[string]MemberRecord{}}
	err := r.checkRoom(g, 1+len(members))
	if err == nil {
		err = r.checkOwnGroup(t, a.UserID)
	}
	if err == nil {
		err = r.checkAddedGroup(t, members)
	}
	if err != nil {
		return "", err
	}
	g.members[a.UserID] = MemberRecord{UserID: a.UserID, Role: protocol.RoleOwner, JoinedAt: now}
	for _, u := range members {
		g.members[u] = MemberRecord{UserID: u, Role: protocol.RoleMember, JoinedAt: now, AddedBy: a.UserID}
	}
	t.apply(PutGroup{Group: GroupRecord{ID: g.id, Name: g.name, Owner: g.owner, JoinOption: g.joinOption, CreatedAt: now, Members: g.sortedMembers()}})
	ids := g.memberIDs()
	t.emit(&outgoing{name: protocol.EvMemberEnter, data: protocol.MemberEnterEvent{GroupID: id, MemberList: ids},
		users: slices.Clone(ids), except: a.Session})
	return id, nil
}

// JoinGroup adds the caller to a group whose joinOption is "any".
func (e *Engine) JoinGroup(ctx context.Context, a protocol.Actor, args protocol.GroupIDArgs) error {
	h := txHint{groups: []string{args.GroupID}, counts: []string{a.UserID}}
	return e.doHint(ctx, h, func(t tx) error { return e.rules.joinGroup(t, a, args) })
}

func (r rules) joinGroup(t tx, a protocol.Actor, args protocol.GroupIDArgs) error {
	g, err := lookupGroup(t, args.GroupID, a.UserID, false)
	if err == nil && g.has(a.UserID) {
		err = protocol.ErrAlreadyMember.WithMessage("you are already a member of group %q", g.id)
	}
	if err == nil && g.joinOption != protocol.JoinAny {
		err = protocol.ErrJoinForbidden.WithMessage("group %q can only be joined by invitation", g.id)
	}
	if err == nil {
		err = r.checkRoom(g, 1)
	}
	if err == nil {
		err = r.checkOwnGroup(t, a.UserID)
	}
	if err != nil {
		return err
	}
	addMembersTo(t, a, g, []string{a.UserID}, "")
	return nil
}

// InviteUserToGroup adds users to a group; any member may. Users already in
// the group are skipped.
func (e *Engine) InviteUserToGroup(ctx context.Context, a protocol.Actor, args protocol.GroupUsersArgs) error {
	if len(args.UserList) == 0 {
		return protocol.ErrInvalidParameter.WithMessage("userList is empty")
	}
	if err := e.checkUserList("userList", args.UserList); err != nil {
		return err
	}
	h := txHint{groups: []string{args.GroupID}, counts: args.UserList}
	return e.doHint(ctx, h, func(t tx) error { return e.rules.inviteUserToGroup(t, a, args) })
}

func (r rules) inviteUserToGroup(t tx, a protocol.Actor, args protocol.GroupUsersArgs) error {
	g, err := lookupGroup(t, args.GroupID, a.UserID, true)
	if err != nil {
		return err
	}
	add := slices.DeleteFunc(slices.Clone(args.UserList), g.has)
	if len(add) == 0 {
		return nil
	}
	err = r.checkRoom(g, len(add))
	if err == nil {
		err = r.checkAddedGroup(t, add)
	}
	if err != nil {
		return err
	}
	addMembersTo(t, a, g, add, a.UserID)
	return nil
}

// addMembersTo decides that users join g (a copy), added by addedBy ("": they
// joined by themselves).
func addMembersTo(t tx, a protocol.Actor, g *group, users []string, addedBy string) {
	now := t.now()
	ms := make([]MemberRecord, len(users))
	for i, u := range users {
		ms[i] = MemberRecord{UserID: u, Role: protocol.RoleMember, JoinedAt: now, AddedBy: addedBy}
		g.members[u] = ms[i]
	}
	t.apply(AddGroupMembers{GroupID: g.id, Members: ms})
	t.emit(&outgoing{name: protocol.EvMemberEnter, data: protocol.MemberEnterEvent{GroupID: g.id, MemberList: users},
		users: g.memberIDs(), except: a.Session})
}

// QuitGroup removes the caller from a group; the owner must dismiss instead.
func (e *Engine) QuitGroup(ctx context.Context, a protocol.Actor, args protocol.GroupIDArgs) error {
	return e.doHint(ctx, txHint{groups: []string{args.GroupID}}, func(t tx) error { return e.rules.quitGroup(t, a, args) })
}

func (r rules) quitGroup(t tx, a protocol.Actor, args protocol.GroupIDArgs) error {
	g, err := lookupGroup(t, args.GroupID, a.UserID, true)
	if err == nil && g.owner == a.UserID {
		err = protocol.ErrOwnerCannotQuit
	}
	if err != nil {
		return err
	}
	t.apply(RemoveGroupMembers{GroupID: g.id, UserIDs: []string{a.UserID}})
	t.emit(&outgoing{name: protocol.EvMemberLeave, data: protocol.MemberLeaveEvent{GroupID: g.id, Member: a.UserID},
		users: g.memberIDs(), except: a.Session})
	return nil
}

// KickGroupMember removes members; the owner only.
func (e *Engine) KickGroupMember(ctx context.Context, a protocol.Actor, args protocol.KickArgs) error {
	if len(args.MemberList) == 0 {
		return protocol.ErrInvalidParameter.WithMessage("memberList is empty")
	}
	if err := e.checkUserList("memberList", args.MemberList); err != nil {
		return err
	}
	if err := e.checkData(args.Reason); err != nil {
		return err
	}
	return e.doHint(ctx, txHint{groups: []string{args.GroupID}}, func(t tx) error { return e.rules.kickGroupMember(t, a, args) })
}

func (r rules) kickGroupMember(t tx, a protocol.Actor, args protocol.KickArgs) error {
	g, err := lookupGroup(t, args.GroupID, a.UserID, true)
	if err == nil && g.owner != a.UserID {
		err = protocol.ErrNotGroupOwner.WithMessage("only the owner of %q may kick members", g.id)
	}
	if err == nil {
		for _, u := range args.MemberList {
			if u == a.UserID {
				err = protocol.ErrInvalidParameter.WithMessage("the owner cannot kick themselves")
				break
			}
			if !g.has(u) {
				err = protocol.ErrNotGroupMember.WithMessage("%q is not a member of group %q", u, g.id)
				break
			}
		}
	}
	if err != nil {
		return err
	}
	t.apply(RemoveGroupMembers{GroupID: g.id, UserIDs: args.MemberList})
	t.emit(&outgoing{name: protocol.EvMemberKicked, data: protocol.MemberKickedEvent{GroupID: g.id, OpUser: a.UserID, MemberList: args.MemberList, Reason: args.Reason},
		users: g.memberIDs(), except: a.Session})
	return nil
}

// DismissGroup deletes a group; the owner only.
func (e *Engine) DismissGroup(ctx context.Context, a protocol.Actor, args protocol.GroupIDArgs) error {
	return e.doHint(ctx, txHint{groups: []string{args.GroupID}}, func(t tx) error { return e.rules.dismissGroup(t, a, args) })
}

func (r rules) dismissGroup(t tx, a protocol.Actor, args protocol.GroupIDArgs) error {
	g, err := lookupGroup(t, args.GroupID, a.UserID, true)
	if err == nil && g.owner != a.UserID {
		err = protocol.ErrNotGroupOwner.WithMessage("only the owner of %q may dismiss it", g.id)
	}
	if err != nil {
		return err
	}
	t.apply(DeleteGroup{GroupID: g.id})
	t.emit(&outgoing{name: protocol.EvGroupDismissed, data: protocol.GroupDismissedEvent{GroupID: g.id, OpUser: a.UserID},
		users: g.memberIDs(), except: a.Session})
	return nil
}

// GetGroupMemberList lists a group's members; members only.
func (e *Engine) GetGroupMemberList(ctx context.Context, a protocol.Actor, args protocol.GroupIDArgs) (protocol.MemberListResult, error) {
	var g *group
	var err error
	if e.cl != nil {
		g, err = e.cl.memberList(ctx, args.GroupID, a.UserID)
	} else {
		e.mu.Lock()
		defer e.mu.Unlock()
		g, err = e.lookupGroupLocked(args.GroupID, a.UserID, true)
	}
	if err != nil {
		return protocol.MemberListResult{}, err
	}
	res := protocol.MemberListResult{MemberList: []protocol.MemberInfo{}}
	for _, m := range g.sortedMembers() {
		res.MemberList = append(res.MemberList, protocol.MemberInfo{UserID: m.UserID, Role: m.Role, JoinTime: m.JoinedAt.UnixMilli()})
	}
	return res, nil
}

// GetJoinedGroupList lists the caller's groups, by group ID.
func (e *Engine) GetJoinedGroupList(ctx context.Context, a protocol.Actor) (protocol.GroupListResult, error) {
	if e.cl != nil {
		return e.cl.joinedGroups(ctx, a.UserID)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	res := protocol.GroupListResult{GroupList: []protocol.GroupInfo{}}
	for id := range e.userGroups[a.UserID] {
		g := e.groups[id]
		res.GroupList = append(res.GroupList, protocol.GroupInfo{GroupID: g.id, Name: g.name, Owner: g.owner,
			JoinOption: g.joinOption, MemberCount: len(g.members), Role: g.members[a.UserID].Role})
	}
	slices.SortFunc(res.GroupList, func(x, y protocol.GroupInfo) int { return compareStrings(x.GroupID, y.GroupID) })
	return res, nil
}

// IsGroupMember reports whether user belongs to groupID, for the layers
// built on signaling.
func (e *Engine) IsGroupMember(groupID, user string) bool {
	if e.cl != nil {
		return e.cl.isGroupMember(groupID, user)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	g := e.groups[groupID]
	return g != nil && g.has(user)
}
