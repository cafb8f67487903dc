package calls

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
)

// grants records the seats asked of rooms.
type grants struct{ got []string }

func (g *grants) GrantSeat(roomID, host, userID, via string) error {
	g.got = append(g.got, roomID+" "+host+" "+userID+" "+via)
	return nil
}

// TestSeatInvitationGrants: which accepts of mic requests and mic
// invitations become seats, and for whom.
func TestSeatInvitationGrants(t *testing.T) {
	const (
		request = `{"businessID":"live_seat","cmd":"takeSeat","roomID":"r1"}`
		named   = `{"businessID":"live_seat","cmd":"pickSeat","roomID":"r1","userID":"bob"}`
		anyone  = `{"businessID":"live_seat","cmd":"pickSeat","roomID":"r1"}`
	)
	accepted := func(users ...string) []signaling.InviteeChange {
		var out []signaling.InviteeChange
		for _, u := range users {
			out = append(out, signaling.InviteeChange{UserID: u, State: signaling.StateAccepted})
		}
		return out
	}
	tests := []struct {
		name string
		note signaling.InvitationNote
		want []string
	}{
		{"request accepted by the host seats the inviter",
			signaling.InvitationNote{Inviter: "alice", Data: request, Changes: accepted("host")},
			[]string{"r1 host alice " + rooms.SwitchByRequest}},
		{"named pick: the named invitee's accept seats them",
			signaling.InvitationNote{Inviter: "host", Data: named, Changes: accepted("bob")},
			[]string{"r1 host bob " + rooms.SwitchByInvitation}},
		{"named pick: another invitee's accept seats no one",
			signaling.InvitationNote{Inviter: "host", Data: named, Changes: accepted("vic")},
			nil},
		{"named pick: of a class's accepts only the named one counts",
			signaling.InvitationNote{Inviter: "host", Data: named, Changes: accepted("vic", "bob", "eve")},
			[]string{"r1 host bob " + rooms.SwitchByInvitation}},
		{"unnamed pick: each accepting invitee",
			signaling.InvitationNote{Inviter: "host", Data: anyone, Changes: accepted("vic", "eve")},
			[]string{"r1 host vic " + rooms.SwitchByInvitation, "r1 host eve " + rooms.SwitchByInvitation}},
		{"a rejection seats no one",
			signaling.InvitationNote{Inviter: "host", Data: named, Changes: []signaling.InviteeChange{{UserID: "bob", State: signaling.StateRejected}}},
			nil},
		{"plain signaling data is not a mic invitation",
			signaling.InvitationNote{Inviter: "host", Data: `{"cmd":"pickSeat","roomID":"r1"}`, Changes: accepted("bob")},
			nil},
		{"the note of a new invitation has no changes",
			signaling.InvitationNote{Inviter: "host", Data: named, Created: true},
			nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := &grants{}
			seatInvitations{rooms: g, log: slog.New(slog.DiscardHandler)}.InvitationNote(tc.note)
			if !slices.Equal(g.got, tc.want) {
				t.Fatalf("granted %q, want %q", g.got, tc.want)
			}
		})
	}
}
