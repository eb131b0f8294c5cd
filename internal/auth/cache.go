package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"
)

// perAccount bounds the entries of one account on each side (right and
// wrong): a client that knows the password can only vary the login's case,
// and one that does not should not fill the cache with one account's wrong
// guesses.
const perAccount = 4

// credID is the cache key: an HMAC of login and password under a key made
// at random when the process starts, so the cache never holds a password or
// anything that could be checked against one offline.
type credID [32]byte

// hashPrint identifies a stored hash, so an entry is used only while the
// account still has the hash it was checked against.
type hashPrint [16]byte

// entry is one remembered check.
type entry struct {
	// id is the entry's key, account the account's normalized address.
	id      credID
	account string
	// hash is the stored hash the password was checked against; ok the
	// answer.
	hash hashPrint
	ok   bool
	// expires is when the entry stops being used (cache_ttl after the check).
	expires time.Time
	// prev and next link the entry into its side's list, newest first.
	prev, next *entry
}

// side is the right or the wrong answers: kept apart, so that a flood of
// wrong passwords evicts only wrong passwords and never the logins of
// customers.
type side struct {
	// head and tail are the newest and the oldest entry; n counts them.
	head, tail *entry
	n          int
	// max bounds n.
	max int
}

func (s *side) push(e *entry) {
	e.prev, e.next = nil, s.head
	if s.head != nil {
		s.head.prev = e
	} else {
		s.tail = e
	}
	s.head = e
	s.n++
}

func (s *side) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
	s.n--
}

// cache is the credential cache: bounded in entries, safe for concurrent use.
type cache struct {
	// key is the HMAC key; ttl how long an answer is used; now the clock.
	key [32]byte
	ttl time.Duration
	now func() time.Time

	// mu guards the fields below.
	mu sync.Mutex
	// byID finds entries; byAccount finds an account's entries to drop them.
	byID      map[credID]*entry
	byAccount map[string][]*entry
	// right and wrong are the two sides.
	right, wrong side
}

// newCache returns a cache holding at most entries right answers and a
// quarter as many wrong ones.
func newCache(ttl time.Duration, entries int, now func() time.Time) *cache {
	c := &cache{ttl: ttl, now: now, byID: map[credID]*entry{}, byAccount: map[string][]*entry{}}
	rand.Read(c.key[:])
	c.right.max = max(entries, 1)
	c.wrong.max = max(entries/4, 1)
	return c
}

// id returns the cache key of login and password. The login's length goes
// in first, so no two (login, password) pairs share an input.
func (c *cache) id(login, pw string) credID {
	m := hmac.New(sha256.New, c.key[:])
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(login)))
	m.Write(n[:])
	m.Write([]byte(login))
	m.Write([]byte(pw))
	var id credID
	m.Sum(id[:0])
	return id
}

// fingerprint returns the fingerprint of a stored hash.
func fingerprint(hash string) hashPrint {
	sum := sha256.Sum256([]byte(hash))
	var p hashPrint
	copy(p[:], sum[:])
	return p
}

// get returns the remembered answer for id, if there is one for this
// account and stored hash and it has not expired.
func (c *cache) get(id credID, account string, hash hashPrint) (ok, found bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.byID[id]
	if e == nil {
		return false, false
	}
	if e.account != account || e.hash != hash || !c.now().Before(e.expires) {
		c.remove(e)
		return false, false
	}
	return e.ok, true
}

// put remembers an answer.
func (c *cache) put(id credID, account string, hash hashPrint, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.byID[id]; old != nil {
		c.remove(old)
	}
	s := c.sideOf(ok)
	// The account's oldest entry on this side makes room first, then the
	// oldest of the whole side.
	n, oldest := 0, (*entry)(nil)
	for _, e := range c.byAccount[account] {
		if e.ok == ok {
			n++
			if oldest == nil || e.expires.Before(oldest.expires) {
				oldest = e
			}
		}
	}
	if n >= perAccount {
		c.remove(oldest)
	}
	for s.n >= s.max {
		c.remove(s.tail)
	}
	e := &entry{id: id, account: account, hash: hash, ok: ok, expires: c.now().Add(c.ttl)}
	s.push(e)
	c.byID[id] = e
	c.byAccount[account] = append(c.byAccount[account], e)
}

func (c *cache) sideOf(ok bool) *side {
	if ok {
		return &c.right
	}
	return &c.wrong
}

// remove drops one entry.
func (c *cache) remove(e *entry) {
	c.sideOf(e.ok).unlink(e)
	delete(c.byID, e.id)
	es := c.byAccount[e.account]
	for i, x := range es {
		if x == e {
			es[i] = es[len(es)-1]
			es = es[:len(es)-1]
			break
		}
	}
	if len(es) == 0 {
		delete(c.byAccount, e.account)
	} else {
		c.byAccount[e.account] = es
	}
}

// dropAccount drops every entry of account and returns how many there were.
func (c *cache) dropAccount(account string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	es := c.byAccount[account]
	n := len(es)
	for len(es) > 0 {
		c.remove(es[0])
		es = c.byAccount[account]
	}
	return n
}

// dropAll empties the cache and returns how many entries it held.
func (c *cache) dropAll() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.byID)
	c.byID = map[credID]*entry{}
	c.byAccount = map[string][]*entry{}
	c.right.head, c.right.tail, c.right.n = nil, nil, 0
	c.wrong.head, c.wrong.tail, c.wrong.n = nil, nil, 0
	return n
}

// size returns the number of right and wrong answers held.
func (c *cache) size() (right, wrong int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.right.n, c.wrong.n
}
