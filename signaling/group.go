package signaling

import (
	"context"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// MaxGroupNameLen bounds a group's name, in characters.
const MaxGroupNameLen = 100

// group is the engine's in-memory group. Guarded by Engine.mu.
type group struct {
	id         string
	name       string
	owner      string
	joinOption protocol.JoinOption
	createdAt  time.Time
	members    map[string]MemberRecord
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

// checkRoomLocked checks that g can take n more members.
func (e *Engine) checkRoomLocked(g *group, n int) error {
	if lim := e.cfg.Limits.MaxGroupMembers; lim > 0 && len(g.members)+n > lim {
		return protocol.ErrGroupFull.WithMessage("group %q would have %d members; the limit is %d", g.id, len(g.members)+n, lim)
	}
	return nil
}

// checkOwnGroupLocked checks that user may create or join one more group.
// Groups others added them to do not count.
func (e *Engine) checkOwnGroupLocked(user string) error {
	if lim := e.cfg.Limits.MaxGroupsPerUser; lim > 0 {
		if own, _ := e.groupCountsLocked(user); own >= lim {
			return protocol.ErrTooManyGroups.WithMessage("you created or joined %d groups; the limit is %d", own, lim)
		}
	}
	return nil
}

// checkAddedGroupLocked checks that others may add each of users to one
// more group.
func (e *Engine) checkAddedGroupLocked(users []string) error {
	if lim := e.cfg.Limits.MaxGroupsAddedByOthers; lim > 0 {
		for _, u := range users {
			if _, added := e.groupCountsLocked(u); added >= lim {
				return protocol.ErrTooManyGroupsAdded.WithMessage("user %q was already added to %d groups by others; the limit is %d", u, added, lim)
			}
		}
	}
	return nil
}

// lookupGroupLocked finds a group that user must belong to.
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

	e.mu.Lock()
	id := args.GroupID
	if id == "" {
		id = e.newID("grp_")
	}
	if e.groups[id] != nil {
		e.mu.Unlock()
		return "", protocol.ErrGroupExists.WithMessage("group %q already exists", id)
	}
	now := e.clock.Now()
	g := &group{id: id, name: args.Name, owner: a.UserID, joinOption: join, createdAt: now,
		members: map[string]MemberRecord{}}
	err := e.checkRoomLocked(g, 1+len(members))
	if err == nil {
		err = e.checkOwnGroupLocked(a.UserID)
	}
	if err == nil {
		err = e.checkAddedGroupLocked(members)
	}
	if err != nil {
		e.mu.Unlock()
		return "", err
	}
	g.members[a.UserID] = MemberRecord{UserID: a.UserID, Role: protocol.RoleOwner, JoinedAt: now}
	for _, u := range members {
		g.members[u] = MemberRecord{UserID: u, Role: protocol.RoleMember, JoinedAt: now, AddedBy: a.UserID}
	}
	e.putGroupLocked(g)
	rec := GroupRecord{ID: g.id, Name: g.name, Owner: g.owner, JoinOption: g.joinOption, CreatedAt: now, Members: g.sortedMembers()}
	evs := []*outgoing{{name: protocol.EvMemberEnter, data: protocol.MemberEnterEvent{GroupID: id, MemberList: g.memberIDs()},
		users: g.memberIDs(), except: a.Session}}
	e.mu.Unlock()
	err = e.finish(ctx, []Mutation{PutGroup{Group: rec}}, evs, func() {
		if e.groups[id] == g {
			e.deleteGroupLocked(g)
		}
	})
	if err != nil {
		return "", err
	}
	return id, nil
}

// JoinGroup adds the caller to a group whose joinOption is "any".
func (e *Engine) JoinGroup(ctx context.Context, a protocol.Actor, args protocol.GroupIDArgs) error {
	e.mu.Lock()
	g, err := e.lookupGroupLocked(args.GroupID, a.UserID, false)
	if err == nil && g.has(a.UserID) {
		err = protocol.ErrAlreadyMember.WithMessage("you are already a member of group %q", g.id)
	}
	if err == nil && g.joinOption != protocol.JoinAny {
		err = protocol.ErrJoinForbidden.WithMessage("group %q can only be joined by invitation", g.id)
	}
	if err == nil {
		err = e.checkRoomLocked(g, 1)
	}
	if err == nil {
		err = e.checkOwnGroupLocked(a.UserID)
	}
	if err != nil {
		e.mu.Unlock()
		return err
	}
	return e.addMembers(ctx, a, g, []string{a.UserID}, "")
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
	e.mu.Lock()
	g, err := e.lookupGroupLocked(args.GroupID, a.UserID, true)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	add := slices.DeleteFunc(slices.Clone(args.UserList), g.has)
	if len(add) == 0 {
		e.mu.Unlock()
		return nil
	}
	err = e.checkRoomLocked(g, len(add))
	if err == nil {
		err = e.checkAddedGroupLocked(add)
	}
	if err != nil {
		e.mu.Unlock()
		return err
	}
	return e.addMembers(ctx, a, g, add, a.UserID)
}

// addMembers adds users to g, added by addedBy ("": they joined by
// themselves); it is called with mu held and releases it.
func (e *Engine) addMembers(ctx context.Context, a protocol.Actor, g *group, users []string, addedBy string) error {
	now := e.clock.Now()
	ms := make([]MemberRecord, len(users))
	for i, u := range users {
		ms[i] = MemberRecord{UserID: u, Role: protocol.RoleMember, JoinedAt: now, AddedBy: addedBy}
	}
	e.addMembersLocked(g, ms)
	evs := []*outgoing{{name: protocol.EvMemberEnter, data: protocol.MemberEnterEvent{GroupID: g.id, MemberList: users},
		users: g.memberIDs(), except: a.Session}}
	e.mu.Unlock()
	return e.finish(ctx, []Mutation{AddGroupMembers{GroupID: g.id, Members: ms}}, evs, func() {
		e.removeMembersLocked(g, users)
	})
}

// QuitGroup removes the caller from a group; the owner must dismiss instead.
func (e *Engine) QuitGroup(ctx context.Context, a protocol.Actor, args protocol.GroupIDArgs) error {
	e.mu.Lock()
	g, err := e.lookupGroupLocked(args.GroupID, a.UserID, true)
	if err == nil && g.owner == a.UserID {
		err = protocol.ErrOwnerCannotQuit
	}
	if err != nil {
		e.mu.Unlock()
		return err
	}
	m := g.members[a.UserID]
	recipients := g.memberIDs()
	e.removeMembersLocked(g, []string{a.UserID})
	evs := []*outgoing{{name: protocol.EvMemberLeave, data: protocol.MemberLeaveEvent{GroupID: g.id, Member: a.UserID},
		users: recipients, except: a.Session}}
	e.mu.Unlock()
	return e.finish(ctx, []Mutation{RemoveGroupMembers{GroupID: g.id, UserIDs: []string{a.UserID}}}, evs, func() {
		e.addMembersLocked(g, []MemberRecord{m})
	})
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
	e.mu.Lock()
	g, err := e.lookupGroupLocked(args.GroupID, a.UserID, true)
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
		e.mu.Unlock()
		return err
	}
	removed := make([]MemberRecord, 0, len(args.MemberList))
	for _, u := range args.MemberList {
		removed = append(removed, g.members[u])
	}
	recipients := g.memberIDs()
	e.removeMembersLocked(g, args.MemberList)
	evs := []*outgoing{{name: protocol.EvMemberKicked, data: protocol.MemberKickedEvent{GroupID: g.id, OpUser: a.UserID, MemberList: args.MemberList, Reason: args.Reason},
		users: recipients, except: a.Session}}
	e.mu.Unlock()
	return e.finish(ctx, []Mutation{RemoveGroupMembers{GroupID: g.id, UserIDs: args.MemberList}}, evs, func() {
		e.addMembersLocked(g, removed)
	})
}

// DismissGroup deletes a group; the owner only.
func (e *Engine) DismissGroup(ctx context.Context, a protocol.Actor, args protocol.GroupIDArgs) error {
	e.mu.Lock()
	g, err := e.lookupGroupLocked(args.GroupID, a.UserID, true)
	if err == nil && g.owner != a.UserID {
		err = protocol.ErrNotGroupOwner.WithMessage("only the owner of %q may dismiss it", g.id)
	}
	if err != nil {
		e.mu.Unlock()
		return err
	}
	recipients := g.memberIDs()
	e.deleteGroupLocked(g)
	evs := []*outgoing{{name: protocol.EvGroupDismissed, data: protocol.GroupDismissedEvent{GroupID: g.id, OpUser: a.UserID},
		users: recipients, except: a.Session}}
	e.mu.Unlock()
	return e.finish(ctx, []Mutation{DeleteGroup{GroupID: g.id}}, evs, func() {
		if e.groups[g.id] == nil {
			e.putGroupLocked(g)
		}
	})
}

// GetGroupMemberList lists a group's members; members only.
func (e *Engine) GetGroupMemberList(_ context.Context, a protocol.Actor, args protocol.GroupIDArgs) (protocol.MemberListResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	g, err := e.lookupGroupLocked(args.GroupID, a.UserID, true)
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
func (e *Engine) GetJoinedGroupList(_ context.Context, a protocol.Actor) (protocol.GroupListResult, error) {
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
	e.mu.Lock()
	defer e.mu.Unlock()
	g := e.groups[groupID]
	return g != nil && g.has(user)
}
