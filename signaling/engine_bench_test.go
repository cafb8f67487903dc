package signaling_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/switchboard-rtc/switchboard/signaling"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Hot-path benchmarks of the signaling package: what every request and
// event costs before the network. The end-to-end figures are in
// cmd/switchboard-bench.

var benchInviteFrame = []byte(`{"id":"17","op":"invite","args":{"invitee":"callee00042","data":"{\"bench\":1}","timeout":30}}`)

// BenchmarkDecodeRequest is the decoding of one invite frame: envelope,
// then args, as the transport does for every request.
func BenchmarkDecodeRequest(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchInviteFrame)))
	for b.Loop() {
		req, err := protocol.DecodeRequest(benchInviteFrame)
		if err != nil {
			b.Fatal(err)
		}
		args, err := protocol.DecodeArgs[protocol.InviteArgs](req.Args)
		if err != nil || args.Invitee == "" {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeEvent is the encoding of the ring event, done once per
// invitation and queued to every connection of the invitees.
func BenchmarkEncodeEvent(b *testing.B) {
	b.ReportAllocs()
	ev := protocol.NewInvitationEvent{
		InviteID: "inv_5f0c9a1e2b7d44c1a0e3f912", Inviter: "caller00042", InviteeList: []string{"callee00042"},
		Data: `{"bench":1}`, Timeout: 30, TimeoutMs: 30000,
	}
	for b.Loop() {
		if _, err := protocol.EncodeEvent(protocol.EvReceiveNewInvitation, ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeReply is the encoding of an invite's reply.
func BenchmarkEncodeReply(b *testing.B) {
	b.ReportAllocs()
	res := protocol.InviteResult{InviteID: "inv_5f0c9a1e2b7d44c1a0e3f912"}
	for b.Loop() {
		if _, err := protocol.EncodeReply("17", res, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// discardSession is a connection that drops every frame.
type discardSession struct{ user string }

func (s discardSession) UserID() string                  { return s.user }
func (s discardSession) Deliver(_ []byte)                {}
func (s discardSession) StartReplay(_ *signaling.Replay) {}

// BenchmarkInviteAccept is one invitation's life in the engine on a
// MemoryStore: invite (state, timer, store, ring delivered) then accept
// (transition, store, events delivered, invitation ended).
func BenchmarkInviteAccept(b *testing.B) {
	b.ReportAllocs()
	ctx := context.Background()
	e, err := signaling.NewEngine(ctx, signaling.Params{Config: signaling.DefaultConfig(), Store: signaling.NewMemoryStore(),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	caller, callee := discardSession{"caller"}, discardSession{"callee"}
	for _, s := range []discardSession{caller, callee} {
		if err := e.Attach(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
	timeout := 30
	for b.Loop() {
		id, err := e.Invite(ctx, protocol.Actor{UserID: "caller", Session: caller},
			protocol.InviteArgs{Invitee: "callee", Data: `{"bench":1}`, Timeout: &timeout})
		if err != nil {
			b.Fatal(err)
		}
		if err := e.Accept(ctx, protocol.Actor{UserID: "callee", Session: callee}, protocol.InviteIDArgs{InviteID: id}); err != nil {
			b.Fatal(err)
		}
	}
}
