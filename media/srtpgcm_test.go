package media

import (
	"bytes"
	"testing"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// gcmSender encrypts as Pion's SRTP context does, byte for byte, for both
// AEAD profiles: across a sequence number wrap (the rollover counter goes
// on), for a resend from before the wrap (it keeps its own), with CSRCs,
// a header extension and padding; and Pion's context decrypts it.
func TestGCMSenderLikePion(t *testing.T) {
	for _, tc := range []struct {
		profile srtp.ProtectionProfile
		key     []byte
	}{
		{srtp.ProtectionProfileAeadAes128Gcm, bytes.Repeat([]byte{7}, 16)},
		{srtp.ProtectionProfileAeadAes256Gcm, bytes.Repeat([]byte{5}, 32)},
	} {
		g, err := newGCMSender(tc.key, testMasterSalt)
		if err != nil {
			t.Fatal(err)
		}
		pion, err := srtp.CreateContext(tc.key, testMasterSalt, tc.profile)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := srtp.CreateContext(tc.key, testMasterSalt, tc.profile)
		if err != nil {
			t.Fatal(err)
		}
		// Header encryption (cryptex) leaves a packet with neither
		// extension nor CSRC as it is without it.
		pionCryptex, err := srtp.CreateContext(tc.key, testMasterSalt, tc.profile, srtp.Cryptex(srtp.CryptexModeEnabled))
		if err != nil {
			t.Fatal(err)
		}
		roc := &sendROC{t: seqTracker{index: 65533}}
		for i, seq := range []uint16{65533, 65534, 65535, 0, 1, 65534, 2} {
			h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: 3000 * uint32(i), SSRC: 0xCAFE}
			switch i {
			case 1:
				h.CSRC = []uint32{1, 2}
			case 2:
				if err := h.SetExtension(1, []byte{9, 9}); err != nil {
					t.Fatal(err)
				}
			case 3:
				h.Padding, h.PaddingSize = true, 4 //nolint:staticcheck // as the forwarder may pass it
			}
			payload := bytes.Repeat([]byte{byte(i + 1)}, 100+i)
			//lint:ignore SA1019 the forwarder's own marshalling (header and payload apart)
			hdrLen, size := rtp.HeaderAndPacketMarshalSize(&h, payload)
			buf := make([]byte, size+srtpOverhead)
			//lint:ignore SA1019 the forwarder's own marshalling (header and payload apart)
			if _, err := rtp.MarshalPacketTo(buf, &h, payload); err != nil {
				t.Fatal(err)
			}
			plain := append([]byte(nil), buf[:size]...)
			want, err := pion.EncryptRTP(nil, plain, nil)
			if err != nil {
				t.Fatal(err)
			}
			// sealFrom, reading the payload where it is (the fan-out's
			// form), at the same counter as seal below.
			roc2 := &sendROC{t: roc.t}
			buf2 := make([]byte, size+srtpOverhead)
			copy(buf2, buf[:hdrLen])
			got2 := g.sealFrom(roc2, buf2, hdrLen, plain[hdrLen:], h.SSRC, seq)
			got := g.seal(roc, buf, hdrLen, size, h.SSRC, seq)
			if !bytes.Equal(got, want) {
				t.Fatalf("%v seq %d: differs from Pion's context", tc.profile, seq)
			}
			if !bytes.Equal(got2, want) || roc2.t != roc.t {
				t.Fatalf("%v seq %d: sealFrom differs from Pion's context", tc.profile, seq)
			}
			if !h.Extension && len(h.CSRC) == 0 {
				withCryptex, err := pionCryptex.EncryptRTP(nil, plain, nil)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, withCryptex) {
					t.Fatalf("%v seq %d: differs from Pion's context with cryptex", tc.profile, seq)
				}
			}
			out, err := dec.DecryptRTP(nil, got, nil)
			if err != nil || !bytes.Equal(out, plain) {
				t.Fatalf("%v seq %d: does not decrypt (%v)", tc.profile, seq, err)
			}
		}
		if r := uint32(roc.t.index >> 16); r != 1 {
			t.Errorf("rollover counter %d after the wrap, want 1", r)
		}
	}
	if _, err := newGCMSender(testMasterKey, make([]byte, 14)); err == nil {
		t.Error("a 14-byte salt was taken for an AEAD profile")
	}
}
