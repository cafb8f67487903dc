package calls

import (
	"encoding/json"
	"log/slog"
	"strings"

	"github.com/switchboard-rtc/switchboard/rooms"
	"github.com/switchboard-rtc/switchboard/signaling"
)

// Mic on through invitations (ROOMS.md, "Mic on by request or invitation"):
// a live room's seats are asked for and offered with plain signaling
// invitations whose data says so, as calls are recognised by theirs:
//
//	{"businessID":"live_seat","cmd":"takeSeat","roomID":"r1"}
//	    an audience member's mic request, to the host; the host's accept
//	    puts the inviter on a seat.
//	{"businessID":"live_seat","cmd":"pickSeat","roomID":"r1","userID":"s2"}
//	    the host's mic invitation; an invitee's accept puts that invitee on
//	    a seat (only userID's, when it is given: a classroom invites the
//	    whole class and names the speaker).
//
// Other fields are the app's. The server acts on the accept (the
// InvitationNote that reports it): rooms.GrantSeat checks that the approver
// is the room's host and tells the member the outcome with onSwitchRole.

// SeatBusinessID marks an invitation's data as a live room's mic request or
// mic invitation.
const SeatBusinessID = "live_seat"

// Commands of seat data: TRTC voice room's names.
const (
	SeatCmdRequest = "takeSeat" // mic request: audience member → host
	SeatCmdInvite  = "pickSeat" // mic invitation: host → audience member
)

// SeatData is the parsed data of a mic request or invitation.
type SeatData struct {
	Cmd    string `json:"cmd"`
	RoomID string `json:"roomID"`
	UserID string `json:"userID"` // pickSeat: the only invitee whose accept counts; "": any
}

// ParseSeatData parses an invitation's data; ok is false when it is not a
// well-formed mic request or invitation (then it is plain signaling).
func ParseSeatData(data string) (SeatData, bool) {
	if !strings.Contains(data, SeatBusinessID) {
		return SeatData{}, false
	}
	var d struct {
		BusinessID string `json:"businessID"`
		SeatData
	}
	if json.Unmarshal([]byte(data), &d) != nil || d.BusinessID != SeatBusinessID || !rooms.ValidRoomID(d.RoomID) {
		return SeatData{}, false
	}
	if d.Cmd != SeatCmdRequest && d.Cmd != SeatCmdInvite {
		return SeatData{}, false
	}
	return d.SeatData, true
}

// SeatGranter is what mic invitations use of rooms. *rooms.Manager
// implements it.
type SeatGranter interface {
	GrantSeat(roomID, host, userID, via string) error
}

var _ SeatGranter = (*rooms.Manager)(nil)

// seatInvitations turns accepted mic requests and invitations into seats.
// It is a signaling.Observer: notes come one at a time, with no lock held.
type seatInvitations struct {
	rooms SeatGranter
	log   *slog.Logger
}

// InvitationNote grants a seat for each accept of a mic request (to its
// inviter, approved by the accepting host) or of a mic invitation (to the
// accepting invitee, approved by the inviting host).
func (s seatInvitations) InvitationNote(n signaling.InvitationNote) {
	if len(n.Changes) == 0 {
		return
	}
	d, ok := ParseSeatData(n.Data)
	if !ok {
		return
	}
	for _, ch := range n.Changes {
		if ch.State != signaling.StateAccepted {
			continue
		}
		host, user, via := ch.UserID, n.Inviter, rooms.SwitchByRequest
		if d.Cmd == SeatCmdInvite {
			if d.UserID != "" && d.UserID != ch.UserID {
				continue
			}
			host, user, via = n.Inviter, ch.UserID, rooms.SwitchByInvitation
		}
		if err := s.rooms.GrantSeat(d.RoomID, host, user, via); err != nil {
			s.log.Info("mic invitation accepted, no seat given", "invite", n.InviteID, "room", d.RoomID, "user", user, "err", err)
		}
	}
}
