// Package media is Switchboard's selective forwarding unit (SFU), built on
// Pion WebRTC v4. It forwards the audio and video each participant of a room
// publishes to every other participant of that room, over one UDP port shared
// by all peers.
//
// media is a leaf: it knows rooms and participants only as IDs and imports
// nothing else from Switchboard. The rooms package decides who joins which
// room and relays the negotiation messages (Signal) between the client and
// the Participant; it learns what happens through the JoinOptions callbacks.
//
// # Two connections, one offerer each: no glare
//
// Every participant has two PeerConnections:
//
//   - the publisher connection carries the client's media to the SFU. The
//     CLIENT always offers on it and the SFU answers (Target "publisher":
//     the client sends offers and candidates, the SFU sends answers and
//     candidates);
//   - the subscriber connection carries the other participants' media to the
//     client. The SFU always offers on it and the client answers (Target
//     "subscriber": the SFU sends offers and candidates, the client sends
//     answers and candidates).
//
// Since each connection has exactly one side that ever offers, two offers can
// never cross (glare) and no rollback or "polite peer" logic is needed. A
// Signal of the wrong type for its target is rejected with ErrBadSignal. The
// SFU keeps at most one subscriber offer outstanding: a track added or
// removed while it waits for the answer is folded into one more offer, sent
// when the answer arrives (and changes a few milliseconds apart are batched
// into one offer). ICE candidates trickle both ways on both
// connections; a candidate is never sent before the description it belongs
// to, and client candidates that arrive before theirs are buffered.
//
// The subscriber connection is offered at Join, with a data channel so it
// connects even while the room has no track. OnConnected fires when it first
// connects. An audience member (CanPublish false) has no publisher connection.
//
// # Forwarding and RTCP
//
// Each published track has one forwarder goroutine that reads RTP and writes
// it, without holding a lock, to one TrackLocalStaticRTP per subscriber; the
// datagrams of one packet's fan-out leave in one sendmmsg (batchConn). The
// SFU runs Pion's default interceptors but stats, each on the connections
// that need it (publishers: NACK generator, receiver reports, TWCC;
// subscribers: NACK responder, sender reports), with its own NACK responder (nackResponder) that shares
// each packet's payload between the subscribers' retransmission histories,
// and reads RTCP from every sender and receiver so that they run. A subscriber's PLI or FIR is forwarded to the publisher as a PLI,
// throttled by Config.PLIThrottle per track; a new subscriber asks for a
// keyframe as soon as its track is negotiated and its connection is up.
package media
