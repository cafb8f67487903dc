// Package client is a Go client of the Switchboard signaling protocol
// (PROTOCOL.md), used by the server's protocol tests and usable by Go
// applications.
//
// # Connection
//
// Dial opens a WebSocket to ws://HOST/ws and starts exactly two goroutines:
// one reader, which decodes frames and routes replies and events, and one
// writer, which drains a bounded send queue and sends pings. Both end when
// the connection ends; Close ends them and waits for them (bounded time).
//
// # Requests
//
// Do sends a request with a fresh id ("auto-1", "auto-2", …), waits for the
// reply with that id and returns the decoded result, or the reply's
// *protocol.Error, which errors.Is matches against the sentinels of package
// protocol by code. DoRaw lets the caller pick the id and SendRaw/SendBinary
// send arbitrary frames, for tests of malformed or repeated requests.
//
// A reply whose id no call is waiting for (the reply to a SendRaw frame, a
// late reply to a call whose context ended, a reply to an empty or unreadable
// id) is not dropped: it is delivered on Events, in wire order with the
// events, as an Event with Reply set, Name UnmatchedReply (""), ID the
// reply's id and either Data (the result) or Err (the error). WaitReply finds
// one by id.
//
// When several calls wait for the same id at once (DoRaw with a repeated
// id), the replies carrying that id are handed to the waiters in the order
// their requests were sent: the wire cannot tell them apart.
//
// # Events
//
// Events are delivered on Events(), a bounded channel (WithEventBuffer,
// default 256) that is closed when the connection ends, after the last
// event. The application must drain it: when it is full the reader waits,
// and replies queued behind the events wait too. Handle takes the events of
// a name off Events (to a function on the reader goroutine); Observe only
// looks at them on their way (a media client reacting to onExitRoom while a
// test waits for it).
//
// Next, WaitEvent, WaitReply and ExpectNoEvent are helpers for tests that
// consume Events through an internal backlog: WaitEvent keeps every event it
// reads that does not match in the backlog, oldest first, and every helper
// looks in the backlog before reading Events. So a test may wait for events
// in any order it likes, and Next still returns the skipped ones in wire
// order. The helpers may be called from several goroutines; they take turns.
// Do not mix them with reading Events() directly unless losing events to the
// other reader is what the test wants.
//
// # End of the connection
//
// Done is closed when the connection has ended and both goroutines have
// returned; Err then says why. Every such error matches ErrClosed with
// errors.Is; a close frame from the server is a *CloseError carrying its
// code (see CloseCode); a dead server is detected by the read timeout
// (WithReadTimeout, default 90s), which every frame, ping and pong extends.
package client
