package media

import (
	"errors"
	"net/netip"

	"github.com/pion/dtls/v3"
	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"
)

// The subscriber's RTCP outside Pion (the fast path's receive side).
//
// A subscriber connection on the fast path receives nothing but its
// client's RTCP (receiver reports, NACKs, PLI/FIR) and ICE checks. On
// Pion's path each RTCP datagram crossed four goroutines after the
// socket's reader (the UDP mux's connection buffer, the ICE connection's
// reader, the SRTCP session's read loop, the RTCP reader of the track it
// names), each hand-off a wake-up: a Pion client sends one receiver report
// per stream per second, as many wake-ups as the hand-offs of the media.
// Once the connection is on the fast path, the socket's reader decrypts an
// RTCP datagram from the selected pair's remote address with an SRTCP
// context of its own (the client's keys from the same DTLS keying
// material; replay window 64, as Pion's session) and does at once what the
// readers did: report blocks and NACKs to the connection's NACK responder
// (RTT, resends), PLI and FIR to the track they name (keyframe request
// through the throttle). Anything else (STUN, DTLS, a datagram from
// another address, one that fails authentication) goes to Pion as before.

var errNoDTLSState = errors.New("media: no DTLS state")

// isRTCP reports whether p looks like an (S)RTCP packet (RFC 5761, 7983).
func isRTCP(p []byte) bool {
	return len(p) >= 8 && p[0]&0xC0 == 0x80 && p[1] >= 192 && p[1] <= 223
}

// srtcpReceiveContext derives the remote SRTCP keys of conn (the side that
// is the DTLS client when client), with the replay window of Pion's
// session.
func srtcpReceiveContext(conn *dtls.Conn, client bool) (*srtp.Context, error) {
	profile, err := srtpProfile(conn)
	if err != nil {
		return nil, err
	}
	state, ok := conn.ConnectionState()
	if !ok {
		return nil, errNoDTLSState
	}
	cfg := srtp.Config{Profile: profile}
	if err := cfg.ExtractSessionKeysFromDTLS(&state, client); err != nil {
		return nil, err
	}
	return srtp.CreateContext(cfg.Keys.RemoteMasterKey, cfg.Keys.RemoteMasterSalt, profile, srtp.SRTCPReplayProtection(rxReplayWindow))
}

// routeRTCP registers the connection's RTCP with the socket's reader at
// the selected pair's remote address once it is on the fast path (and
// moves it when the pair changes); close unregisters it.
func (f *fastPath) routeRTCP() {
	if f.conn == nil {
		return
	}
	f.rtcpMu.Lock()
	defer f.rtcpMu.Unlock()
	var addr netip.AddrPort
	if f.state.Load() == fastOn && f.rtcpCtx != nil && !f.rtcpClosed {
		if dst := f.dst.Load(); dst != nil {
			addr = *dst
		}
	}
	if addr == f.rtcpAddr {
		return
	}
	if f.rtcpAddr.IsValid() {
		f.conn.unregisterRTCP(f.rtcpAddr, f)
	}
	f.rtcpAddr = addr
	if addr.IsValid() {
		f.conn.registerRTCP(addr, f)
	}
}

// closeRTCP stops routing the connection's RTCP (the connection closes).
func (f *fastPath) closeRTCP() {
	f.rtcpMu.Lock()
	f.rtcpClosed = true
	f.rtcpMu.Unlock()
	f.routeRTCP()
}

// setDown records (d not nil) or forgets the subscriber track that sends
// ssrc, for the keyframe requests that name it.
func (f *fastPath) setDown(ssrc uint32, d *downTrack) {
	f.downsMu.Lock()
	defer f.downsMu.Unlock()
	if d != nil {
		f.downs[ssrc] = d
	} else {
		delete(f.downs, ssrc)
	}
}

// receiveRTCP handles an SRTCP datagram of the connection's client (the
// socket's reader); false when it is Pion's (it fails authentication).
func (f *fastPath) receiveRTCP(p []byte) bool {
	f.rtcpMu.Lock()
	if f.rtcpCtx == nil || f.rtcpClosed {
		f.rtcpMu.Unlock()
		return false
	}
	out, err := f.rtcpCtx.DecryptRTCP(f.rtcpBuf[:0], p, nil)
	if err != nil {
		f.rtcpMu.Unlock()
		if isReplay(err) {
			f.counters.fastRTCPReplayed.Add(1)
			return true // a replay: Pion's session drops it too
		}
		return false
	}
	pkts, err := rtcp.Unmarshal(out)
	f.rtcpMu.Unlock()
	f.counters.fastRTCPIn.Add(1)
	if err != nil {
		return true // malformed: Pion's readers skip it too
	}
	nack := f.streams.responder.Load()
	for _, pkt := range pkts {
		switch pkt := pkt.(type) {
		case *rtcp.ReceiverReport:
			if nack != nil {
				nack.updateRTT(pkt.Reports)
			}
		case *rtcp.SenderReport:
			if nack != nil {
				nack.updateRTT(pkt.Reports)
			}
		case *rtcp.TransportLayerNack:
			if nack != nil {
				go nack.resend(pkt)
			}
		case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
			for _, ssrc := range pkt.DestinationSSRC() {
				f.downsMu.Lock()
				d := f.downs[ssrc]
				f.downsMu.Unlock()
				if d != nil {
					d.track.counters.keyframeRequestsIn.Add(1)
					d.track.requestKeyframe()
				}
			}
		}
	}
	return true
}
