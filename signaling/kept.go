package signaling

import (
	"slices"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// keptOverhead is what each kept event costs on top of its bytes (event
// name and data), for the quotas: it stands for the store's row and the
// engine's index entry, so that the number of kept events, and the memory of
// their index, is bounded by the byte caps too.
const keptOverhead = 128

// keptCost is the quota cost of a kept event of n bytes.
func keptCost(n int) int64 { return int64(n) + keptOverhead }

// keptIndex is what the engine knows of the store's outbox: for each user,
// the Seq, sender, cost and expiry of their kept events, not the data (the
// data is read from the store when the user connects); and the kept bytes
// of each sender and in all. Guarded by Engine.mu.
//
// A sender's count also holds reservations: the copies an operation will
// keep once it commits (planLocked charges them, and Engine.do releases
// them if the commit fails).
type keptIndex struct {
	boxes    map[string]*keptBox
	bySender map[string]int64
	total    int64
}

// keptBox is one user's kept events, by Seq.
type keptBox struct {
	entries []keptEntry
	// replayUpTo is, while a connection replays the box, the last Seq it
	// replays; 0 otherwise.
	replayUpTo int64
}

type keptEntry struct {
	seq     int64
	sender  string
	cost    int64
	expires time.Time // zero: never
}

func newKeptIndex() keptIndex {
	return keptIndex{boxes: map[string]*keptBox{}, bySender: map[string]int64{}}
}

// checkKept reports whether a sender who has mine bytes kept, on a server
// that keeps total bytes, may keep n more.
func checkKept(mine, total, n int64, lim Limits) error {
	if l := int64(lim.MaxOfflineBytesPerSender); l > 0 && mine+n > l {
		return protocol.ErrOfflineQuota.WithMessage("events kept for offline users on your behalf would take %d bytes; the limit is %d",
			mine+n, l)
	}
	if l := int64(lim.MaxOfflineBytesTotal); l > 0 && total+n > l {
		return protocol.ErrOfflineStoreFull.WithMessage("the server keeps %d bytes of events for offline users; the limit is %d", total, l)
	}
	return nil
}

func (k *keptIndex) charge(sender string, n int64) {
	k.bySender[sender] += n
	k.total += n
}

func (k *keptIndex) release(sender string, n int64) {
	if n == 0 {
		return
	}
	if v := k.bySender[sender] - n; v > 0 {
		k.bySender[sender] = v
	} else {
		delete(k.bySender, sender)
	}
	k.total -= n
}

// add inserts an entry in user's box, in Seq order (operations commit out of
// order); charge says whether its cost is charged now (it was not reserved).
func (k *keptIndex) add(user string, ent keptEntry, charge bool) {
	if charge {
		k.charge(ent.sender, ent.cost)
	}
	box := k.boxes[user]
	if box == nil {
		box = &keptBox{}
		k.boxes[user] = box
	}
	i := len(box.entries)
	for i > 0 && box.entries[i-1].seq > ent.seq {
		i--
	}
	box.entries = slices.Insert(box.entries, i, ent)
}

// dropOldest drops user's oldest entries past lim and returns their Seqs.
func (k *keptIndex) dropOldest(user string, lim int) []int64 {
	box := k.boxes[user]
	if box == nil || len(box.entries) <= lim {
		return nil
	}
	n := len(box.entries) - lim
	seqs := make([]int64, n)
	for i, ent := range box.entries[:n] {
		seqs[i] = ent.seq
		k.release(ent.sender, ent.cost)
	}
	box.entries = slices.Delete(box.entries, 0, n)
	return seqs
}

// remove drops user's entries whose Seq is in seqs (ordered).
func (k *keptIndex) remove(user string, seqs []int64) {
	box := k.boxes[user]
	if box == nil {
		return
	}
	box.entries = slices.DeleteFunc(box.entries, func(ent keptEntry) bool {
		if _, found := slices.BinarySearch(seqs, ent.seq); found {
			k.release(ent.sender, ent.cost)
			return true
		}
		return false
	})
	k.tidy(user, box)
}

// dropExpired drops the entries that expired at or before now.
func (k *keptIndex) dropExpired(now time.Time) {
	for user, box := range k.boxes {
		box.entries = slices.DeleteFunc(box.entries, func(ent keptEntry) bool {
			if !ent.expires.IsZero() && !ent.expires.After(now) {
				k.release(ent.sender, ent.cost)
				return true
			}
			return false
		})
		k.tidy(user, box)
	}
}

func (k *keptIndex) tidy(user string, box *keptBox) {
	if len(box.entries) == 0 && box.replayUpTo == 0 {
		delete(k.boxes, user)
	}
}
