package signaling_test

import (
	"strings"
	"testing"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// statusEvents returns the onUserStatusChanged statuses s received (and
// forgets everything it received).
func statusEvents(t *testing.T, s *session) []protocol.UserStatus {
	t.Helper()
	var out []protocol.UserStatus
	for _, ev := range s.take() {
		if ev.Event == protocol.EvUserStatusChanged {
			out = append(out, decode[protocol.UserStatusResult](t, ev).StatusList...)
		}
	}
	return out
}

func wantStatuses(t *testing.T, who string, got []protocol.UserStatus, want ...protocol.UserStatus) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s got statuses %+v, want %+v", who, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s got statuses %+v, want %+v", who, got, want)
		}
	}
}

// presenceGroup makes users members of one group, so that they may see each
// other's status.
func presenceGroup(t *testing.T, h *harness, owner *session, members ...string) {
	t.Helper()
	if _, err := h.eng.CreateGroup(ctx, as(owner), protocol.CreateGroupArgs{Name: "lobby", MemberList: members}); err != nil {
		t.Fatal(err)
	}
}

func st(user string, typ protocol.StatusType, text string) protocol.UserStatus {
	return protocol.UserStatus{UserID: user, StatusType: typ, CustomStatus: text}
}

func TestPresenceAcrossDevices(t *testing.T) {
	h := newHarness(t)
	alice := h.connect("alice")
	h.seen("bob")
	presenceGroup(t, h, alice, "bob")
	alice.take()

	res, err := h.eng.SubscribeUserStatus(ctx, as(alice), protocol.UserIDListArgs{UserIDList: []string{"bob"}})
	if err != nil {
		t.Fatal(err)
	}
	wantStatuses(t, "subscribe reply", res.StatusList, st("bob", protocol.StatusOffline, ""))

	phone := h.connect("bob")
	wantStatuses(t, "alice (bob's first device)", statusEvents(t, alice), st("bob", protocol.StatusOnline, ""))
	laptop := h.connect("bob")
	wantStatuses(t, "alice (bob's second device)", statusEvents(t, alice))
	h.eng.Detach(phone)
	wantStatuses(t, "alice (bob's phone closed, laptop open)", statusEvents(t, alice))
	got, err := h.eng.GetUserStatus(ctx, as(alice), protocol.UserIDListArgs{UserIDList: []string{"bob", "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	wantStatuses(t, "getUserStatus with one device left", got.StatusList, st("bob", protocol.StatusOnline, ""), st("alice", protocol.StatusOnline, ""))
	h.eng.Detach(laptop)
	wantStatuses(t, "alice (bob's last device closed)", statusEvents(t, alice), st("bob", protocol.StatusOffline, ""))
	got, _ = h.eng.GetUserStatus(ctx, as(alice), protocol.UserIDListArgs{UserIDList: []string{"bob"}})
	wantStatuses(t, "getUserStatus after the last device", got.StatusList, st("bob", protocol.StatusOffline, ""))

	// Unsubscribed: no more events.
	if err := h.eng.UnsubscribeUserStatus(ctx, as(alice), protocol.UserIDListArgs{UserIDList: []string{"bob"}}); err != nil {
		t.Fatal(err)
	}
	h.connect("bob")
	wantStatuses(t, "alice after unsubscribing", statusEvents(t, alice))
}

func TestPresenceSubscriptionsEndWithLastConnection(t *testing.T) {
	h := newHarness(t)
	alice, bob := h.connect("alice"), h.connect("bob")
	presenceGroup(t, h, alice, "bob")
	if _, err := h.eng.SubscribeUserStatus(ctx, as(alice), protocol.UserIDListArgs{UserIDList: []string{"bob"}}); err != nil {
		t.Fatal(err)
	}
	h.eng.Detach(alice)
	alice2 := h.connect("alice")
	alice2.take()
	h.eng.Detach(bob)
	wantStatuses(t, "alice's new connection (subscription ended with the last one)", statusEvents(t, alice2))
}

func TestPresenceVisibilityRule(t *testing.T) {
	h := newHarness(t)
	alice, _, mallory := h.connect("alice"), h.connect("bob"), h.connect("mallory")
	presenceGroup(t, h, alice, "bob")

	got, err := h.eng.GetUserStatus(ctx, as(mallory), protocol.UserIDListArgs{UserIDList: []string{"alice", "nobody", "mallory"}})
	if err != nil {
		t.Fatal(err)
	}
	wantStatuses(t, "mallory's getUserStatus", got.StatusList,
		st("alice", protocol.StatusUnknown, ""), st("nobody", protocol.StatusUnknown, ""), st("mallory", protocol.StatusOnline, ""))
	_, err = h.eng.SubscribeUserStatus(ctx, as(mallory), protocol.UserIDListArgs{UserIDList: []string{"mallory", "alice"}})
	mustCode(t, err, protocol.ErrStatusNotVisible)
	if !strings.Contains(err.Error(), "alice") {
		t.Errorf("error %v does not name alice", err)
	}
	// Nothing was subscribed: mallory's own status change is not sent to her
	// (she has no other device), and alice's text reaches only bob's subscription.
	if _, err := h.eng.SubscribeUserStatus(ctx, as(h.connect("bob")), protocol.UserIDListArgs{UserIDList: []string{"alice"}}); err != nil {
		t.Fatal(err)
	}
	if err := h.eng.SetSelfStatus(ctx, as(alice), protocol.SetSelfStatusArgs{CustomStatus: "busy"}); err != nil {
		t.Fatal(err)
	}
	wantStatuses(t, "mallory", statusEvents(t, mallory))

	// Bad lists.
	_, err = h.eng.GetUserStatus(ctx, as(mallory), protocol.UserIDListArgs{})
	mustCode(t, err, protocol.ErrInvalidParameter)
	_, err = h.eng.GetUserStatus(ctx, as(mallory), protocol.UserIDListArgs{UserIDList: make([]string, h.cfg.Limits.MaxGroupMembers+1)})
	mustCode(t, err, protocol.ErrListTooLarge)
}

func TestPresenceSubscriptionBound(t *testing.T) {
	h := newHarness(t)
	h.cfg.Limits.MaxStatusSubscriptions = 2
	h.restart()
	alice := h.connect("alice")
	presenceGroup(t, h, alice, "b1", "b2", "b3")
	if _, err := h.eng.SubscribeUserStatus(ctx, as(alice), protocol.UserIDListArgs{UserIDList: []string{"b1", "b2"}}); err != nil {
		t.Fatal(err)
	}
	// Again the same: no new subscription, allowed.
	if _, err := h.eng.SubscribeUserStatus(ctx, as(alice), protocol.UserIDListArgs{UserIDList: []string{"b2"}}); err != nil {
		t.Fatal(err)
	}
	// The bound counts every device of the user.
	_, err := h.eng.SubscribeUserStatus(ctx, as(h.connect("alice")), protocol.UserIDListArgs{UserIDList: []string{"b3"}})
	mustCode(t, err, protocol.ErrTooManyStatusSubs)
	if err := h.eng.UnsubscribeUserStatus(ctx, as(alice), protocol.UserIDListArgs{UserIDList: []string{"b1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.eng.SubscribeUserStatus(ctx, as(alice), protocol.UserIDListArgs{UserIDList: []string{"b3"}}); err != nil {
		t.Fatalf("after unsubscribing one: %v", err)
	}
	// An empty list unsubscribes from everyone.
	if err := h.eng.UnsubscribeUserStatus(ctx, as(alice), protocol.UserIDListArgs{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.eng.SubscribeUserStatus(ctx, as(alice), protocol.UserIDListArgs{UserIDList: []string{"b1", "b3"}}); err != nil {
		t.Fatalf("after unsubscribing all: %v", err)
	}
}

func TestPresenceCustomStatus(t *testing.T) {
	h := newHarness(t)
	alice, bob := h.connect("alice"), h.connect("bob")
	bob2 := h.connect("bob")
	presenceGroup(t, h, alice, "bob")
	if _, err := h.eng.SubscribeUserStatus(ctx, as(alice), protocol.UserIDListArgs{UserIDList: []string{"bob"}}); err != nil {
		t.Fatal(err)
	}
	bob.take()
	bob2.take()
	if err := h.eng.SetSelfStatus(ctx, as(bob), protocol.SetSelfStatusArgs{CustomStatus: "in a meeting"}); err != nil {
		t.Fatal(err)
	}
	wantStatuses(t, "alice (subscriber)", statusEvents(t, alice), st("bob", protocol.StatusOnline, "in a meeting"))
	wantStatuses(t, "bob's other device", statusEvents(t, bob2), st("bob", protocol.StatusOnline, "in a meeting"))
	wantStatuses(t, "bob's device that set it (gets the reply)", statusEvents(t, bob))
	// The same text again changes nothing.
	if err := h.eng.SetSelfStatus(ctx, as(bob), protocol.SetSelfStatusArgs{CustomStatus: "in a meeting"}); err != nil {
		t.Fatal(err)
	}
	wantStatuses(t, "alice (same text)", statusEvents(t, alice))

	err := h.eng.SetSelfStatus(ctx, as(bob), protocol.SetSelfStatusArgs{CustomStatus: strings.Repeat("x", h.cfg.Limits.MaxCustomStatusBytes+1)})
	mustCode(t, err, protocol.ErrDataTooLarge)
	h.store.FailNext(1)
	err = h.eng.SetSelfStatus(ctx, as(bob), protocol.SetSelfStatusArgs{CustomStatus: "lost"})
	mustCode(t, err, protocol.ErrStoreUnavailable)
	wantStatuses(t, "alice (refused texts)", statusEvents(t, alice))

	// The text survives a restart, and shows with offline too.
	h.restart()
	carol := h.connect("carol")
	if err := h.eng.JoinGroup(ctx, as(carol), protocol.GroupIDArgs{GroupID: groupOf(t, h, carol)}); err != nil {
		t.Fatal(err)
	}
	got, err := h.eng.GetUserStatus(ctx, as(carol), protocol.UserIDListArgs{UserIDList: []string{"bob"}})
	if err != nil {
		t.Fatal(err)
	}
	wantStatuses(t, "after a restart", got.StatusList, st("bob", protocol.StatusOffline, "in a meeting"))
	// Cleared with "".
	bob = h.connect("bob")
	if err := h.eng.SetSelfStatus(ctx, as(bob), protocol.SetSelfStatusArgs{}); err != nil {
		t.Fatal(err)
	}
	got, _ = h.eng.GetUserStatus(ctx, as(carol), protocol.UserIDListArgs{UserIDList: []string{"bob"}})
	wantStatuses(t, "after clearing", got.StatusList, st("bob", protocol.StatusOnline, ""))
}

// groupOf returns the ID of the one group in the engine, as seen by the
// owner "alice" (s must be able to join it: joinOption any).
func groupOf(t *testing.T, h *harness, _ *session) string {
	t.Helper()
	res, err := h.eng.GetJoinedGroupList(ctx, as(h.connect("alice")))
	if err != nil || len(res.GroupList) != 1 {
		t.Fatalf("GetJoinedGroupList = %+v, %v", res, err)
	}
	return res.GroupList[0].GroupID
}
