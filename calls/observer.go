package calls

// Observer learns when calls begin and end, with their record (the
// webhooks use it). Its methods are called with the manager's lock held, in
// the order the calls were decided: they must not block nor call the
// manager; each gets its own copy of the record.
type Observer interface {
	CallBegan(CallRecord)
	CallEnded(CallRecord)
}
