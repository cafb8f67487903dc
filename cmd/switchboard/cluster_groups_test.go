package main

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// The rows of TestClusterScenarios for groups, group invitations, presence
// and custom status: what signaling/cluster_groups_test.go shows with
// in-process engines, here with real processes and the Go client. Each row
// with its parties on different nodes fails on nodes without cluster mode
// (each its own SQLite): the events and lists of the other nodes' groups
// never reach them.

// scenarioCtx is a context for one request of a scenario.
func scenarioCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	t.Cleanup(cancel)
	return ctx
}

// byGroup matches the events of group id.
func byGroup(id string) func(client.Event) bool {
	return func(ev client.Event) bool {
		var v struct {
			GroupID string `json:"groupID"`
		}
		return ev.Decode(&v) == nil && v.GroupID == id
	}
}

// byStatusOf matches the onUserStatusChanged events about user.
func byStatusOf(user string) func(client.Event) bool {
	return func(ev client.Event) bool {
		var v protocol.UserStatusResult
		return ev.Decode(&v) == nil && len(v.StatusList) == 1 && v.StatusList[0].UserID == user
	}
}

// waitGroup waits for the event name of group id on cl.
func waitGroup(t *testing.T, cl *client.Client, name, id string) client.Event {
	t.Helper()
	ev, err := cl.WaitEvent(scenarioCtx(t), name, byGroup(id))
	if err != nil {
		t.Fatalf("%s of group %s: %v", name, id, err)
	}
	return ev
}

// waitStatus waits for the status change of user on cl and returns it.
func waitStatus(t *testing.T, cl *client.Client, user string) protocol.UserStatus {
	t.Helper()
	ev, err := cl.WaitEvent(scenarioCtx(t), protocol.EvUserStatusChanged, byStatusOf(user))
	if err != nil {
		t.Fatalf("status change of %s: %v", user, err)
	}
	return decodeAs[protocol.UserStatusResult](t, ev).StatusList[0]
}

// wantCode fails t unless err is the protocol error want.
func wantCode(t *testing.T, what string, err error, want *protocol.Error) {
	t.Helper()
	if invitationCode(err) != want.Code {
		t.Fatalf("%s: %v, want %d %s", what, err, want.Code, want.Reason)
	}
}

// memberList renders a member list as sorted "user:role".
func memberList(ms []protocol.MemberInfo) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, fmt.Sprintf("%s:%s", m.UserID, m.Role))
	}
	slices.Sort(out)
	return out
}

// joinedList renders a joined group list as sorted "group:role:count".
func joinedList(t *testing.T, cl *client.Client) []string {
	t.Helper()
	gs, err := cl.GetJoinedGroupList(scenarioCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, g := range gs {
		out = append(out, fmt.Sprintf("%s:%s:%d", g.GroupID, g.Role, g.MemberCount))
	}
	slices.Sort(out)
	return out
}

func sorted(s ...string) []string { return slices.Sorted(slices.Values(s)) }

func clusterGroupScenarios() []clusterScenario {
	ctx := scenarioCtx
	return []clusterScenario{
		{name: "groups: create, join, quit, kick, dismiss; lists read on other nodes", parties: 3, run: func(t *testing.T, c *testCluster, at []int) {
			a, b, cu, g := c.user("alice"), c.user("bob"), c.user("carol"), c.user("team")
			alice, bob, carol := c.dial(t, at[0], a), c.dial(t, at[1], b), c.dial(t, at[2], cu)
			attached(t, bob)
			if _, err := alice.CreateGroup(ctx(t), protocol.CreateGroupArgs{GroupID: g, Name: "Team", MemberList: []string{b}}); err != nil {
				t.Fatal(err)
			}
			if ev := decodeAs[protocol.MemberEnterEvent](t, waitGroup(t, bob, protocol.EvMemberEnter, g)); !slices.Equal(sorted(ev.MemberList...), sorted(a, b)) {
				t.Fatalf("bob: member enter %+v", ev)
			}
			if err := carol.JoinGroup(ctx(t), g); err != nil {
				t.Fatal(err)
			}
			for _, cl := range []*client.Client{alice, bob} {
				if ev := decodeAs[protocol.MemberEnterEvent](t, waitGroup(t, cl, protocol.EvMemberEnter, g)); !slices.Equal(ev.MemberList, []string{cu}) {
					t.Fatalf("member enter %+v, want carol", ev)
				}
			}
			wantCode(t, "joining again", carol.JoinGroup(ctx(t), g), protocol.ErrAlreadyMember)
			// The lists, read by members on other nodes than the owner's.
			ms, err := carol.GetGroupMemberList(ctx(t), g)
			if want := sorted(a+":owner", b+":member", cu+":member"); err != nil || !slices.Equal(memberList(ms), want) {
				t.Fatalf("carol reads members %v, %v; want %v", memberList(ms), err, want)
			}
			if got, want := joinedList(t, bob), []string{g + ":member:3"}; !slices.Equal(got, want) {
				t.Fatalf("bob's joined groups %v, want %v", got, want)
			}
			if err := bob.QuitGroup(ctx(t), g); err != nil {
				t.Fatal(err)
			}
			for _, cl := range []*client.Client{alice, carol} {
				if ev := decodeAs[protocol.MemberLeaveEvent](t, waitGroup(t, cl, protocol.EvMemberLeave, g)); ev.Member != b {
					t.Fatalf("member leave %+v, want bob", ev)
				}
			}
			if got := joinedList(t, bob); len(got) != 0 {
				t.Fatalf("bob quit, still lists %v", got)
			}
			_, err = bob.GetGroupMemberList(ctx(t), g)
			wantCode(t, "a former member's member list", err, protocol.ErrNotGroupMember)
			wantCode(t, "kick by a member", carol.KickGroupMember(ctx(t), g, []string{a}, ""), protocol.ErrNotGroupOwner)
			if err := alice.KickGroupMember(ctx(t), g, []string{cu}, "bye"); err != nil {
				t.Fatal(err)
			}
			if ev := decodeAs[protocol.MemberKickedEvent](t, waitGroup(t, carol, protocol.EvMemberKicked, g)); ev.OpUser != a || !slices.Equal(ev.MemberList, []string{cu}) || ev.Reason != "bye" {
				t.Fatalf("carol: kicked %+v", ev)
			}
			if got := joinedList(t, carol); len(got) != 0 {
				t.Fatalf("carol was kicked, still lists %v", got)
			}
			if err := bob.JoinGroup(ctx(t), g); err != nil {
				t.Fatal(err)
			}
			waitGroup(t, alice, protocol.EvMemberEnter, g)
			wantCode(t, "dismiss by a member", bob.DismissGroup(ctx(t), g), protocol.ErrNotGroupOwner)
			if err := alice.DismissGroup(ctx(t), g); err != nil {
				t.Fatal(err)
			}
			if ev := decodeAs[protocol.GroupDismissedEvent](t, waitGroup(t, bob, protocol.EvGroupDismissed, g)); ev.OpUser != a {
				t.Fatalf("bob: dismissed %+v", ev)
			}
			for _, cl := range []*client.Client{bob, carol} {
				_, err := cl.GetGroupMemberList(ctx(t), g)
				wantCode(t, "a dismissed group's member list", err, protocol.ErrGroupNotFound)
				if got := joinedList(t, cl); len(got) != 0 {
					t.Fatalf("the group was dismissed, still listed: %v", got)
				}
			}
			wantCode(t, "joining a dismissed group", carol.JoinGroup(ctx(t), g), protocol.ErrGroupNotFound)
		}},
		{name: "inviteInGroup rings members on every node; a non-member is refused", parties: 4, placements: spreadPlacements(4),
			run: func(t *testing.T, c *testCluster, at []int) {
				a, b, cu, d, g := c.user("alice"), c.user("bob"), c.user("carol"), c.user("dave"), c.user("team")
				alice, bob, carol, dave := c.dial(t, at[0], a), c.dial(t, at[1], b), c.dial(t, at[2], cu), c.dial(t, at[3], d)
				attached(t, dave)
				if _, err := bob.CreateGroup(ctx(t), protocol.CreateGroupArgs{GroupID: g, Name: "Team", MemberList: []string{a, cu}}); err != nil {
					t.Fatal(err)
				}
				waitGroup(t, alice, protocol.EvMemberEnter, g)
				waitGroup(t, carol, protocol.EvMemberEnter, g)
				_, err := dave.InviteInGroup(ctx(t), protocol.InviteInGroupArgs{GroupID: g, InviteeList: []string{b}})
				wantCode(t, "a non-member's group invitation", err, protocol.ErrNotGroupMember)
				_, err = alice.InviteInGroup(ctx(t), protocol.InviteInGroupArgs{GroupID: g, InviteeList: []string{b, d}})
				wantCode(t, "a group invitation to a non-member", err, protocol.ErrNotGroupMember)
				id, err := alice.InviteInGroup(ctx(t), protocol.InviteInGroupArgs{GroupID: g, InviteeList: []string{b, cu}, Data: "meet", Timeout: ptr(30)})
				if err != nil {
					t.Fatal(err)
				}
				for _, cl := range []*client.Client{bob, carol} {
					ring := decodeAs[protocol.NewInvitationEvent](t, wait(t, cl, protocol.EvReceiveNewInvitation, id))
					if ring.Inviter != a || ring.GroupID != g || ring.Data != "meet" || !slices.Equal(sorted(ring.InviteeList...), sorted(b, cu)) {
						t.Fatalf("ring %+v", ring)
					}
				}
				if err := bob.Accept(ctx(t), id, "in"); err != nil {
					t.Fatal(err)
				}
				for _, cl := range []*client.Client{alice, carol} {
					if ev := decodeAs[protocol.InviteeEvent](t, wait(t, cl, protocol.EvInviteeAccepted, id)); ev.Invitee != b || ev.Data != "in" {
						t.Fatalf("accepted %+v", ev)
					}
				}
				if err := carol.Reject(ctx(t), id, "out"); err != nil {
					t.Fatal(err)
				}
				for _, cl := range []*client.Client{alice, bob} {
					if ev := decodeAs[protocol.InviteeEvent](t, wait(t, cl, protocol.EvInviteeRejected, id)); ev.Invitee != cu || ev.Data != "out" {
						t.Fatalf("rejected %+v", ev)
					}
				}
				if evs := barrier(t, alice, dave, d); len(evs) != 0 {
					t.Fatalf("the non-member got %v", evs)
				}
			}},
		{name: "presence: a subscriber on another node hears online, offline and custom status", parties: 3, run: func(t *testing.T, c *testCluster, at []int) {
			a, b, g := c.user("alice"), c.user("bob"), c.user("team")
			alice, bob := c.dial(t, at[0], a), c.dial(t, at[1], b)
			attached(t, alice)
			if _, err := bob.CreateGroup(ctx(t), protocol.CreateGroupArgs{GroupID: g, Name: "Team", MemberList: []string{a}}); err != nil {
				t.Fatal(err)
			}
			waitGroup(t, alice, protocol.EvMemberEnter, g)
			st, err := alice.SubscribeUserStatus(ctx(t), []string{b})
			if err != nil || len(st) != 1 || st[0].StatusType != protocol.StatusOnline {
				t.Fatalf("subscribe: %+v, %v", st, err)
			}
			if err := bob.SetSelfStatus(ctx(t), "busy"); err != nil {
				t.Fatal(err)
			}
			if st := waitStatus(t, alice, b); st.StatusType != protocol.StatusOnline || st.CustomStatus != "busy" {
				t.Fatalf("custom status: %+v", st)
			}
			_ = bob.Close()
			if st := waitStatus(t, alice, b); st.StatusType != protocol.StatusOffline || st.CustomStatus != "busy" {
				t.Fatalf("bob left: %+v", st)
			}
			if st, err := alice.GetUserStatus(ctx(t), []string{b}); err != nil || len(st) != 1 || st[0].StatusType != protocol.StatusOffline || st[0].CustomStatus != "busy" {
				t.Fatalf("getUserStatus after bob left: %+v, %v", st, err)
			}
			bob = c.dial(t, at[2], b)
			if st := waitStatus(t, alice, b); st.StatusType != protocol.StatusOnline || st.CustomStatus != "busy" {
				t.Fatalf("bob back on another node: %+v", st)
			}
			if err := bob.SetSelfStatus(ctx(t), ""); err != nil {
				t.Fatal(err)
			}
			if st := waitStatus(t, alice, b); st.StatusType != protocol.StatusOnline || st.CustomStatus != "" {
				t.Fatalf("custom status cleared: %+v", st)
			}
		}},
		{name: "offline member gets a group invitation on another node", parties: 3, run: func(t *testing.T, c *testCluster, at []int) {
			a, b, g := c.user("alice"), c.user("bob"), c.user("team")
			// bob is known (connected once, at[1]), then offline.
			first := c.dial(t, at[1], b)
			attached(t, first)
			_ = first.Close()
			alice := c.dial(t, at[0], a)
			if _, err := alice.CreateGroup(ctx(t), protocol.CreateGroupArgs{GroupID: g, Name: "Team", MemberList: []string{b}}); err != nil {
				t.Fatal(err)
			}
			ringing, err := alice.InviteInGroup(ctx(t), protocol.InviteInGroupArgs{GroupID: g, InviteeList: []string{b}, Data: "ring", Timeout: ptr(60)})
			if err != nil {
				t.Fatal(err)
			}
			gone, err := alice.InviteInGroup(ctx(t), protocol.InviteInGroupArgs{GroupID: g, InviteeList: []string{b}, Data: "gone", Timeout: ptr(60)})
			if err != nil {
				t.Fatal(err)
			}
			if err := alice.Cancel(ctx(t), gone, "never mind"); err != nil {
				t.Fatal(err)
			}
			// Group events are not kept (PROTOCOL.md, "Offline delivery"):
			// bob learns of the group from his list.
			bob := c.dial(t, at[2], b)
			if got, want := joinedList(t, bob), []string{g + ":member:2"}; !slices.Equal(got, want) {
				t.Fatalf("bob's joined groups %v, want %v", got, want)
			}
			if ev := decodeAs[protocol.CancelledEvent](t, wait(t, bob, protocol.EvInvitationCancelled, gone)); ev.Data != "never mind" {
				t.Fatalf("kept cancel %+v", ev)
			}
			if ring := decodeAs[protocol.NewInvitationEvent](t, wait(t, bob, protocol.EvReceiveNewInvitation, ringing)); ring.Data != "ring" || ring.GroupID != g {
				t.Fatalf("ring %+v", ring)
			}
			if err := bob.Accept(ctx(t), ringing, ""); err != nil {
				t.Fatal(err)
			}
			wait(t, alice, protocol.EvInviteeAccepted, ringing)
			if n := count(barrier(t, alice, bob, b), protocol.EvReceiveNewInvitation, gone); n != 0 {
				t.Fatalf("the cancelled group invitation rang %d times", n)
			}
		}},
	}
}
