package calls_test

import (
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/media/peer"
	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/rooms/roomclient"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/web/webtest"
)

func videoPackets(r *roomclient.Room, user string) uint64 {
	return r.Received()[peer.TrackKey{StreamID: user, Kind: media.KindVideo}].Packets
}

// TestCallSurvivesReconnect: the caller's WebSocket is cut in a running
// call; her room client reconnects and resumes its entry within
// media.rejoin_grace by itself. The call is not disturbed: it stays running
// (no onCallEnd, the line still busy), media flows both ways again, and
// her hangup on the new connection ends it with its full duration.
func TestCallSurvivesReconnect(t *testing.T) {
	s := webtest.Start(t, webtest.Options{Rooms: rooms.Config{RejoinGrace: 10 * time.Second}})
	c := ctx(t)
	d := &webtest.CutDialer{Stack: s, User: "alice"}
	alice, err := d.Dial(c)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob := s.Dial("bob")

	var res calls.CallResult
	if err := alice.Do(c, calls.OpCall, calls.CallArgs{Invitee: "bob"}, &res); err != nil {
		t.Fatal(err)
	}
	ra, err := roomclient.Enter(c, alice, res.RoomID, roomclient.Options{Peer: peerCfg(), Redial: d.Dial})
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	wait[protocol.NewInvitationEvent](t, bob, protocol.EvReceiveNewInvitation, byInvite(res.CallID))
	if err := bob.Accept(c, res.CallID, ""); err != nil {
		t.Fatal(err)
	}
	rb := enter(t, bob, res.RoomID)
	begin := wait[calls.BeginEvent](t, bob, calls.EvCallBegin, nil)
	eventually(t, "media both ways", func() bool { return videoPackets(ra, "bob") > 10 && videoPackets(rb, "alice") > 10 })

	d.Cut()
	eventually(t, "alice's room client to resume on a new connection", func() bool {
		resumed, entered := ra.Rejoins()
		if entered > 0 {
			t.Fatal("alice entered anew instead of resuming")
		}
		return resumed == 1
	})
	a0, b0 := videoPackets(ra, "bob"), videoPackets(rb, "alice")
	eventually(t, "media both ways after the resume", func() bool {
		return videoPackets(ra, "bob") > a0+20 && videoPackets(rb, "alice") > b0+20
	})
	rec, ok := s.Calls.Call(res.CallID)
	if !ok || !rec.EndedAt.IsZero() || !s.Calls.Busy("alice") || !s.Calls.Busy("bob") {
		t.Fatalf("after the reconnect the call is %+v (found %v), busy alice %v bob %v; want it running",
			rec, ok, s.Calls.Busy("alice"), s.Calls.Busy("bob"))
	}
	if err := bob.ExpectNoEvent(c, 0, calls.EvCallEnd); err != nil {
		t.Fatalf("bob: %v", err)
	}

	// The hangup goes over alice's new connection and ends the call once,
	// its duration counted from the begin, across the reconnect.
	if err := ra.Client().Do(c, calls.OpHangup, calls.CallIDArgs{CallID: res.CallID}, nil); err != nil {
		t.Fatal(err)
	}
	hungUp := time.Now()
	end := wait[calls.EndEvent](t, bob, calls.EvCallEnd, nil)
	lasted := hungUp.Sub(time.UnixMilli(begin.StartTime))
	if end.Reason != calls.EndHangup || end.EndedBy != "alice" || end.CallID != res.CallID ||
		time.Duration(end.DurationMs)*time.Millisecond > lasted+time.Second || time.Duration(end.DurationMs)*time.Millisecond < lasted-time.Second {
		t.Fatalf("onCallEnd %+v, want hangup by alice after about %v", end, lasted)
	}
}
