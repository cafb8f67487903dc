package peer

import (
	"encoding/binary"

	"github.com/pion/rtp/codecs"
)

// Synthetic VP8 frames. They carry a valid VP8 frame tag (RFC 6386 9.1) so
// that the keyframe bit and, for keyframes, the start code and picture size
// are where a decoder or a middlebox looks for them; the compressed data
// after the header is filler and does not decode to a picture. The RTP
// payload descriptor (RFC 7741) is written by Peer.sendVideo.

const (
	frameWidth  = 640
	frameHeight = 480
	// keyframeHeaderSize is the frame tag (3) + start code (3) + size (4).
	keyframeHeaderSize = 10
	// interframeHeaderSize is the frame tag.
	interframeHeaderSize = 3
)

// makeVP8Frame returns a frame of size bytes (at least the header size).
// seq varies the filler so that consecutive frames differ.
func makeVP8Frame(size int, keyframe bool, seq uint32) []byte {
	header := interframeHeaderSize
	if keyframe {
		header = keyframeHeaderSize
	}
	if size < header+1 {
		size = header + 1
	}
	f := make([]byte, size)
	// Frame tag, little endian 24 bits: bit 0 inverse key frame flag
	// (0 = keyframe), bits 1-3 version, bit 4 show_frame, bits 5-23 size of
	// the first partition.
	firstPartition := uint32(size - header)
	tag := firstPartition<<5 | 1<<4
	if !keyframe {
		tag |= 1
	}
	f[0], f[1], f[2] = byte(tag), byte(tag>>8), byte(tag>>16)
	if keyframe {
		f[3], f[4], f[5] = 0x9d, 0x01, 0x2a
		binary.LittleEndian.PutUint16(f[6:], frameWidth)
		binary.LittleEndian.PutUint16(f[8:], frameHeight)
	}
	x := seq*2654435761 + 1
	for i := header; i < size; i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		f[i] = byte(x)
	}
	return f
}

// isVP8KeyframeStart reports whether an RTP payload starts a VP8 keyframe:
// the descriptor says start of partition 0 and the frame tag's inverse
// keyframe bit is clear.
func isVP8KeyframeStart(payload []byte) bool {
	var p codecs.VP8Packet
	frame, err := p.Unmarshal(payload)
	if err != nil || p.S != 1 || p.PID != 0 || len(frame) == 0 {
		return false
	}
	return frame[0]&0x01 == 0
}
