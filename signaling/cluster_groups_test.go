package signaling_test

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/signaling/redistest"
)

// Cluster mode: groups, group invitations and presence with the parties
// spread over nodes A and B of one Redis.

func (h *clusterHarness) createGroup(node string, owner *session, id string, join protocol.JoinOption, members ...string) {
	h.t.Helper()
	if _, err := h.nodes[node].CreateGroup(ctx, as(owner), protocol.CreateGroupArgs{GroupID: id, Name: "team " + id,
		JoinOption: string(join), MemberList: members}); err != nil {
		h.t.Fatal(err)
	}
}

// members is the member list of group id as user sees it on node.
func (h *clusterHarness) members(node, user, id string) ([]string, error) {
	h.t.Helper()
	res, err := h.nodes[node].GetGroupMemberList(ctx, protocol.Actor{UserID: user}, protocol.GroupIDArgs{GroupID: id})
	var out []string
	for _, m := range res.MemberList {
		out = append(out, fmt.Sprintf("%s:%s", m.UserID, m.Role))
	}
	return out, err
}

// joined is user's joined group list on node, as "id:role:count".
func (h *clusterHarness) joined(node, user string) []string {
	h.t.Helper()
	res, err := h.nodes[node].GetJoinedGroupList(ctx, protocol.Actor{UserID: user})
	if err != nil {
		h.t.Fatal(err)
	}
	out := []string{}
	for _, g := range res.GroupList {
		out = append(out, fmt.Sprintf("%s:%s:%d", g.GroupID, g.Role, g.MemberCount))
	}
	return out
}

// views checks, from both nodes, the member list of group id as member
// sees it and the joined lists of users.
func (h *clusterHarness) views(id, member string, wantMembers []string, wantJoined map[string][]string) {
	h.t.Helper()
	for _, n := range []string{"A", "B"} {
		got, err := h.members(n, member, id)
		if err != nil || !slices.Equal(got, wantMembers) {
			h.t.Fatalf("node %s: %s's member list of %s is %v, %v; want %v", n, member, id, got, err, wantMembers)
		}
		for u, want := range wantJoined {
			if got := h.joined(n, u); !slices.Equal(got, want) {
				h.t.Fatalf("node %s: %s's joined groups are %v; want %v", n, u, got, want)
			}
			if in := h.nodes[n].IsGroupMember(id, u); in != slices.ContainsFunc(want, func(s string) bool { return s[:len(id)+1] == id+":" }) {
				h.t.Fatalf("node %s: IsGroupMember(%s, %s) = %v", n, id, u, in)
			}
		}
	}
}

func TestClusterGroups(t *testing.T) {
	srv := redistest.Start(t)
	scenarios := []struct {
		name string
		run  func(t *testing.T, h *clusterHarness, p [2]string)
	}{
		{"create with members; lists from either node", func(t *testing.T, h *clusterHarness, p [2]string) {
			alice, bob := h.connect(p[0], "alice"), h.connect(p[1], "bob")
			h.createGroup(p[0], alice, "g1", protocol.JoinAny, "bob")
			ev := decode[protocol.MemberEnterEvent](t, h.expect(bob, protocol.EvMemberEnter)[0])
			if ev.GroupID != "g1" || !slices.Equal(ev.MemberList, []string{"alice", "bob"}) {
				t.Fatalf("bad member enter %+v", ev)
			}
			h.expect(alice)
			h.views("g1", "bob", []string{"alice:owner", "bob:member"},
				map[string][]string{"alice": {"g1:owner:2"}, "bob": {"g1:member:2"}})
			if _, err := h.members(p[1], "carol", "g1"); !isCode(err, protocol.ErrNotGroupMember) {
				t.Fatalf("a non-member's member list: %v", err)
			}
			if _, err := h.members(p[1], "bob", "nope"); !isCode(err, protocol.ErrGroupNotFound) {
				t.Fatalf("an unknown group's member list: %v", err)
			}
			_, err := h.nodes[p[1]].CreateGroup(ctx, as(bob), protocol.CreateGroupArgs{GroupID: "g1", Name: "again"})
			mustCode(t, err, protocol.ErrGroupExists)
		}},
		{"join and quit", func(t *testing.T, h *clusterHarness, p [2]string) {
			alice, bob := h.connect(p[0], "alice"), h.connect(p[1], "bob")
			h.createGroup(p[0], alice, "g1", protocol.JoinAny)
			if err := h.nodes[p[1]].JoinGroup(ctx, as(bob), protocol.GroupIDArgs{GroupID: "g1"}); err != nil {
				t.Fatal(err)
			}
			if ev := decode[protocol.MemberEnterEvent](t, h.expect(alice, protocol.EvMemberEnter)[0]); !slices.Equal(ev.MemberList, []string{"bob"}) {
				t.Fatalf("bad member enter %+v", ev)
			}
			h.expect(bob)
			mustCode(t, h.nodes[p[0]].JoinGroup(ctx, as(bob), protocol.GroupIDArgs{GroupID: "g1"}), protocol.ErrAlreadyMember)
			h.views("g1", "alice", []string{"alice:owner", "bob:member"},
				map[string][]string{"alice": {"g1:owner:2"}, "bob": {"g1:member:2"}})
			if err := h.nodes[p[1]].QuitGroup(ctx, as(bob), protocol.GroupIDArgs{GroupID: "g1"}); err != nil {
				t.Fatal(err)
			}
			if ev := decode[protocol.MemberLeaveEvent](t, h.expect(alice, protocol.EvMemberLeave)[0]); ev.Member != "bob" {
				t.Fatalf("bad member leave %+v", ev)
			}
			mustCode(t, h.nodes[p[0]].QuitGroup(ctx, as(alice), protocol.GroupIDArgs{GroupID: "g1"}), protocol.ErrOwnerCannotQuit)
			h.views("g1", "alice", []string{"alice:owner"},
				map[string][]string{"alice": {"g1:owner:1"}, "bob": {}})
		}},
		{"invite user to group, kick", func(t *testing.T, h *clusterHarness, p [2]string) {
			alice, bob, carol := h.connect(p[0], "alice"), h.connect(p[1], "bob"), h.connect(p[1], "carol")
			h.createGroup(p[0], alice, "g1", protocol.JoinInvite, "bob")
			h.expect(bob, protocol.EvMemberEnter)
			mustCode(t, h.nodes[p[1]].JoinGroup(ctx, as(carol), protocol.GroupIDArgs{GroupID: "g1"}), protocol.ErrJoinForbidden)
			if err := h.nodes[p[1]].InviteUserToGroup(ctx, as(bob), protocol.GroupUsersArgs{GroupID: "g1", UserList: []string{"carol"}}); err != nil {
				t.Fatal(err)
			}
			h.expect(alice, protocol.EvMemberEnter)
			h.expect(carol, protocol.EvMemberEnter)
			h.expect(bob)
			mustCode(t, h.nodes[p[1]].KickGroupMember(ctx, as(bob), protocol.KickArgs{GroupID: "g1", MemberList: []string{"carol"}}), protocol.ErrNotGroupOwner)
			if err := h.nodes[p[0]].KickGroupMember(ctx, as(alice), protocol.KickArgs{GroupID: "g1", MemberList: []string{"bob"}, Reason: "r"}); err != nil {
				t.Fatal(err)
			}
			if ev := decode[protocol.MemberKickedEvent](t, h.expect(bob, protocol.EvMemberKicked)[0]); ev.OpUser != "alice" || !slices.Equal(ev.MemberList, []string{"bob"}) || ev.Reason != "r" {
				t.Fatalf("bad kick %+v", ev)
			}
			h.expect(carol, protocol.EvMemberKicked)
			h.views("g1", "carol", []string{"alice:owner", "carol:member"},
				map[string][]string{"alice": {"g1:owner:2"}, "bob": {}, "carol": {"g1:member:2"}})
		}},
		{"dismiss", func(t *testing.T, h *clusterHarness, p [2]string) {
			alice, bob := h.connect(p[0], "alice"), h.connect(p[1], "bob")
			h.createGroup(p[0], alice, "g1", protocol.JoinAny, "bob")
			h.createGroup(p[1], bob, "g2", protocol.JoinAny, "alice")
			h.expect(bob, protocol.EvMemberEnter)
			h.expect(alice, protocol.EvMemberEnter)
			mustCode(t, h.nodes[p[1]].DismissGroup(ctx, as(bob), protocol.GroupIDArgs{GroupID: "g1"}), protocol.ErrNotGroupOwner)
			if err := h.nodes[p[0]].DismissGroup(ctx, as(alice), protocol.GroupIDArgs{GroupID: "g1"}); err != nil {
				t.Fatal(err)
			}
			if ev := decode[protocol.GroupDismissedEvent](t, h.expect(bob, protocol.EvGroupDismissed)[0]); ev.GroupID != "g1" || ev.OpUser != "alice" {
				t.Fatalf("bad dismiss %+v", ev)
			}
			h.expect(alice)
			for _, n := range []string{"A", "B"} {
				if _, err := h.members(n, "alice", "g1"); !isCode(err, protocol.ErrGroupNotFound) {
					t.Fatalf("node %s: a dismissed group's member list: %v", n, err)
				}
				for u, want := range map[string]string{"alice": "g2:member:2", "bob": "g2:owner:2"} {
					if got := h.joined(n, u); !slices.Equal(got, []string{want}) {
						t.Fatalf("node %s: %s's joined groups are %v", n, u, got)
					}
				}
			}
		}},
		{"group invitation", func(t *testing.T, h *clusterHarness, p [2]string) {
			alice, bob, carol := h.connect(p[0], "alice"), h.connect(p[1], "bob"), h.connect(p[1], "carol")
			h.createGroup(p[1], bob, "g1", protocol.JoinAny, "alice")
			h.expect(alice, protocol.EvMemberEnter)
			_, err := h.nodes[p[0]].InviteInGroup(ctx, as(alice), protocol.InviteInGroupArgs{GroupID: "g1", InviteeList: []string{"carol"}})
			mustCode(t, err, protocol.ErrNotGroupMember)
			_, err = h.nodes[p[1]].InviteInGroup(ctx, as(carol), protocol.InviteInGroupArgs{GroupID: "g1", InviteeList: []string{"bob"}})
			mustCode(t, err, protocol.ErrNotGroupMember)
			_, err = h.nodes[p[0]].InviteInGroup(ctx, as(alice), protocol.InviteInGroupArgs{GroupID: "nope", InviteeList: []string{"bob"}})
			mustCode(t, err, protocol.ErrGroupNotFound)
			id, err := h.nodes[p[0]].InviteInGroup(ctx, as(alice), protocol.InviteInGroupArgs{GroupID: "g1", InviteeList: []string{"bob"}, Timeout: secs(30)})
			if err != nil {
				t.Fatal(err)
			}
			ring := decode[protocol.NewInvitationEvent](t, h.expect(bob, protocol.EvReceiveNewInvitation)[0])
			if ring.InviteID != id || ring.GroupID != "g1" || ring.Inviter != "alice" {
				t.Fatalf("bad ring %+v", ring)
			}
			h.expect(carol)
			if err := h.nodes[p[1]].Accept(ctx, as(bob), protocol.InviteIDArgs{InviteID: id}); err != nil {
				t.Fatal(err)
			}
			h.expect(alice, protocol.EvInviteeAccepted)
			h.noDeadlines()
		}},
	}
	for _, sc := range scenarios {
		for _, p := range placements {
			t.Run(fmt.Sprintf("%s/owner on %s, member on %s", sc.name, p[0], p[1]), func(t *testing.T) {
				sc.run(t, newClusterHarness(t, srv), p)
			})
		}
	}
}

func isCode(err error, want *protocol.Error) bool { return errors.Is(err, want) }

// race runs a and b at the same moment and returns their errors.
func race(a, b func() error) (errA, errB error) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	wg.Go(func() { <-start; errA = a() })
	wg.Go(func() { <-start; errB = b() })
	close(start)
	wg.Wait()
	return errA, errB
}

// TestClusterGroupRaces: two nodes race on one group, every round: exactly
// one outcome, and the stored group and the users' group indexes agree
// with it.
func TestClusterGroupRaces(t *testing.T) {
	srv := redistest.Start(t)
	const rounds = 100
	t.Run("join vs dismiss", func(t *testing.T) {
		h := newClusterHarness(t, srv)
		alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
		joinedFirst, dismissedFirst := 0, 0
		for round := range rounds {
			id := fmt.Sprintf("g%d", round)
			h.createGroup("A", alice, id, protocol.JoinAny)
			errJoin, errDismiss := race(
				func() error { return h.nodes["B"].JoinGroup(ctx, as(bob), protocol.GroupIDArgs{GroupID: id}) },
				func() error { return h.nodes["A"].DismissGroup(ctx, as(alice), protocol.GroupIDArgs{GroupID: id}) })
			if errDismiss != nil {
				t.Fatalf("round %d: dismiss failed: %v", round, errDismiss)
			}
			switch {
			case errJoin == nil:
				joinedFirst++
			case isCode(errJoin, protocol.ErrGroupNotFound):
				dismissedFirst++
			default:
				t.Fatalf("round %d: join failed: %v", round, errJoin)
			}
			if n, err := srv.Client().Exists(ctx, h.prefix+"sig:grp:"+id).Result(); err != nil || n != 0 {
				t.Fatalf("round %d: the dismissed group is still stored (%d, %v)", round, n, err)
			}
			for _, u := range []string{"alice", "bob"} {
				if got := h.joined("B", u); len(got) != 0 {
					t.Fatalf("round %d: %s still lists %v", round, u, got)
				}
			}
		}
		// bob hears the dismissal of exactly the groups he joined.
		h.sync(bob)
		if n := countEvents(bob, protocol.EvGroupDismissed); n != joinedFirst {
			t.Fatalf("bob heard %d dismissals; he joined %d groups before they were dismissed", n, joinedFirst)
		}
		t.Logf("%d rounds: %d joined first, %d dismissed first", rounds, joinedFirst, dismissedFirst)
	})
	t.Run("two joins past the member cap", func(t *testing.T) {
		cfg := signaling.DefaultConfig()
		cfg.Limits.MaxGroupMembers = 2
		h := newClusterHarnessWith(t, srv, cfg)
		alice, bob, carol := h.connect("A", "alice"), h.connect("A", "bob"), h.connect("B", "carol")
		won := map[string]int{}
		for round := range rounds {
			id := fmt.Sprintf("g%d", round)
			h.createGroup("A", alice, id, protocol.JoinAny)
			errBob, errCarol := race(
				func() error { return h.nodes["A"].JoinGroup(ctx, as(bob), protocol.GroupIDArgs{GroupID: id}) },
				func() error { return h.nodes["B"].JoinGroup(ctx, as(carol), protocol.GroupIDArgs{GroupID: id}) })
			switch {
			case errBob == nil && errCarol == nil:
				t.Fatalf("round %d: both joined a group of at most 2", round)
			case errBob == nil:
				won["bob"]++
				mustCode(t, errCarol, protocol.ErrGroupFull)
			case errCarol == nil:
				won["carol"]++
				mustCode(t, errBob, protocol.ErrGroupFull)
			default:
				t.Fatalf("round %d: neither joined: %v, %v", round, errBob, errCarol)
			}
			if got, err := h.members("B", "alice", id); err != nil || len(got) != 2 {
				t.Fatalf("round %d: members %v, %v", round, got, err)
			}
		}
		if n := len(h.joined("A", "bob")) + len(h.joined("B", "carol")); n != rounds {
			t.Fatalf("bob and carol list %d groups; %d were joined", n, rounds)
		}
		t.Logf("%d rounds: %v", rounds, won)
	})
	t.Run("two creates past the groups per user cap", func(t *testing.T) {
		cfg := signaling.DefaultConfig()
		cfg.Limits.MaxGroupsPerUser = 1
		h := newClusterHarnessWith(t, srv, cfg)
		for round := range rounds {
			user := fmt.Sprintf("u%d", round)
			a, b := &session{user: user}, &session{user: user}
			errA, errB := race(
				func() error {
					_, err := h.nodes["A"].CreateGroup(ctx, as(a), protocol.CreateGroupArgs{Name: "a"})
					return err
				},
				func() error {
					_, err := h.nodes["B"].CreateGroup(ctx, as(b), protocol.CreateGroupArgs{Name: "b"})
					return err
				})
			if (errA == nil) == (errB == nil) {
				t.Fatalf("round %d: not exactly one create: %v, %v", round, errA, errB)
			}
			if errA != nil {
				mustCode(t, errA, protocol.ErrTooManyGroups)
			} else {
				mustCode(t, errB, protocol.ErrTooManyGroups)
			}
			if got := h.joined("A", user); len(got) != 1 {
				t.Fatalf("round %d: %s lists %v", round, user, got)
			}
		}
	})
	t.Run("quit vs kick", func(t *testing.T) {
		h := newClusterHarness(t, srv)
		alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
		quit, kicked := 0, 0
		for round := range rounds {
			id := fmt.Sprintf("g%d", round)
			h.createGroup("A", alice, id, protocol.JoinAny, "bob")
			errQuit, errKick := race(
				func() error { return h.nodes["B"].QuitGroup(ctx, as(bob), protocol.GroupIDArgs{GroupID: id}) },
				func() error {
					return h.nodes["A"].KickGroupMember(ctx, as(alice), protocol.KickArgs{GroupID: id, MemberList: []string{"bob"}})
				})
			switch {
			case errQuit == nil && errKick == nil:
				t.Fatalf("round %d: bob both quit and was kicked", round)
			case errQuit == nil:
				quit++
				mustCode(t, errKick, protocol.ErrNotGroupMember)
			case errKick == nil:
				kicked++
				mustCode(t, errQuit, protocol.ErrNotGroupMember)
			default:
				t.Fatalf("round %d: neither: %v, %v", round, errQuit, errKick)
			}
			if got, err := h.members("A", "alice", id); err != nil || !slices.Equal(got, []string{"alice:owner"}) {
				t.Fatalf("round %d: members %v, %v", round, got, err)
			}
		}
		h.sync(alice, bob)
		if n := countEvents(alice, protocol.EvMemberLeave); n != quit {
			t.Errorf("alice heard %d quits; %d won", n, quit)
		}
		if n := countEvents(bob, protocol.EvMemberKicked); n != kicked {
			t.Errorf("bob heard %d kicks; %d won", n, kicked)
		}
		if got := h.joined("B", "bob"); len(got) != 0 {
			t.Fatalf("bob still lists %v", got)
		}
		t.Logf("%d rounds: %d quit, %d kicked", rounds, quit, kicked)
	})
}

func countEvents(s *session, name string) int {
	n := 0
	for _, e := range s.take() {
		if e.Event == name {
			n++
		}
	}
	return n
}

// TestClusterGroupInvitationVsKick: an invitee kicked on one node while
// the group invitation to them is sent on the other: either the
// invitation rings a member, or it is refused; never a ring for a
// non-member.
func TestClusterGroupInvitationVsKick(t *testing.T) {
	srv := redistest.Start(t)
	h := newClusterHarness(t, srv)
	alice, bob, carol := h.connect("A", "alice"), h.connect("B", "bob"), h.connect("B", "carol")
	rang, refused := 0, 0
	for round := range 100 {
		id := fmt.Sprintf("g%d", round)
		h.createGroup("B", bob, id, protocol.JoinAny, "alice", "carol")
		var inv string
		errInv, errKick := race(
			func() error {
				var err error
				inv, err = h.nodes["A"].InviteInGroup(ctx, as(alice), protocol.InviteInGroupArgs{GroupID: id, InviteeList: []string{"carol"}, Timeout: secs(30)})
				return err
			},
			func() error {
				return h.nodes["B"].KickGroupMember(ctx, as(bob), protocol.KickArgs{GroupID: id, MemberList: []string{"carol"}})
			})
		if errKick != nil {
			t.Fatalf("round %d: kick failed: %v", round, errKick)
		}
		if errInv == nil {
			rang++
			if err := h.nodes["A"].Cancel(ctx, as(alice), protocol.InviteIDArgs{InviteID: inv}); err != nil {
				t.Fatal(err)
			}
		} else {
			refused++
			mustCode(t, errInv, protocol.ErrNotGroupMember)
		}
	}
	h.sync(carol)
	if n := countEvents(carol, protocol.EvReceiveNewInvitation); n != rang {
		t.Fatalf("carol was rung %d times; %d invitations were sent", n, rang)
	}
	t.Logf("100 rounds: %d rang before the kick, %d refused after it", rang, refused)
	h.noDeadlines()
}

// TestClusterPresence: status and presence across nodes: queries from
// either node, subscriptions that reach the subscriber's devices on both
// nodes, status changes decided on one node heard on the other.
func TestClusterPresence(t *testing.T) {
	srv := redistest.Start(t)
	for _, p := range placements {
		t.Run(fmt.Sprintf("alice on %s, bob on %s", p[0], p[1]), func(t *testing.T) {
			h := newClusterHarness(t, srv)
			other := map[string]string{"A": "B", "B": "A"}
			alice, bob := h.connect(p[0], "alice"), h.connect(p[1], "bob")
			bob2 := h.connect(other[p[1]], "bob") // a device on the other node
			h.connect(p[1], "carol")
			h.createGroup(p[0], alice, "g1", protocol.JoinAny, "bob")
			h.expect(bob, protocol.EvMemberEnter)
			h.expect(bob2, protocol.EvMemberEnter)
			status := func(node, viewer string, users ...string) []string {
				t.Helper()
				res, err := h.nodes[node].GetUserStatus(ctx, protocol.Actor{UserID: viewer}, protocol.UserIDListArgs{UserIDList: users})
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, s := range res.StatusList {
					out = append(out, fmt.Sprintf("%s:%s:%s", s.UserID, s.StatusType, s.CustomStatus))
				}
				return out
			}
			for _, n := range []string{"A", "B"} {
				if got := status(n, "bob", "alice", "carol", "bob"); !slices.Equal(got, []string{"alice:online:", "carol:unknown:", "bob:online:"}) {
					t.Fatalf("node %s: bob sees %v", n, got)
				}
				if got := h.nodes[n].Online("bob"); got != 2 {
					t.Fatalf("node %s: bob has %d connections, want 2", n, got)
				}
			}
			_, err := h.nodes[p[1]].SubscribeUserStatus(ctx, as(bob), protocol.UserIDListArgs{UserIDList: []string{"carol"}})
			mustCode(t, err, protocol.ErrStatusNotVisible)
			res, err := h.nodes[p[1]].SubscribeUserStatus(ctx, as(bob), protocol.UserIDListArgs{UserIDList: []string{"alice"}})
			if err != nil || len(res.StatusList) != 1 || res.StatusList[0].StatusType != protocol.StatusOnline {
				t.Fatalf("subscribe: %+v, %v", res, err)
			}
			statusEv := func(s *session) protocol.UserStatus {
				t.Helper()
				r := decode[protocol.UserStatusResult](t, h.expect(s, protocol.EvUserStatusChanged)[0])
				if len(r.StatusList) != 1 {
					t.Fatalf("%s: bad status event %+v", s.user, r)
				}
				return r.StatusList[0]
			}

			// A custom status set on alice's node: bob's devices on both
			// nodes hear it, and alice's other device (on the other node).
			alice2 := h.connect(other[p[0]], "alice")
			if err := h.nodes[p[0]].SetSelfStatus(ctx, as(alice), protocol.SetSelfStatusArgs{CustomStatus: "busy"}); err != nil {
				t.Fatal(err)
			}
			for _, s := range []*session{bob, bob2, alice2} {
				if st := statusEv(s); st.UserID != "alice" || st.StatusType != protocol.StatusOnline || st.CustomStatus != "busy" {
					t.Fatalf("%s got %+v", s.user, st)
				}
			}
			h.expect(alice)
			if got := status(other[p[0]], "bob", "alice"); !slices.Equal(got, []string{"alice:online:busy"}) {
				t.Fatalf("bob sees %v", got)
			}

			// alice's devices leave one by one: offline once the last does.
			h.nodes[other[p[0]]].Detach(alice2)
			h.expect(bob)
			h.nodes[p[0]].Detach(alice)
			if st := statusEv(bob); st.StatusType != protocol.StatusOffline || st.CustomStatus != "busy" {
				t.Fatalf("bob got %+v", st)
			}
			h.expect(bob2, protocol.EvUserStatusChanged)
			if got := status(p[0], "bob", "alice"); !slices.Equal(got, []string{"alice:offline:busy"}) {
				t.Fatalf("bob sees %v", got)
			}

			// Back, on the other node: online.
			alice = h.connect(other[p[0]], "alice")
			if st := statusEv(bob2); st.StatusType != protocol.StatusOnline {
				t.Fatalf("bob got %+v", st)
			}
			h.expect(bob, protocol.EvUserStatusChanged)

			// bob unsubscribes on his other device: no more events.
			if err := h.nodes[other[p[1]]].UnsubscribeUserStatus(ctx, as(bob2), protocol.UserIDListArgs{}); err != nil {
				t.Fatal(err)
			}
			if err := h.nodes[other[p[0]]].SetSelfStatus(ctx, as(alice), protocol.SetSelfStatusArgs{CustomStatus: "away"}); err != nil {
				t.Fatal(err)
			}
			h.expect(bob)
			h.expect(bob2)

			// A subscription ends with the subscriber's last connection.
			if _, err := h.nodes[p[1]].SubscribeUserStatus(ctx, as(bob), protocol.UserIDListArgs{UserIDList: []string{"alice"}}); err != nil {
				t.Fatal(err)
			}
			h.nodes[p[1]].Detach(bob)
			h.nodes[other[p[1]]].Detach(bob2)
			bob = h.connect(p[1], "bob")
			if err := h.nodes[other[p[0]]].SetSelfStatus(ctx, as(alice), protocol.SetSelfStatusArgs{CustomStatus: "back"}); err != nil {
				t.Fatal(err)
			}
			h.expect(bob)
		})
	}
}

// presenceLog is a PresenceObserver recording the transitions of one user.
type presenceLog struct {
	user string
	mu   sync.Mutex
	got  []bool
}

func (p *presenceLog) InvitationNote(signaling.InvitationNote) {}

func (p *presenceLog) UserPresence(user string, online bool, _ time.Time) {
	if user == p.user {
		p.mu.Lock()
		p.got = append(p.got, online)
		p.mu.Unlock()
	}
}

// TestClusterPresenceRace: a user's two devices connect at the same moment
// on the two nodes, then leave at the same moment: their subscriber hears
// exactly one "online", then exactly one "offline", every round, and so do
// the presence observers of the cluster (one node's of them).
func TestClusterPresenceRace(t *testing.T) {
	srv := redistest.Start(t)
	h := newClusterHarness(t, srv)
	obs := &presenceLog{user: "carol"}
	for _, n := range []string{"A", "B"} {
		h.nodes[n].AddObserver(obs)
	}
	alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
	h.createGroup("A", alice, "g1", protocol.JoinAny, "bob", "carol")
	if _, err := h.nodes["B"].SubscribeUserStatus(ctx, as(bob), protocol.UserIDListArgs{UserIDList: []string{"carol"}}); err != nil {
		t.Fatal(err)
	}
	h.sync(bob)
	bob.take()
	const rounds = 100
	for round := range rounds {
		devs := []*session{{user: "carol"}, {user: "carol"}}
		nodes := []string{"A", "B"}
		if _, err := race(
			func() error { return h.nodes[nodes[0]].Attach(ctx, devs[0]) },
			func() error { return h.nodes[nodes[1]].Attach(ctx, devs[1]) }); err != nil {
			t.Fatal(err)
		}
		for _, d := range devs {
			d.drain()
		}
		var got []string
		for _, e := range h.expectAny(bob) {
			got = append(got, string(decode[protocol.UserStatusResult](t, e).StatusList[0].StatusType))
		}
		if !slices.Equal(got, []string{"online"}) {
			t.Fatalf("round %d: bob heard %v as carol's devices connected", round, got)
		}
		race(
			func() error { h.nodes[nodes[0]].Detach(devs[0]); return nil },
			func() error { h.nodes[nodes[1]].Detach(devs[1]); return nil })
		got = nil
		for _, e := range h.expectAny(bob) {
			got = append(got, string(decode[protocol.UserStatusResult](t, e).StatusList[0].StatusType))
		}
		if !slices.Equal(got, []string{"offline"}) {
			t.Fatalf("round %d: bob heard %v as carol's devices left", round, got)
		}
	}
	// Two nodes' observers: their calls are in order per node only.
	count := func() (on, off int) {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		for _, o := range obs.got {
			if o {
				on++
			} else {
				off++
			}
		}
		return on, off
	}
	h.eventually(func() string {
		if on, off := count(); on < rounds || off < rounds {
			return fmt.Sprintf("the observers heard %d online, %d offline; %d of each happened", on, off, rounds)
		}
		return ""
	})
	h.sync(bob) // more rounds of both nodes' queues: an extra call shows
	if on, off := count(); on != rounds || off != rounds {
		t.Fatalf("the observers heard %d online, %d offline; %d of each happened", on, off, rounds)
	}
}

// TestClusterOfflineAfterFailedRemoval: the registry's write of a user's
// last connection's removal fails once (as a timeout on a loaded Redis
// does; the writer retries it): the user's subscriber still hears
// "offline", once, and the presence observers too. (The node gave up the
// announcement at the first failed write: the subscriber never heard it.)
func TestClusterOfflineAfterFailedRemoval(t *testing.T) {
	srv := redistest.Start(t)
	h := newClusterHarness(t, srv)
	obs := &presenceLog{user: "carol"}
	h.nodes["A"].AddObserver(obs)
	alice, bob := h.connect("A", "alice"), h.connect("B", "bob")
	h.createGroup("A", alice, "g1", protocol.JoinAny, "bob", "carol")
	if _, err := h.nodes["B"].SubscribeUserStatus(ctx, as(bob), protocol.UserIDListArgs{UserIDList: []string{"carol"}}); err != nil {
		t.Fatal(err)
	}
	h.sync(bob)
	bob.take()
	carol := h.connect("A", "carol")
	status := func() []string {
		var got []string
		for _, e := range h.expectAny(bob) {
			got = append(got, string(decode[protocol.UserStatusResult](t, e).StatusList[0].StatusType))
		}
		return got
	}
	if got := status(); !slices.Equal(got, []string{"online"}) {
		t.Fatalf("bob heard %v as carol connected", got)
	}
	// HDEL of a string fails (WRONGTYPE) until the test deletes it: the
	// registry's write of carol's removal fails, and its retries too.
	rc, conn := srv.Client(), h.prefix+"conn:carol"
	wrongType := func() int {
		info, err := rc.Info(ctx, "errorstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		_, after, _ := strings.Cut(info, "errorstat_WRONGTYPE:count=")
		n, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(after, "\r", 2)[0]))
		return n
	}
	before := wrongType()
	if err := rc.Set(ctx, conn, "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	detached := make(chan struct{})
	go func() {
		defer close(detached)
		h.nodes["A"].Detach(carol)
	}()
	h.eventually(func() string {
		if wrongType() == before {
			return "the registry's write of carol's removal did not fail"
		}
		return ""
	})
	if err := rc.Del(ctx, conn).Err(); err != nil {
		t.Fatal(err)
	}
	<-detached
	if got := status(); !slices.Equal(got, []string{"offline"}) {
		t.Fatalf("bob heard %v as carol's connection closed (its removal's first write failed)", got)
	}
	h.eventually(func() string {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		if !slices.Equal(obs.got, []bool{true, false}) {
			return fmt.Sprintf("the observers heard %v, want [true false]", obs.got)
		}
		return ""
	})
}

// expectAny waits (sync) and returns what s got.
func (h *clusterHarness) expectAny(s *session) []protocol.EventFrame {
	h.t.Helper()
	h.sync(s)
	return s.take()
}
