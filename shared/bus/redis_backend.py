"""The ``redis`` backend: JetStream's semantics on one Redis server, shared by
every process of a deployment (coordinators, workers, clients).

All state that matters lives in Redis, under keys namespaced by the subject
prefix (``af:{<prefix>}:...``: the hash tag puts a deployment in one Cluster
slot, and several deployments can share a server). Every step that must be
atomic against competing processes is one Lua script. What maps to what
(``S``: a stream, ``C``: a consumer, ``K``: the key prefix):

- **stream** ``S``: its configuration ``K cfg:S`` (hash; ``K streams`` lists
  every stream's subjects and transform), its counters ``K meta:S``
  (``last_seq``, ``last_ns``, ``bytes``), its messages in the Redis stream
  ``K x:S`` under ID ``<seq>-0`` (fields subject, headers as JSON, body, stored
  time in ns, KV operation), the sequences of each subject ``K z:S:<subject>``
  (sorted set), its subjects ``K subs:S`` (sorted by name: a filter's literal
  head, e.g. one workflow's events, finds its few subjects, whose sequences
  are merged; a broad filter scans the Redis stream), the deleted sequences
  after the first ``K del:S`` and one ``K id:S:<msg-id>`` per ``Nats-Msg-Id`` (``SET NX
  PX`` the duplicate window). Publishing (the sequence ``HINCRBY``, dedupe,
  ``Nats-Expected-Last-(Subject-)Sequence`` fencing, limits, work-queue
  removal on ack) is one script. ``max_age`` is enforced lazily: by every
  script that touches the stream (publish, fetch, read, info), not by a timer.
- **consumer** ``C`` of ``S``: its spec ``K cons:S`` / filters ``K cf:S``
  (hashes by name), cursor ``K c:S:C`` (the next sequence never delivered),
  pending deliveries ``K p:S:C`` (sorted set: seq by redelivery deadline, ms)
  and delivery counts ``K d:S:C``. A fetch (one script) takes due
  redeliveries first (or, past ``max_deliver``, stores JetStream's advisory
  JSON on the stream capturing it), then new matching messages from the
  cursor, bounded by ``max_ack_pending``. (So the advisory is stored when
  someone fetches after the deadline, not by a server timer: a consumer nobody
  pulls from stores none.) Ack / nak(delay) / term /
  in_progress are scripts on the pending set, so a delivery a killed process
  held comes back after ``ack_wait`` to whoever fetches next. Blocked pullers
  wait on the wake channel ``K w:S:C`` (published by a store, ack or nak) or
  the earliest pending deadline, with a 1 s poll as a safety net.
- **KV bucket** ``B``: stream ``KV_B`` on ``$KV.B.>`` as JetStream's; revision =
  stream sequence; create / update(last) / delete(last) are the publish
  script's CAS; a TTL is the stream's ``max_age`` (lazily enforced: reads and
  ``keys()`` never see an expired key; watchers are not told, as with
  JetStream); a watch subscribes to stored messages, then reads a snapshot.
- **core messages**: a Redis pub/sub channel per subject (``K m:<subject>``;
  stored messages also on ``K t:<subject>`` with their sequence, for follows
  and watches). NATS wildcards become a glob ``PSUBSCRIBE`` filtered by
  :func:`subject_matches`; a queue group's member is the one process whose
  ``SET NX`` claim on the message wins; no responders (``PUBLISH`` reached
  nobody) is a TimeoutError at once.

What Redis guarantees, against JetStream with R3 file storage: persistence is
whatever the server's is (``appendonly yes`` with ``appendfsync everysec``
loses up to about 1 s of acknowledged writes on a crash; RDB snapshots more);
replication is asynchronous, so a Sentinel (or Cluster) failover can lose
acknowledged writes (a script's effects replicate as one transaction: a
replica holds all of a publish or none of it), and JetStream's quorum has no
such window; pub/sub is
at-most-once, so a follow or a KV watch misses what is stored while its
connection is down (consumers do not: they read from Redis). There are no
per-subject permissions on the server: ACLs restrict by key pattern and
channel only (per deployment, not per role); ``max_age`` needs traffic on the
stream to take effect. The scripts use keys they do not declare: right on one
server (or Sentinel); on a Cluster they stay in the deployment's slot, which
Redis tolerates but does not promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

import msgpack
import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from agenticflow.shared.bus.base import (
    Bus,
    ConsumerSpec,
    KeyValue,
    KVEntry,
    Message,
    MessageHandler,
    Outgoing,
    ServiceInfo,
    StoredValue,
    Subscription,
)
from agenticflow.shared.bus.emulated import (
    ANCHORS_KEPT,
    ANCHORS_MAX_MSGS,
    DIRECT_INACTIVE_S,
    DIRECT_MAX_AGE_S,
    H_EXPECTED_SEQ,
    H_EXPECTED_SUBJECT,
    H_EXPECTED_SUBJECT_SEQ,
    H_KV_OP,
    H_ROLLUP,
    CoreMessage,
    Entry,
    StreamConfig,
    subject_matches,
)
from agenticflow.shared.bus.emulated import EPOCH as _EPOCH
from agenticflow.shared.bus.emulated import Metadata as _Metadata
from agenticflow.shared.bus.emulated import Sequence as _Sequence
from agenticflow.shared.bus.emulated import iso as _iso
from agenticflow.shared.bus.emulated import overlap as _overlap
from agenticflow.shared.bus.emulated import transform as _transform
from agenticflow.shared.bus.emulated import utc as _utc
from agenticflow.shared.errors import (
    ConnectionLostError,
    NotFoundError,
    StateConflictError,
    TransportError,
)
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.seal import Seal
from agenticflow.shared.wire.codec import DEFAULT_MAX_PAYLOAD, H_MSG_ID, check_size
from agenticflow.shared.wire.events import Event
from agenticflow.shared.wire.names import partitions_of_transform

log = structlog.get_logger("agenticflow.bus.redis")


SAFETY_POLL_S = 1.0
"""Longest a blocked puller waits without asking Redis again (a missed wake)."""
SCAN = 512
"""Messages a read or fetch script looks at per call (bounds a script's run time)."""
MAX_CONNECTIONS = 32
"""Connections to Redis per process at most (one is the pub/sub connection)."""
COMMAND_TIMEOUT_S = 30.0
"""Longest wait for a command's answer (a script scans a bounded range)."""
CLAIM_MS = 60_000
"""How long a queue group's claim on a core message is kept."""

# Lua ---------------------------------------------------------------------------
_LIB = r"""
local kp = ARGV[1]
local function key(...) return kp .. table.concat({...}, ':') end
local function fail(msg) error({err = msg}) end
local function split(s)
  local out = {}
  for tok in string.gmatch(s, '[^%.]+') do out[#out + 1] = tok end
  return out
end
local function matches(pattern, subject)
  local want, have = split(pattern), split(subject)
  for i = 1, #want do
    local p = want[i]
    if p == '>' then return #have >= i end
    if i > #have or (p ~= '*' and p ~= have[i]) then return false end
  end
  return #want == #have
end
local function wild(s)
  for _, tok in ipairs(split(s)) do if tok == '*' or tok == '>' then return true end end
  return false
end
local function any_match(filters, subject)
  if filters == '' then return true end
  for f in string.gmatch(filters, '%S+') do if matches(f, subject) then return true end end
  return false
end
local function fields(f)
  local e = {}
  for i = 1, #f, 2 do e[f[i]] = f[i + 1] end
  return e
end
local function seq_of(id) return tonumber(string.match(id, '^(%d+)')) end
local function entry(S, seq)
  local r = redis.call('XRANGE', key('x', S), seq .. '-0', seq .. '-0')
  if #r == 0 then return nil end
  local e = fields(r[1][2])
  e.seq = seq
  return e
end
local function row(e) return {e.seq, e.s, e.h, e.b, e.t, e.o} end
local function first_seq(S)
  local r = redis.call('XRANGE', key('x', S), '-', '+', 'COUNT', 1)
  if #r == 0 then return nil end
  return seq_of(r[1][1])
end
local function last_seq(S)
  return tonumber(redis.call('HGET', key('meta', S), 'last_seq') or '0')
end
local function cfg_of(S)
  local raw = redis.call('HGETALL', key('cfg', S))
  if #raw == 0 then return nil end
  local c = fields(raw)
  local numbers = {'max_msgs', 'max_bytes', 'max_age_ms', 'per_subject', 'max_msg_size', 'dup_ms'}
  for _, k in ipairs(numbers) do
    c[k] = tonumber(c[k])
  end
  return c
end
local function must_cfg(S)
  local c = cfg_of(S)
  if not c then fail('AFNOSTREAM stream ' .. S .. ' does not exist') end
  return c
end
local function clock()
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  return ms, t[1] .. string.format('%06d', tonumber(t[2])) .. '000', t
end
local function ns_ms(ns) return tonumber(string.sub(ns, 1, -7)) end
local function ns_us(ns) return tonumber(string.sub(ns, 1, -4)) end
local function iso(sec, us)
  local days = math.floor(sec / 86400)
  local rem = sec - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)
  yoe = math.floor(yoe / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', y, m, d,
    math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60, us)
end
-- The stream's subjects matching ``filter``, found by the literal tokens it
-- starts with (``subs:S`` is sorted by name); at most ``cap`` looked at, if given
-- (then the second result says whether there were more).
local function subjects(S, filter, cap)
  local prefix = {}
  for _, tok in ipairs(split(filter)) do
    if tok == '*' or tok == '>' then break end
    prefix[#prefix + 1] = tok
  end
  local low, high = '-', '+'
  if #prefix > 0 then
    local p = table.concat(prefix, '.')
    if #prefix == #split(filter) then return {filter}, false end
    low, high = '[' .. p .. '.', '(' .. p .. '.' .. '\255'
  end
  local found
  if cap then
    found = redis.call('ZRANGEBYLEX', key('subs', S), low, high, 'LIMIT', 0, cap + 1)
  else
    found = redis.call('ZRANGEBYLEX', key('subs', S), low, high)
  end
  local more = cap ~= nil and #found > cap
  local out = {}
  for _, s in ipairs(found) do
    if matches(filter, s) then out[#out + 1] = s end
  end
  return out, more
end
local function last_on(S, subject)
  if not wild(subject) then
    local r = redis.call('ZREVRANGE', key('z', S, subject), 0, 0)
    if r[1] then return tonumber(r[1]) end
    return nil
  end
  local best = nil
  for _, s in ipairs(subjects(S, subject)) do
    do
      local r = redis.call('ZREVRANGE', key('z', S, s), 0, 0)
      if r[1] and (best == nil or tonumber(r[1]) > best) then best = tonumber(r[1]) end
    end
  end
  return best
end
local function remove(S, seq)
  local e = entry(S, seq)
  if not e then return false end
  redis.call('XDEL', key('x', S), seq .. '-0')
  local z = key('z', S, e.s)
  redis.call('ZREM', z, seq)
  if redis.call('ZCARD', z) == 0 then redis.call('ZREM', key('subs', S), e.s) end
  redis.call('HINCRBY', key('meta', S), 'bytes', -(#e.s + #e.b + #e.h))
  for _, c in ipairs(redis.call('HKEYS', key('cf', S))) do
    if redis.call('ZREM', key('p', S, c), seq) == 1 then redis.call('HDEL', key('d', S, c), seq) end
  end
  local first = first_seq(S)
  if first then
    if seq > first then redis.call('ZADD', key('del', S), seq, seq) end
    redis.call('ZREMRANGEBYSCORE', key('del', S), '-inf', '(' .. first)
  else
    redis.call('DEL', key('del', S))
  end
  return true
end
local function trim(S, c, now)
  if c.max_age_ms <= 0 then return end
  local x = key('x', S)
  while true do
    local r = redis.call('XRANGE', x, '-', '+', 'COUNT', 1)
    if #r == 0 then return end
    local e = fields(r[1][2])
    if ns_ms(e.t) > now - c.max_age_ms then return end
    remove(S, seq_of(r[1][1]))
  end
end
local function stream_for(subject)
  local all = redis.call('HGETALL', kp .. 'streams')
  for i = 1, #all, 2 do
    for _, p in ipairs(cjson.decode(all[i + 1]).subjects) do
      if matches(p, subject) then return all[i] end
    end
  end
  return nil
end
local function store(S, orig, subject, h, b, o)
  local c = must_cfg(S)
  local now, ns = clock()
  trim(S, c, now)
  local meta = key('meta', S)
  if o.msgid ~= '' then
    local d = redis.call('GET', key('id', S, o.msgid))
    if d then return {tonumber(d), 1} end
  end
  if o.exp_seq ~= '' and tonumber(o.exp_seq) ~= last_seq(S) then
    fail('AFCONFLICT wrong last sequence: ' .. last_seq(S))
  end
  if o.exp_subj_seq ~= '' then
    local target = subject
    if o.exp_subj ~= '' then target = o.exp_subj end
    local found = last_on(S, target) or 0
    if tonumber(o.exp_subj_seq) ~= found then
      fail('AFCONFLICT wrong last sequence on ' .. subject .. ': ' .. found
        .. ', not ' .. o.exp_subj_seq)
    end
  end
  if o.kvcreate == '1' then
    local l = last_on(S, subject)
    local e = l and entry(S, l)
    if e and e.o == '' then fail('AFCONFLICT ' .. subject .. ' exists already') end
  end
  local size = #subject + #b + #h
  if c.max_msg_size >= 0 and size > c.max_msg_size then
    fail('AFLIMIT ' .. S .. ': message size exceeds maximum allowed')
  end
  local x = key('x', S)
  if c.discard_new == '1' then
    local bytes = tonumber(redis.call('HGET', meta, 'bytes') or '0')
    if (c.max_msgs >= 0 and redis.call('XLEN', x) >= c.max_msgs)
      or (c.max_bytes >= 0 and bytes + size > c.max_bytes) then
      fail('AFLIMIT ' .. S .. ': maximum messages or bytes exceeded')
    end
  end
  local seq = redis.call('HINCRBY', meta, 'last_seq', 1)
  redis.call('HSET', meta, 'last_ns', ns)
  redis.call('HINCRBY', meta, 'bytes', size)
  redis.call('XADD', x, seq .. '-0', 's', subject, 'h', h, 'b', b, 't', ns, 'o', o.op)
  local z = key('z', S, subject)
  redis.call('ZADD', z, seq, seq)
  redis.call('ZADD', key('subs', S), 0, subject)
  if o.msgid ~= '' then redis.call('SET', key('id', S, o.msgid), seq, 'PX', c.dup_ms) end
  if o.rollup == 'sub' then
    for _, s in ipairs(redis.call('ZRANGE', z, 0, -2)) do remove(S, tonumber(s)) end
  end
  while c.per_subject > 0 and redis.call('ZCARD', z) > c.per_subject do
    remove(S, tonumber(redis.call('ZRANGE', z, 0, 0)[1]))
  end
  while c.max_msgs >= 0 and redis.call('XLEN', x) > c.max_msgs do remove(S, first_seq(S)) end
  while c.max_bytes >= 0 and tonumber(redis.call('HGET', meta, 'bytes')) > c.max_bytes
    and redis.call('XLEN', x) > 0 do
    remove(S, first_seq(S))
  end
  local cf = redis.call('HGETALL', key('cf', S))
  for i = 1, #cf, 2 do
    if any_match(cf[i + 1], subject) then redis.call('PUBLISH', key('w', S, cf[i]), '') end
  end
  redis.call('PUBLISH', key('t', subject), cmsgpack.pack({seq, ns, subject, h, b, S}))
  redis.call('PUBLISH', key('m', orig), cmsgpack.pack({S .. '#' .. seq, orig, o.reply, h, b}))
  return {seq, 0}
end
local NONE = {msgid = '', exp_subj_seq = '', exp_subj = '', exp_seq = '', op = '', rollup = '',
  kvcreate = '', reply = ''}
local function advisory(kind, typ, S, C, seq, n)
  local subject = '$JS.EVENT.ADVISORY.CONSUMER.' .. kind .. '.' .. S .. '.' .. C
  local _, ns, t = clock()
  local body = cjson.encode({type = typ, id = S .. '.' .. C .. '.' .. seq .. '.' .. ns,
    timestamp = iso(tonumber(t[1]), tonumber(t[2])), stream = S, consumer = C,
    stream_seq = seq, deliveries = n})
  local target = stream_for(subject)
  if target then
    pcall(store, target, subject, subject, '', body, NONE)
  else
    local envelope = cmsgpack.pack({subject .. '#' .. ns, subject, '', '', body})
    redis.call('PUBLISH', key('m', subject), envelope)
  end
end
local MERGE_SUBJECTS = 64
local function spec_of(S, C)
  local raw = redis.call('HGET', key('cons', S), C)
  if not raw then fail('AFNOCONSUMER consumer ' .. C .. ' of stream ' .. S .. ' does not exist') end
  return cjson.decode(raw)
end
-- Scan matching messages from ``start`` to ``upto``: calls ``visit(e)`` until it
-- returns true (stop); returns the next sequence to look at and whether the end was reached.
local function scan(S, filter, start, upto, limit, visit)
  if filter ~= '' and not wild(filter) and not string.find(filter, ' ', 1, true) then
    local seqs = redis.call('ZRANGEBYSCORE', key('z', S, filter), start, upto, 'LIMIT', 0, limit)
    for _, s in ipairs(seqs) do
      local seq = tonumber(s)
      if visit(entry(S, seq)) then return seq + 1, false end
    end
    if #seqs < limit then return nil, true end
    return tonumber(seqs[#seqs]) + 1, false
  end
  if filter ~= '' and not string.find(filter, ' ', 1, true) then
    -- A few subjects match (e.g. one workflow's events): merge their sequences.
    local few, more = subjects(S, filter, MERGE_SUBJECTS)
    if not more then
      local seqs, full = {}, false
      for _, s in ipairs(few) do
        local z = key('z', S, s)
        local got = redis.call('ZRANGEBYSCORE', z, start, upto, 'LIMIT', 0, limit)
        if #got >= limit then full = true end
        for _, q in ipairs(got) do seqs[#seqs + 1] = tonumber(q) end
      end
      table.sort(seqs)
      local n = math.min(#seqs, limit)
      for i = 1, n do
        if visit(entry(S, seqs[i])) then return seqs[i] + 1, false end
      end
      if not full and n == #seqs then return nil, true end
      return seqs[n] + 1, false
    end
  end
  local stop = '+'
  if upto ~= '+inf' then stop = upto .. '-0' end
  local r = redis.call('XRANGE', key('x', S), start .. '-0', stop, 'COUNT', limit)
  for _, item in ipairs(r) do
    local e = fields(item[2])
    e.seq = seq_of(item[1])
    if any_match(filter, e.s) and visit(e) then return e.seq + 1, false end
  end
  if #r < limit then return nil, true end
  return seq_of(r[#r][1]) + 1, false
end
"""

_STORE = r"""
local o = {msgid = ARGV[6], exp_subj_seq = ARGV[7], exp_subj = ARGV[8], exp_seq = ARGV[9],
  op = ARGV[10], rollup = ARGV[11], kvcreate = ARGV[12], reply = ARGV[13]}
return store(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[14], o)
"""

_FETCH = r"""
local S, C, batch = ARGV[2], ARGV[3], tonumber(ARGV[4])
local spec = spec_of(S, C)
local c = must_cfg(S)
local now = clock()
trim(S, c, now)
local state, pend, dc = key('c', S, C), key('p', S, C), key('d', S, C)
local got = {}
local function deliver(e, n)
  local dseq = redis.call('HINCRBY', state, 'dseq', 1)
  redis.call('HSET', dc, e.seq, n)
  redis.call('ZADD', pend, now + spec.ack_wait_ms, e.seq)
  got[#got + 1] = {e.seq, e.s, e.h, e.b, e.t, n, dseq}
end
for _, s in ipairs(redis.call('ZRANGEBYSCORE', pend, '-inf', now, 'LIMIT', 0, batch)) do
  local seq = tonumber(s)
  local e = entry(S, seq)
  local n = tonumber(redis.call('HGET', dc, s) or '0')
  if not e then
    redis.call('ZREM', pend, s)
    redis.call('HDEL', dc, s)
  elseif spec.max_deliver > 0 and n >= spec.max_deliver then
    redis.call('ZREM', pend, s)
    redis.call('HDEL', dc, s)
    advisory('MAX_DELIVERIES', 'io.nats.jetstream.advisory.v1.max_deliver', S, C, seq, n)
  else
    deliver(e, n + 1)
  end
end
local more = 0
local want = batch - #got
if spec.max_ack_pending > 0 then
  want = math.min(want, spec.max_ack_pending - redis.call('ZCARD', pend))
end
if want > 0 then
  local cursor = tonumber(redis.call('HGET', state, 'cursor') or '1')
  local nxt, ended = scan(S, spec.filters, cursor, '+inf', math.max(want, 1) * 4 + 64, function(e)
    deliver(e, 1)
    if #got >= batch then return true end
    return spec.max_ack_pending > 0 and redis.call('ZCARD', pend) >= spec.max_ack_pending
  end)
  if ended then nxt = last_seq(S) + 1 else more = 1 end
  if nxt > cursor then redis.call('HSET', state, 'cursor', nxt) end
end
local wait = -1
local first = redis.call('ZRANGE', pend, 0, 0, 'WITHSCORES')
if first[2] then wait = math.max(tonumber(first[2]) - now, 0) end
return {got, wait, more}
"""

_SETTLE = r"""
local S, C, s, action = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local pend, dc = key('p', S, C), key('d', S, C)
if not redis.call('ZSCORE', pend, s) then return 0 end
local now = clock()
if action == 'ack' or action == 'term' then
  local n = tonumber(redis.call('HGET', dc, s) or '0')
  redis.call('ZREM', pend, s)
  redis.call('HDEL', dc, s)
  local c = cfg_of(S)
  if c and c.wq == '1' then remove(S, tonumber(s)) end
  if action == 'term' then
    advisory('MSG_TERMINATED', 'io.nats.jetstream.advisory.v1.terminated', S, C, tonumber(s), n)
  end
elseif action == 'nak' then
  redis.call('ZADD', pend, 'XX', now + tonumber(ARGV[6]), s)
else
  local raw = redis.call('HGET', key('cons', S), C)
  if not raw then return 0 end
  redis.call('ZADD', pend, 'XX', now + cjson.decode(raw).ack_wait_ms, s)
  return 1
end
redis.call('PUBLISH', key('w', S, C), '')
return 1
"""

_ENSURE_CONSUMER = r"""
local S, C, spec, filters = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local deliver_new, alive_ms, replace = ARGV[6], tonumber(ARGV[7]), ARGV[8]
must_cfg(S)
local exists = redis.call('HEXISTS', key('cons', S), C) == 1
if alive_ms > 0 then redis.call('SET', key('alive', S, C), '1', 'PX', alive_ms) end
if exists and replace ~= '1' then return 0 end
redis.call('HSET', key('cons', S), C, spec)
redis.call('HSET', key('cf', S), C, filters)
if not exists then
  local _, ns = clock()
  local cursor = 1
  if deliver_new == '1' then cursor = last_seq(S) + 1 end
  redis.call('HSET', key('c', S, C), 'cursor', cursor, 'dseq', 0, 'created', ns)
end
redis.call('PUBLISH', key('w', S, C), '')
return 1
"""

_DELETE_CONSUMER = r"""
local S, C = ARGV[2], ARGV[3]
redis.call('HDEL', key('cons', S), C)
redis.call('HDEL', key('cf', S), C)
redis.call('DEL', key('c', S, C), key('p', S, C), key('d', S, C), key('alive', S, C))
return 1
"""

_READ = r"""
local S, filter, upto = ARGV[2], ARGV[3], ARGV[7]
local start, since, limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local c = must_cfg(S)
trim(S, c, clock())
local out = {}
local nxt, ended = scan(S, filter, start, upto, 512, function(e)
  if since < 0 or ns_us(e.t) >= since then out[#out + 1] = row(e) end
  return #out >= limit
end)
if ended then nxt = 0 end
return {out, nxt, last_seq(S)}
"""

_COUNT = r"""
local S, filter, start, since = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local c = must_cfg(S)
trim(S, c, clock())
if since < 0 and not wild(filter) then
  return {redis.call('ZCOUNT', key('z', S, filter), start, '+inf'), 0}
end
local n = 0
local nxt, ended = scan(S, filter, start, '+inf', 4096, function(e)
  if since < 0 or ns_us(e.t) >= since then n = n + 1 end
  return false
end)
if ended then nxt = 0 end
return {n, nxt}
"""

_LAST = r"""
local S, subject = ARGV[2], ARGV[3]
local c = must_cfg(S)
trim(S, c, clock())
local seq = last_on(S, subject)
if not seq then return false end
local e = entry(S, seq)
if not e then return false end
return row(e)
"""

_GET = r"""
local S, seq = ARGV[2], tonumber(ARGV[3])
local c = must_cfg(S)
trim(S, c, clock())
local e = entry(S, seq)
if not e then return false end
return row(e)
"""

_DELETE = r"""
local S, seq = ARGV[2], tonumber(ARGV[3])
local c = cfg_of(S)
if not c then return 0 end
if c.deny_delete == '1' then
  fail('AFDENIED cannot delete ' .. S .. ' #' .. seq .. ': the stream denies deletes')
end
if remove(S, seq) then return 1 end
return 0
"""

_PURGE = r"""
local S, subject = ARGV[2], ARGV[3]
local c = must_cfg(S)
if c.deny_purge == '1' then fail('AFDENIED cannot purge ' .. S .. ': the stream denies purges') end
local n = 0
local found
if subject == '' then
  found = redis.call('ZRANGE', key('subs', S), 0, -1)
else
  found = subjects(S, subject)
end
for _, s in ipairs(found) do
  do
    for _, seq in ipairs(redis.call('ZRANGE', key('z', S, s), 0, -1)) do
      remove(S, tonumber(seq))
      n = n + 1
    end
  end
end
return n
"""

_INFO = r"""
local S = ARGV[2]
local c = must_cfg(S)
trim(S, c, clock())
local meta = fields(redis.call('HGETALL', key('meta', S)))
local first = first_seq(S)
local first_ns = '0'
if first then first_ns = entry(S, first).t end
local deleted = redis.call('ZRANGE', key('del', S), 0, -1)
return {c.api, meta.created or '0', redis.call('XLEN', key('x', S)), tonumber(meta.bytes or '0'),
  first or 0, first_ns, tonumber(meta.last_seq or '0'), meta.last_ns or '0',
  redis.call('ZCARD', key('subs', S)), deleted, redis.call('HLEN', key('cons', S))}
"""

_CONSUMERS = r"""
local S = ARGV[2]
must_cfg(S)
local out = {}
local all = redis.call('HGETALL', key('cons', S))
for i = 1, #all, 2 do
  local C, raw = all[i], all[i + 1]
  local spec = cjson.decode(raw)
  local st = fields(redis.call('HGETALL', key('c', S, C)))
  if spec.deliver_subject ~= '' and redis.call('EXISTS', key('alive', S, C)) == 0 then
    redis.call('HDEL', key('cons', S), C)
    redis.call('HDEL', key('cf', S), C)
    redis.call('DEL', key('c', S, C), key('p', S, C), key('d', S, C))
  else
    local cursor = tonumber(st.cursor or '1')
    local n = 0
    local f = spec.filters
    if f ~= '' and not wild(f) and not string.find(f, ' ', 1, true) then
      n = redis.call('ZCOUNT', key('z', S, spec.filters), cursor, '+inf')
    else
      local start = cursor
      while start do
        local nxt, ended = scan(S, f, start, '+inf', 4096, function(e)
          n = n + 1
          return false
        end)
        if ended then start = nil else start = nxt end
      end
    end
    local redelivered = 0
    for _, v in ipairs(redis.call('HVALS', key('d', S, C))) do
      if tonumber(v) > 1 then redelivered = redelivered + 1 end
    end
    local floor = redis.call('ZRANGE', key('p', S, C), 0, -1)
    local low = cursor - 1
    for _, s in ipairs(floor) do if tonumber(s) - 1 < low then low = tonumber(s) - 1 end end
    out[#out + 1] = {C, raw, st.created or '0', cursor, tonumber(st.dseq or '0'),
      redis.call('ZCARD', key('p', S, C)), redelivered, n, low}
  end
end
return out
"""

_SNAPSHOT = r"""
local S, pattern = ARGV[2], ARGV[3]
local c = must_cfg(S)
trim(S, c, clock())
local out = {}
for _, s in ipairs(subjects(S, pattern)) do
  do
    local r = redis.call('ZREVRANGE', key('z', S, s), 0, 0)
    if r[1] then
      local e = entry(S, tonumber(r[1]))
      if e then out[#out + 1] = row(e) end
    end
  end
end
return {out, last_seq(S)}
"""

_SCRIPTS = {
    "store": _STORE,
    "fetch": _FETCH,
    "settle": _SETTLE,
    "ensure_consumer": _ENSURE_CONSUMER,
    "delete_consumer": _DELETE_CONSUMER,
    "read": _READ,
    "count": _COUNT,
    "last": _LAST,
    "get": _GET,
    "delete": _DELETE,
    "purge": _PURGE,
    "info": _INFO,
    "consumers": _CONSUMERS,
    "snapshot": _SNAPSHOT,
}


# Helpers -------------------------------------------------------------------------
def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _headers_json(headers: dict[str, str] | None) -> str:
    return json.dumps(headers, separators=(",", ":")) if headers else ""


def _headers_of(raw: Any) -> dict[str, str]:
    text = _text(raw)
    return dict(json.loads(text)) if text else {}


def _ours(exc: RedisError, what: str) -> TransportError | NotFoundError:
    """A redis-py error as ours (our scripts' errors carry a code)."""
    text = str(exc)
    for code, cls in (
        ("AFCONFLICT ", StateConflictError),
        ("AFNOSTREAM ", NotFoundError),
        ("AFNOCONSUMER ", NotFoundError),
        ("AFLIMIT ", TransportError),
        ("AFDENIED ", TransportError),
    ):
        if code in text:
            message = text.split(code, 1)[1]
            return cls(f"{what}: {message}")
    return TransportError(f"{what} failed: {exc}")


def _glob(text: str) -> str:
    """``text`` with Redis glob's special characters escaped."""
    for char in "\\?*[]":
        text = text.replace(char, "\\" + char)
    return text


def _is_wild(subject: str) -> bool:
    return any(t in ("*", ">") for t in subject.split("."))


async def _shielded(command: Awaitable[Any]) -> Any:
    """Await a redis-py call in a task of its own: redis-py can swallow a
    cancellation of the task awaiting it (its connection release), and then
    ``asyncio.timeout`` around a call never fires. Cancelled, the call goes on
    in the background and its outcome is dropped."""
    task = asyncio.ensure_future(command)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_dropped)
        raise


def _dropped(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: not logged as never retrieved


# Messages ------------------------------------------------------------------------
class StreamMessage(CoreMessage):
    """A stored message a consumer (or a read, or a follow) delivered; settled
    by stream sequence, so a late ack of a delivery that timed out counts."""

    __slots__ = ("_consumer", "_meta", "_settled")
    _bus: RedisBus

    def __init__(
        self,
        bus: RedisBus,
        sid: int,
        subject: str,
        *,
        data: bytes,
        headers: dict[str, str],
        meta: _Metadata,
        consumer: str | None,
    ) -> None:
        super().__init__(bus, sid, subject, reply="", data=data, headers=headers)
        self._meta, self._consumer, self._settled = meta, consumer, consumer is None

    @property
    def metadata(self) -> _Metadata:
        return self._meta

    async def _settle(self, action: str, delay_ms: int = 0) -> None:
        self._bus.check()
        if self._settled or self._consumer is None:
            return
        if action != "wip":
            self._settled = True
        await self._bus._run(
            "settle",
            self._meta.stream,
            self._consumer,
            self._meta.sequence.stream,
            action,
            delay_ms,
        )

    async def ack(self) -> None:
        await self._settle("ack")

    async def nak(self, delay: float | None = None) -> None:
        await self._settle("nak", int(max(delay or 0.0, 0.0) * 1000))

    async def term(self) -> None:
        await self._settle("term")

    async def in_progress(self) -> None:
        await self._settle("wip")


def _stored_message(
    bus: RedisBus,
    sid: int,
    stream: str,
    row: Sequence[Any],
    *,
    deliveries: int = 1,
    consumer_seq: int = 0,
    consumer: str | None = None,
) -> StreamMessage:
    """A message from a script's row ``[seq, subject, headers, body, ns, ...]``."""
    seq, ns = int(row[0]), int(_text(row[4]))
    meta = _Metadata(_Sequence(seq, consumer_seq), deliveries, _utc(ns), stream, consumer or "")
    return StreamMessage(
        bus,
        sid,
        _text(row[1]),
        data=bytes(row[3]),
        headers=_headers_of(row[2]),
        meta=meta,
        consumer=consumer,
    )


# Subscriptions ---------------------------------------------------------------------
class _Runner:
    """Runs a handler for each queued message, one at a time (so in order)."""

    def __init__(self, handler: MessageHandler, what: str) -> None:
        self.handler, self.what = handler, what
        self.queue: asyncio.Queue[tuple[Message, str] | None] = asyncio.Queue()
        self.closed = False
        self.claim: Callable[[str], Awaitable[bool]] | None = None
        self.task = asyncio.create_task(self._run(), name=f"redis-sub-{what}")

    def put(self, msg: Message, claim: str = "") -> None:
        if not self.closed:
            self.queue.put_nowait((msg, claim))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    async def _run(self) -> None:
        while (item := await self.queue.get()) is not None and not self.closed:
            msg, claim = item
            try:
                if claim and self.claim is not None and not await self.claim(claim):
                    continue  # another member of the queue group took it
                await self.handler(msg)
            except Exception:
                log.exception("message handler failed", subject=self.what)


class _Sub:
    """A core subscription (``kind`` ``m``), a follow of stored messages (``t``)
    or a consumer's wake-ups (``w``); ``on_raw`` takes the envelope itself."""

    def __init__(
        self,
        bus: RedisBus,
        sid: int,
        kind: str,
        subject: str,
        *,
        handler: MessageHandler | None = None,
        queue: str = "",
        on_raw: Callable[[str, list[Any]], None] | None = None,
        headers_only: bool = False,
    ) -> None:
        self.bus, self.sid, self.kind, self.subject, self.queue = bus, sid, kind, subject, queue
        self.runner = _Runner(handler, subject) if handler is not None else None
        if self.runner is not None and queue:
            self.runner.claim = bus._claim
        self.on_raw = on_raw
        self.headers_only = headers_only
        self.wild = _is_wild(subject)
        base = bus._kp + kind + ":"
        self.name = (
            (
                _glob(base)
                + ".".join("*" if t in ("*", ">") else _glob(t) for t in subject.split("."))
            )
            if self.wild
            else base + subject
        ).encode()

    def deliver(self, subject: str, envelope: list[Any]) -> None:
        if self.on_raw is not None:
            self.on_raw(subject, envelope)
            return
        if self.runner is None:
            return
        if self.kind == "t":
            seq, ns, _, headers, body, stream = envelope
            meta = _Metadata(_Sequence(int(seq), 0), 1, _utc(int(_text(ns))), _text(stream), "")
            msg: Message = StreamMessage(
                self.bus,
                self.sid,
                subject,
                data=b"" if self.headers_only else bytes(body),
                headers=_headers_of(headers),
                meta=meta,
                consumer=None,
            )
            self.runner.put(msg)
            return
        msg_id, _, reply, headers, body = envelope
        text = _text(headers)
        self.bus._count("in", bytes(body))
        self.runner.put(
            CoreMessage(
                self.bus,
                self.sid,
                subject,
                reply=_text(reply),
                data=bytes(body),
                headers=dict(json.loads(text)) if text else None,
            ),
            f"{self.queue}:{_text(msg_id)}" if self.queue else "",
        )

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()

    async def unsubscribe(self, limit: int = 0) -> None:
        await self.bus._forget(self)


# KV ----------------------------------------------------------------------------------
def _entry(bucket: str, row: Sequence[Any], *, delta: int = 0, meta_only: bool = False) -> Entry:
    op = _text(row[5]) or None
    deleted = op in ("DEL", "PURGE")
    value = None if deleted else (b"" if meta_only else bytes(row[3]))
    key = _text(row[1]).removeprefix(f"$KV.{bucket}.")
    return Entry(bucket, key, value, int(row[0]), delta, _utc(int(_text(row[4]))), op)


class Watcher:
    """A KV watch: current values, then None, then changes as they are stored.
    Iterating ends once it is stopped."""

    def __init__(self, bus: RedisBus) -> None:
        self._bus = bus
        self.sub: _Sub | None = None
        self._queue: asyncio.Queue[tuple[KVEntry | None] | tuple[()]] = asyncio.Queue()
        self._stopped = False
        self._held: list[tuple[int, Entry]] | None = []
        """Live updates that came before the snapshot was read (None once it was)."""
        self._after = 0

    def live(self, seq: int, entry: Entry) -> None:
        if self._held is not None:
            self._held.append((seq, entry))
        elif seq > self._after:
            self.put(entry)

    def snapshot(self, entries: list[Entry], last_seq: int) -> None:
        for entry in entries:
            self.put(entry)
        self.put(None)
        held, self._held, self._after = self._held or [], None, last_seq
        for seq, entry in held:
            self.live(seq, entry)

    def put(self, entry: KVEntry | None) -> None:
        if not self._stopped:
            self._queue.put_nowait((entry,))

    async def _next(self) -> tuple[KVEntry | None] | tuple[()]:
        if self._stopped and self._queue.empty():
            return ()
        return await self._queue.get()

    async def updates(self, timeout: float = 5.0) -> KVEntry | None:
        try:
            async with asyncio.timeout(timeout):
                while not (update := await self._next()):
                    await asyncio.Event().wait()  # stopped: nothing comes any more
        except TimeoutError:
            raise TimeoutError(f"no KV update within {timeout:g}s") from None
        return update[0]

    async def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put_nowait(())
        if self.sub is not None:
            sub, self.sub = self.sub, None
            await self._bus._forget(sub)

    def __aiter__(self) -> AsyncIterator[KVEntry | None]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[KVEntry | None]:
        while update := await self._next():
            yield update[0]


class RedisKV:
    """A KV bucket on stream ``KV_<bucket>``, subjects ``$KV.<bucket>.<key>``."""

    def __init__(self, bus: RedisBus, bucket: str) -> None:
        self.bus, self.bucket = bus, bucket
        self.stream, self.prefix = f"KV_{bucket}", f"$KV.{bucket}."

    async def _last(self, key: str) -> list[Any] | None:
        row = await self.bus._run("last", self.stream, self.prefix + key)
        return list(row) if row else None

    async def _write(self, key: str, value: bytes, headers: dict[str, str], **more: str) -> int:
        seq, _ = await self.bus._store(self.prefix + key, value, headers, **more)
        return seq

    async def get(self, key: str) -> KVEntry:
        row = await self._last(key)
        if row is None or _text(row[5]):
            raise NotFoundError(f"key {key!r} not found in bucket {self.bucket}")
        return _entry(self.bucket, row)

    async def put(self, key: str, value: bytes) -> int:
        return await self._write(key, value, {})

    async def create(self, key: str, value: bytes) -> int:
        return await self._write(key, value, {}, kvcreate="1")

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        return await self._write(key, value, {H_EXPECTED_SUBJECT_SEQ: str(last or 0)})

    async def delete(self, key: str, last: int | None = None) -> bool:
        headers = {H_KV_OP: "DEL"}
        if last is not None:
            headers[H_EXPECTED_SUBJECT_SEQ] = str(last)
        await self._write(key, b"", headers)
        return True

    async def purge(self, key: str) -> bool:
        """Delete with every earlier revision."""
        await self._write(key, b"", {H_KV_OP: "PURGE", H_ROLLUP: "sub"})
        return True

    async def _snapshot(self, pattern: str) -> tuple[list[list[Any]], int]:
        rows, last = await self.bus._run("snapshot", self.stream, self.prefix + pattern)
        return sorted((list(r) for r in rows), key=lambda r: int(r[0])), int(last)

    async def keys(self) -> list[str]:
        rows, _ = await self._snapshot(">")
        return [_text(r[1]).removeprefix(self.prefix) for r in rows if not _text(r[5])]

    async def watch(
        self,
        keys: str,
        *,
        ignore_deletes: bool = False,
        meta_only: bool = False,
        inactive_threshold: float | None = None,
    ) -> Watcher:
        watcher = Watcher(self.bus)

        def changed(subject: str, envelope: list[Any]) -> None:
            seq, ns, _, headers, body, _stream = envelope
            op = _headers_of(headers).get(H_KV_OP, "")
            if ignore_deletes and op:
                return
            row = [seq, subject, headers, body, ns, op]
            watcher.live(int(seq), _entry(self.bucket, row, meta_only=meta_only))

        watcher.sub = await self.bus._subscribe("t", self.prefix + keys, on_raw=changed)
        try:
            rows, last = await self._snapshot(keys)
        except BaseException:
            await watcher.stop()
            raise
        if ignore_deletes:
            rows = [r for r in rows if not _text(r[5])]
        entries = [
            _entry(self.bucket, r, delta=len(rows) - i - 1, meta_only=meta_only)
            for i, r in enumerate(rows)
        ]
        watcher.snapshot(entries, last)
        return watcher

    async def watchall(self, *, inactive_threshold: float | None = None) -> Watcher:
        return await self.watch(">", inactive_threshold=inactive_threshold)


# The bus -----------------------------------------------------------------------------
class RedisBus(Bus):
    """One process's connection to the deployment's Redis: a command client and
    one pub/sub connection, read by one task that dispatches to subscriptions."""

    backend: ClassVar[str] = "redis"

    def __init__(
        self, *, settings: Settings, seal: Seal | None = None, client: Any, name: str
    ) -> None:
        super().__init__(settings=settings, seal=seal)
        self.client, self.name = client, name
        self._kp = f"af:{{{settings.prefix}}}:"
        self._scripts = {n: client.register_script(_LIB + body) for n, body in _SCRIPTS.items()}
        self._pubsub: Any = client.pubsub()
        self._reader: asyncio.Task[None] | None = None
        self._routes: dict[bytes, dict[int, _Sub]] = {}
        self._confirm: dict[bytes, deque[asyncio.Future[None]]] = {}
        """Subscriptions sent to Redis, by name, until Redis confirms them."""
        self._ready: dict[bytes, asyncio.Future[None]] = {}
        """Each Redis subscription's confirmation."""
        self._subs: dict[int, _Sub] = {}
        self._sids = iter(range(1, 1 << 62))
        self._kv: dict[str, RedisKV] = {}
        self._streams: dict[str, tuple[list[str], tuple[str, str] | None]] = {}
        self._streams_at = 0.0
        self._wakers: dict[tuple[str, str], set[asyncio.Event]] = {}
        self._waker_subs: dict[tuple[str, str], _Sub] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pushes: dict[str, _Push] = {}
        self._stats = dict.fromkeys(("in_msgs", "out_msgs", "in_bytes", "out_bytes"), 0)
        self._connected = True
        self._reconnects = 0

    # Lifecycle ------------------------------------------------------------------
    @classmethod
    async def open(cls, settings: Settings, *, seal: Seal, name: str) -> RedisBus:
        """Connect; raises TransportError (with the URL) when Redis does not answer."""
        url = settings.bus_url
        try:
            # Blocking: a burst of commands (acks) waits for a connection
            # rather than failing with "too many connections".
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=MAX_CONNECTIONS,
                timeout=COMMAND_TIMEOUT_S,
                socket_connect_timeout=settings.connect_timeout_s,
                socket_keepalive=True,
                socket_timeout=COMMAND_TIMEOUT_S,
                retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
                client_name=name.replace(" ", "_") or None,
            )
            client = aioredis.Redis.from_pool(pool)
        except (ValueError, RedisError) as exc:
            raise TransportError(f"cannot connect to Redis at {url}: {exc}") from exc
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                await client.ping()
        except (TimeoutError, OSError, RedisError) as exc:
            await client.aclose()
            why = str(exc) or type(exc).__name__
            raise TransportError(f"cannot connect to Redis at {url}: {why}") from exc
        return cls(settings=settings, seal=seal, client=client, name=name)

    async def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        for push in list(self._pushes.values()):
            push.cancel()
        for sub in list(self._subs.values()):
            sub.close()
        self._subs.clear()
        self._routes.clear()
        self._wake_all()
        tasks = {t for t in (self._reader, *self._tasks) if t is not None}
        for task in tasks:
            task.cancel()
        if tasks:  # ended before the connections close, or one would reconnect
            await asyncio.wait(tasks, timeout=2 * SAFETY_POLL_S)
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.client.aclose()
        self.closed.set()

    def check(self) -> None:
        """Raise ConnectionLostError once closed."""
        if self.closing:
            raise ConnectionLostError("the Redis bus connection is closed")

    @property
    def max_payload(self) -> int:
        return DEFAULT_MAX_PAYLOAD

    @property
    def is_connected(self) -> bool:
        return not self.closing and self._connected

    def connection_report(self) -> dict[str, Any]:
        kwargs = self.client.connection_pool.connection_kwargs
        return {
            "backend": self.backend,
            "connected": self.is_connected,
            "reconnecting": not self.closing and not self._connected,
            "closed": self.closing,
            "server": f"{kwargs.get('host', '')}:{kwargs.get('port', '')}/{kwargs.get('db', 0)}",
            "reconnects": self._reconnects,
            **self._stats,
            "buffered_bytes": 0,
            "max_payload": self.max_payload,
        }

    def _count(self, direction: str, data: bytes) -> None:
        self._stats[f"{direction}_msgs"] += 1
        self._stats[f"{direction}_bytes"] += len(data)

    async def _run(self, script: str, *args: Any) -> Any:
        """Run one of our scripts; errors come out as ours."""
        self.check()
        try:
            return await _shielded(self._scripts[script](keys=[], args=[self._kp, *args]))
        except RedisError as exc:
            raise _ours(exc, script) from exc

    async def _redis(self, what: str, command: Awaitable[Any]) -> Any:
        self.check()
        try:
            return await _shielded(command)
        except RedisError as exc:
            raise TransportError(f"{what} failed: {exc}") from exc

    # Pub/sub plumbing -------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A background task of this connection (ended by :meth:`close`)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _subscribe(
        self,
        kind: str,
        subject: str,
        *,
        handler: MessageHandler | None = None,
        queue: str = "",
        on_raw: Callable[[str, list[Any]], None] | None = None,
        headers_only: bool = False,
    ) -> _Sub:
        """Subscribe on Redis (confirmed: what is published next reaches it)."""
        self.check()
        sub = _Sub(
            self,
            next(self._sids),
            kind,
            subject,
            handler=handler,
            queue=queue,
            on_raw=on_raw,
            headers_only=headers_only,
        )
        self._subs[sub.sid] = sub
        route = self._routes.setdefault(sub.name, {})
        route[sub.sid] = sub
        if len(route) > 1:  # subscribed on Redis already (or being: wait for it)
            ready = self._ready.get(sub.name)
            if ready is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    async with asyncio.timeout(self.settings.connect_timeout_s):
                        await asyncio.shield(ready)
            return sub
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ready[sub.name] = done
        self._confirm.setdefault(sub.name, deque()).append(done)
        try:
            if sub.wild:
                await _shielded(self._pubsub.psubscribe(sub.name))
            else:
                await _shielded(self._pubsub.subscribe(sub.name))
            if self._reader is None:
                self._reader = asyncio.create_task(self._read(), name=f"redis-pubsub-{self.name}")
            async with asyncio.timeout(self.settings.connect_timeout_s):
                await done
        except (RedisError, TimeoutError) as exc:
            await self._forget(sub)
            raise TransportError(f"cannot subscribe to {subject}: {exc}") from exc
        return sub

    async def _forget(self, sub: _Sub) -> None:
        """End a subscription (idempotent)."""
        sub.close()
        if self._subs.pop(sub.sid, None) is None:
            return
        route = self._routes.get(sub.name, {})
        route.pop(sub.sid, None)
        if route or self.closing:
            return
        self._routes.pop(sub.name, None)
        self._ready.pop(sub.name, None)
        with contextlib.suppress(RedisError, OSError):
            if sub.wild:
                await self._pubsub.punsubscribe(sub.name)
            else:
                await self._pubsub.unsubscribe(sub.name)

    async def _read(self) -> None:
        """Dispatch what the pub/sub connection receives, reconnecting after a failure."""
        failures = 0
        while not self.closing:
            try:
                msg = await self._pubsub.get_message(timeout=SAFETY_POLL_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if self._connected:
                    log.warning("redis pub/sub connection lost", error=str(exc))
                self._connected = False
                await asyncio.sleep(min(0.05 * 2**failures, 2.0))
                continue
            if failures or not self._connected:
                failures, self._connected = 0, True
                self._reconnects += 1
                log.info("redis pub/sub reconnected")
                self._reconnected()
                self._wake_all()
            if msg is not None:
                try:
                    self._dispatch(msg)
                except Exception:
                    log.exception("redis pub/sub dispatch failed")

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = _text(msg["type"])
        if kind in ("subscribe", "psubscribe"):
            waiting = self._confirm.get(bytes(msg["channel"]))
            while waiting:
                future = waiting.popleft()
                if not future.done():
                    future.set_result(None)
                    break
            return
        if kind not in ("message", "pmessage"):
            return
        channel = bytes(msg["channel"])
        name = bytes(msg["pattern"]) if kind == "pmessage" else channel
        subs = self._routes.get(name)
        if not subs:
            return
        local = channel[len(self._kp) :].decode()
        route, subject = local[0], local[2:]
        envelope: list[Any] = msgpack.unpackb(msg["data"], raw=True) if route != "w" else []
        groups: dict[str, list[_Sub]] = {}
        for sub in list(subs.values()):
            if sub.wild and not subject_matches(sub.subject, subject):
                continue
            if sub.queue:
                groups.setdefault(sub.queue, []).append(sub)
            else:
                sub.deliver(subject, envelope)
        for members in groups.values():
            # One member of this process competes for the message with other processes'.
            members[int.from_bytes(uuid.uuid4().bytes[:2]) % len(members)].deliver(
                subject, envelope
            )

    async def _claim(self, claim: str) -> bool:
        """Whether this process wins a queue group's claim on a core message."""
        try:
            claimed = self.client.set(f"{self._kp}qc:{claim}", b"1", nx=True, px=CLAIM_MS)
            return bool(await _shielded(claimed))
        except RedisError:
            return False

    def _local_interest(self, subject: str) -> list[_Sub]:
        return [
            s
            for s in self._subs.values()
            if s.kind == "m" and s.runner is not None and subject_matches(s.subject, subject)
        ]

    # Consumers' wake-ups ------------------------------------------------------------
    async def _waker(self, stream: str, consumer: str) -> asyncio.Event:
        """An event set whenever the consumer may have something to deliver."""
        event = asyncio.Event()
        target = (stream, consumer)
        self._wakers.setdefault(target, set()).add(event)
        if target not in self._waker_subs:

            def woken(_subject: str, _envelope: list[Any]) -> None:
                for e in self._wakers.get(target, ()):
                    e.set()

            self._waker_subs[target] = await self._subscribe(
                "w", f"{stream}:{consumer}", on_raw=woken
            )
        return event

    async def _unwake(self, stream: str, consumer: str, event: asyncio.Event) -> None:
        target = (stream, consumer)
        events = self._wakers.get(target, set())
        events.discard(event)
        if not events:
            self._wakers.pop(target, None)
            sub = self._waker_subs.pop(target, None)
            if sub is not None:
                await self._forget(sub)

    def _wake_all(self) -> None:
        for events in self._wakers.values():
            for event in events:
                event.set()

    async def _fetch(
        self, stream: str, consumer: str, batch: int, sid: int
    ) -> tuple[list[Message], float, bool]:
        """Up to ``batch`` deliveries now; the seconds until a pending one is due
        (-1: none), and whether more may be there already."""
        got, wait_ms, more = await self._run("fetch", stream, consumer, batch)
        msgs: list[Message] = [
            _stored_message(
                self,
                sid,
                stream,
                row,
                deliveries=int(row[5]),
                consumer_seq=int(row[6]),
                consumer=consumer,
            )
            for row in got
        ]
        return msgs, int(wait_ms) / 1000, bool(more)

    # Topology ------------------------------------------------------------------------
    async def _load_streams(self) -> None:
        raw = await self._redis("read streams", self.client.hgetall(f"{self._kp}streams"))
        streams: dict[str, tuple[list[str], tuple[str, str] | None]] = {}
        for name, spec in raw.items():
            found = json.loads(spec)
            transform = found.get("transform")
            streams[_text(name)] = (
                list(found["subjects"]),
                (transform[0], transform[1]) if transform else None,
            )
        self._streams, self._streams_at = streams, time.monotonic()

    async def _stream_for(self, subject: str, *, fresh: bool) -> str | None:
        """The stream capturing ``subject`` (the cache is read again on a miss
        when ``fresh``, else at most once a second)."""
        for _ in range(2):
            for name, (subjects, _) in self._streams.items():
                if any(subject_matches(p, subject) for p in subjects):
                    return name
            if not fresh and time.monotonic() - self._streams_at < 1.0:
                return None
            await self._load_streams()
        return None

    async def _add_stream(self, config: StreamConfig) -> None:
        """Create a stream, or update an existing one's configuration."""
        spec = {"subjects": config.subjects, "transform": config.transform}
        cfg = {
            "max_msgs": config.max_msgs,
            "max_bytes": config.max_bytes,
            "max_age_ms": int(config.max_age * 1000),
            "per_subject": config.max_msgs_per_subject,
            "max_msg_size": config.max_msg_size,
            "dup_ms": max(int(config.duplicate_window * 1000), 1),
            "discard_new": int(config.discard_new),
            "wq": int(config.work_queue),
            "deny_delete": int(config.deny_delete),
            "deny_purge": int(config.deny_purge),
            "api": json.dumps(config.api()),
        }
        meta = f"{self._kp}meta:{config.name}"
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(f"{self._kp}cfg:{config.name}", mapping=cfg)
        pipe.hsetnx(meta, "created", str(time.time_ns()))
        pipe.hsetnx(meta, "last_seq", 0)
        pipe.hset(f"{self._kp}streams", config.name, json.dumps(spec))
        await self._redis(f"create stream {config.name}", pipe.execute())
        self._streams[config.name] = (list(config.subjects), config.transform)

    async def _created(self, name: str) -> None:
        """Wait until stream ``name`` exists (a coordinator creates it), up to
        ``topology_wait_s``; raises NotFoundError after that."""
        deadline = time.monotonic() + self.settings.topology_wait_s
        delay = 0.05
        while not await self._redis(
            "look up a stream", self.client.hexists(f"{self._kp}streams", name)
        ):
            if time.monotonic() >= deadline:
                raise NotFoundError(
                    f"stream {name} does not exist: a coordinator of prefix "
                    f"{self.names.prefix!r} creates it; start one (or check AGENTICFLOW_PREFIX)"
                )
            # Polling: nothing announces a new stream.
            await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
            delay = min(delay * 2, 1.0)

    async def ensure_topology(self) -> None:
        self.check()
        s, n = self.settings, self.names
        if not s.manage_topology:
            for stream in (n.tasks_stream, n.events_stream):
                await self._created(stream)
            return

        def work_queue(name: str, subjects: str, **more: Any) -> StreamConfig:
            return StreamConfig(
                name=name,
                subjects=[subjects],
                work_queue=True,
                discard_new=True,
                max_msgs=1_000_000,
                duplicate_window=s.dedupe_window_s,
                **more,
            )

        await self._add_stream(work_queue(n.tasks_stream, n.task_subjects))
        partitions = await self.event_partitions() or s.partitions
        await self._add_stream(
            StreamConfig(
                name=n.events_stream,
                subjects=[n.event_subjects],
                duplicate_window=min(s.dedupe_window_s, s.events_max_age_s),
                max_age=s.events_max_age_s,
                max_bytes=s.events_max_bytes,
                transform=n.event_transform(partitions),
            )
        )
        await self._add_stream(
            work_queue(n.direct_stream, n.direct_subjects, max_age=DIRECT_MAX_AGE_S)
        )
        await self._add_stream(
            StreamConfig(
                name=n.advisories_stream,
                subjects=[n.max_deliveries_subject],
                max_age=s.events_max_age_s,
            )
        )
        await self._add_stream(
            StreamConfig(
                name=n.audit_stream,
                subjects=[n.audit_subjects],
                duplicate_window=s.dedupe_window_s,
                max_age=s.audit_max_age_s,
                max_msgs=s.audit_max_msgs,
                max_bytes=s.audit_max_bytes,
                max_msg_size=s.audit_max_msg_size,
                allow_direct=True,
                deny_delete=True,
                deny_purge=True,
            )
        )
        await self._add_stream(
            StreamConfig(
                name=n.anchor_stream,
                subjects=[n.anchor_subjects],
                max_msgs_per_subject=ANCHORS_KEPT,
                max_msgs=ANCHORS_MAX_MSGS,
                max_msg_size=s.audit_max_msg_size,
                allow_direct=True,
                deny_delete=True,
                deny_purge=True,
            )
        )
        for bucket in (
            n.workflows_bucket,
            n.workflow_index_bucket,
            n.control_bucket,
            n.breakers_bucket,
            n.ratelimits_bucket,
            n.schedules_bucket,
            n.schedule_state_bucket,
            n.definitions_bucket,
        ):
            await self.kv(bucket)
        await self.kv(n.agents_bucket, ttl=float(s.agent_ttl_s))
        await self.kv(n.tool_results_bucket, ttl=s.tool_results_ttl_s)

    async def event_partitions(self) -> int | None:
        self.check()
        raw = await self._redis(
            "read the events stream",
            self.client.hget(f"{self._kp}streams", self.names.events_stream),
        )
        if raw is None:
            return None
        transform = json.loads(raw).get("transform")
        return partitions_of_transform(transform[1]) if transform else None

    async def kv(self, bucket: str, *, history: int = 1, ttl: float | None = None) -> KeyValue:
        self.check()
        if bucket in self._kv:
            return self._kv[bucket]
        name = f"KV_{bucket}"
        exists = await self._redis(
            f"open KV bucket {bucket}", self.client.hexists(f"{self._kp}streams", name)
        )
        if not exists:
            if not self.settings.manage_topology:
                await self._created(name)
            else:
                await self._add_stream(
                    StreamConfig(
                        name=name,
                        subjects=[f"$KV.{bucket}.>"],
                        max_msgs_per_subject=history,
                        max_age=ttl or 0.0,
                        discard_new=True,
                        duplicate_window=min(120.0, ttl) if ttl else 120.0,
                        allow_direct=True,
                    )
                )
        return self._kv.setdefault(bucket, RedisKV(self, bucket))

    async def ensure_task_consumer(self, capability: str) -> str:
        s, name = self.settings, self.names.task_consumer(capability)
        spec = ConsumerSpec(
            name=name,
            filter_subjects=(self.names.task_subject(capability),),
            ack_wait_s=s.task_ack_wait_s,
            max_deliver=s.task_max_deliver,
            max_ack_pending=s.task_max_ack_pending,
        )
        await self.ensure_consumer(self.names.tasks_stream, spec)
        return name

    async def _ensure_consumer(
        self,
        stream: str,
        spec: ConsumerSpec,
        *,
        deliver_subject: str = "",
        alive_ms: int = 0,
        replace: bool = False,
    ) -> None:
        body = {
            "filters": " ".join(spec.filter_subjects),
            "ack_wait_ms": max(int(spec.ack_wait_s * 1000), 1),
            "max_deliver": spec.max_deliver,
            "max_ack_pending": spec.max_ack_pending,
            "deliver_new": spec.deliver_new,
            "deliver_subject": deliver_subject,
            "inactive_ms": alive_ms,
        }
        await self._run(
            "ensure_consumer",
            stream,
            spec.name,
            json.dumps(body),
            body["filters"],
            int(spec.deliver_new),
            alive_ms,
            int(replace),
        )

    async def ensure_consumer(self, stream: str, spec: ConsumerSpec) -> None:
        await self._ensure_consumer(stream, spec)

    async def delete_consumer(self, stream: str, name: str) -> None:
        push = self._pushes.pop(name, None)
        if push is not None:
            push.cancel()
        await self._run("delete_consumer", stream, name)

    async def open_direct(
        self, queue: str, node: str, *, deliver_subject: str, max_ack_pending: int
    ) -> str:
        """The consumer is pushed to the listeners of ``deliver_subject`` in
        this process, while there are any; once there have been none for
        :data:`DIRECT_INACTIVE_S` (or the process died: its liveness key
        expires) it is deleted."""
        s, name = self.settings, self.names.direct_consumer(queue, node)
        spec = ConsumerSpec(
            name=name,
            filter_subjects=(self.names.direct_subject(queue, node),),
            ack_wait_s=s.task_ack_wait_s,
            max_deliver=s.task_max_deliver,
            max_ack_pending=max_ack_pending,
        )
        stream = self.names.direct_stream
        await self._ensure_consumer(
            stream,
            spec,
            deliver_subject=deliver_subject,
            alive_ms=int(DIRECT_INACTIVE_S * 1000),
            replace=True,
        )
        old = self._pushes.pop(name, None)
        if old is not None:
            old.cancel()
        push = self._pushes[name] = _Push(self, stream, name, deliver_subject)
        await push.start()
        return name

    def puller(
        self,
        *,
        stream: str,
        consumer: str,
        on_message: Callable[[Message], None],
        credit: Callable[[], int],
        max_batch: int = 64,
        max_open: int = 8,
        expires_s: float = 5.0,
        on_end: Callable[[str], None] | None = None,
    ) -> Puller:
        return Puller(
            self,
            stream=stream,
            consumer=consumer,
            on_message=on_message,
            credit=credit,
            max_batch=max_batch,
            on_end=on_end,
        )

    async def fetcher(self, stream: str, spec: ConsumerSpec) -> Fetcher:
        await self.ensure_consumer(stream, spec)
        fetcher = Fetcher(self, stream, spec.name)
        await fetcher.start()
        return fetcher

    # Streams -----------------------------------------------------------------------
    async def _store(
        self,
        subject: str,
        body: bytes,
        headers: dict[str, str] | None,
        *,
        reply: str = "",
        kvcreate: str = "",
        stream: str | None = None,
    ) -> tuple[int, bool]:
        """Store a message on the stream capturing ``subject`` (and publish it
        to core subscribers); raises TransportError when none does."""
        args = await self._store_args(
            subject, body, headers, reply=reply, kvcreate=kvcreate, stream=stream
        )
        seq, duplicate = await self._run("store", *args)
        self._count("out", body)
        return int(seq), bool(duplicate)

    async def _store_args(
        self,
        subject: str,
        body: bytes,
        headers: dict[str, str] | None,
        *,
        reply: str = "",
        kvcreate: str = "",
        stream: str | None = None,
    ) -> list[Any]:
        """The store script's arguments: the stream's (transformed) subject and
        the headers it acts on."""
        stream = stream or await self._stream_for(subject, fresh=True)
        if stream is None:
            raise TransportError(f"publish to {subject} failed: no stream stores it")
        transform = self._streams[stream][1]
        stored = _transform(*transform, subject) if transform is not None else subject
        h = headers or {}
        return [
            stream,
            subject,
            stored,
            _headers_json(h),
            h.get(H_MSG_ID, ""),
            h.get(H_EXPECTED_SUBJECT_SEQ, ""),
            h.get(H_EXPECTED_SUBJECT, ""),
            h.get(H_EXPECTED_SEQ, ""),
            h.get(H_KV_OP, ""),
            h.get(H_ROLLUP, ""),
            kvcreate,
            reply,
            body,
        ]

    async def publish_raw(
        self, subject: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, bool]:
        self.check()
        check_size(headers or {}, body, self.max_payload)
        return await self._store(subject, body, headers)

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[tuple[int, bool]]:
        """Pipelined: every script goes out before any answer is read."""
        self.check()
        for _, headers, body in messages:
            check_size(headers, body, self.max_payload)
        args = [
            [self._kp, *await self._store_args(subject, body, headers)]
            for subject, headers, body in messages
        ]
        pipe = self.client.pipeline(transaction=False)
        for arg in args:
            await self._scripts["store"](keys=[], args=arg, client=pipe)
        try:
            results = await _shielded(pipe.execute(raise_on_error=False))
        except RedisError as exc:
            raise _ours(exc, "publish") from exc
        out: list[tuple[int, bool]] = []
        for result, (_, _, body) in zip(results, messages, strict=True):
            if isinstance(result, RedisError):
                raise _ours(result, "publish")
            out.append((int(result[0]), bool(result[1])))
            self._count("out", body)
        return out

    async def send_event(self, event: Event) -> Coroutine[Any, Any, tuple[int, bool]]:
        subject, headers, body = self.encode_event(event)
        self.check()
        outcome: tuple[int, bool] | TransportError
        try:
            outcome = await self._store(subject, body, headers)
        except TransportError as exc:
            outcome = exc

        async def stored() -> tuple[int, bool]:
            if isinstance(outcome, TransportError):
                raise outcome
            return outcome

        return stored()

    async def read_stored(
        self,
        stream: str,
        subject: str,
        *,
        start_seq: int = 1,
        start_time: datetime | None = None,
        limit: int | None = None,
        drain: bool = False,
    ) -> list[Message]:
        since = (start_time - _EPOCH) // timedelta(microseconds=1) if start_time else -1
        cursor = start_seq if start_time is None else 1
        upto = "+inf"
        out: list[Message] = []
        while limit is None or len(out) < limit:
            want = SCAN if limit is None else min(SCAN, limit - len(out))
            rows, nxt, last = await self._run(
                "read", stream, subject, max(cursor, 1), since, want, upto
            )
            out.extend(
                _stored_message(self, 0, stream, row, consumer_seq=len(out) + i + 1)
                for i, row in enumerate(rows)
            )
            if not drain and upto == "+inf":
                upto = str(int(last))  # what was stored when the read began
            if not int(nxt):
                break
            cursor = int(nxt)
        return out

    async def follow(
        self, subject: str, handler: MessageHandler, *, headers_only: bool = False
    ) -> Subscription:
        self.check()
        await self._load_streams()
        if not any(
            _overlap(p, subject) for subjects, _ in self._streams.values() for p in subjects
        ):
            raise NotFoundError(f"no stream stores {subject}")
        return await self._subscribe("t", subject, handler=handler, headers_only=headers_only)

    async def last_stored(
        self, stream: str, subject: str
    ) -> tuple[int, str, dict[str, str], bytes] | None:
        row = await self._run("last", stream, subject)
        if not row:
            return None
        return int(row[0]), _text(row[1]), _headers_of(row[2]), bytes(row[3])

    async def get_stored(self, stream: str, seq: int) -> tuple[str, dict[str, str]] | None:
        try:
            row = await self._run("get", stream, seq)
        except NotFoundError:
            return None
        return (_text(row[1]), _headers_of(row[2])) if row else None

    async def delete_stored(self, stream: str, seq: int) -> None:
        await self._run("delete", stream, seq)

    async def purge_subject(self, stream: str, subject: str) -> None:
        await self._run("purge", stream, subject)

    async def _info(self, stream: str) -> list[Any]:
        return list(await self._run("info", stream))

    async def stream_holes(self, stream: str) -> tuple[int, list[int]]:
        info = await self._info(stream)
        first, last = int(info[4]), int(info[6])
        first = first or (last + 1 if last else 0)
        return first, sorted(int(s) for s in info[9])

    async def count_stored(
        self,
        stream: str,
        subject: str,
        *,
        start_seq: int | None = None,
        start_ns: int | None = None,
    ) -> int:
        since = -1 if start_seq is not None else (start_ns or 0) // 1000
        cursor, total = max(start_seq or 1, 1), 0
        while True:
            count, nxt = await self._run("count", stream, subject, cursor, since)
            total += int(count)
            if not int(nxt):
                return total
            cursor = int(nxt)

    async def consumer_infos(self, stream: str) -> list[dict[str, Any]]:
        rows = await self._run("consumers", stream)
        return [self._consumer_info(stream, row) for row in rows]

    def _consumer_info(self, stream: str, row: Sequence[Any]) -> dict[str, Any]:
        name, raw, created, cursor, dseq, ack_pending, redelivered, pending, floor = row
        name, spec = _text(name), json.loads(raw)
        filters = spec["filters"].split()
        push = spec.get("deliver_subject") or ""
        config: dict[str, Any] = {
            "name": name,
            "durable_name": "" if push else name,
            "ack_policy": "explicit",
            "ack_wait": int(spec["ack_wait_ms"]) * 1_000_000,
            "max_deliver": spec["max_deliver"],
            "max_ack_pending": spec["max_ack_pending"],
            "deliver_policy": "new" if spec["deliver_new"] else "all",
        }
        if len(filters) == 1:
            config["filter_subject"] = filters[0]
        elif filters:
            config["filter_subjects"] = filters
        if push:
            config["deliver_subject"] = push
            config["inactive_threshold"] = int(spec.get("inactive_ms") or 0) * 1_000_000
        return {
            "stream_name": stream,
            "name": name,
            "created": _iso(int(_text(created))),
            "config": config,
            "delivered": {"consumer_seq": int(dseq), "stream_seq": int(cursor) - 1},
            "ack_floor": {"consumer_seq": int(dseq), "stream_seq": int(floor)},
            "num_ack_pending": int(ack_pending),
            "num_redelivered": int(redelivered),
            "num_waiting": 0,
            "num_pending": int(pending),
            "push_bound": bool(push) and bool(self._local_interest(push)),
        }

    async def stream_info(self, stream: str) -> dict[str, Any]:
        info = await self._info(stream)
        api, created, messages, size, first, first_ns, last, last_ns, subjects, deleted, count = (
            info
        )
        first, last = int(first), int(last)
        holes = sorted(int(s) for s in deleted)
        state = {
            "messages": int(messages),
            "bytes": int(size),
            "first_seq": first or (last + 1 if last else 0),
            "first_ts": _iso(int(_text(first_ns))),
            "last_seq": last,
            "last_ts": _iso(int(_text(last_ns))),
            "num_subjects": int(subjects),
            "num_deleted": len(holes),
            "deleted": holes,
            "consumer_count": int(count),
        }
        return {"config": json.loads(api), "created": _iso(int(_text(created))), "state": state}

    # KV helpers --------------------------------------------------------------------
    async def kv_read(self, store: KeyValue, key: str) -> StoredValue | None:
        if not isinstance(store, RedisKV):
            raise TransportError(f"{store!r} is not a bucket of the redis backend")
        row = await store._last(key)
        if row is None or _text(row[5]):
            return None
        return StoredValue(bytes(row[3]), int(row[0]), int(_text(row[4])))

    async def kv_entries(
        self, bucket: str, *, limit: int | None = None
    ) -> list[tuple[str, bytes, int | None]]:
        store = RedisKV(self, bucket)
        rows, _ = await store._snapshot(">")
        return [
            (_text(r[1]).removeprefix(store.prefix), bytes(r[3]), int(_text(r[4])))
            for r in rows[:limit]
            if not _text(r[5]) and r[3]
        ]

    # Core messages ---------------------------------------------------------------------
    async def publish(
        self, subject: str, data: bytes, *, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        await self._publish(subject, data, reply=reply, headers=headers)

    async def _publish(
        self, subject: str, data: bytes, *, reply: str = "", headers: dict[str, str] | None = None
    ) -> int:
        """A core message (stored too when a stream captures it, as JetStream
        does); returns how many Redis clients received it (-1: stored)."""
        self.check()
        check_size(headers or {}, data, self.max_payload)
        stream = await self._stream_for(subject, fresh=False)
        if stream is not None:
            try:
                await self._store(subject, data, headers, reply=reply, stream=stream)
            except (StateConflictError, NotFoundError, TransportError) as exc:
                log.debug("core message not stored", subject=subject, error=str(exc))
            return -1
        envelope = msgpack.packb([uuid.uuid4().hex, subject, reply, _headers_json(headers), data])
        self._count("out", data)
        return int(
            await self._redis(
                f"publish to {subject}", self.client.publish(f"{self._kp}m:{subject}", envelope)
            )
        )

    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str = ""
    ) -> Subscription:
        sub = await self._subscribe("m", subject, handler=handler, queue=queue)
        for push in self._pushes.values():
            push.kick()
        return sub

    def new_inbox(self) -> str:
        return f"{self.settings.nats_inbox_prefix}.{uuid.uuid4().hex}"

    async def request(self, subject: str, data: bytes, *, timeout: float) -> bytes:
        self.check()
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def on_reply(msg: Message) -> None:
            if not answer.done():
                answer.set_result(msg.data)

        sub = await self._subscribe("m", self.new_inbox(), handler=on_reply)
        try:
            if await self._publish(subject, data, reply=sub.subject) != 0:  # 0: no responders
                async with asyncio.timeout(timeout):
                    return await answer
        except TimeoutError:
            pass
        finally:
            await self._forget(sub)
        raise TimeoutError(f"no answer on {subject} within {timeout:g}s")

    async def add_service(
        self,
        info: ServiceInfo,
        *,
        endpoint: str,
        handler: Callable[[], bytes],
        stats: Callable[[], dict[str, Any]],
    ) -> Callable[[], Awaitable[None]]:
        """Answers ``endpoint`` and the micro services' ``$SRV.PING|STATS``
        discovery requests, like a NATS micro service."""
        service_id, started = uuid.uuid4().hex, _iso(time.time_ns())
        about = {
            "name": info.name,
            "id": service_id,
            "version": info.version,
            "metadata": info.metadata,
        }

        async def on_endpoint(msg: Message) -> None:
            await msg.respond(handler())

        async def on_ping(msg: Message) -> None:
            await msg.respond(
                json.dumps({"type": "io.nats.micro.v1.ping_response", **about}).encode()
            )

        async def on_stats(msg: Message) -> None:
            endpoints = [
                {"name": "health", "subject": endpoint, "queue_group": "q", "data": stats()}
            ]
            body = {
                "type": "io.nats.micro.v1.stats_response",
                **about,
                "started": started,
                "endpoints": endpoints,
            }
            await msg.respond(json.dumps(body).encode())

        subs = [await self._subscribe("m", endpoint, handler=on_endpoint, queue="q")]
        subs.extend(
            [
                await self._subscribe("m", subject, handler=answer)
                for verb, answer in (("PING", on_ping), ("STATS", on_stats))
                for subject in (
                    f"$SRV.{verb}",
                    f"$SRV.{verb}.{info.name}",
                    f"$SRV.{verb}.{info.name}.{service_id}",
                )
            ]
        )

        async def deregister() -> None:
            for sub in subs:
                await self._forget(sub)

        return deregister


# Pulling ---------------------------------------------------------------------------
async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Until ``event`` is set, at most ``timeout`` seconds (a cancellation is
    never mistaken for the timeout, as ``asyncio.timeout`` can on 3.11)."""
    if event.is_set():
        return
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=max(timeout, 0.0))
    finally:
        waiter.cancel()


def _pause(wait_s: float) -> float:
    """How long to wait for a wake-up: until a pending delivery is due, at most
    :data:`SAFETY_POLL_S`."""
    return SAFETY_POLL_S if wait_s < 0 else min(wait_s + 0.002, SAFETY_POLL_S)


class Puller:
    """Hands every delivery of a durable consumer to ``on_message`` while the
    owner's ``credit()`` allows (see :meth:`Bus.puller`): one task fetching
    (so in stream order), sleeping on the consumer's wake channel between."""

    def __init__(
        self,
        bus: RedisBus,
        *,
        stream: str,
        consumer: str,
        on_message: Callable[[Message], None],
        credit: Callable[[], int],
        max_batch: int,
        on_end: Callable[[str], None] | None,
    ) -> None:
        self._bus, self._stream, self._name = bus, stream, consumer
        self._on_message, self._credit, self._max_batch = on_message, credit, max_batch
        self._on_end = on_end
        self._sid = next(bus._sids)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.what = f"{stream}/{consumer}"

    @property
    def owed(self) -> int:
        return 0

    async def start(self) -> None:
        self._wake = await self._bus._waker(self._stream, self._name)
        self._task = self._bus._spawn(self._run(), f"redis-puller-{self.what}")

    def _room(self) -> int:
        try:
            return min(self._credit(), self._max_batch)
        except Exception:
            log.exception("a credit function failed", consumer=self._name)
            return 0

    async def _run(self) -> None:
        assert self._wake is not None
        failures = 0
        while not self._bus.closing and not self._stopped:
            room = self._room()
            self._wake.clear()
            if room <= 0:
                await _wait(self._wake, SAFETY_POLL_S)
                continue
            try:
                msgs, wait_s, more = await self._bus._fetch(
                    self._stream, self._name, room, self._sid
                )
            except NotFoundError:
                log.warning("the consumer is gone", consumer=self.what)
                await _wait(self._wake, SAFETY_POLL_S)
                continue
            except TransportError as exc:
                failures += 1
                log.warning("pull failed", consumer=self.what, error=str(exc))
                await asyncio.sleep(min(0.05 * 2**failures, 2.0))
                continue
            failures = 0
            for msg in msgs:
                try:
                    self._on_message(msg)
                except Exception:
                    log.exception("a delivery handler failed", consumer=self._name)
            if not msgs and not more:
                await _wait(self._wake, _pause(wait_s))

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopped = True
        self.kick()
        await asyncio.wait({task}, timeout=SAFETY_POLL_S)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._wake is not None:
            await self._bus._unwake(self._stream, self._name, self._wake)
        if self._on_end is not None:
            self._on_end("lost")

    def kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def reset(self) -> None:
        self.kick()


class Fetcher:
    """Batches from a durable consumer on demand (see :meth:`Bus.fetcher`)."""

    def __init__(self, bus: RedisBus, stream: str, consumer: str) -> None:
        self._bus, self._stream, self._name = bus, stream, consumer
        self._sid = next(bus._sids)
        self._wake: asyncio.Event | None = None

    async def start(self) -> None:
        self._wake = await self._bus._waker(self._stream, self._name)

    async def fetch(self, batch: int, *, timeout: float) -> list[Message]:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._wake.clear()
            msgs, wait_s, more = await self._bus._fetch(self._stream, self._name, batch, self._sid)
            if msgs:
                return msgs
            if more:
                continue
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"nothing to fetch within {timeout:g}s")
            await _wait(self._wake, min(_pause(wait_s), left))

    async def unsubscribe(self) -> None:
        if self._wake is not None:
            wake, self._wake = self._wake, None
            await self._bus._unwake(self._stream, self._name, wake)


class _Push:
    """A direct consumer pushed to this process's listeners of its deliver
    subject; deleted once nobody has listened for :data:`DIRECT_INACTIVE_S`."""

    def __init__(self, bus: RedisBus, stream: str, consumer: str, deliver: str) -> None:
        self._bus, self._stream, self._name, self._deliver = bus, stream, consumer, deliver
        self._sid = next(bus._sids)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._wake = await self._bus._waker(self._stream, self._name)
        self._task = self._bus._spawn(self._run(), f"redis-push-{self._name}")

    def kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        assert self._wake is not None
        bus, alive_key = self._bus, f"{self._bus._kp}alive:{self._stream}:{self._name}"
        idle_since: float | None = None
        refreshed = 0.0
        try:
            while not bus.closing:
                now = time.monotonic()
                self._wake.clear()
                listeners = bus._local_interest(self._deliver)
                if not listeners:
                    idle_since = idle_since or now
                    if now - idle_since >= DIRECT_INACTIVE_S:
                        await bus.delete_consumer(self._stream, self._name)
                        return
                    await _wait(self._wake, SAFETY_POLL_S)
                    continue
                idle_since = None
                try:
                    if now - refreshed > DIRECT_INACTIVE_S / 3:
                        alive = bus.client.set(alive_key, b"1", px=int(DIRECT_INACTIVE_S * 1000))
                        await bus._redis("refresh a direct consumer", alive)
                        refreshed = now
                    wait_s = await self._push(listeners)
                except (TransportError, RedisError) as exc:
                    log.warning("direct push failed", consumer=self._name, error=str(exc))
                    wait_s = SAFETY_POLL_S
                if wait_s is not None:
                    await _wait(self._wake, _pause(wait_s))
        finally:
            with contextlib.suppress(Exception):
                await bus._unwake(self._stream, self._name, self._wake)

    async def _push(self, listeners: list[_Sub]) -> float | None:
        """Deliver what can be delivered; returns how long to wait (None: at once)."""
        msgs, wait_s, more = await self._bus._fetch(self._stream, self._name, 64, self._sid)
        for msg in msgs:
            for sub in listeners:
                if sub.runner is not None:
                    sub.runner.put(msg)
        return None if (msgs or more) else wait_s


__all__ = ["Fetcher", "Puller", "RedisBus", "RedisKV", "StreamMessage", "Watcher"]
