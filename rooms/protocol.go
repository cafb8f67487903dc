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
	}
}
