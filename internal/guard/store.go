package guard

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// ErrChangesPruned is returned by Store.Changes when entries after the
// requested sequence number have already been pruned from the change log; the
// caller must reload the whole state with Load.
var ErrChangesPruned = errors.New("guard: change log pruned past the requested position")

// Failure is one failed AUTH.
type Failure struct {
	// Time is when the failure happened.
	Time time.Time
	// SID is the session it happened in (SPEC R12), so support can see why a
	// key was blocked.
	SID string
}

// Block is a key that is refused until Until.
type Block struct {
	// Key is the client key: an address or prefix, see Config.Key.
	Key netip.Prefix
	// Since is when the key reached the limit.
	Since time.Time
	// Until is when the block ends by itself (SPEC R11a).
	Until time.Time
	// SIDs are the sessions of the failures that led to the block.
	SIDs []string
}

// ChangeKind says what a change-log entry records.
type ChangeKind string

// The change kinds.
const (
	// ChangeFailure records one failure of Key at Time in session SIDs[0].
	ChangeFailure ChangeKind = "failure"
	// ChangeBlock records a block of Key from Time to Until.
	ChangeBlock ChangeKind = "block"
	// ChangeUnblock records that support lifted every key overlapping Key
	// (an address or a whole network) at Time.
	ChangeUnblock ChangeKind = "unblock"
)

// Change is one entry of the change log a Store keeps, so that a running
// server learns of changes made by others (the CLI, other nodes) without
// reading the whole state again (SPEC R11a: an unblock takes effect at once).
type Change struct {
	// Seq orders the log; the store assigns it, increasing.
	Seq int64
	// Node names who made the change, so a guard skips its own.
	Node string
	// Kind is what happened.
	Kind ChangeKind
	// Key is the client key, or for ChangeUnblock the prefix lifted.
	Key netip.Prefix
	// Time is when it happened.
	Time time.Time
	// Until is the end of a block.
	Until time.Time
	// SIDs are the session ids involved.
	SIDs []string
}

// State is the guard state as a store holds it.
type State struct {
	// Failures are the failures per key, oldest first.
	Failures map[netip.Prefix][]Failure
	// Blocks are the blocks per key.
	Blocks map[netip.Prefix]Block
	// Seq is the change-log position the state includes at least: replaying
	// changes after Seq brings it up to date. Changes up to a little past Seq
	// may already be included, so applying a change must be idempotent.
	Seq int64
}

// Store keeps the guard state durably and, for stores shared by several
// processes, carries changes between them. The SQLite store serves one node
// and its CLI; a shared store (Redis) holds the same data for several nodes.
//
// Each mutation stores the new state and appends to the change log
// atomically. Implementations are safe for concurrent use.
type Store interface {
	// AddFailure records a failure of key.
	AddFailure(ctx context.Context, node string, key netip.Prefix, f Failure) error
	// Block records a block, replacing any earlier block of the same key.
	Block(ctx context.Context, node string, b Block) error
	// Unblock removes the blocks and failures of every key overlapping p and
	// returns those keys.
	Unblock(ctx context.Context, node string, p netip.Prefix, at time.Time) ([]netip.Prefix, error)
	// Load returns the failures at or after since and the blocks that end
	// after since.
	Load(ctx context.Context, since time.Time) (*State, error)
	// Changes returns up to limit change-log entries after seq, in order, or
	// ErrChangesPruned.
	Changes(ctx context.Context, after int64, limit int) ([]Change, error)
	// Prune deletes failures before t, blocks that ended before t, and
	// change-log entries made before t.
	Prune(ctx context.Context, before time.Time) error
}
