"""The Redis store's atomic steps, as Lua scripts (Redis 7: replicated by their effects).

Every script gets the queue key as KEYS[1] (so a cluster routes it to the hash tag's slot) and
the prefix `P` (`{styletx}`) as ARGV[1]; every key it touches is `P:...`, on that one slot:

    P:job:<id>          hash: tenant, key, digest, state, attempt, token, owner, lost, admitted,
                        started, ended, deadline (ms), reason, cancel, detail, result, rsize,
                        start (fair tag), seq, maxrun, events (last event id)
    P:key:<tenant>/<key>  string: the job id filed last under the tenant's key
    P:payload:<id>      string: what the job was admitted with (deleted when it ends)
    P:events:<id>       stream, ids `<n>-0`, n = 1, 2, ...; MAXLEN max_events
    P:result:<id>       list of the result's chunks
    P:staging:<id>:<token>  list: chunks uploaded by an attempt, renamed to P:result:<id> by
                        `complete` (a stale attempt's upload expires unused)
    P:held:<tenant>     zset: the tenant's stored results, `<id>/<size>` scored by expiry (ms)
    P:hbytes:<tenant>   string: bytes of the tenant's stored results
    P:holders           zset: tenants with a P:held key, scored by when that key expires (ms),
                        so the fleet's counts never scan the keyspace for them
    P:queue             zset: queued job ids by fair start tag (ties: ids begin with the seq)
    P:leases            zset: running job ids by lease deadline (ms)
    P:fair              hash: v (virtual time), seq, f:<tenant> (its last finish tag)
    P:counts            hash: q, r, q:<tenant>, r:<tenant> (fields at 0 are deleted)
    P:replica:<owner>   string with a lease-long TTL: the replica is alive

Times are the Redis server's (`TIME`, in ms): the fleet's one clock. When a job ends, its job,
key, events and result keys get the result TTL and its payload is deleted; P:held, P:hbytes
and P:holders expire after the results they count; P:queue, P:leases and P:counts vanish when
empty, and P:fair expires once nothing has been queued or running for its idle TTL.
"""

from __future__ import annotations

#: Each script's first line. A script with this shebang is refused whole, before it runs, when
#: Redis is at `maxmemory` (noeviction); without it Redis checks only a script's first write,
#: and a script whose first write frees memory (DEL, ZREM) could then grow past the limit.
#: The steps that add jobs, claims and events are refused when Redis is full; the ones that
#: keep leases, end or requeue jobs and free their payloads (`allow-oom`) still run, so a full
#: Redis stops new work without losing the work in hand.
_DENY_OOM = "#!lua\n"
_ALLOW_OOM = "#!lua flags=allow-oom\n"

#: Helpers every script starts with.
_COMMON = """
local P = ARGV[1]
local QUEUE, LEASES, FAIR, COUNTS = KEYS[1], P .. ':leases', P .. ':fair', P .. ':counts'
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(x) return string.format('%d', x) end
local function jobkey(id) return P .. ':job:' .. id end
local function rec(id)
  local t = redis.call('HGETALL', jobkey(id))
  table.insert(t, 1, id)
  return t
end
local function count(field, by)
  if redis.call('HINCRBY', COUNTS, field, by) <= 0 then redis.call('HDEL', COUNTS, field) end
end
local function held(id, token, owner)
  local s = redis.call('HMGET', jobkey(id), 'state', 'token', 'owner')
  return s[1] == 'running' and s[2] == token and s[3] == owner
end
local function requeue(id, lost)
  local jk = jobkey(id)
  local tenant, start = unpack(redis.call('HMGET', jk, 'tenant', 'start'))
  redis.call('HSET', jk, 'state', 'queued')
  redis.call('HDEL', jk, 'owner', 'deadline')
  if lost then redis.call('HINCRBY', jk, 'lost', 1) end
  redis.call('ZREM', LEASES, id)
  redis.call('ZADD', QUEUE, start, id)
  count('r', -1) count('r:' .. tenant, -1) count('q', 1) count('q:' .. tenant, 1)
  redis.call('PERSIST', FAIR)
end
local function append(id, kind, data, max_events)
  local n = redis.call('HINCRBY', jobkey(id), 'events', 1)
  redis.call('XADD', P .. ':events:' .. id, 'MAXLEN', max_events, int(n) .. '-0',
    'k', kind, 'd', data)
  return n
end
local function end_job(id, state, reason, now, ttl)
  local jk = jobkey(id)
  local s = redis.call('HMGET', jk, 'state', 'tenant', 'key')
  redis.call('HSET', jk, 'state', state, 'reason', reason, 'ended', int(now))
  redis.call('HDEL', jk, 'owner', 'deadline')
  if s[1] == 'running' then
    redis.call('ZREM', LEASES, id) count('r', -1) count('r:' .. s[2], -1)
  elseif s[1] == 'queued' then
    redis.call('ZREM', QUEUE, id) count('q', -1) count('q:' .. s[2], -1)
  end
  redis.call('DEL', P .. ':payload:' .. id)
  local out = rec(id)
  for _, k in ipairs({jk, P .. ':events:' .. id, P .. ':result:' .. id}) do
    redis.call('PEXPIRE', k, ttl)
  end
  if s[3] then
    local kk = P .. ':key:' .. s[2] .. '/' .. s[3]
    if redis.call('GET', kk) == id then redis.call('PEXPIRE', kk, ttl) end
  end
  return out
end
local function settle(idle)
  if redis.call('EXISTS', COUNTS) == 0 then redis.call('PEXPIRE', FAIR, idle) end
end
"""

#: ARGV: P, tenant, key ('' for none), digest, cost, capacity, max_queued (-1: none),
#: max_running (-1: none), random id suffix, payload, '1' when capacity counts running jobs too.
ADMIT = (
    _DENY_OOM
    + _COMMON
    + """
local tenant, key, digest = ARGV[2], ARGV[3], ARGV[4]
local cost, capacity, maxq = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local kk = P .. ':key:' .. tenant .. '/' .. key
if key ~= '' then
  local found = redis.call('GET', kk)
  if found then
    local s = redis.call('HMGET', jobkey(found), 'state', 'result')
    if s[1] == 'queued' or s[1] == 'running' or (s[1] == 'done' and s[2] == 'kept') then
      return {'existing', rec(found)}
    end
  end
end
local function n(field) return tonumber(redis.call('HGET', COUNTS, field) or '0') end
local q, tq, tr = n('q'), n('q:' .. tenant), n('r:' .. tenant)
local held = q
if ARGV[11] == '1' then held = q + n('r') end
if held >= capacity then return {'refused', 'queue', capacity, q, tq, tr} end
if maxq >= 0 and tq >= maxq then return {'refused', 'max_queued', maxq, q, tq, tr} end
local now = now_ms()
redis.call('PERSIST', FAIR)
local seq = redis.call('HINCRBY', FAIR, 'seq', 1)
local v = tonumber(redis.call('HGET', FAIR, 'v') or '0')
local start = math.max(v, tonumber(redis.call('HGET', FAIR, 'f:' .. tenant) or '0'))
redis.call('HSET', FAIR, 'f:' .. tenant, int(start + cost))
local id = string.format('%012x', seq) .. '-' .. ARGV[9]
local jk = jobkey(id)
redis.call('HSET', jk, 'tenant', tenant, 'digest', digest, 'state', 'queued', 'attempt', 0,
  'token', 0, 'lost', 0, 'admitted', int(now), 'start', int(start), 'seq', int(seq),
  'maxrun', ARGV[8], 'events', 0, 'result', 'none', 'rsize', 0)
if key ~= '' then
  redis.call('HSET', jk, 'key', key)
  redis.call('SET', kk, id)
end
redis.call('SET', P .. ':payload:' .. id, ARGV[10])
redis.call('ZADD', QUEUE, int(start), id)
count('q', 1) count('q:' .. tenant, 1)
return {'created', rec(id), redis.call('ZRANK', QUEUE, id) + 1}
"""
)

#: ARGV: P, owner, k, lease (ms).
CLAIM = (
    _DENY_OOM
    + _COMMON
    + """
local owner, k, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local deadline = now + lease
redis.call('SET', P .. ':replica:' .. owner, '1', 'PX', int(lease))
local out, running, offset = {}, {}, 0
local v = tonumber(redis.call('HGET', FAIR, 'v') or '0')
while #out < k do
  local batch = redis.call('ZRANGE', QUEUE, offset, offset + 63)
  if #batch == 0 then break end
  local skipped = 0
  for _, id in ipairs(batch) do
    if #out >= k then break end
    local jk = jobkey(id)
    local tenant, maxrun, start = unpack(redis.call('HMGET', jk, 'tenant', 'maxrun', 'start'))
    local r = running[tenant] or tonumber(redis.call('HGET', COUNTS, 'r:' .. tenant) or '0')
    running[tenant] = r
    if tonumber(maxrun) >= 0 and r >= tonumber(maxrun) then
      skipped = skipped + 1
    else
      running[tenant] = r + 1
      redis.call('ZREM', QUEUE, id)
      redis.call('ZADD', LEASES, int(deadline), id)
      count('q', -1) count('q:' .. tenant, -1) count('r', 1) count('r:' .. tenant, 1)
      v = math.max(v, tonumber(start))
      redis.call('HINCRBY', jk, 'attempt', 1)
      redis.call('HINCRBY', jk, 'token', 1)
      redis.call('HSET', jk, 'state', 'running', 'owner', owner, 'deadline', int(deadline))
      redis.call('HSETNX', jk, 'started', int(now))
      out[#out + 1] = rec(id)
    end
  end
  offset = offset + skipped
end
if #out > 0 then
  redis.call('HSET', FAIR, 'v', int(v))
  local fair = redis.call('HGETALL', FAIR)
  for i = 1, #fair, 2 do
    if string.sub(fair[i], 1, 2) == 'f:' and tonumber(fair[i + 1]) <= v then
      redis.call('HDEL', FAIR, fair[i])
    end
  end
end
return out
"""
)

#: ARGV: P, owner, lease (ms), then id, token for each lease.
HEARTBEAT = (
    _ALLOW_OOM
    + _COMMON
    + """
local owner, lease = ARGV[2], tonumber(ARGV[3])
local deadline = now_ms() + lease
redis.call('SET', P .. ':replica:' .. owner, '1', 'PX', int(lease))
local out = {int(deadline)}
for i = 4, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if held(id, token, owner) then
    redis.call('HSET', jobkey(id), 'deadline', int(deadline))
    redis.call('ZADD', LEASES, int(deadline), id)
    out[#out + 1] = {id, 'held', redis.call('HGET', jobkey(id), 'cancel') or ''}
  else
    out[#out + 1] = {id, 'lost', ''}
  end
end
return out
"""
)

#: ARGV: P, result TTL (ms), idle TTL (ms), then id, token, owner for each lease.
HAND_BACK = (
    _ALLOW_OOM
    + _COMMON
    + """
local out, now = {}, now_ms()
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  if held(id, ARGV[i + 1], ARGV[i + 2]) then
    local cancel = redis.call('HGET', jobkey(id), 'cancel')
    if cancel then
      end_job(id, 'cancelled', cancel, now, ARGV[2])
    else
      requeue(id, false)
      out[#out + 1] = id
    end
  end
end
settle(ARGV[3])
return out
"""
)

#: ARGV: P, lease (ms), max attempts, result TTL (ms), idle TTL (ms).
REAP = (
    _ALLOW_OOM
    + _COMMON
    + """
local lease, max_attempts, ttl, idle = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local now = now_ms()
local requeued, failed, cancelled = {}, {}, {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', int(now), 'LIMIT', 0, 256)) do
  local jk = jobkey(id)
  local owner, deadline, cancel, lost = unpack(redis.call('HMGET', jk, 'owner', 'deadline',
    'cancel', 'lost'))
  if not owner then
    redis.call('ZREM', LEASES, id)
  elseif redis.call('EXISTS', P .. ':replica:' .. owner) == 0
      or tonumber(deadline) + lease <= now then
    if cancel then
      end_job(id, 'cancelled', cancel, now, ttl)
      cancelled[#cancelled + 1] = id
    elseif tonumber(lost) + 1 >= max_attempts then
      redis.call('HINCRBY', jk, 'lost', 1)
      end_job(id, 'failed', 'max_attempts', now, ttl)
      failed[#failed + 1] = id
    else
      requeue(id, true)
      requeued[#requeued + 1] = id
    end
  end
end
settle(idle)
return {requeued, failed, cancelled}
"""
)

#: ARGV: P, id, token, owner, kind, data, max events.
APPEND = (
    _DENY_OOM
    + _COMMON
    + """
if not held(ARGV[2], ARGV[3], ARGV[4]) then return -1 end
return append(ARGV[2], ARGV[5], ARGV[6], ARGV[7])
"""
)

#: ARGV: P, id, token, owner, state, reason, detail, result ('1'/'0'), size, chunks,
#: tenant budget, result TTL (ms), idle TTL (ms), event ('1'/'0'), kind, data, max events.
COMPLETE = (
    _ALLOW_OOM
    + _COMMON
    + """
local id, token, owner = ARGV[2], ARGV[3], ARGV[4]
if not held(id, token, owner) then return {'fenced'} end
local jk, ttl = jobkey(id), tonumber(ARGV[12])
local stage = P .. ':staging:' .. id .. ':' .. token
local size, budget = tonumber(ARGV[9]), tonumber(ARGV[11])
local now = now_ms()
if ARGV[8] == '1' and size <= budget and redis.call('LLEN', stage) ~= tonumber(ARGV[10]) then
  return {'incomplete'}
end
if ARGV[14] == '1' then append(id, ARGV[15], ARGV[16], ARGV[17]) end
redis.call('HSET', jk, 'detail', ARGV[7])
local evicted = {}
if ARGV[8] == '1' then
  if size > budget then
    redis.call('HSET', jk, 'result', 'not_kept', 'rsize', int(size))
  else
    local tenant = redis.call('HGET', jk, 'tenant')
    local hz, hb = P .. ':held:' .. tenant, P .. ':hbytes:' .. tenant
    local bytes = tonumber(redis.call('GET', hb) or '0')
    local function drop(member)
      local vid, vsize = string.match(member, '^(.*)/(%d+)$')
      bytes = bytes - tonumber(vsize)
      redis.call('ZREM', hz, member)
      return vid
    end
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', hz, '-inf', int(now))) do drop(m) end
    while bytes + size > budget do
      local oldest = redis.call('ZRANGE', hz, 0, 0)
      if #oldest == 0 then break end
      local vid = drop(oldest[1])
      redis.call('DEL', P .. ':result:' .. vid)
      if redis.call('EXISTS', jobkey(vid)) == 1 then
        redis.call('HSET', jobkey(vid), 'result', 'evicted')
      end
      evicted[#evicted + 1] = vid
    end
    redis.call('RENAME', stage, P .. ':result:' .. id)
    bytes = math.max(bytes, 0) + size
    redis.call('ZADD', hz, int(now + ttl), id .. '/' .. int(size))
    redis.call('SET', hb, int(bytes), 'PX', int(ttl + 1000))
    redis.call('PEXPIRE', hz, int(ttl + 1000))
    local holders = P .. ':holders'
    redis.call('ZADD', holders, int(now + ttl + 1000), tenant)
    redis.call('ZREMRANGEBYSCORE', holders, '-inf', int(now))
    if redis.call('PTTL', holders) < ttl + 1000 then
      redis.call('PEXPIRE', holders, int(ttl + 1000))
    end
    redis.call('HSET', jk, 'result', 'kept', 'rsize', int(size))
  end
end
redis.call('DEL', stage)
local out = end_job(id, ARGV[5], ARGV[6], now, ARGV[12])
settle(ARGV[13])
return {'ok', out, evicted}
"""
)

#: ARGV: P, id, reason, result TTL (ms), idle TTL (ms).
CANCEL = (
    _ALLOW_OOM
    + _COMMON
    + """
local id, reason = ARGV[2], ARGV[3]
local state = redis.call('HGET', jobkey(id), 'state')
if not state then return false end
if state == 'queued' then
  local out = end_job(id, 'cancelled', reason, now_ms(), ARGV[4])
  settle(ARGV[5])
  return out
end
if state == 'running' then redis.call('HSETNX', jobkey(id), 'cancel', reason) end
return rec(id)
"""
)

__all__ = ["ADMIT", "APPEND", "CANCEL", "CLAIM", "COMPLETE", "HAND_BACK", "HEARTBEAT", "REAP"]
