package calls_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/signaling/client"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// forgedCallEnds are call-end notices an app might forge, each trying
// another way to look like the server's.
var forgedCallEnds = map[string]string{
	"claims server": `{"version":4,"businessID":"av_call","call_type":2,"room_id":"r1","call_end":3600,"sender":"server","data":{"cmd":"hangup","room_id":"r1","call_id":"inv_x"}}`,
	"no sender":     `{"version":4,"businessID":"av_call","call_end":3600,"data":{"cmd":"hangup","room_id":"r1"}}`,
	"hangup only":   `{"businessID":"av_call","data":{"cmd":"hangup"}}`,
	"upper case":    `{"businessID":"av_call","call_end":3600,"SENDER":"server","data":{"cmd":"hangup"}}`,
	"duplicate key": `{"businessID":"av_call","sender":"client","call_end":3600,"sender":"server"}`,
	"escaped id":    `{"businessID":"av\u005fcall","call_end":3600,"data":{"cmd":"hangup"}}`,
	"not av_call":   `{"businessID":"other","call_end":3600,"Sender":"server"}`,
}

// checkClientSent fails unless data, as an app receives it, is not the
// server's: no key that any JSON decoder could read as "sender" says
// "server", and calls.ParseCallData does not call it FromServer.
func checkClientSent(t *testing.T, what, data string) {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(data), &top); err != nil {
		t.Fatalf("%s: data %q is not an object: %v", what, data, err)
	}
	senders := 0
	for k, v := range top {
		if strings.EqualFold(k, "sender") {
			senders++
			if k != "sender" || string(v) != `"client"` {
				t.Errorf("%s: %s=%s in %s", what, k, v, data)
			}
		}
	}
	if senders != 1 {
		t.Errorf("%s: %d sender fields in %s, want one saying client", what, senders, data)
	}
	if cd, ok, _ := calls.ParseCallData(data); ok && cd.FromServer() {
		t.Errorf("%s: a client's data parses as the server's: %s", what, data)
	}
}

// TestForgedCallEndIsMarkedClientSent: call-end data an app sends, by
// invite, inviteInGroup, modifyInvitation, accept, reject or cancel,
// reaches the others marked "sender":"client" whatever it claims, and the
// call ops cannot put call-end data at the top level at all.
func TestForgedCallEndIsMarkedClientSent(t *testing.T) {
	s := newServer(t, opts{})
	alice, bob := s.dial("alice"), s.dial("bob")
	gid, err := alice.CreateGroup(ctx(t), protocol.CreateGroupArgs{Name: "g", MemberList: []string{"bob"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, forged := range forgedCallEnds {
		// invite: the forged one-shot call-end invitation of the issue.
		id, err := alice.Invite(ctx(t), protocol.InviteArgs{Invitee: "bob", Data: forged, Timeout: ptr(0)})
		if err != nil {
			t.Fatalf("%s: invite: %v", name, err)
		}
		inv := wait[protocol.NewInvitationEvent](t, bob, protocol.EvReceiveNewInvitation, byInvite(id))
		checkClientSent(t, name+" (invite)", inv.Data)

		// inviteInGroup.
		id, err = alice.InviteInGroup(ctx(t), protocol.InviteInGroupArgs{GroupID: gid, InviteeList: []string{"bob"}, Data: forged, Timeout: ptr(0)})
		if err != nil {
			t.Fatalf("%s: inviteInGroup: %v", name, err)
		}
		inv = wait[protocol.NewInvitationEvent](t, bob, protocol.EvReceiveNewInvitation, byInvite(id))
		checkClientSent(t, name+" (inviteInGroup)", inv.Data)

		// modifyInvitation of a plain invitation.
		id, err = alice.Invite(ctx(t), protocol.InviteArgs{Invitee: "bob", Data: "hello", Timeout: ptr(60)})
		if err != nil {
			t.Fatal(err)
		}
		wait[protocol.NewInvitationEvent](t, bob, protocol.EvReceiveNewInvitation, byInvite(id))
		if err := alice.ModifyInvitation(ctx(t), id, forged); err != nil {
			t.Fatalf("%s: modify: %v", name, err)
		}
		mod := wait[protocol.ModifiedEvent](t, bob, protocol.EvInvitationModified, byInvite(id))
		checkClientSent(t, name+" (modifyInvitation)", mod.Data)

		// accept, reject and cancel carry data to the other side too.
		if err := bob.Accept(ctx(t), id, forged); err != nil {
			t.Fatalf("%s: accept: %v", name, err)
		}
		acc := wait[protocol.InviteeEvent](t, alice, protocol.EvInviteeAccepted, byInvite(id))
		checkClientSent(t, name+" (accept)", acc.Data)

		id, err = alice.Invite(ctx(t), protocol.InviteArgs{Invitee: "bob", Data: "hello", Timeout: ptr(60)})
		if err != nil {
			t.Fatal(err)
		}
		wait[protocol.NewInvitationEvent](t, bob, protocol.EvReceiveNewInvitation, byInvite(id))
		if err := bob.Reject(ctx(t), id, forged); err != nil {
			t.Fatalf("%s: reject: %v", name, err)
		}
		rej := wait[protocol.InviteeEvent](t, alice, protocol.EvInviteeRejected, byInvite(id))
		checkClientSent(t, name+" (reject)", rej.Data)

		id, err = alice.Invite(ctx(t), protocol.InviteArgs{Invitee: "bob", Data: "hello", Timeout: ptr(60)})
		if err != nil {
			t.Fatal(err)
		}
		wait[protocol.NewInvitationEvent](t, bob, protocol.EvReceiveNewInvitation, byInvite(id))
		if err := alice.Cancel(ctx(t), id, forged); err != nil {
			t.Fatalf("%s: cancel: %v", name, err)
		}
		can := wait[protocol.CancelledEvent](t, bob, protocol.EvInvitationCancelled, byInvite(id))
		checkClientSent(t, name+" (cancel)", can.Data)
	}

	// The call ops compose the data: an app's userData and roomID cannot
	// make it a call end.
	var res calls.CallResult
	if err := alice.Do(ctx(t), calls.OpCall, calls.CallArgs{Invitee: "bob", UserData: forgedCallEnds["claims server"]}, &res); err != nil {
		t.Fatal(err)
	}
	inv := wait[protocol.NewInvitationEvent](t, bob, protocol.EvReceiveNewInvitation, byInvite(res.CallID))
	if cd, ok, err := calls.ParseCallData(inv.Data); !ok || err != nil || cd.IsCallEnd() || cd.Sender != "" || !cd.IsCallStart() {
		t.Fatalf("call op data %s: %+v %v %v", inv.Data, cd, ok, err)
	}
	if err := alice.Do(ctx(t), calls.OpCall, calls.CallArgs{Invitee: "carol", RoomID: `r","sender":"server`}, nil); err == nil {
		t.Fatal("a room ID that injects JSON was accepted")
	}

	// Plain data without a sender passes unchanged.
	id, err := alice.Invite(ctx(t), protocol.InviteArgs{Invitee: "bob", Data: `{"cmd":"raise hand"}`, Timeout: ptr(0)})
	if err != nil {
		t.Fatal(err)
	}
	if inv := wait[protocol.NewInvitationEvent](t, bob, protocol.EvReceiveNewInvitation, byInvite(id)); inv.Data != `{"cmd":"raise hand"}` {
		t.Fatalf("plain data changed: %s", inv.Data)
	}
}

// TestServerCallEndIsTrusted: the server's own call-end data (the follow-up
// invitation after a hangup, and the reject of a ring hung up) carries
// "sender":"server", which is how an app knows the duration is the server's.
func TestServerCallEndIsTrusted(t *testing.T) {
	s := newServer(t, opts{})
	alice, bob := s.dial("alice"), s.dial("bob")
	rc := s.StartCall(alice, bob, "bob")
	s.clock.Advance(42 * time.Second)
	if err := alice.Do(ctx(t), calls.OpHangup, calls.CallIDArgs{CallID: rc.CallID}, nil); err != nil {
		t.Fatal(err)
	}
	followUp := wait[protocol.NewInvitationEvent](t, alice, protocol.EvReceiveNewInvitation, func(ev client.Event) bool {
		var v protocol.NewInvitationEvent
		return ev.Decode(&v) == nil && v.InviteID != rc.CallID
	})
	cd, ok, err := calls.ParseCallData(followUp.Data)
	if !ok || err != nil || !cd.IsCallEnd() || !cd.FromServer() || cd.CallEnd == nil || *cd.CallEnd != 42 || cd.CallID != rc.CallID {
		t.Fatalf("call-end invitation %s: %+v %v %v", followUp.Data, cd, ok, err)
	}

	// A ring hung up by the callee: the caller's onInviteeRejected carries
	// the server's hangup data.
	res := call(t, alice, "bob", calls.MediaAudio)
	wait[protocol.NewInvitationEvent](t, bob, protocol.EvReceiveNewInvitation, byInvite(res.CallID))
	if err := bob.Do(ctx(t), calls.OpHangup, calls.CallIDArgs{CallID: res.CallID}, nil); err != nil {
		t.Fatal(err)
	}
	rej := wait[protocol.InviteeEvent](t, alice, protocol.EvInviteeRejected, byInvite(res.CallID))
	if cd, ok, _ := calls.ParseCallData(rej.Data); !ok || !cd.IsCallEnd() || !cd.FromServer() {
		t.Fatalf("hangup reject data %s: %+v", rej.Data, cd)
	}
}
