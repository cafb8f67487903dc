// Package protocol is Switchboard's wire protocol over WebSocket, as
// documented in ../PROTOCOL.md (with the room and call ops in ../ROOMS.md and
// ../CALLS.md): the request, reply and event frames and their strict
// decoding (DecodeRequest, DecodeArgs, EncodeReply, EncodeEvent), whose
// errors name each field as the client wrote it; the one wire error type,
// Error, with a numeric code and a stable reason, and every sentinel of the
// invitation protocol (the code ranges are listed on Error, the codes in
// PROTOCOL.md's table); the invitation and group ops, their args, results,
// events and names; and what the packages serving ops share: the Actor
// performing an op on a Session, the typed-op adapter Op, and the Clock
// that they take their time and timers from.
//
// It holds no state and imports none of the server's packages: the
// invitation engine (package signaling), rooms, calls, the transport (web)
// and the Go client (signaling/client) all build on it.
package protocol
