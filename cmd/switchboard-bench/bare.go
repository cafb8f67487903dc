package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
)

// The bare forwarder is the media baseline: a Pion process that reads RTP
// from each publisher's remote track and writes it to one
// TrackLocalStaticRTP per subscriber, nothing else (no rooms, no auth, no
// events, no PLI handling, no renegotiation: every subscriber's tracks are
// declared when it joins). It uses the same Pion API as the SFU (default
// codecs and interceptors, one shared UDP port on 127.0.0.1).
//
// Signaling is plain HTTP with complete SDP (no trickle):
//
//	POST /publish   {"room","id","sdp":offer}          → {"sdp":answer}
//	POST /subscribe {"room","id","publishers":[ids]}   → {"sdp":offer}
//	POST /answer    {"room","id","sdp":answer}         → {}
const roleBareForwarder = "bare-forwarder"

type bareRequest struct {
	Room       string   `json:"room"`
	ID         string   `json:"id"`
	SDP        string   `json:"sdp,omitempty"`
	Publishers []string `json:"publishers,omitempty"`
}

type bareReply struct {
	SDP string `json:"sdp"`
}

type bareForwarder struct {
	api  *webrtc.API
	mux  ice.UDPMux
	http *http.Server
	ln   net.Listener
	errc chan error

	mu     sync.Mutex // guards fanout, subs, pcs, closed and wg.Add
	closed bool
	fanout map[string]*bareFanout
	subs   map[string]*webrtc.PeerConnection // room/id → subscriber connection
	pcs    []*webrtc.PeerConnection
	wg     sync.WaitGroup
}

// bareFanout is the subscriber tracks of one published track.
type bareFanout struct {
	locals atomic.Pointer[[]*webrtc.TrackLocalStaticRTP]
}

func startBareForwarder() (*bareForwarder, error) {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	logs := quietPion()
	mux := webrtc.NewICEUDPMux(logs.NewLogger("udpmux"), udp)
	se := webrtc.SettingEngine{LoggerFactory: logs}
	se.SetICEUDPMux(mux)
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		_ = mux.Close()
		return nil, err
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		_ = mux.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = mux.Close()
		return nil, err
	}
	b := &bareForwarder{
		api:    webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir)),
		mux:    mux,
		ln:     ln,
		errc:   make(chan error, 1),
		fanout: make(map[string]*bareFanout),
		subs:   make(map[string]*webrtc.PeerConnection),
	}
	hm := http.NewServeMux()
	hm.HandleFunc("POST /publish", b.handle(b.publish))
	hm.HandleFunc("POST /subscribe", b.handle(b.subscribe))
	hm.HandleFunc("POST /answer", b.handle(b.answer))
	b.http = &http.Server{Handler: hm, ReadHeaderTimeout: 10 * time.Second}
	go func() { b.errc <- b.http.Serve(ln) }()
	return b, nil
}

func (b *bareForwarder) url() string { return "http://" + b.ln.Addr().String() }

func (b *bareForwarder) stop() error {
	err := b.http.Close()
	b.mu.Lock()
	b.closed = true
	pcs := b.pcs
	b.pcs = nil
	b.mu.Unlock()
	for _, pc := range pcs {
		err = errors.Join(err, pc.Close())
	}
	b.wg.Wait()
	err = errors.Join(err, b.mux.Close())
	if serr := <-b.errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

func (b *bareForwarder) handle(f func(bareRequest) (bareReply, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req bareRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rep, err := f(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rep)
	}
}

func (b *bareForwarder) newPC() (*webrtc.PeerConnection, error) {
	pc, err := b.api.NewPeerConnection(webrtc.Configuration{BundlePolicy: webrtc.BundlePolicyMaxBundle})
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		_ = pc.Close()
		return nil, errors.New("bare forwarder: closed")
	}
	b.pcs = append(b.pcs, pc)
	return pc, nil
}

// track adds a goroutine to wg unless the forwarder is closing.
func (b *bareForwarder) track() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	return true
}

func (b *bareForwarder) fan(key string) *bareFanout {
	b.mu.Lock()
	defer b.mu.Unlock()
	fo := b.fanout[key]
	if fo == nil {
		fo = &bareFanout{}
		fo.locals.Store(&[]*webrtc.TrackLocalStaticRTP{})
		b.fanout[key] = fo
	}
	return fo
}

func (b *bareForwarder) publish(req bareRequest) (bareReply, error) {
	pc, err := b.newPC()
	if err != nil {
		return bareReply{}, err
	}
	pc.OnTrack(func(remote *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		fo := b.fan(req.Room + "/" + req.ID + "/" + remote.Kind().String())
		if !b.track() {
			return
		}
		defer b.wg.Done()
		for {
			pkt, _, err := remote.ReadRTP()
			if err != nil {
				return
			}
			for _, l := range *fo.locals.Load() {
				_ = l.WriteRTP(pkt)
			}
		}
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: req.SDP}); err != nil {
		return bareReply{}, err
	}
	answer, err := pc.CreateAnswer(nil)
	if err == nil {
		err = pc.SetLocalDescription(answer)
	}
	if err != nil {
		return bareReply{}, err
	}
	sdp, err := gatheredSDP(pc)
	return bareReply{SDP: sdp}, err
}

func (b *bareForwarder) subscribe(req bareRequest) (bareReply, error) {
	pc, err := b.newPC()
	if err != nil {
		return bareReply{}, err
	}
	for _, pub := range req.Publishers {
		for _, c := range []struct {
			kind string
			cap  webrtc.RTPCodecCapability
		}{
			{"video", webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}},
			{"audio", webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}},
		} {
			local, err := webrtc.NewTrackLocalStaticRTP(c.cap, c.kind, pub)
			if err != nil {
				return bareReply{}, err
			}
			sender, err := pc.AddTrack(local)
			if err != nil {
				return bareReply{}, err
			}
			if !b.track() {
				return bareReply{}, errors.New("bare forwarder: closed")
			}
			go func() { // interceptors need the RTCP read; it is dropped
				defer b.wg.Done()
				buf := make([]byte, 1500)
				for {
					if _, _, err := sender.Read(buf); err != nil {
						return
					}
				}
			}()
			fo := b.fan(req.Room + "/" + pub + "/" + c.kind)
			b.mu.Lock()
			next := append(append([]*webrtc.TrackLocalStaticRTP(nil), *fo.locals.Load()...), local)
			fo.locals.Store(&next)
			b.mu.Unlock()
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err == nil {
		err = pc.SetLocalDescription(offer)
	}
	if err != nil {
		return bareReply{}, err
	}
	b.mu.Lock()
	b.subs[req.Room+"/"+req.ID] = pc
	b.mu.Unlock()
	sdp, err := gatheredSDP(pc)
	return bareReply{SDP: sdp}, err
}

func (b *bareForwarder) answer(req bareRequest) (bareReply, error) {
	b.mu.Lock()
	pc := b.subs[req.Room+"/"+req.ID]
	b.mu.Unlock()
	if pc == nil {
		return bareReply{}, fmt.Errorf("no subscriber %s/%s", req.Room, req.ID)
	}
	return bareReply{}, pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: req.SDP})
}

// bareClient posts to a bare forwarder.
type bareClient struct {
	base string
	http *http.Client
}

func (c bareClient) post(ctx context.Context, path string, req bareRequest) (bareReply, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return bareReply{}, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return bareReply{}, err
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		return bareReply{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return bareReply{}, fmt.Errorf("bare forwarder %s: %s: %s", path, resp.Status, bytes.TrimSpace(msg))
	}
	var rep bareReply
	return rep, json.NewDecoder(resp.Body).Decode(&rep)
}

// bareTarget is a running bare forwarder, here or in a child process.
type bareTarget struct {
	url  string
	pid  int // child only
	stop func() error
}

func (t *bareTarget) cpu() (time.Duration, error) {
	if t.pid != 0 {
		return procCPU(t.pid)
	}
	return selfCPU()
}

// startBare starts the bare forwarder in this process, or, when child is
// set, in a child process (this binary with roleEnv set) so that its CPU
// can be read apart from the clients', as the server's is.
func startBare(ctx context.Context, child bool) (*bareTarget, error) {
	if !child {
		b, err := startBareForwarder()
		if err != nil {
			return nil, err
		}
		return &bareTarget{url: b.url(), stop: b.stop}, nil
	}
	c, err := startChildRole(ctx, roleBareForwarder, "bare forwarder")
	if err != nil {
		return nil, err
	}
	return &bareTarget{url: c.url, pid: c.pid, stop: c.stop}, nil
}

// childRole is this binary running one role (roleEnv) in a child process:
// the URL it printed on its first stdout line, its pid, and stop, which
// closes its stdin (the child's signal to end) and waits for it.
type childRole struct {
	url  string
	pid  int
	stop func() error
}

// startChildRole starts this binary as role in a child process and waits
// for its URL; what names the role in errors.
func startChildRole(ctx context.Context, role, what string) (*childRole, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	waitc := make(chan error, 1)
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			urlc <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
		waitc <- cmd.Wait()
	}()
	var u string
	select {
	case u = <-urlc:
	case err := <-waitc:
		return nil, fmt.Errorf("%s child exited: %v", what, err)
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-waitc
		return nil, fmt.Errorf("%s child did not start in 30s", what)
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-waitc
		return nil, ctx.Err()
	}
	return &childRole{url: u, pid: cmd.Process.Pid, stop: func() error {
		_ = stdin.Close()
		select {
		case err := <-waitc:
			return err
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-waitc
			return fmt.Errorf("%s child did not exit; killed", what)
		}
	}}, nil
}

// runBareForwarderChild serves a bare forwarder until stdin closes.
func runBareForwarderChild(stdin io.Reader, stdout io.Writer) error {
	b, err := startBareForwarder()
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(stdout, b.url()); err != nil {
		_ = b.stop()
		return err
	}
	_, _ = io.Copy(io.Discard, stdin)
	return b.stop()
}
