// Package signaling is the invitation engine: it owns every invitation,
// every group and the presence of every user, decides who may do what to
// them, and sends the events of the wire protocol (package protocol,
// PROTOCOL.md) that follow.
//
// # State
//
// One Engine holds the authoritative state in memory, guarded by one mutex:
// the live invitations (indexed by invitee and by inviter), the groups and
// their members, the open connections of each user (Attach, Detach) and an
// index of the events kept for offline users. Nothing else writes it; the
// transport (package web) and the layers built on the engine (package
// calls) go through its methods, and learn what happened to invitations
// from the notes it hands to observers (AddObserver), one at a time, in the
// order it decided them, with no lock held.
//
// # Decide, commit, deliver
//
// Every operation runs in three steps. It decides and applies its change in
// memory under the lock, which yields the store mutations and the events to
// send; it commits the mutations to the Store without the lock; then, under
// the lock again, it delivers the events to the open connections of their
// recipients, in the order they were decided, and keeps them for the known
// users who have none (bounded by per-sender and total quotas). If the
// commit fails, the in-memory change is undone and the caller gets
// protocol.ErrStoreUnavailable: nobody has seen an event of it. A connection
// that attaches gets a Replay of what its user missed, which its writer
// pulls as fast as the client reads.
//
// # Timers
//
// An invitation with a timeout has one timer, from the injected
// protocol.Clock, armed from its deadline; when it fires, every invitee who
// has not answered times out. At start, NewEngine re-arms the timer of every
// stored invitation from its stored deadline and times out at once those
// whose deadline passed while the server was down. A timeout the store
// refused is retried. Close stops every timer and waits for the callbacks in
// flight.
//
// # Stores
//
// A Store keeps the durable state: stored invitations, groups, the users who
// have connected once, and the outbox of kept events. The engine reads it
// once at start (Load) and writes through to it (Apply, whose mutations are
// applied atomically). MemoryStore and SQLiteStore implement it, and both
// pass one contract test (package storetest).
package signaling
