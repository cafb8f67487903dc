package protocol

// Session is one open connection of a user, as the packages that serve ops
// (signaling, rooms, calls) see it. The transport (package web) implements
// it.
type Session interface {
	UserID() string
	// Deliver queues one encoded event frame for the connection. It must
	// not block: a connection whose queue is full is closed by its owner.
	Deliver(frame []byte)
}

// Actor is who performs an operation: a user on one of their connections,
// or the server acting for a user (Session nil).
type Actor struct {
	UserID  string
	Session Session
	// Silent: none of the actor's own connections gets the event of this
	// operation (the server acted for the user, e.g. a busy line, and tells
	// them in its own way).
	Silent bool
}
