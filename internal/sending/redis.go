package sending

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Counter in Redis, shared by every node that uses the same
// server, so the limits count across nodes. Each window is a list of
// "minute:count" entries, oldest first, and a total beside it; one Lua call
// prunes, checks and adds for all the windows of a check at once, so two
// nodes cannot both take the last slot.
type Redis struct {
	// client is the Redis connection (internal/redisconn.Open).
	client redis.UniversalClient
	// prefix starts every key, so the windows sit apart from the guard's.
	// Its hash tag puts every window in one slot of a Redis Cluster: one
	// Lua call may only touch keys of one slot, and a check touches an
	// account's and a domain's windows together.
	prefix string
}

// NewRedis returns a Counter on client.
func NewRedis(client redis.UniversalClient) *Redis {
	return &Redis{client: client, prefix: "{submitd:sending}:"}
}

var _ Counter = (*Redis)(nil)

// takeScript checks and adds. KEYS are pairs: a window's list and its
// total. ARGV[1] is the minute now; then three per window: its length in
// minutes, its limit (0: none) and the events to add. It returns {0, 0}
// when everything was added, else {i, minute}: window i (from 1) is full
// until minute (0 when waiting does not help), and nothing was added.
var takeScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local function parse(e)
  local m, c = string.match(e, '^(%d+):(%d+)$')
  return tonumber(m) or 0, tonumber(c) or 0
end
local nwin = #KEYS / 2
for i = 1, nwin do
  local l, t = KEYS[2*i-1], KEYS[2*i]
  local span, max, n = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
  local total = tonumber(redis.call('GET', t) or '0')
  local pruned = false
  while true do
    local e = redis.call('LINDEX', l, 0)
    if not e then break end
    local m, c = parse(e)
    if m + span > now then break end
    redis.call('LPOP', l)
    total = total - c
    pruned = true
  end
  if total < 0 or redis.call('LLEN', l) == 0 then total = 0 end
  if pruned then redis.call('SET', t, total, 'PX', (span + 1) * 60000) end
  if max > 0 and total + n > max then
    local over = total + n - max
    for _, e in ipairs(redis.call('LRANGE', l, 0, -1)) do
      local m, c = parse(e)
      over = over - c
      if over <= 0 then return {i, m + span} end
    end
    return {i, 0}
  end
end
for i = 1, nwin do
  local l, t = KEYS[2*i-1], KEYS[2*i]
  local span, n = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i+1])
  local last = redis.call('LINDEX', l, -1)
  local m, c = 0, 0
  if last then m, c = parse(last) end
  if last and m == now then
    redis.call('LSET', l, -1, now .. ':' .. (c + n))
  else
    redis.call('RPUSH', l, now .. ':' .. n)
  end
  redis.call('INCRBY', t, n)
  redis.call('PEXPIRE', l, (span + 1) * 60000)
  redis.call('PEXPIRE', t, (span + 1) * 60000)
end
return {0, 0}
`)

// giveScript takes back what takeScript added. KEYS are pairs as for
// takeScript; ARGV are two per window: the minute and the events.
var giveScript = redis.NewScript(`
for i = 1, #KEYS / 2 do
  local l, t = KEYS[2*i-1], KEYS[2*i]
  local want, n = ARGV[2*i-1], tonumber(ARGV[2*i])
  for j, e in ipairs(redis.call('LRANGE', l, 0, -1)) do
    local m, c = string.match(e, '^(%d+):(%d+)$')
    if m == want then
      c = tonumber(c)
      n = math.min(n, c)
      if c > n then
        redis.call('LSET', l, j - 1, m .. ':' .. (c - n))
      else
        redis.call('LREM', l, 1, e)
      end
      if tonumber(redis.call('GET', t) or '0') >= n then redis.call('DECRBY', t, n) end
      break
    end
  end
end
return 0
`)

// countScript sums a window's entries still in it. KEYS[1] is the list;
// ARGV the minute now and the window's length in minutes.
var countScript = redis.NewScript(`
local now, span, total = tonumber(ARGV[1]), tonumber(ARGV[2]), 0
for _, e in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local m, c = string.match(e, '^(%d+):(%d+)$')
  if tonumber(m) + span > now then total = total + tonumber(c) end
end
return total
`)

// Count implements Counter.
func (r *Redis) Count(ctx context.Context, now time.Time, key string, window time.Duration) (int64, error) {
	n, err := countScript.Run(ctx, r.client, []string{r.prefix + key}, minuteOf(now), int64(window/time.Minute)).Int64()
	if err != nil {
		return 0, fmt.Errorf("sending limits in redis: %w", err)
	}
	return n, nil
}

// keys lists the list and total keys of each window.
func (r *Redis) keys(names []string) []string {
	ks := make([]string, 0, 2*len(names))
	for _, n := range names {
		ks = append(ks, r.prefix+n, r.prefix+n+":t")
	}
	return ks
}

// Take implements Counter with one Lua call.
func (r *Redis) Take(ctx context.Context, now time.Time, reqs []Request) ([]Taken, int, time.Time, error) {
	min := minuteOf(now)
	names := make([]string, len(reqs))
	args := make([]any, 0, 1+3*len(reqs))
	args = append(args, min)
	for i, q := range reqs {
		names[i] = q.Key
		args = append(args, int64(q.Window/time.Minute), q.Max, q.N)
	}
	res, err := takeScript.Run(ctx, r.client, r.keys(names), args...).Int64Slice()
	if err != nil {
		return nil, 0, time.Time{}, fmt.Errorf("sending limits in redis: %w", err)
	}
	if len(res) != 2 {
		return nil, 0, time.Time{}, fmt.Errorf("sending limits in redis: unexpected answer %v", res)
	}
	if res[0] > 0 {
		i := int(res[0]) - 1
		return nil, i, untilTime(res[1], now, reqs[i].Window), nil
	}
	taken := make([]Taken, len(reqs))
	for i, q := range reqs {
		taken[i] = Taken{Key: q.Key, Window: q.Window, Minute: min, N: q.N}
	}
	return taken, -1, time.Time{}, nil
}

// Give implements Counter with one Lua call.
func (r *Redis) Give(ctx context.Context, _ time.Time, taken []Taken) error {
	if len(taken) == 0 {
		return nil
	}
	names := make([]string, len(taken))
	args := make([]any, 0, 2*len(taken))
	for i, t := range taken {
		names[i] = t.Key
		args = append(args, strconv.FormatInt(t.Minute, 10), t.N)
	}
	if err := giveScript.Run(ctx, r.client, r.keys(names), args...).Err(); err != nil {
		return fmt.Errorf("sending limits in redis: %w", err)
	}
	return nil
}
