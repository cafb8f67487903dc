package roomcluster_test

import (
	"testing"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// TestSeatGrantReachesMediaNode: in a live room (seat mode apply) on n2,
// the host is connected to n1 and an audience member to n3. The member's
// mic request (a signaling invitation) is accepted by the host on n1: the
// seat grant goes to n2, which puts the member on a seat; the member, on
// n3, gets onSwitchRole as an anchor.
func TestSeatGrantReachesMediaNode(t *testing.T) {
	_, nodes := startCluster(t, 3, options{})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n1.st.RoomRelay.ForcePlacement("n2")
	h, u := n1.dial(t, "host"), n3.dial(t, "uma")
	c := ctxT(t)
	var res rooms.EnterResult
	if err := h.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "lv", RoomToken: n1.token(t, "host", "lv"), Seats: 2, SeatMode: string(rooms.SeatApply)}, &res); err != nil || res.Node != "n2" {
		t.Fatalf("host creates the room: %+v %v", res, err)
	}
	res = rooms.EnterResult{}
	if err := u.Do(c, rooms.OpEnterRoom, rooms.EnterArgs{RoomID: "lv", Role: string(rooms.RoleAudience), RoomToken: n3.token(t, "uma", "lv")}, &res); err != nil || res.Node != "n2" {
		t.Fatalf("uma enters as audience: %+v %v", res, err)
	}
	timeout := 30
	id, err := u.Invite(c, protocol.InviteArgs{Invitee: "host", Timeout: &timeout, Data: `{"businessID":"live_seat","cmd":"takeSeat","roomID":"lv"}`})
	if err != nil {
		t.Fatal(err)
	}
	ring := func(ev client.Event) bool {
		var v protocol.NewInvitationEvent
		return ev.Decode(&v) == nil && v.InviteID == id
	}
	if _, err := h.WaitEvent(c, protocol.EvReceiveNewInvitation, ring); err != nil {
		t.Fatal(err)
	}
	if err := h.Accept(c, id, ""); err != nil {
		t.Fatal(err)
	}
	ev, err := u.WaitEvent(c, rooms.EvSwitchRole, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sw rooms.SwitchRoleEvent
	if err := ev.Decode(&sw); err != nil || sw.Role != rooms.RoleAnchor || sw.Code != 0 || sw.SeatIndex < 0 {
		t.Fatalf("uma's onSwitchRole: %+v %v", sw, err)
	}
	info, ok := n2.st.Rooms.Info("lv")
	if !ok || len(info.Anchors) != 2 {
		t.Fatalf("room on n2: %+v", info)
	}
}
