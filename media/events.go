package media

// The outgoing side of a participant: one goroutine (runEvents, running the
// participant's opsqueue) calls Send and the callbacks in the order events
// were queued, without locks held.

type eventKind int

const (
	eventSignal eventKind = iota + 1
	eventConnected
	eventTrack
	eventGone
)

type event struct {
	kind      eventKind
	signal    Signal
	trackKind string
	available bool
	reason    LeaveReason
}

// runEvents delivers queued events until OnGone has been delivered.
func (p *Participant) runEvents() {
	defer p.sfu.events.Done()
	p.out.Run()
}

func (p *Participant) deliver(ev event) {
	switch ev.kind {
	case eventSignal:
		p.outMu.Lock()
		stopped := p.outNoSignal
		p.outMu.Unlock()
		if !stopped {
			p.opts.Send(ev.signal)
		}
	case eventConnected:
		if p.opts.OnConnected != nil {
			p.opts.OnConnected()
		}
	case eventTrack:
		if p.opts.OnTrack != nil {
			p.opts.OnTrack(ev.trackKind, ev.available)
		}
	case eventGone:
		if p.opts.OnGone != nil {
			p.opts.OnGone(ev.reason)
		}
	}
}

// pushEvent queues ev. Nothing is queued after the gone event (the queue
// is stopped).
func (p *Participant) pushEvent(ev event) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	p.pushLocked(ev)
}

func (p *Participant) pushLocked(ev event) {
	if ev.kind == eventSignal && p.outNoSignal {
		return
	}
	if p.out.Push(func() { p.deliver(ev) }) && ev.kind == eventGone {
		p.out.Stop() // runEvents ends once the gone event is delivered
	}
}

// sendDescription queues a local description for target t, followed by the
// local candidates gathered before it was queued: a client never receives a
// candidate before the description it belongs to.
func (p *Participant) sendDescription(t Target, s Signal) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	p.pushLocked(event{kind: eventSignal, signal: s})
	p.descSent[t] = true
	for _, c := range p.heldLocal[t] {
		p.pushLocked(event{kind: eventSignal, signal: c})
	}
	delete(p.heldLocal, t)
}

// sendCandidate queues a local candidate, or holds it until the first
// description of its connection is queued.
func (p *Participant) sendCandidate(s Signal) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	if !p.descSent[s.Target] {
		p.heldLocal[s.Target] = append(p.heldLocal[s.Target], s)
		return
	}
	p.pushLocked(event{kind: eventSignal, signal: s})
}

// holdCandidates makes the local candidates of t wait for the next
// description queued for t: called before the Pion call that may gather
// anew (CreateOffer with ICERestart; SetRemoteDescription of an offer with
// new ICE credentials), whose candidates belong to the description that
// follows and must not reach the client before it: a client drops a
// candidate whose ufrag its remote description does not have yet.
func (p *Participant) holdCandidates(t Target) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	p.descSent[t] = false
}

// releaseCandidates undoes holdCandidates when no description follows (the
// negotiation failed): the held candidates go out now.
func (p *Participant) releaseCandidates(t Target) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	if p.descSent[t] {
		return
	}
	p.descSent[t] = true
	for _, c := range p.heldLocal[t] {
		p.pushLocked(event{kind: eventSignal, signal: c})
	}
	delete(p.heldLocal, t)
}

// stopSignals drops the signals not yet delivered and refuses new ones: a
// leaving participant negotiates nothing more. Other events still go out.
func (p *Participant) stopSignals() {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	p.outNoSignal = true
}
