package media

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/switchboard-rtc/switchboard/media/opsqueue"
)

// LeaveReason says why a participant was removed.
type LeaveReason int

// Leave reasons passed to JoinOptions.OnGone.
const (
	// Left: Participant.Close or SFU.Close was called.
	Left LeaveReason = 0
	// ConnectionLost: a connection of the participant stayed disconnected or
	// failed past its grace period, or the client closed it.
	ConnectionLost LeaveReason = 1
)

func (r LeaveReason) String() string {
	switch r {
	case Left:
		return "left"
	case ConnectionLost:
		return "connection_lost"
	}
	return fmt.Sprintf("LeaveReason(%d)", int(r))
}

// Track kinds passed to JoinOptions.OnTrack.
const (
	KindAudio = "audio"
	KindVideo = "video"
)

// JoinOptions configures one participant. Every callback is called from the
// participant's own event goroutine, one at a time and in order, without any
// SFU lock held; a callback may call HandleSignal or Participant.Close but
// must not call SFU.Close. A slow callback delays only this participant's
// later callbacks and signals.
type JoinOptions struct {
	// CanPublish lets the participant offer a publisher connection. An
	// audience member (false) has a subscriber connection only, and every
	// publisher Signal it sends fails with ErrCannotPublish.
	CanPublish bool
	// Send delivers a server-to-client Signal (subscriber offers, publisher
	// answers, candidates of both connections), in order. Required. It must
	// not block: queue the message to the client's connection.
	Send func(Signal)
	// OnConnected is called once, when the subscriber connection first
	// reaches connected (ICE and DTLS up). The subscriber connection exists
	// for every participant and is offered by the SFU at Join, so this marks
	// the participant as reachable for media whether or not it publishes.
	OnConnected func()
	// OnTrack is called when a track this participant publishes starts
	// (available true) or ends (false). kind is KindAudio or KindVideo. Every
	// start is matched by an end before OnGone.
	OnTrack func(kind string, available bool)
	// OnGone is called last, once, after the participant was removed from
	// its room and its goroutines ended.
	OnGone func(reason LeaveReason)
}

// Participant is one client in a room. It owns two PeerConnections: the
// publisher connection, on which the client always offers and the SFU
// answers, and the subscriber connection, on which the SFU always offers and
// the client answers. Because each connection has exactly one offerer, offers
// never cross (no glare) and no rollback is ever needed.
type Participant struct {
	sfu    *SFU
	roomID string
	id     string
	opts   JoinOptions
	log    *slog.Logger

	// pub is the publisher connection: nil while the participant may not
	// publish (SetCanPublish). Written under mu; read under mu, or by
	// closeConnections once closing is set.
	pub *webrtc.PeerConnection
	sub *webrtc.PeerConnection
	// pubRx receives pub's RTP outside Pion once it can (rxfast.go);
	// written and read with pub.
	pubRx *rxPath
	// fast sends the subscriber connection's RTP outside Pion once it can
	// (fastpath.go).
	fast *fastPath

	subConnected atomic.Bool // subscriber connection is connected now

	// mu serialises changes to the connections' descriptions and transceivers
	// and guards the fields below. Never held across network I/O, a callback,
	// or a wait; never held together with another participant's or a
	// track's mu.
	mu             sync.Mutex
	closing        bool
	offerPending   bool // a subscriber offer was sent and its answer not applied
	renegotiate    bool // the subscriber connection changed while offerPending
	iceRestart     bool // the next subscriber offer restarts ICE (the client asked)
	pendingRemote  map[Target][]webrtc.ICECandidateInit
	downs          map[*publishedTrack]*downTrack // tracks this participant receives
	liveTracks     int                            // tracks it publishes
	trackSeq       int
	connectedOnce  bool
	conn           [2]connWatch // [0] subscriber, [1] publisher
	lostTimer      *time.Timer
	negotiateTimer *time.Timer // a batched offer is scheduled

	// out runs the outgoing events (see events.go); it is stopped after the
	// gone event. outMu guards the order in which events are pushed to it
	// and the fields below. Innermost lock but out's own.
	out         *opsqueue.Queue
	outMu       sync.Mutex
	outNoSignal bool
	descSent    map[Target]bool
	heldLocal   map[Target][]Signal

	wg   sync.WaitGroup // forwarders, RTCP readers, keyframe requesters
	done chan struct{}  // closed when shutdown has finished
}

// connWatch remembers since when a connection has been in a bad state.
type connWatch struct {
	state webrtc.PeerConnectionState
	since time.Time
}

// maxPendingCandidates bounds the remote candidates buffered before the
// description they belong to has been applied.
const maxPendingCandidates = 32

func newParticipant(s *SFU, roomID, id string, opts JoinOptions) (*Participant, error) {
	p := &Participant{
		sfu:           s,
		roomID:        roomID,
		id:            id,
		opts:          opts,
		log:           s.log.With("room", roomID, "participant", id),
		pendingRemote: make(map[Target][]webrtc.ICECandidateInit),
		downs:         make(map[*publishedTrack]*downTrack),
		out:           opsqueue.New(),
		descSent:      make(map[Target]bool),
		heldLocal:     make(map[Target][]Signal),
		done:          make(chan struct{}),
	}
	var err error
	p.fast = newFastPath(s.batch, &s.counters)
	p.sub, err = s.sub.newPeerConnection(p.pcConfig(), p.fast)
	if err != nil {
		return nil, fmt.Errorf("media: subscriber connection: %w", err)
	}
	// A data channel gives the subscriber connection a media section from
	// the first offer, so it connects (and OnConnected fires) even before
	// the room has any track.
	if _, err := p.sub.CreateDataChannel("switchboard", nil); err != nil {
		p.abandon()
		return nil, fmt.Errorf("media: subscriber data channel: %w", err)
	}
	p.watch(p.sub, TargetSubscriber)

	if opts.CanPublish {
		p.pub, p.pubRx, err = p.newPublisher()
		if err != nil {
			p.abandon()
			return nil, err
		}
	}
	return p, nil
}

func (p *Participant) pcConfig() webrtc.Configuration {
	return webrtc.Configuration{
		Certificates:  []webrtc.Certificate{p.sfu.cert},
		BundlePolicy:  webrtc.BundlePolicyMaxBundle,
		RTCPMuxPolicy: webrtc.RTCPMuxPolicyRequire,
	}
}

// newPublisher creates a publisher connection with its handlers, and its
// fast receive path.
func (p *Participant) newPublisher() (*webrtc.PeerConnection, *rxPath, error) {
	rx := newRxPath(p.sfu.batch, &p.sfu.counters, p.log)
	pc, err := p.sfu.pubAPI.newPeerConnection(p.pcConfig(), rx)
	if err != nil {
		return nil, nil, fmt.Errorf("media: publisher connection: %w", err)
	}
	p.watch(pc, TargetPublisher)
	pc.OnTrack(func(remote *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
		p.onRemoteTrack(pc, remote, receiver)
	})
	return pc, rx, nil
}

// SetCanPublish gives the participant a publisher connection (true), on
// which its client may then offer, or takes it away (false): the
// connection closes, so every track it published ends at every subscriber
// (which the SFU renegotiates) and OnTrack reports each end. Rooms call it
// when a member's role switches. It does nothing when the participant is
// already so; ErrClosed after it left.
func (p *Participant) SetCanPublish(on bool) error {
	var pc *webrtc.PeerConnection
	var rx *rxPath
	if on {
		p.mu.Lock()
		has, closing := p.pub != nil, p.closing
		p.mu.Unlock()
		if closing {
			return ErrClosed
		}
		if has {
			return nil
		}
		var err error
		if pc, rx, err = p.newPublisher(); err != nil {
			return err
		}
		p.outMu.Lock() // a new connection: its candidates wait for its first answer
		p.descSent[TargetPublisher] = false
		delete(p.heldLocal, TargetPublisher)
		p.outMu.Unlock()
	}
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		if pc != nil {
			_ = pc.Close()
		}
		return ErrClosed
	}
	old, oldRx := p.pub, p.pubRx
	if on && old != nil { // a concurrent SetCanPublish(true) won
		p.mu.Unlock()
		_ = pc.Close()
		return nil
	}
	p.pub, p.pubRx = pc, rx
	p.conn[1] = connWatch{}
	delete(p.pendingRemote, TargetPublisher)
	p.mu.Unlock()
	if !on && old != nil {
		p.log.Info("publisher connection taken away")
		oldRx.close()
		// Closing ends the read loops: the forwarders end its tracks.
		if err := old.GracefulClose(); err != nil {
			p.log.Debug("close publisher connection", "err", err)
		}
	}
	if on {
		p.log.Info("publisher connection given")
	}
	return nil
}

// CanPublish reports whether the participant has a publisher connection.
func (p *Participant) CanPublish() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pub != nil
}

// watch installs the candidate and state handlers of one connection.
func (p *Participant) watch(pc *webrtc.PeerConnection, target Target) {
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			return
		}
		init := c.ToJSON()
		p.sendCandidate(Signal{Target: target, Type: SignalCandidate, Candidate: &init})
	})
	// Pion calls this handler in a new goroutine per change, so calls may
	// arrive out of order: checkConnections reads the current states.
	pc.OnConnectionStateChange(func(webrtc.PeerConnectionState) {
		p.checkConnections()
	})
}

// ID returns the participant ID.
func (p *Participant) ID() string { return p.id }

// RoomID returns the room ID.
func (p *Participant) RoomID() string { return p.roomID }

// Done is closed once the participant has been removed and its goroutines
// ended (its OnGone may still be running).
func (p *Participant) Done() <-chan struct{} { return p.done }

// Close removes the participant from its room: its tracks end at every
// subscriber (which the SFU renegotiates), its connections close, and OnGone
// is called with Left. Close waits for the participant's media goroutines but
// not for its callbacks, so it may be called from one. Safe to call more than
// once and concurrently with a connection loss; the first reason wins.
func (p *Participant) Close() {
	p.shutdown(Left)
}

// HandleSignal applies a client-to-server Signal. It validates s first
// (ErrBadSignal), then ErrCannotPublish for any publisher Signal of an
// audience member, ErrTooManyTracks for a publisher offer over the limit,
// ErrUnexpectedSignal for a valid Signal in the wrong state, ErrNegotiation
// when Pion rejects a description, and ErrClosed after the participant left.
// A failed call leaves the participant as it was.
func (p *Participant) HandleSignal(s Signal) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if s.Target == TargetPublisher && !p.CanPublish() {
		return ErrCannotPublish
	}
	switch s.Type {
	case SignalOffer:
		return p.handlePublisherOffer(s.SDP)
	case SignalAnswer:
		return p.handleSubscriberAnswer(s.SDP)
	case SignalRestartICE:
		return p.restartSubscriberICE()
	default:
		return p.addRemoteCandidate(s.Target, *s.Candidate)
	}
}

func (p *Participant) connection(t Target) *webrtc.PeerConnection {
	if t == TargetPublisher {
		return p.pub
	}
	return p.sub
}

// handlePublisherOffer answers a client offer on the publisher connection.
func (p *Participant) handlePublisherOffer(raw string) error {
	parsed, err := parseSDP(raw)
	if err != nil {
		return err
	}
	if n, limit := sendingTracks(parsed), p.sfu.cfg.MaxTracksPerParticipant; n > limit {
		return fmt.Errorf("%w: offer sends %d tracks, limit %d", ErrTooManyTracks, n, limit)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return ErrClosed
	}
	if p.pub == nil { // taken away since HandleSignal checked
		return ErrCannotPublish
	}
	offer := webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: raw}
	// An offer that restarts ICE makes Pion gather anew inside
	// SetRemoteDescription: those candidates follow the answer.
	p.holdCandidates(TargetPublisher)
	if err := p.pub.SetRemoteDescription(offer); err != nil {
		p.releaseCandidates(TargetPublisher)
		return fmt.Errorf("%w: publisher offer: %v", ErrNegotiation, err)
	}
	answer, err := p.pub.CreateAnswer(nil)
	if err == nil {
		err = p.pub.SetLocalDescription(answer)
	}
	if err != nil {
		// The remote offer is applied but cannot be answered; the client
		// may send a new offer.
		return fmt.Errorf("%w: publisher answer: %v", ErrNegotiation, err)
	}
	p.log.Debug("publisher offer answered")
	p.sendDescription(TargetPublisher, Signal{Target: TargetPublisher, Type: SignalAnswer, SDP: answer.SDP})
	p.flushPendingRemoteLocked(TargetPublisher)
	return nil
}

// handleSubscriberAnswer applies the client's answer to the outstanding
// subscriber offer, then sends one more offer if the subscriber connection
// changed in the meantime.
func (p *Participant) handleSubscriberAnswer(raw string) error {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return ErrClosed
	}
	if !p.offerPending {
		p.mu.Unlock()
		return fmt.Errorf("%w: subscriber answer with no offer outstanding", ErrUnexpectedSignal)
	}
	answer := webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: raw}
	if err := p.sub.SetRemoteDescription(answer); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("%w: subscriber answer: %v", ErrNegotiation, err)
	}
	p.offerPending = false
	p.fast.remoteDescription(raw)
	p.log.Debug("subscriber answer applied", "renegotiate", p.renegotiate)
	again := p.renegotiate
	p.renegotiate = false
	p.flushPendingRemoteLocked(TargetSubscriber)
	p.mu.Unlock()

	if again {
		p.offer()
	}
	return nil
}

// restartSubscriberICE makes the next subscriber offer restart ICE and
// sends it now, or right after the answer to the offer outstanding (one
// offer in flight at a time, as always).
func (p *Participant) restartSubscriberICE() error {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return ErrClosed
	}
	p.iceRestart = true
	pending := p.offerPending
	if pending {
		p.renegotiate = true
	}
	p.mu.Unlock()
	p.log.Debug("subscriber ICE restart asked", "after_answer", pending)
	if !pending {
		p.offer()
	}
	return nil
}

// Resume re-sends what a client may have missed while its signaling
// connection was down and it kept its place (rooms' rejoin grace): the
// subscriber offer still waiting for an answer, if any. A client that had
// received it answers it again, which is harmless: the same offer applied
// twice yields the same answer.
func (p *Participant) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing || !p.offerPending {
		return
	}
	if ld := p.sub.LocalDescription(); ld != nil {
		p.log.Debug("subscriber offer sent again on resume")
		p.sendDescription(TargetSubscriber, Signal{Target: TargetSubscriber, Type: SignalOffer, SDP: ld.SDP})
	}
}

// addRemoteCandidate applies a trickled client candidate, or buffers it while
// the connection has no remote description yet.
func (p *Participant) addRemoteCandidate(t Target, c webrtc.ICECandidateInit) error {
	if c.Candidate == "" || c.Candidate == "candidate:" {
		return nil // end of candidates
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return ErrClosed
	}
	pc := p.connection(t)
	if pc == nil {
		return ErrCannotPublish
	}
	if pc.RemoteDescription() == nil {
		if len(p.pendingRemote[t]) >= maxPendingCandidates {
			return fmt.Errorf("%w: more than %d %s candidates before a description",
				ErrUnexpectedSignal, maxPendingCandidates, t)
		}
		p.pendingRemote[t] = append(p.pendingRemote[t], c)
		return nil
	}
	if err := pc.AddICECandidate(c); err != nil {
		return badSignal("candidate", "was refused by the %s connection: %v", t, err)
	}
	return nil
}

// flushPendingRemoteLocked applies the candidates buffered for t. p.mu held.
func (p *Participant) flushPendingRemoteLocked(t Target) {
	pending := p.pendingRemote[t]
	delete(p.pendingRemote, t)
	pc := p.connection(t)
	if pc == nil {
		return
	}
	for _, c := range pending {
		if err := pc.AddICECandidate(c); err != nil {
			p.log.Debug("buffered candidate rejected", "target", t, "err", err)
		}
	}
}

// negotiationDelay batches changes to the subscriber connection: a
// publisher's audio and video tracks usually start within a few
// milliseconds of each other and then cost one offer instead of two.
const negotiationDelay = 30 * time.Millisecond

// negotiate schedules a subscriber offer after negotiationDelay, or, when
// an offer is outstanding, remembers to send one after its answer.
func (p *Participant) negotiate() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return
	}
	if p.offerPending {
		p.renegotiate = true
		return
	}
	if p.negotiateTimer == nil {
		p.negotiateTimer = time.AfterFunc(negotiationDelay, p.offer)
	}
}

// offer sends a subscriber offer now, unless one is outstanding: at most
// one offer is ever in flight.
func (p *Participant) offer() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.negotiateTimer != nil {
		p.negotiateTimer.Stop()
		p.negotiateTimer = nil
	}
	if p.closing {
		return
	}
	if p.offerPending {
		p.renegotiate = true
		return
	}
	// CreateOffer with ICERestart makes Pion gather anew at once: those
	// candidates follow the offer.
	p.holdCandidates(TargetSubscriber)
	offer, err := p.sub.CreateOffer(&webrtc.OfferOptions{ICERestart: p.iceRestart})
	if err == nil {
		err = p.sub.SetLocalDescription(offer)
	}
	if err != nil {
		p.releaseCandidates(TargetSubscriber)
		p.log.Warn("subscriber offer failed", "err", err, "ice_restart", p.iceRestart)
		return
	}
	if p.iceRestart {
		p.log.Info("subscriber ICE restarted")
	}
	p.iceRestart = false
	p.offerPending = true
	p.log.Debug("subscriber offer sent", "tracks", len(p.downs))
	p.sendDescription(TargetSubscriber, Signal{Target: TargetSubscriber, Type: SignalOffer, SDP: offer.SDP})
}

// addDownTrack adds t to this participant's subscriber connection (the
// caller then calls negotiate). It is a no-op for the participant's own
// tracks and after it started leaving.
func (p *Participant) addDownTrack(t *publishedTrack) {
	if t.owner == p {
		return
	}
	d, err := newDownTrack(t, p)
	if err != nil {
		p.log.Warn("subscriber track", "track", t.id, "err", err)
		return
	}
	p.mu.Lock()
	if p.closing || p.downs[t] != nil {
		p.mu.Unlock()
		return
	}
	sender, err := p.sub.AddTrack(d)
	if err != nil {
		p.mu.Unlock()
		p.log.Warn("add subscriber track", "track", t.id, "err", err)
		return
	}
	d.sender = sender
	p.downs[t] = d
	p.wg.Add(1)
	p.mu.Unlock()

	go d.readRTCP()
	if !t.addDown(d) {
		// The track ended meanwhile.
		p.removeDownTrack(d)
	}
}

// removeDownTrack takes d off this participant's subscriber connection and
// renegotiates.
func (p *Participant) removeDownTrack(d *downTrack) {
	p.mu.Lock()
	if p.downs[d.track] != d {
		p.mu.Unlock()
		return
	}
	delete(p.downs, d.track)
	closing := p.closing
	if !closing {
		if err := p.sub.RemoveTrack(d.sender); err != nil {
			p.log.Debug("remove subscriber track", "track", d.track.id, "err", err)
		}
	}
	p.mu.Unlock()

	d.track.removeDown(d)
	if !closing {
		p.negotiate()
	}
}

// onRemoteTrack runs in the goroutine Pion starts for each track the client
// publishes; it forwards the track until it ends.
func (p *Participant) onRemoteTrack(pc *webrtc.PeerConnection, remote *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
	kind := remote.Kind().String()
	p.mu.Lock()
	if p.closing || p.pub != pc {
		p.mu.Unlock()
		return
	}
	if p.liveTracks >= p.sfu.cfg.MaxTracksPerParticipant {
		p.mu.Unlock()
		p.log.Warn("track over the limit ignored", "kind", kind)
		return
	}
	p.liveTracks++
	p.trackSeq++
	t := newPublishedTrack(p, pc, p.pubRx, remote, receiver, p.trackSeq)
	p.wg.Add(3) // forwarder (this goroutine), RTCP reader, keyframe requester
	p.mu.Unlock()
	defer p.wg.Done()

	go t.readRTCP()
	go t.requestKeyframes()
	subscribers, ok := p.sfu.addTrack(t)
	if ok {
		p.log.Info("track published", "track", t.id, "codec", remote.Codec().MimeType)
		p.pushEvent(event{kind: eventTrack, trackKind: kind, available: true})
		for _, s := range subscribers {
			s.addDownTrack(t)
			s.negotiate()
		}
		t.forward()
	}
	p.endTrack(t, ok)
}

// endTrack removes t from the room and from every subscriber.
func (p *Participant) endTrack(t *publishedTrack, announced bool) {
	p.sfu.removeTrack(t)
	for _, d := range t.close() {
		d.sub.removeDownTrack(d)
	}
	p.mu.Lock()
	p.liveTracks--
	p.mu.Unlock()
	if announced {
		p.log.Info("track ended", "track", t.id)
		p.pushEvent(event{kind: eventTrack, trackKind: t.kind.String(), available: false})
	}
}

// checkConnections reacts to a connection state change: OnConnected on the
// first subscriber connect, keyframe requests when the subscriber connection
// (re)connects, and removal when a connection stays bad past its grace.
func (p *Participant) checkConnections() {
	now := time.Now()
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return
	}
	subState := p.sub.ConnectionState()
	wasConnected := p.subConnected.Swap(subState == webrtc.PeerConnectionStateConnected)
	var refresh []*downTrack
	if subState == webrtc.PeerConnectionStateConnected && !wasConnected {
		for _, d := range p.downs {
			refresh = append(refresh, d)
		}
		if !p.connectedOnce {
			p.connectedOnce = true
			p.pushEvent(event{kind: eventConnected})
		}
	}

	pubState := "none"
	var pubRx *rxPath
	if p.pub != nil {
		pubState = p.pub.ConnectionState().String()
		if p.pub.ConnectionState() == webrtc.PeerConnectionStateConnected {
			pubRx = p.pubRx
		}
	}
	var deadline time.Time
	lost := false
	for i, pc := range []*webrtc.PeerConnection{p.sub, p.pub} {
		if pc == nil {
			continue
		}
		st := pc.ConnectionState()
		var grace time.Duration
		switch st {
		case webrtc.PeerConnectionStateDisconnected:
			grace = p.sfu.cfg.ICEDisconnectedGrace
		case webrtc.PeerConnectionStateFailed:
			grace = p.sfu.cfg.ICEFailedGrace
		case webrtc.PeerConnectionStateClosed:
			// Closed without our Close: the client's DTLS said goodbye.
			lost = true
		default:
			p.conn[i] = connWatch{state: st}
			continue
		}
		if p.conn[i].state != st {
			p.conn[i] = connWatch{state: st, since: now}
		}
		if d := p.conn[i].since.Add(grace); deadline.IsZero() || d.Before(deadline) {
			deadline = d
		}
	}
	if !lost && !deadline.IsZero() && !now.Before(deadline) {
		lost = true
	}
	if p.lostTimer != nil {
		p.lostTimer.Stop()
		p.lostTimer = nil
	}
	if !lost && !deadline.IsZero() {
		p.lostTimer = time.AfterFunc(deadline.Sub(now), p.checkConnections)
	}
	p.mu.Unlock()

	if subState == webrtc.PeerConnectionStateConnected {
		p.fast.decide(p.log)
	}
	if pubRx != nil {
		pubRx.decide()
	}
	for _, d := range refresh {
		if d.bound.Load() {
			d.track.requestKeyframe()
		}
	}
	if lost {
		p.log.Info("connection lost", "subscriber", subState.String(), "publisher", pubState)
		p.shutdown(ConnectionLost)
	}
}

// shutdown removes the participant once; later calls wait for the first.
func (p *Participant) shutdown(reason LeaveReason) {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		<-p.done
		return
	}
	p.closing = true
	if p.lostTimer != nil {
		p.lostTimer.Stop()
		p.lostTimer = nil
	}
	if p.negotiateTimer != nil {
		p.negotiateTimer.Stop()
		p.negotiateTimer = nil
	}
	downs := p.downs
	p.downs = make(map[*publishedTrack]*downTrack)
	p.mu.Unlock()

	p.stopSignals()
	p.sfu.removeParticipant(p)
	for _, d := range downs {
		d.track.removeDown(d)
	}
	// Closing the connections ends every read loop: the forwarders of the
	// tracks this participant published end them at all subscribers.
	p.closeConnections()
	p.wg.Wait()
	p.log.Info("gone", "reason", reason.String())
	p.pushEvent(event{kind: eventGone, reason: reason})
	close(p.done)
}

// abandon closes a participant that was never added to a room.
func (p *Participant) abandon() {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.closeConnections()
	close(p.done)
}

// closeConnections closes both connections and waits for Pion's goroutines.
func (p *Participant) closeConnections() {
	p.mu.Lock() // closing is set: pub changes no more
	pub, pubRx := p.pub, p.pubRx
	p.mu.Unlock()
	pubRx.close()
	if pub != nil {
		if err := pub.GracefulClose(); err != nil {
			p.log.Debug("close publisher connection", "err", err)
		}
	}
	if err := p.sub.GracefulClose(); err != nil {
		p.log.Debug("close subscriber connection", "err", err)
	}
}
