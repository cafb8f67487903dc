package rooms

import (
	"context"

	"github.com/switchboard-rtc/switchboard/media"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Ops of the rooms protocol (signaling/ROOMS.md).
const (
	OpEnterRoom      = "enterRoom"
	OpExitRoom       = "exitRoom"
	OpRtcSignal      = "rtcSignal"
	OpMuteLocalAudio = "muteLocalAudio"
	OpMuteLocalVideo = "muteLocalVideo"
	OpSwitchRole     = "switchRole"
	OpTakeSeat       = "takeSeat"
	OpLeaveSeat      = "leaveSeat"
	OpKickSeat       = "kickSeat"
	OpGetRoomInfo    = "getRoomInfo"
)

// Events of the rooms protocol, TRTC's names.
const (
	EvEnterRoom           = "onEnterRoom"
	EvExitRoom            = "onExitRoom"
	EvRemoteUserEnterRoom = "onRemoteUserEnterRoom"
	EvRemoteUserLeaveRoom = "onRemoteUserLeaveRoom"
	EvUserVideoAvailable  = "onUserVideoAvailable"
	EvUserAudioAvailable  = "onUserAudioAvailable"
	EvRtcSignal           = "onRtcSignal"
	EvSwitchRole          = "onSwitchRole"
	EvSeatListChange      = "onSeatListChange"
	EvAnchorEnterSeat     = "onAnchorEnterSeat"
	EvAnchorLeaveSeat     = "onAnchorLeaveSeat"
	// Switchboard's own events (TRTC has none of these names).
	EvRoomHostChanged    = "onRoomHostChanged"
	EvAudienceListChange = "onAudienceListChange"
)

// Why a member switched role (SwitchRoleEvent.Reason).
const (
	SwitchBySelf       = "self"       // its own switchRole, takeSeat or leaveSeat
	SwitchByRequest    = "request"    // the host accepted its mic request (a takeSeat invitation)
	SwitchByInvitation = "invitation" // it accepted the host's mic invitation (a pickSeat invitation)
	SwitchByKick       = "kickSeat"   // the host took it off its seat
	SwitchByHost       = "host"       // it became the room's host (off its seat, still an anchor)
)

// Why an anchor left its seat (SeatEvent.Reason).
const (
	SeatLeft   = 0 // leaveSeat or switchRole to audience
	SeatKicked = 1 // kickSeat by the host
	SeatExited = 2 // it left the room
	SeatToHost = 3 // it became the host (the host sits on no seat)
)

// EnterArgs are enterRoom's args.
type EnterArgs struct {
	RoomID    string `json:"roomID"`
	Role      string `json:"role"`
	RoomToken string `json:"roomToken"`
	// ResumeToken, from an earlier enterRoom reply of this room, resumes
	// that entry on this connection (ROOMS.md, Reconnecting) when it still
	// exists; otherwise the entry is a new one.
	ResumeToken string `json:"resumeToken,omitempty"`
	// Seats and SeatMode are taken when this entry creates the room (its
	// creator becomes its host); otherwise ignored. Seats 0: the
	// limits.room_seats default; at most limits.max_room_seats. SeatMode
	// "" is "free".
	Seats    int    `json:"seats,omitempty"`
	SeatMode string `json:"seatMode,omitempty"`
}

// Seat is one seat of a room: UserID "" when it is free.
type Seat struct {
	Index  int    `json:"index"`
	UserID string `json:"userID"`
}

// RoomInfo is a room's host, seats and audience (getRoomInfo's result, and
// the enterRoom reply's room).
type RoomInfo struct {
	RoomID   string   `json:"roomID"`
	Host     string   `json:"host"`
	SeatMode SeatMode `json:"seatMode"`
	Seats    []Seat   `json:"seats"`
	// Anchors lists the members who may publish (the host first when it is
	// one), Audience those who may not, in order of entry.
	Anchors  []string `json:"anchors"`
	Audience []string `json:"audience"`
}

// ParticipantInfo describes a participant whose media is connected.
type ParticipantInfo struct {
	UserID string `json:"userID"`
	Audio  bool   `json:"audio"`
	Video  bool   `json:"video"`
}

// EnterResult is enterRoom's result.
type EnterResult struct {
	Participants []ParticipantInfo `json:"participants"`
	ICEServers   []media.ICEServer `json:"iceServers"`
	// ResumeToken resumes this entry from another connection after this
	// one closed (EnterArgs.ResumeToken). Keep it secret.
	ResumeToken string `json:"resumeToken"`
	// Resumed: the entry of args.resumeToken was resumed; the client keeps
	// its PeerConnections and the server's media session goes on.
	Resumed bool `json:"resumed"`
	// Role is the caller's role now (a resumed entry keeps the role it had
	// switched to); SeatIndex its seat, -1 for none.
	Role      Role     `json:"role"`
	SeatIndex int      `json:"seatIndex"`
	Room      RoomInfo `json:"room"`
	// Node is the ID of the room's media node in cluster mode (the node
	// whose SFU the media goes to); omitted standalone.
	Node string `json:"node,omitempty"`
}

// SwitchRoleArgs are switchRole's args.
type SwitchRoleArgs struct {
	RoomID string `json:"roomID"`
	Role   string `json:"role"`
}

// TakeSeatArgs are takeSeat's args: Index nil takes the lowest free seat.
type TakeSeatArgs struct {
	RoomID string `json:"roomID"`
	Index  *int   `json:"index,omitempty"`
}

// KickSeatArgs are kickSeat's args.
type KickSeatArgs struct {
	RoomID string `json:"roomID"`
	UserID string `json:"userID"`
}

// SwitchRoleResult is the result of switchRole, takeSeat and leaveSeat:
// the caller's role and seat now (-1: none).
type SwitchRoleResult struct {
	RoomID    string `json:"roomID"`
	Role      Role   `json:"role"`
	SeatIndex int    `json:"seatIndex"`
}

// SwitchRoleEvent is onSwitchRole's data, sent to the member whose role
// switched (after its media may publish, for anchor), or whose switch
// asked by a mic request or invitation failed: Code and Message are then
// the error's and Role is unchanged.
type SwitchRoleEvent struct {
	RoomID    string `json:"roomID"`
	Role      Role   `json:"role"`
	SeatIndex int    `json:"seatIndex"`
	Reason    string `json:"reason"`
	Code      int    `json:"code"`
	Message   string `json:"message,omitempty"`
}

// SeatEvent is onAnchorEnterSeat's and onAnchorLeaveSeat's data.
type SeatEvent struct {
	RoomID string `json:"roomID"`
	Index  int    `json:"index"`
	UserID string `json:"userID"`
	Reason int    `json:"reason"` // onAnchorLeaveSeat: SeatLeft, SeatKicked, SeatExited or SeatToHost
}

// SeatListEvent is onSeatListChange's data.
type SeatListEvent struct {
	RoomID string `json:"roomID"`
	Seats  []Seat `json:"seats"`
}

// HostEvent is onRoomHostChanged's data.
type HostEvent struct {
	RoomID string `json:"roomID"`
	Host   string `json:"host"`
}

// AudienceEvent is onAudienceListChange's data (sent to the host).
type AudienceEvent struct {
	RoomID   string   `json:"roomID"`
	Audience []string `json:"audience"`
}

// RoomArgs are exitRoom's args.
type RoomArgs struct {
	RoomID string `json:"roomID"`
}

// SignalArgs are rtcSignal's args and onRtcSignal's data: a media.Signal
// (target, type, sdp, candidate) for one room.
type SignalArgs struct {
	RoomID string `json:"roomID"`
	media.Signal
}

// MuteArgs are muteLocalAudio's and muteLocalVideo's args.
type MuteArgs struct {
	RoomID string `json:"roomID"`
	Mute   bool   `json:"mute"`
}

// EnterRoomEvent is onEnterRoom's data: elapsed is the time in ms from
// enterRoom to the participant's media being connected.
type EnterRoomEvent struct {
	RoomID  string `json:"roomID"`
	Elapsed int64  `json:"elapsed"`
}

// ExitRoomEvent is onExitRoom's data.
type ExitRoomEvent struct {
	RoomID string `json:"roomID"`
	Reason int    `json:"reason"`
}

// RemoteEnterEvent is onRemoteUserEnterRoom's data.
type RemoteEnterEvent struct {
	RoomID string `json:"roomID"`
	UserID string `json:"userID"`
}

// RemoteLeaveEvent is onRemoteUserLeaveRoom's data.
type RemoteLeaveEvent struct {
	RoomID string `json:"roomID"`
	UserID string `json:"userID"`
	Reason int    `json:"reason"`
}

// AvailableEvent is onUserVideoAvailable's and onUserAudioAvailable's data.
type AvailableEvent struct {
	RoomID    string `json:"roomID"`
	UserID    string `json:"userID"`
	Available bool   `json:"available"`
}

// Ops returns the rooms ops by name.
func (m *Manager) Ops() map[string]protocol.OpFunc {
	none := func(err error) (any, error) { return nil, err }
	return map[string]protocol.OpFunc{
		OpEnterRoom: protocol.Op(func(ctx context.Context, a protocol.Actor, args EnterArgs) (any, error) {
			return m.Enter(ctx, a, args)
		}),
		OpExitRoom: protocol.Op(func(ctx context.Context, a protocol.Actor, args RoomArgs) (any, error) {
			return none(m.Exit(ctx, a, args))
		}),
		OpRtcSignal: protocol.Op(func(ctx context.Context, a protocol.Actor, args SignalArgs) (any, error) {
			return none(m.Signal(ctx, a, args))
		}),
		OpMuteLocalAudio: protocol.Op(func(ctx context.Context, a protocol.Actor, args MuteArgs) (any, error) {
			return none(m.Mute(ctx, a, args, media.KindAudio))
		}),
		OpMuteLocalVideo: protocol.Op(func(ctx context.Context, a protocol.Actor, args MuteArgs) (any, error) {
			return none(m.Mute(ctx, a, args, media.KindVideo))
		}),
		OpSwitchRole: protocol.Op(func(ctx context.Context, a protocol.Actor, args SwitchRoleArgs) (any, error) {
			return m.SwitchRole(ctx, a, args)
		}),
		OpTakeSeat: protocol.Op(func(ctx context.Context, a protocol.Actor, args TakeSeatArgs) (any, error) {
			return m.TakeSeat(ctx, a, args)
		}),
		OpLeaveSeat: protocol.Op(func(ctx context.Context, a protocol.Actor, args RoomArgs) (any, error) {
			return m.SwitchRole(ctx, a, SwitchRoleArgs{RoomID: args.RoomID, Role: string(RoleAudience)})
		}),
		OpKickSeat: protocol.Op(func(ctx context.Context, a protocol.Actor, args KickSeatArgs) (any, error) {
			return none(m.KickSeat(ctx, a, args))
		}),
		OpGetRoomInfo: protocol.Op(func(ctx context.Context, a protocol.Actor, args RoomArgs) (any, error) {
			return m.RoomInfo(ctx, a, args)
		}),
	}
}
