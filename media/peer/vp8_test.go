package peer

import (
	"testing"

	"github.com/pion/rtp/codecs"
)

func TestVP8FramesCarryKeyframeBit(t *testing.T) {
	payloader := &codecs.VP8Payloader{EnablePictureID: true}
	for _, tc := range []struct {
		keyframe bool
		size     int
	}{{true, 3000}, {false, 3000}, {true, 5}, {false, 1}} {
		frame := makeVP8Frame(tc.size, tc.keyframe, 7)
		if tc.keyframe && (frame[3] != 0x9d || frame[4] != 0x01 || frame[5] != 0x2a) {
			t.Errorf("keyframe without start code: % x", frame[:6])
		}
		payloads := payloader.Payload(1200, frame)
		if len(payloads) == 0 {
			t.Fatal("no payloads")
		}
		if got := isVP8KeyframeStart(payloads[0]); got != tc.keyframe {
			t.Errorf("size %d keyframe %v: first packet detected as keyframe %v", tc.size, tc.keyframe, got)
		}
		for i, p := range payloads[1:] {
			if isVP8KeyframeStart(p) {
				t.Errorf("size %d: continuation packet %d detected as a keyframe start", tc.size, i+1)
			}
		}
	}
}
