package media

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"sync"
)

// gcmSender encrypts the RTP packets of one subscriber connection on the
// fast path with AEAD_AES_128_GCM or AEAD_AES_256_GCM (RFC 7714), without
// Pion's SRTP context: the context parses the header the caller has just
// marshalled, looks the SSRC's state up in a map and takes the
// connection's lock for each packet, and with tens of subscribers per
// packet that was a tenth of the fan-out's user time (perf: the map
// look-up alone 1.8 % of the server's CPU). Here the caller marshals the
// packet into its datagram, and the SSRC's rollover counter (sendROC) is
// found once per stream (writeDirect keeps it with the stream).
//
// Seal keeps no state of its own (Go's AES-GCM is safe for concurrent
// use): the streams of one connection (audio and video forwarders, NACK
// resends) encrypt in parallel, each under its own sendROC's lock.
type gcmSender struct {
	aead cipher.AEAD
	salt [12]byte
}

// SRTP key derivation labels (RFC 3711 section 4.3.2).
const (
	labelSRTPEncryption = 0x00
	labelSRTPSalt       = 0x02
)

// newGCMSender derives the SRTP session key and salt from a master key (16
// or 32 bytes) and a 12-byte master salt, as RFC 3711 section 4.3.3 with a
// key derivation rate of 0, and as Pion derives them for the receiver
// (TestGCMSenderLikePion).
func newGCMSender(masterKey, masterSalt []byte) (*gcmSender, error) {
	if len(masterSalt) != 12 {
		return nil, errors.New("media: AEAD SRTP needs a 12-byte master salt")
	}
	key, err := srtpKDF(masterKey, masterSalt, labelSRTPEncryption, len(masterKey))
	if err != nil {
		return nil, err
	}
	salt, err := srtpKDF(masterKey, masterSalt, labelSRTPSalt, 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	g := &gcmSender{aead: aead}
	copy(g.salt[:], salt)
	return g, nil
}

// srtpKDF is the AES-CM pseudo-random function of RFC 3711 section 4.3.3
// for label, n bytes (index DIV kdr is 0): AES in counter mode under the
// master key, starting at the master salt with the label XORed into byte
// 7 (the salt left-aligned in the 128-bit block, as Pion and libsrtp use
// the 96-bit salts of the AEAD profiles).
func srtpKDF(masterKey, masterSalt []byte, label byte, n int) ([]byte, error) {
	block, err := aes.NewCipher(masterKey)
	if err != nil {
		return nil, err
	}
	var in [16]byte
	copy(in[:14], masterSalt)
	in[7] ^= label
	out := make([]byte, (n+15)/16*16)
	for i := 0; i*16 < n; i++ {
		binary.BigEndian.PutUint16(in[14:], uint16(i))
		block.Encrypt(out[i*16:], in[:])
	}
	return out[:n], nil
}

// sendROC is the rollover counter of one SSRC a connection sends: the
// highest extended sequence number sent (RFC 3711 section 3.3.1), and the
// nonce's buffer (kept here: a local array would escape to the heap
// through the AEAD interface, one allocation per packet).
type sendROC struct {
	mu    sync.Mutex
	t     seqTracker
	nonce [12]byte
}

// seal encrypts the RTP packet buf[:size], whose header is buf[:hdrLen],
// in place and returns the SRTP packet (buf[:size+16]); buf has room for
// the tag. The packet's rollover counter is the one closest to the
// highest sent (a resend of an older packet keeps its own), as in Pion's
// context.
func (g *gcmSender) seal(r *sendROC, buf []byte, hdrLen, size int, ssrc uint32, seq uint16) []byte {
	return g.sealFrom(r, buf, hdrLen, buf[hdrLen:size], ssrc, seq)
}

// sealFrom is seal of the packet whose header is buf[:hdrLen] and whose
// payload (with any padding) is payload, read where it is: the
// ciphertext and tag are written to buf[hdrLen:], which has room for
// them. payload is either buf[hdrLen:] itself or does not overlap buf.
func (g *gcmSender) sealFrom(r *sendROC, buf []byte, hdrLen int, payload []byte, ssrc uint32, seq uint16) []byte {
	r.mu.Lock()
	roc := uint32(r.t.ext(seq) >> 16)
	r.t.update(seq)
	// RFC 7714 section 8.1: 00 00 || SSRC || ROC || SEQ, XOR the salt.
	n := &r.nonce
	n[0], n[1] = 0, 0
	binary.BigEndian.PutUint32(n[2:], ssrc)
	binary.BigEndian.PutUint32(n[6:], roc)
	binary.BigEndian.PutUint16(n[10:], seq)
	for i := range n {
		n[i] ^= g.salt[i]
	}
	out := g.aead.Seal(buf[hdrLen:hdrLen], n[:], payload, buf[:hdrLen])
	r.mu.Unlock()
	return buf[:hdrLen+len(out)]
}
