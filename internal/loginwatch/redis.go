package loginwatch

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the Store and StateStore in the guard's Redis ([guard] store =
// "redis"), shared by the nodes: a network one node saw a login succeed
// from is trusted on every node, and a node that starts finds the failures
// and attack states of all of them, merged. Per login L, under the hash tag {loginwatch}:
//
//	{loginwatch}:nets:L    HASH network → "first_ns last_ns", at most
//	                       MaxNetworks fields, expiring TrustFor after the
//	                       latest success
//	{loginwatch}:logins    HASH L → the login's Saved as JSON
//	{loginwatch}:expires   ZSET L scored by when it is quiet (Unix ms)
type Redis struct {
	// c is the client; the caller owns it and closes it.
	c redis.UniversalClient
}

var (
	_ Store      = (*Redis)(nil)
	_ StateStore = (*Redis)(nil)
)

// NewRedis returns the stores on c. It does not connect.
func NewRedis(c redis.UniversalClient) *Redis { return &Redis{c: c} }

// Names of the keys.
const (
	redisTag     = "{loginwatch}"
	redisLogins  = redisTag + ":logins"
	redisExpires = redisTag + ":expires"
)

func netsKey(login string) string { return redisTag + ":nets:" + login }

// Trusted implements Store.
func (r *Redis) Trusted(ctx context.Context, login string, network netip.Prefix, since time.Time) (bool, error) {
	v, err := r.c.HGet(ctx, netsKey(login), network.String()).Result()
	if err == redis.Nil {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("login history of %s: %w", login, err)
	}
	_, last, err := parseTimes(v)
	if err != nil {
		return false, fmt.Errorf("login history of %s: %w", login, err)
	}
	return !last.Before(since), nil
}

// parseTimes reads "first_ns last_ns".
func parseTimes(v string) (first, last time.Time, err error) {
	a, b, _ := strings.Cut(v, " ")
	f, err1 := strconv.ParseInt(a, 10, 64)
	l, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("bad entry %q", v)
	}
	return time.Unix(0, f).UTC(), time.Unix(0, l).UTC(), nil
}

// recordScript records a success and keeps the login's newest max
// networks that are not expired, in one step. KEYS: the login's networks.
// ARGV: network, time ns, max, expired ns, TTL ms.
var recordScript = redis.NewScript(`
local t = ARGV[2]
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local first, last = t, t
if cur then
  local f, l = string.match(cur, '^(%d+) (%d+)$')
  if f then
    first = f
    if tonumber(l) > tonumber(t) then last = l end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], first .. ' ' .. last)
local all = redis.call('HGETALL', KEYS[1])
local nets = {}
for i = 1, #all, 2 do
  local l = tonumber(string.match(all[i + 1], ' (%d+)$') or '0')
  if l < tonumber(ARGV[4]) then
    redis.call('HDEL', KEYS[1], all[i])
  else
    nets[#nets + 1] = {all[i], l}
  end
end
table.sort(nets, function(a, b) if a[2] ~= b[2] then return a[2] > b[2] end return a[1] < b[1] end)
for i = tonumber(ARGV[3]) + 1, #nets do redis.call('HDEL', KEYS[1], nets[i][1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 0
`)

// Record implements Store.
func (r *Redis) Record(ctx context.Context, login string, network netip.Prefix, t time.Time, most int, expired time.Time) error {
	ttl := max(t.Sub(expired).Milliseconds(), 1)
	if err := recordScript.Run(ctx, r.c, []string{netsKey(login)}, network.String(), t.UnixNano(), most, expired.UnixNano(), ttl).Err(); err != nil {
		return fmt.Errorf("login history of %s: %w", login, err)
	}
	return nil
}

// Networks implements Store.
func (r *Redis) Networks(ctx context.Context, login string, since time.Time) ([]Network, error) {
	all, err := r.c.HGetAll(ctx, netsKey(login)).Result()
	if err != nil {
		return nil, fmt.Errorf("login history of %s: %w", login, err)
	}
	out := []Network{}
	for k, v := range all {
		p, err := netip.ParsePrefix(k)
		if err != nil {
			return nil, fmt.Errorf("login history of %s: network %q: %w", login, k, err)
		}
		first, last, err := parseTimes(v)
		if err != nil {
			return nil, fmt.Errorf("login history of %s: %w", login, err)
		}
		if !last.Before(since) {
			out = append(out, Network{Prefix: p, First: first, Last: last})
		}
	}
	slices.SortFunc(out, func(a, b Network) int {
		if c := b.Last.Compare(a.Last); c != 0 {
			return c
		}
		return strings.Compare(a.Prefix.String(), b.Prefix.String())
	})
	return out, nil
}

// Prune implements Store. Each login's networks expire by themselves
// TrustFor after its latest success, and Record drops the expired ones, so
// there is nothing to walk.
func (r *Redis) Prune(context.Context, time.Time) (int64, error) { return 0, nil }

// maxSavedFailures bounds the failures kept of one login in Redis: the
// highest max_failures, since a node keeps no more than that.
const maxSavedFailures = 10000

// SaveLogins implements StateStore. What another node saved of a login is
// merged with what this one saves (mergeSaved), so that no node's count
// is lost: the logins are read and written in one MULTI under WATCH, and
// read again if another node wrote in between.
func (r *Redis) SaveLogins(ctx context.Context, now time.Time, saved []Saved, drop []string) error {
	names := make([]string, len(saved))
	for i, sv := range saved {
		names[i] = sv.Login
	}
	quiet := strconv.FormatInt(now.UnixMilli(), 10)
	save := func(tx *redis.Tx) error {
		gone, err := tx.ZRangeArgs(ctx, redis.ZRangeArgs{Key: redisExpires, Start: "-inf", Stop: quiet, ByScore: true}).Result()
		if err != nil {
			return err
		}
		merged := slices.Clone(saved)
		if len(names) > 0 {
			cur, err := tx.HMGet(ctx, redisLogins, names...).Result()
			if err != nil {
				return err
			}
			for i, v := range cur {
				raw, ok := v.(string)
				if !ok {
					continue
				}
				old, err := decodeSaved(names[i], []byte(raw), 0)
				if err != nil {
					continue // damaged: replaced by what this node holds
				}
				merged[i] = mergeSaved(saved[i], old, maxSavedFailures)
			}
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			if len(gone) > 0 {
				p.HDel(ctx, redisLogins, gone...)
				p.ZRemRangeByScore(ctx, redisExpires, "-inf", quiet)
			}
			for _, l := range drop {
				p.HDel(ctx, redisLogins, l)
				p.ZRem(ctx, redisExpires, l)
			}
			for _, sv := range merged {
				b, err := json.Marshal(sv)
				if err != nil {
					return err
				}
				p.HSet(ctx, redisLogins, sv.Login, b)
				p.ZAdd(ctx, redisExpires, redis.Z{Score: float64(sv.Expires.UnixMilli()), Member: sv.Login})
			}
			return nil
		})
		return err
	}
	var err error
	for range 5 {
		if err = r.c.Watch(ctx, save, redisLogins); err != redis.TxFailedErr {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("login failures in redis: %w", err)
	}
	return nil
}

// loadScript forgets the logins gone quiet and returns the others with
// their expiry, in one step. KEYS: logins, expires. ARGV: now ms.
var loadScript = redis.NewScript(`
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, l in ipairs(gone) do redis.call('HDEL', KEYS[1], l) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local out = {}
for _, e in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')) do out[#out + 1] = e end
local res = {}
for i = 1, #out, 2 do
  local v = redis.call('HGET', KEYS[1], out[i])
  if v then
    res[#res + 1] = out[i]
    res[#res + 1] = out[i + 1]
    res[#res + 1] = v
  end
end
return res
`)

// LoadLogins implements StateStore.
func (r *Redis) LoadLogins(ctx context.Context, now time.Time) ([]Saved, error) {
	res, err := loadScript.Run(ctx, r.c, []string{redisLogins, redisExpires}, now.UnixMilli()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("login failures in redis: %w", err)
	}
	var out []Saved
	for i := 0; i+2 < len(res); i += 3 {
		ms, err := strconv.ParseFloat(res[i+1], 64)
		if err != nil {
			return nil, fmt.Errorf("login failures of %s in redis: %w", res[i], err)
		}
		sv, err := decodeSaved(res[i], []byte(res[i+2]), int64(ms)*int64(time.Millisecond))
		if err != nil {
			return nil, err
		}
		out = append(out, sv)
	}
	return out, nil
}
