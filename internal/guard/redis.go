package guard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the Store that several nodes share (SPEC R11: the limit holds
// on one node or many). Unlike the SQLite store it does the counting steps
// itself, each in one Lua script and so in one round trip that no other
// node's step can interleave with:
//
//   - take: a place for an attempt, unless the key is blocked or its failures
//     in the window and the places held make the limit;
//   - fail: give the place back, append the failure to the key's log and, at
//     the limit, set the block and PUBLISH it;
//   - release: give the place back (one ZREM, atomic by itself).
//
// Per client key K, with N the store's name:
//
//	{N}:log:K     LIST of "µs sid", oldest first, at most MaxFailures long:
//	              the sliding log of SPEC R11's rolling window
//	{N}:places:K  ZSET of the places held, scored by when they expire
//	{N}:blocks    HASH K → "since_µs until_µs sid,sid,…"
//	{N}:until     ZSET of the blocked keys, scored by the end of the block
//	{N}:keys      ZSET of the keys with failures, scored by the last failure
//	{N}:changes   the pub/sub channel of blocks and unblocks
//
// Every name carries the hash tag {N}, so in a Redis Cluster all of them sit
// in one slot and a script may touch any of them. Times are Unix
// microseconds, which a Lua number (a double) holds exactly, and come from
// the guard's clock, never from Redis's TIME, so that nodes and tests agree
// on what "now" is. Key expiries (PEXPIRE) only collect garbage; every
// decision compares the stored times with the time passed in.
type Redis struct {
	// c is the client; the caller owns it and closes it.
	c redis.UniversalClient
	// cfg is the policy the scripts apply, defaults filled in; SetConfig
	// replaces it.
	cfg atomic.Pointer[Config]
	// tag is "{N}", the hash tag that starts every name.
	tag string
}

var _ Store = (*Redis)(nil)

// NewRedis returns the store named name (the guard's is "guard") on client
// c, applying cfg's limits, window and block time; the guard that uses the
// store must have the same. It does not connect.
func NewRedis(c redis.UniversalClient, name string, cfg Config) (*Redis, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if name == "" || strings.ContainsAny(name, "{}: \t\r\n") {
		return nil, fmt.Errorf("guard: redis store name %q: want a word without braces, colons or spaces", name)
	}
	r := &Redis{c: c, tag: "{" + name + "}"}
	r.cfg.Store(&cfg)
	return r, nil
}

// SetConfig puts the guard's new policy in force for the scripts (see
// Guard.SetConfig, which calls it).
func (r *Redis) SetConfig(cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	r.cfg.Store(&cfg)
	return nil
}

func (r *Redis) logKey(key string) string    { return r.tag + ":log:" + key }
func (r *Redis) placesKey(key string) string { return r.tag + ":places:" + key }
func (r *Redis) blocksKey() string           { return r.tag + ":blocks" }
func (r *Redis) untilKey() string            { return r.tag + ":until" }
func (r *Redis) keysKey() string             { return r.tag + ":keys" }
func (r *Redis) channel() string             { return r.tag + ":changes" }

// us is t in Unix microseconds.
func us(t time.Time) int64 { return t.UnixMicro() }

// ms is d in whole milliseconds, at least one, for PEXPIRE.
func ms(d time.Duration) int64 { return max(d.Milliseconds(), 1) }

// luaLive counts the entries of a log that are inside the window ending at
// now (SPEC R11's rolling hour), and gathers their session ids without
// repeats, oldest first. An entry is "µs sid".
const luaLive = `
local function live(entries, cut)
  local n, sids, seen = 0, {}, {}
  for _, e in ipairs(entries) do
    local t, sid = string.match(e, '^(%d+) ?(.*)$')
    if t and tonumber(t) > cut then
      n = n + 1
      if sid ~= '' and not seen[sid] then
        seen[sid] = true
        sids[#sids + 1] = sid
      end
    end
  end
  return n, table.concat(sids, ',')
end
local function blockedUntil(v)
  if not v then return nil end
  return tonumber(string.match(v, '^%d+ (%d+)'))
end
`

// takeScript takes a place (Counter.Take). KEYS: log, places, blocks.
// ARGV: key, now, expires, place, max failures, window µs, place TTL ms.
// It answers 0 (Granted), 1 (Refused) or 2 (AtLimit).
var takeScript = redis.NewScript(luaLive + `
local now = tonumber(ARGV[2])
local u = blockedUntil(redis.call('HGET', KEYS[3], ARGV[1]))
if u and u > now then return 1 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local held = redis.call('ZCARD', KEYS[2])
local n = live(redis.call('LRANGE', KEYS[1], 0, -1), now - tonumber(ARGV[6]))
if n + held >= tonumber(ARGV[5]) then return 2 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return 0
`)

// peekScript answers what takeScript would, changing nothing
// (Counter.Peek). KEYS: log, places, blocks. ARGV: key, now, max failures,
// window µs.
var peekScript = redis.NewScript(luaLive + `
local now = tonumber(ARGV[2])
local u = blockedUntil(redis.call('HGET', KEYS[3], ARGV[1]))
if u and u > now then return 1 end
local held = redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[2], '+inf')
local n = live(redis.call('LRANGE', KEYS[1], 0, -1), now - tonumber(ARGV[4]))
if n + held >= tonumber(ARGV[3]) then return 2 end
return 0
`)

// failScript records a failure (Counter.Fail). KEYS: log, places, blocks,
// until, keys. ARGV: key, place, now, sid, max failures, window µs, block
// time µs, log TTL ms, channel, node. It answers {blocked, made, failures in
// the window, block value or ""}, and publishes a block it makes.
var failScript = redis.NewScript(luaLive + `
local now, max = tonumber(ARGV[3]), tonumber(ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('RPUSH', KEYS[1], ARGV[3] .. ' ' .. ARGV[4])
redis.call('LTRIM', KEYS[1], -max, -1)
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('ZADD', KEYS[5], now, ARGV[1])
local n, sids = live(redis.call('LRANGE', KEYS[1], 0, -1), now - tonumber(ARGV[6]))
local cur = redis.call('HGET', KEYS[3], ARGV[1])
local u = blockedUntil(cur)
if u and u > now then return {1, 0, n, cur} end
if n < max then return {0, 0, n, ''} end
local untilT = now + tonumber(ARGV[7])
local v = ARGV[3] .. ' ' .. string.format('%d', untilT) .. ' ' .. sids
redis.call('HSET', KEYS[3], ARGV[1], v)
redis.call('ZADD', KEYS[4], untilT, ARGV[1])
redis.call('PUBLISH', ARGV[9], 'block\t' .. ARGV[10] .. '\t' .. ARGV[1] .. '\t' .. v)
return {1, 1, n, v}
`)

// addFailureScript appends a failure without deciding a block
// (Store.AddFailure). KEYS: log, keys. ARGV: key, now, sid, max, log TTL ms.
var addFailureScript = redis.NewScript(`
redis.call('RPUSH', KEYS[1], ARGV[2] .. ' ' .. ARGV[3])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 0
`)

// blockScript sets a block and publishes it (Store.Block). KEYS: blocks,
// until. ARGV: key, block value, until µs, channel, node.
var blockScript = redis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('PUBLISH', ARGV[4], 'block\t' .. ARGV[5] .. '\t' .. ARGV[1] .. '\t' .. ARGV[2])
return 0
`)

// unblockScript lifts keys and publishes the unblock (Store.Unblock).
// KEYS: blocks, until, keys, then the log and places of each key. ARGV:
// channel, message, then the keys.
var unblockScript = redis.NewScript(`
for i = 3, #ARGV do
  local k = ARGV[i]
  redis.call('HDEL', KEYS[1], k)
  redis.call('ZREM', KEYS[2], k)
  redis.call('ZREM', KEYS[3], k)
  redis.call('DEL', KEYS[2 * i - 2], KEYS[2 * i - 1])
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 0
`)

// pruneScript forgets blocks that ended and keys whose last failure is
// before a time (Store.Prune; the logs expire by themselves). KEYS: blocks,
// until, keys. ARGV: before µs.
var pruneScript = redis.NewScript(`
local ended = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
for _, k in ipairs(ended) do redis.call('HDEL', KEYS[1], k) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1])
return #ended
`)

// blockValue is a block as {N}:blocks holds it.
func blockValue(b Block) string {
	return strconv.FormatInt(us(b.Since), 10) + " " + strconv.FormatInt(us(b.Until), 10) + " " + strings.Join(b.SIDs, ",")
}

// parseBlock reads a block of key from its stored value.
func parseBlock(key netip.Prefix, v string) (Block, error) {
	f := strings.SplitN(v, " ", 3)
	if len(f) < 2 {
		return Block{}, fmt.Errorf("guard: stored block of %s: %q is not \"since until sessions\"", FormatKey(key), v)
	}
	since, err1 := strconv.ParseInt(f[0], 10, 64)
	until, err2 := strconv.ParseInt(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return Block{}, fmt.Errorf("guard: stored block of %s: %w", FormatKey(key), err)
	}
	b := Block{Key: key, Since: time.UnixMicro(since), Until: time.UnixMicro(until)}
	if len(f) == 3 {
		b.SIDs = splitIDs(f[2])
	}
	return b, nil
}

// parseEntry reads one failure of a log.
func parseEntry(e string) (Failure, bool) {
	t, sid, _ := strings.Cut(e, " ")
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return Failure{}, false
	}
	return Failure{Time: time.UnixMicro(n), SID: sid}, true
}

// take implements sharedStore.
func (r *Redis) take(ctx context.Context, key netip.Prefix, place string, now, expires time.Time) (Verdict, error) {
	k, c := key.String(), r.cfg.Load()
	v, err := takeScript.Run(ctx, r.c, []string{r.logKey(k), r.placesKey(k), r.blocksKey()},
		k, us(now), us(expires), place, c.MaxFailures, c.Window.Microseconds(), ms(c.AttemptTimeout)).Int()
	if err != nil {
		return Refused, fmt.Errorf("guard: take a place for %s: %w", FormatKey(key), err)
	}
	return verdictOf(v), nil
}

// peek implements sharedStore.
func (r *Redis) peek(ctx context.Context, key netip.Prefix, now time.Time) (Verdict, error) {
	k, c := key.String(), r.cfg.Load()
	v, err := peekScript.Run(ctx, r.c, []string{r.logKey(k), r.placesKey(k), r.blocksKey()},
		k, us(now), c.MaxFailures, c.Window.Microseconds()).Int()
	if err != nil {
		return Refused, fmt.Errorf("guard: look at the places of %s: %w", FormatKey(key), err)
	}
	return verdictOf(v), nil
}

// verdictOf is the Verdict a take or peek script answered.
func verdictOf(v int) Verdict {
	switch v {
	case 0:
		return Granted
	case 1:
		return Refused
	}
	return AtLimit
}

// fail implements sharedStore.
func (r *Redis) fail(ctx context.Context, node string, key netip.Prefix, place string, f Failure) (Outcome, error) {
	k, c := key.String(), r.cfg.Load()
	res, err := failScript.Run(ctx, r.c,
		[]string{r.logKey(k), r.placesKey(k), r.blocksKey(), r.untilKey(), r.keysKey()},
		k, place, us(f.Time), f.SID, c.MaxFailures, c.Window.Microseconds(), c.BlockFor.Microseconds(),
		ms(c.Window), r.channel(), node).Slice()
	if err != nil {
		return Outcome{}, fmt.Errorf("guard: record failure of %s: %w", FormatKey(key), err)
	}
	if len(res) != 4 {
		return Outcome{}, fmt.Errorf("guard: record failure of %s: script answered %v", FormatKey(key), res)
	}
	blocked, _ := res[0].(int64)
	made, _ := res[1].(int64)
	n, _ := res[2].(int64)
	out := Outcome{Blocked: blocked == 1, Made: made == 1, Failures: int(n)}
	if out.Blocked {
		v, _ := res[3].(string)
		if out.Block, err = parseBlock(key, v); err != nil {
			return Outcome{}, err
		}
	}
	return out, nil
}

// release implements sharedStore.
func (r *Redis) release(ctx context.Context, key netip.Prefix, place string) error {
	if err := r.c.ZRem(ctx, r.placesKey(key.String()), place).Err(); err != nil {
		return fmt.Errorf("guard: give back a place of %s: %w", FormatKey(key), err)
	}
	return nil
}

// AddFailure implements Store.
func (r *Redis) AddFailure(ctx context.Context, node string, key netip.Prefix, f Failure) error {
	k, c := key.String(), r.cfg.Load()
	err := addFailureScript.Run(ctx, r.c, []string{r.logKey(k), r.keysKey()},
		k, us(f.Time), f.SID, c.MaxFailures, ms(c.Window)).Err()
	if err != nil {
		return fmt.Errorf("guard: record failure of %s: %w", FormatKey(key), err)
	}
	return nil
}

// Block implements Store: the block is set and published in one step, so
// every node subscribed learns of it at once.
func (r *Redis) Block(ctx context.Context, node string, b Block) error {
	k := b.Key.String()
	err := blockScript.Run(ctx, r.c, []string{r.blocksKey(), r.untilKey()},
		k, blockValue(b), us(b.Until), r.channel(), node).Err()
	if err != nil {
		return fmt.Errorf("guard: record block of %s: %w", FormatKey(b.Key), err)
	}
	return nil
}

// Unblock implements Store. The keys overlapping p are found in Go, from the
// indexes of blocked keys and keys with failures, and lifted with the
// unblock published in one script. A failure recorded between the two
// round trips stays, as if it came just after the unblock; the published
// unblock still clears it from every node's memory.
func (r *Redis) Unblock(ctx context.Context, node string, p netip.Prefix, at time.Time) ([]netip.Prefix, error) {
	// The blocks are few; the keys with failures may be a great many, and
	// a client key overlaps no other client key but itself.
	members, err := r.c.ZRange(ctx, r.untilKey(), 0, -1).Result()
	if err == nil {
		if r.cfg.Load().Key(p.Addr()) == p {
			err = r.c.ZScore(ctx, r.keysKey(), p.String()).Err()
			if err == nil {
				members = append(members, p.String())
			} else if errors.Is(err, redis.Nil) {
				err = nil
			}
		} else {
			var more []string
			more, err = r.c.ZRange(ctx, r.keysKey(), 0, -1).Result()
			members = append(members, more...)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("guard: unblock %s: %w", FormatKey(p), err)
	}
	var keys []netip.Prefix
	seen := map[netip.Prefix]bool{}
	for _, m := range members {
		k, err := parseKey(m)
		if err != nil || !p.Overlaps(k) || seen[k] {
			continue
		}
		seen[k] = true
		keys = append(keys, k)
	}
	lift := keys
	if r.cfg.Load().Key(p.Addr()) == p && !seen[p] {
		// A client key without failures or a block may still have places
		// of attempts in flight, which support's unblock frees too.
		lift = append(slices.Clip(keys), p)
	}
	redisKeys := []string{r.blocksKey(), r.untilKey(), r.keysKey()}
	args := []any{r.channel(), "unblock\t" + node + "\t" + p.String() + "\t" + strconv.FormatInt(us(at), 10)}
	for _, k := range lift {
		redisKeys = append(redisKeys, r.logKey(k.String()), r.placesKey(k.String()))
		args = append(args, k.String())
	}
	// Published even when nothing matched here: a node may hold a block it
	// made on its own while the store was unreachable.
	if err := unblockScript.Run(ctx, r.c, redisKeys, args...).Err(); err != nil {
		return nil, fmt.Errorf("guard: unblock %s: %w", FormatKey(p), err)
	}
	return keys, nil
}

// blocks returns the blocks that end after now.
func (r *Redis) blocks(ctx context.Context, now time.Time) ([]Block, error) {
	m, err := r.c.HGetAll(ctx, r.blocksKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("guard: load blocks: %w", err)
	}
	out := make([]Block, 0, len(m))
	for ks, v := range m {
		k, err := parseKey(ks)
		if err != nil {
			continue
		}
		b, err := parseBlock(k, v)
		if err != nil || !now.Before(b.Until) {
			continue
		}
		out = append(out, b)
	}
	return out, nil
}

// Load implements Store: the blocks, then the logs of the keys with a
// failure at or after since, all logs in one pipelined round trip. Seq is
// always 0: changes travel by pub/sub, not by a log.
func (r *Redis) Load(ctx context.Context, since time.Time) (*State, error) {
	st := &State{Failures: map[netip.Prefix][]Failure{}, Blocks: map[netip.Prefix]Block{}}
	bs, err := r.blocks(ctx, since)
	if err != nil {
		return nil, err
	}
	for _, b := range bs {
		st.Blocks[b.Key] = b
	}
	members, err := r.c.ZRangeByScore(ctx, r.keysKey(), &redis.ZRangeBy{Min: strconv.FormatInt(us(since), 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("guard: load failures: %w", err)
	}
	if len(members) == 0 {
		return st, nil
	}
	cmds := make([]*redis.StringSliceCmd, len(members))
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			cmds[i] = p.LRange(ctx, r.logKey(m), 0, -1)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("guard: load failures: %w", err)
	}
	for i, m := range members {
		k, err := parseKey(m)
		if err != nil {
			continue
		}
		for _, e := range cmds[i].Val() {
			if f, ok := parseEntry(e); ok && !f.Time.Before(since) {
				st.Failures[k] = append(st.Failures[k], f)
			}
		}
	}
	return st, nil
}

// Changes implements Store. Redis carries changes by pub/sub (see watch),
// so there is no log to read.
func (r *Redis) Changes(ctx context.Context, after int64, limit int) ([]Change, error) {
	return nil, nil
}

// Prune implements Store.
func (r *Redis) Prune(ctx context.Context, before time.Time) error {
	err := pruneScript.Run(ctx, r.c, []string{r.blocksKey(), r.untilKey(), r.keysKey()}, us(before)).Err()
	if err != nil {
		return fmt.Errorf("guard: prune: %w", err)
	}
	return nil
}

// maxMessage bounds a pub/sub message that is read: a block names at most
// MaxFailures session ids, so anything longer is not one of ours.
const maxMessage = 64 << 10

// parseChange reads a message of the changes channel:
// "block\tNODE\tKEY\tSINCE UNTIL SIDS" or "unblock\tNODE\tPREFIX\tAT".
func parseChange(payload string) (Change, error) {
	if len(payload) > maxMessage {
		return Change{}, fmt.Errorf("guard: change message of %d bytes", len(payload))
	}
	f := strings.Split(payload, "\t")
	if len(f) != 4 {
		return Change{}, fmt.Errorf("guard: change message %.100q: want 4 fields", payload)
	}
	k, err := parseKey(f[2])
	if err != nil {
		return Change{}, err
	}
	switch ChangeKind(f[0]) {
	case ChangeBlock:
		b, err := parseBlock(k, f[3])
		if err != nil {
			return Change{}, err
		}
		return Change{Node: f[1], Kind: ChangeBlock, Key: k, Time: b.Since, Until: b.Until, SIDs: b.SIDs}, nil
	case ChangeUnblock:
		at, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			return Change{}, fmt.Errorf("guard: unblock message %.100q: %w", payload, err)
		}
		return Change{Node: f[1], Kind: ChangeUnblock, Key: k, Time: time.UnixMicro(at)}, nil
	}
	return Change{}, fmt.Errorf("guard: change message %.100q: unknown kind", payload)
}

// pingEvery is how often a quiet subscription is checked, so a Redis that
// vanished without closing the connection is noticed.
const pingEvery = 10 * time.Second

// watch subscribes to the changes channel and, once the subscription is
// confirmed, calls connected (which reloads the blocks), then calls changed
// for every change published, until the connection fails or ctx ends. While
// down reports true, connected is retried every retry, so a node that
// lost the store through a failed command, with its subscription intact,
// comes back too.
func (r *Redis) watch(ctx context.Context, retry time.Duration, down func() bool,
	connected func(context.Context) error, changed func(Change), bad func(error)) error {
	ps := r.c.Subscribe(ctx)
	defer ps.Close()
	// A receive waits for its timeout, not for ctx; closing the
	// subscription ends it at once.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	if err := ps.Subscribe(ctx, r.channel()); err != nil {
		return err
	}
	for {
		wait := pingEvery
		if down() {
			wait = retry
		}
		msg, err := ps.ReceiveTimeout(ctx, wait)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return err
			}
			if down() {
				if err := connected(ctx); err != nil {
					return err
				}
				continue
			}
			if err := ps.Ping(ctx); err != nil {
				return err
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			// The first confirmation, or go-redis subscribing again on a
			// new connection: what was published in between is lost, so
			// the blocks are read again in full.
			if err := connected(ctx); err != nil {
				return err
			}
		case *redis.Message:
			ch, err := parseChange(m.Payload)
			if err != nil {
				bad(err)
				continue
			}
			changed(ch)
		}
	}
}
