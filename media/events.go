package media

// The outgoing side of a participant: one goroutine (runEvents) calls Send
// and the callbacks in the order events were queued, without locks held.

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
	for range p.outWake {
		p.outMu.Lock()
		batch := p.outQueue
		p.outQueue = nil
		final := p.outFinal
		p.outMu.Unlock()
		for _, ev := range batch {
			p.deliver(ev)
		}
		if final {
			return
		}
	}
}

func (p *Participant) deliver(ev event) {
	switch ev.kind {
	case eventSignal:
		p.opts.Send(ev.signal)
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

// pushEvent queues ev. Nothing is queued after the gone event.
func (p *Participant) pushEvent(ev event) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	p.pushLocked(ev)
}

func (p *Participant) pushLocked(ev event) {
	if p.outFinal {
		return
	}
	if ev.kind == eventSignal && p.outNoSignal {
		return
	}
	p.outQueue = append(p.outQueue, ev)
	if ev.kind == eventGone {
		p.outFinal = true
	}
	select {
	case p.outWake <- struct{}{}:
	default:
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

// stopSignals drops queued signals and refuses new ones: a leaving
// participant negotiates nothing more. Other events still go out.
func (p *Participant) stopSignals() {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	p.outNoSignal = true
	kept := p.outQueue[:0]
	for _, ev := range p.outQueue {
		if ev.kind != eventSignal {
			kept = append(kept, ev)
		}
	}
	p.outQueue = kept
}
