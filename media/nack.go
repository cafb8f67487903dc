package media

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// nackResponder answers subscribers' NACKs. It replaces Pion's NACK
// responder (interceptor v0.1.51 pkg/nack ResponderInterceptor) and behaves
// like it on the wire, with one difference inside: Pion copies every packet
// written to every local stream into a pooled 1460-byte buffer, so a packet
// forwarded to N subscribers is copied N times into N cold 1024-packet
// histories (about 1.5 MB per subscriber video track). nackResponder keeps
// a reference to the payload instead, which every subscriber of a track
// shares, and a copy of the (small) header.
//
// Contract: a payload written through a stream of this API must never be
// modified afterwards. The SFU's only local streams are its downTracks,
// written by publishedTrack.fanOut, and every packet in a track's queue
// (readPion's copy, or the fast receive path's slice of a chunk) has a
// buffer of its own that nothing modifies.
//
// As Pion's responder: only streams that negotiated "nack" feedback keep a
// history; it holds the last nackHistory sequence numbers of the stream's
// main SSRC; a NACKed packet still held is resent at most once per RTT+5 ms
// (RTT from the subscriber's report blocks), on the RTX SSRC with the
// original sequence number in front of the payload (RFC 4588) when RTX was
// negotiated, else as it was; RTX sequence numbers are drawn from one
// random-start counter per PeerConnection, per stored packet (for a packet
// of a track's shared history, trackHistory, at its first resend); resends are
// written below the stats and report interceptors, straight to SRTP, from a
// goroutine per NACK. Pion's bitrate cap on resends applies only when a
// congestion controller sets a target bitrate, which the SFU does not run.
type nackResponder struct {
	interceptor.NoOp

	mu      sync.Mutex // guards streams
	streams map[uint32]*nackStream

	rtxSeq atomic.Uint32 // next RTX sequence number (low 16 bits)
	now    func() time.Time
	reg    *sendStreams // the connection's streams for the fast path; nil in tests
}

// nackHistory is the packets kept per stream, as Pion's default
// ResponderSize. A power of two.
const nackHistory = 1024

// nackResponderFactory makes one nackResponder per PeerConnection; reg,
// when set, is the connection's registry its streams are added to.
type nackResponderFactory struct {
	reg *sendStreams
}

func (f nackResponderFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	r := &nackResponder{streams: make(map[uint32]*nackStream), now: time.Now, reg: f.reg}
	r.rtxSeq.Store(rand.Uint32())
	return r, nil
}

// nackStream is the history of one local stream.
type nackStream struct {
	r       *nackResponder
	writer  interceptor.RTPWriter // the next writer (SRTP)
	ssrc    uint32                // the stream's main SSRC
	rtxSSRC uint32                // 0 without RTX
	rtxPT   uint8

	// shared, once set (the first packet a fan-out wrote directly, see
	// share), holds the stream's packets from then on: its own slots keep
	// the packets before, and the resend state of the shared ones.
	shared atomic.Pointer[trackHistory]
	// pt is the stream's payload type, which the shared history does not
	// have; set with shared, under mu.
	pt uint8

	mu         sync.Mutex // guards the fields below
	slots      [nackHistory]nackSlot
	highest    uint16
	started    bool
	rtt        time.Duration
	rttSamples int64
}

// nackSlot is one stored packet. payload is shared and never modified.
type nackSlot struct {
	stored     bool
	seq        uint16
	rtxSeq     uint16
	header     rtp.Header
	payload    []byte
	lastResend time.Time
	pending    bool // a resend is being written
	shared     bool // only the resend state of a packet of the shared history
}

// trackHistory is the NACK history of one published track, shared by the
// nackStreams of its subscribers whose packets are written directly
// (fastPath.writeDirect): each forwarded packet is stored once, by the
// fan-out, as it is sent to every subscriber but for the SSRC and payload
// type (which the stream puts back when it resends). With a history per
// subscriber stream each fan-out wrote one cold slot (header and payload
// reference) per subscriber. RTX sequence numbers are drawn when a packet
// from it is first resent, not when it is stored.
type trackHistory struct {
	mu      sync.Mutex // guards the fields below
	slots   [nackHistory]histSlot
	highest uint16
	started bool
}

type histSlot struct {
	stored  bool
	seq     uint16
	header  rtp.Header
	payload []byte
}

// add stores a forwarded packet, dropping the ones its sequence number
// skips over, as nackStream.add. Called by the track's fan-out only.
func (t *trackHistory) add(h *rtp.Header, payload []byte) {
	seq := h.SequenceNumber
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.started {
		diff := seq - t.highest
		if diff == 0 {
			return
		}
		if diff < 1<<15 {
			for i := t.highest + 1; i != seq; i++ {
				t.slots[i%nackHistory] = histSlot{}
			}
			t.highest = seq
		}
	} else {
		t.highest, t.started = seq, true
	}
	t.slots[seq%nackHistory] = histSlot{stored: true, seq: seq, header: h.Clone(), payload: payload}
}

// get returns packet seq while the history holds it.
func (t *trackHistory) get(seq uint16) (rtp.Header, []byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	slot := &t.slots[seq%nackHistory]
	diff := t.highest - seq
	if !slot.stored || slot.seq != seq || diff >= 1<<15 || diff >= nackHistory {
		return rtp.Header{}, nil, false
	}
	return slot.header, slot.payload, true
}

// share makes the stream's history from h (a packet the fan-out writes
// directly, which hist stores) on the track's shared hist. One atomic load
// per packet once done.
func (s *nackStream) share(hist *trackHistory, h *rtp.Header) {
	if s.shared.Load() == hist {
		return
	}
	s.mu.Lock()
	s.pt = h.PayloadType
	s.shared.Store(hist)
	s.mu.Unlock()
}

// streamSupportsNack reports whether the stream negotiated generic NACK, as
// Pion's responder checks.
func streamSupportsNack(info *interceptor.StreamInfo) bool {
	for _, fb := range info.RTCPFeedback {
		if fb.Type == "nack" && fb.Parameter == "" {
			return true
		}
	}
	return false
}

// BindLocalStream records every packet of the stream's main SSRC.
func (r *nackResponder) BindLocalStream(info *interceptor.StreamInfo, writer interceptor.RTPWriter) interceptor.RTPWriter {
	if !streamSupportsNack(info) {
		return writer
	}
	s := &nackStream{r: r, writer: writer, ssrc: info.SSRC}
	if info.SSRCRetransmission != 0 && info.PayloadTypeRetransmission != 0 {
		s.rtxSSRC, s.rtxPT = info.SSRCRetransmission, info.PayloadTypeRetransmission
	}
	r.mu.Lock()
	r.streams[info.SSRC] = s
	r.mu.Unlock()
	if r.reg != nil {
		r.reg.setNack(info.SSRC, s)
	}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if h.SSRC == info.SSRC {
			s.record(h, payload)
		}
		return writer.Write(h, payload, a)
	})
}

// record stores a packet of the stream's main SSRC, with the RTX sequence
// number its resends will carry.
func (s *nackStream) record(h *rtp.Header, payload []byte) {
	var rtxSeq uint16
	if s.rtxSSRC != 0 {
		rtxSeq = uint16(s.r.rtxSeq.Add(1) - 1)
	}
	s.add(h, payload, rtxSeq)
}

// add stores a packet, dropping the ones its sequence number skips over, as
// Pion's RTPBuffer.Add.
func (s *nackStream) add(h *rtp.Header, payload []byte, rtxSeq uint16) {
	seq := h.SequenceNumber
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		diff := seq - s.highest
		if diff == 0 {
			return
		}
		if diff < 1<<15 {
			for i := s.highest + 1; i != seq; i++ {
				s.slots[i%nackHistory] = nackSlot{}
			}
			s.highest = seq
		}
	} else {
		s.highest, s.started = seq, true
	}
	s.slots[seq%nackHistory] = nackSlot{stored: true, seq: seq, rtxSeq: rtxSeq, header: h.Clone(), payload: payload}
}

// UnbindLocalStream forgets the stream.
func (r *nackResponder) UnbindLocalStream(info *interceptor.StreamInfo) {
	r.mu.Lock()
	delete(r.streams, info.SSRC)
	r.mu.Unlock()
}

// Close forgets every stream.
func (r *nackResponder) Close() error {
	r.mu.Lock()
	r.streams = make(map[uint32]*nackStream)
	r.mu.Unlock()
	return nil
}

// BindRTCPReader watches the subscriber's RTCP for NACKs and report blocks.
func (r *nackResponder) BindRTCPReader(reader interceptor.RTCPReader) interceptor.RTCPReader {
	return interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, attr, err := reader.Read(b, a)
		if err != nil {
			return 0, nil, err
		}
		if attr == nil {
			attr = make(interceptor.Attributes)
		}
		pkts, err := attr.GetRTCPPackets(b[:n])
		if err != nil {
			return 0, nil, err
		}
		for _, p := range pkts {
			switch p := p.(type) {
			case *rtcp.ReceiverReport:
				r.updateRTT(p.Reports)
			case *rtcp.SenderReport:
				r.updateRTT(p.Reports)
			case *rtcp.TransportLayerNack:
				go r.resend(p)
			}
		}
		return n, attr, nil
	})
}

// updateRTT folds report blocks into each stream's mean RTT.
func (r *nackResponder) updateRTT(reports []rtcp.ReceptionReport) {
	now := ntp32(r.now())
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rep := range reports {
		s := r.streams[rep.SSRC]
		rtt := now - rep.LastSenderReport - rep.Delay
		if s == nil || rep.LastSenderReport == 0 || rtt >= 1<<31 {
			continue
		}
		s.mu.Lock()
		s.rttSamples++
		s.rtt += (time.Duration(rtt)*time.Second/(1<<16) - s.rtt) / time.Duration(s.rttSamples)
		s.mu.Unlock()
	}
}

// ntp32 is the middle 32 bits of t's NTP timestamp, computed as Pion does.
func ntp32(t time.Time) uint32 {
	sec := float64(t.UnixNano())/1e9 + 2208988800
	integer := uint32(sec)
	fraction := uint32((sec - float64(integer)) * 0xFFFFFFFF)
	return uint32((uint64(integer)<<32 | uint64(fraction)) >> 16)
}

// resend writes the NACKed packets the stream still holds.
func (r *nackResponder) resend(nack *rtcp.TransportLayerNack) {
	r.mu.Lock()
	s := r.streams[nack.MediaSSRC]
	r.mu.Unlock()
	if s == nil {
		return
	}
	for _, pair := range nack.Nacks {
		pair.Range(func(seq uint16) bool {
			s.resendOne(seq, r.now)
			return true
		})
	}
}

// resendOne writes packet seq unless it is gone, being resent, or was
// resent less than RTT+5 ms ago. A packet from the shared history is sent
// with the stream's SSRC and payload type; its slot of the stream's own
// history keeps its resend state and its RTX sequence number, drawn at its
// first resend and kept for the next ones (as a stored packet's: the
// same packet resent twice is the same RTX packet, which the receiver's
// SRTP drops as a replay when it has the first).
func (s *nackStream) resendOne(seq uint16, now func() time.Time) {
	s.mu.Lock()
	slot := &s.slots[seq%nackHistory]
	var (
		h       rtp.Header
		payload []byte
		rtxSeq  uint16
	)
	fromShared := false
	if hist := s.shared.Load(); hist != nil {
		h, payload, fromShared = hist.get(seq)
	}
	if fromShared {
		h.SSRC, h.PayloadType = s.ssrc, s.pt
		if !slot.stored || slot.seq != seq {
			*slot = nackSlot{stored: true, seq: seq, shared: true}
			if s.rtxSSRC != 0 {
				slot.rtxSeq = uint16(s.r.rtxSeq.Add(1) - 1)
			}
		}
		rtxSeq = slot.rtxSeq
	} else {
		diff := s.highest - seq
		if !slot.stored || slot.shared || slot.seq != seq || diff >= 1<<15 || diff >= nackHistory {
			s.mu.Unlock()
			return
		}
		h, payload, rtxSeq = slot.header, slot.payload, slot.rtxSeq
	}
	interval := s.rtt + 5*time.Millisecond
	if slot.pending || (!slot.lastResend.IsZero() && now().Sub(slot.lastResend) < interval) {
		s.mu.Unlock()
		return
	}
	slot.pending = true
	s.mu.Unlock()

	if s.rtxSSRC != 0 {
		h, payload = rtxPacket(h, payload, s.rtxSSRC, s.rtxPT, rtxSeq)
	}
	_, err := s.writer.Write(&h, payload, interceptor.Attributes{})

	s.mu.Lock()
	// The slot may hold a newer packet by now; then there is nothing to mark.
	if slot.stored && slot.seq == seq {
		slot.pending = false
		if err == nil {
			slot.lastResend = now()
		}
	}
	s.mu.Unlock()
}

// rtxPacket makes the RFC 4588 retransmission of a packet, as Pion's
// PacketFactoryCopy does: RTX SSRC, payload type and sequence number, the
// original sequence number in front of the payload, padding removed.
func rtxPacket(h rtp.Header, payload []byte, ssrc uint32, pt uint8, seq uint16) (rtp.Header, []byte) {
	if h.Padding {
		if h.PaddingSize == 0 && len(payload) > 0 {
			if pad := int(payload[len(payload)-1]); pad <= len(payload) {
				payload = payload[:len(payload)-pad]
			}
		}
		h.Padding, h.PaddingSize = false, 0
	}
	out := make([]byte, 2+len(payload))
	binary.BigEndian.PutUint16(out, h.SequenceNumber)
	copy(out[2:], payload)
	h.SSRC, h.PayloadType, h.SequenceNumber = ssrc, pt, seq
	return h, out
}
