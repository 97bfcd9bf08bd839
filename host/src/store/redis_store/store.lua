-- wxpay's Redis store, a Redis Functions library. Every store operation is
-- one FCALL of its one function, and Redis runs a function to the end
-- before it serves anything else: each operation is atomic exactly as one
-- SQLite transaction is.
--
-- The library is loaded once; its code below runs then, and each call runs
-- only `dispatch`. (As an EVAL script, every call built all the helpers
-- and tables again, which cost Redis more than the operation itself.) The
-- gateway prepends the shebang line and FUNCTION_NAME, both derived from a
-- digest of this file, so gateways of different versions can share one
-- server, each calling its own code.
--
-- The first argument is the key prefix, the second the operation, and the
-- rest are the operation's arguments. An optional argument is '' for none or '=' and
-- its value. Records are hashes whose absent fields are NULL; numbers are
-- decimal strings, and only amounts below 2^53 fen reach Lua, so Lua's
-- doubles add them exactly.
--
-- Keys (P is the prefix):
--   P order:<no>            hash   orders; P orders:<state> zset by updated_at_ms
--   P idem                  hash   "<agent>\n<key>" -> out_trade_no
--   P agent_orders:<agent>  zset   out_trade_no by created_at_ms
--   P agent_spend:<agent>   hash   minute -> total_fee of the agent's orders created
--                                  in that minute and not closed or failed
--   P agent_spend_minutes:<agent> zset those minutes, scored by themselves
--   P spend_index           '1' once agent_spend covers every order
--   P refund:<no>           hash   refunds; P refunds:<state> zset by updated_at_ms
--   P order_refunds:<no>    set    the order's out_refund_no
--   P notification:<id>     hash   ids 1.. from P seq:notification
--   P audit:<seq>           hash   seqs 1.. from P seq:audit
--   P audit_subject:<subject> list the subject's seqs, oldest first;
--                                  P audit_subject_index '1' once it covers the log
--   P agent:<id>            hash   agents; P agent_token:<sha256> -> id; P agents zset
--   P approval:<id>         hash   ids 1.. from P seq:approval
--   P approval_subject:<kind>:<subject> -> id; P approvals:<state> zset by id
--   P agent_approvals:<agent> zset payment approval ids by requested_at_ms
--   P topup:<no>            hash   payer_id, agent_id, created_at_ms
--   P ledger:<seq>          hash   entries; P ledger_ref:<kind>:<ref> -> seq
--   P ledger_payer:<payer>  list   the payer's seqs; P balance:<payer> their sum
--   P meter:<id>            hash   with total_fen; P usage:<ref> hash
--   P lease:<name>          hash   holder, expires_at_ms
--   P console:<kind>:<key>  hash   value, expires_at_ms ('' for never);
--                                  P console_keys:<kind> set of the kind's keys

-- The call being served: its key prefix and its operation's arguments.
-- Set by `dispatch` at the start of every call; calls never overlap.
local P, A

local function key(...)
  return P .. table.concat({ ... }, ':')
end

local function opt(value)
  if value == nil or value == '' then
    return nil
  end
  return string.sub(value, 2)
end

local function record(k)
  local fields = redis.call('HGETALL', k)
  if #fields == 0 then
    return false
  end
  return fields
end

local function set_of(csv)
  local set = {}
  for name in string.gmatch(csv, '[^,]+') do
    set[name] = true
  end
  return set
end

local function dec(n)
  return string.format('%.0f', n)
end

-- HSET key with the name/value pairs in A from index `first` on.
local function hset_pairs(k, first)
  local args = { 'HSET', k }
  for i = first, #A do
    args[#args + 1] = A[i]
  end
  if #args > 2 then
    redis.call(unpack(args))
  end
end

local function pairs_table(first)
  local t = {}
  for i = first, #A - 1, 2 do
    t[A[i]] = A[i + 1]
  end
  return t
end

local PAID = { paid = true, refunding = true, refunded = true }
local COUNTING = { requested = true, processing = true, succeeded = true }

-- Ledger -------------------------------------------------------------------

-- Appends an entry unless one with the same kind and reference exists.
local function append_ledger(payer, amount, kind, ref, agent, note, at)
  local ref_key = key('ledger_ref', kind, ref)
  if redis.call('EXISTS', ref_key) == 1 then
    return nil
  end
  local seq = redis.call('INCR', key('seq', 'ledger'))
  local k = key('ledger', seq)
  redis.call('HSET', k, 'seq', seq, 'payer_id', payer, 'amount_fen', amount,
    'kind', kind, 'ref', ref, 'at_ms', at)
  if agent then
    redis.call('HSET', k, 'agent_id', agent)
  end
  if note then
    redis.call('HSET', k, 'note', note)
  end
  redis.call('SET', ref_key, seq)
  redis.call('RPUSH', key('ledger_payer', payer), seq)
  redis.call('INCRBY', key('balance', payer), amount)
  return seq
end

local function balance(payer)
  return redis.call('GET', key('balance', payer)) or '0'
end

local function credit_topup(no, at)
  local topup = redis.call('HMGET', key('topup', no), 'payer_id', 'agent_id')
  if not topup[1] then
    return
  end
  local fee = redis.call('HGET', key('order', no), 'total_fee')
  if tonumber(fee) > 0 then
    append_ledger(topup[1], fee, 'topup', no, topup[2], nil, at)
  end
end

-- Orders -------------------------------------------------------------------

local function find_order(no, agent, idem)
  local found = record(key('order', no))
  if found then
    return found
  end
  if agent and idem then
    local other = redis.call('HGET', key('idem'), agent .. '\n' .. idem)
    if other then
      return record(key('order', other))
    end
  end
  return false
end

-- Budgets: what an agent spent since a time is summed per minute, so a
-- check reads at most one entry per minute of its window plus the orders
-- of the minute it starts in, however many orders the agent placed.
local MINUTE = 60000

local function counts_toward_budget(state)
  return state ~= 'closed' and state ~= 'failed'
end

local function add_spend(agent, created_at, fee)
  local minute = math.floor(tonumber(created_at) / MINUTE)
  local k = key('agent_spend', agent)
  local total = redis.call('HINCRBY', k, minute, fee)
  if total == 0 then
    redis.call('HDEL', k, minute)
    redis.call('ZREM', key('agent_spend_minutes', agent), minute)
  else
    redis.call('ZADD', key('agent_spend_minutes', agent), minute, minute)
  end
end

-- Keeps agent_spend right when an order moves between counted and not.
local function respend(no, from_state, to_state)
  local was, is = counts_toward_budget(from_state), counts_toward_budget(to_state)
  if was == is then
    return
  end
  local o = redis.call('HMGET', key('order', no), 'agent_id', 'created_at_ms', 'total_fee')
  if o[1] then
    local fee = tonumber(o[3])
    if was then
      fee = -fee
    end
    add_spend(o[1], o[2], fee)
  end
end

-- Stores the order given as name/value pairs in A from `first` on.
local function write_order(first)
  local o = pairs_table(first)
  local k = key('order', o.out_trade_no)
  hset_pairs(k, first)
  redis.call('HSET', k, 'version', '1')
  redis.call('ZADD', key('orders', o.state), o.updated_at_ms, o.out_trade_no)
  if o.agent_id then
    redis.call('ZADD', key('agent_orders', o.agent_id), o.created_at_ms, o.out_trade_no)
    if counts_toward_budget(o.state) then
      add_spend(o.agent_id, o.created_at_ms, o.total_fee)
    end
    if o.idempotency_key then
      redis.call('HSET', key('idem'), o.agent_id .. '\n' .. o.idempotency_key, o.out_trade_no)
    end
  end
end

-- The compare-and-set on an order or refund (`kind`): moves it to `to` if
-- it is in `from`, sets `patch`, re-indexes it by state, bumps `version`;
-- an order that becomes paid credits its top-up in the same step.
local function cas(kind, no, from, to, patch, at)
  local k = key(kind, no)
  local state = redis.call('HGET', k, 'state')
  if not state then
    return 'missing'
  end
  if state == to then
    return 'already'
  end
  if not from[state] then
    return 'refused'
  end
  redis.call('ZREM', key(kind .. 's', state), no)
  local set = { 'HSET', k, 'state', to, 'updated_at_ms', at }
  for name, value in pairs(patch) do
    set[#set + 1] = name
    set[#set + 1] = value
  end
  redis.call(unpack(set))
  redis.call('HINCRBY', k, 'version', 1)
  redis.call('ZADD', key(kind .. 's', to), at, no)
  if kind == 'order' then
    respend(no, state, to)
  end
  if kind == 'order' and to == 'paid' then
    credit_topup(no, at)
  end
  return 'applied'
end

local function cas_order(no, from, to, patch, at)
  return cas('order', no, from, to, patch, at)
end

-- Records in the zsets of `states` scored below `older_than`, up to `limit`
-- from each; the caller merges them.
local function in_states(kind, states, older_than, limit)
  local out = {}
  for state in pairs(set_of(states)) do
    local names = redis.call('ZRANGE', key(kind .. 's', state), '-inf', '(' .. older_than,
      'BYSCORE', 'LIMIT', 0, limit)
    for _, name in ipairs(names) do
      out[#out + 1] = record(key(kind, name))
    end
  end
  return out
end

-- Refunds ------------------------------------------------------------------

local function refunds_of(no)
  return redis.call('SMEMBERS', key('order_refunds', no))
end

local function refunded_total(no)
  local sum = 0
  for _, refund in ipairs(refunds_of(no)) do
    local r = redis.call('HMGET', key('refund', refund), 'state', 'refund_fee')
    if COUNTING[r[1]] then
      sum = sum + tonumber(r[2])
    end
  end
  return sum
end

local function cas_refund(no, from, to, patch, at)
  return cas('refund', no, from, to, patch, at)
end

local function settle_order(no, at)
  local k = key('order', no)
  local state = redis.call('HGET', k, 'state')
  if not state then
    return false
  end
  if PAID[state] then
    local open, succeeded = false, false
    for _, refund in ipairs(refunds_of(no)) do
      local s = redis.call('HGET', key('refund', refund), 'state')
      if s == 'requested' or s == 'processing' then
        open = true
      elseif s == 'succeeded' then
        succeeded = true
      end
    end
    local to = 'paid'
    if open then
      to = 'refunding'
    elseif succeeded then
      to = 'refunded'
    end
    cas_order(no, PAID, to, {}, at)
  end
  return record(k)
end

-- Notifications and audit ---------------------------------------------------

local function record_notification(kind, body, at, no, dedupe, verdict)
  local id = redis.call('INCR', key('seq', 'notification'))
  local set = { 'HSET', key('notification', id), 'id', id, 'kind', kind, 'received_at_ms', at,
    'body', body, 'verdict', verdict }
  if no then
    set[#set + 1] = 'out_trade_no'
    set[#set + 1] = no
  end
  if dedupe then
    set[#set + 1] = 'dedupe_key'
    set[#set + 1] = dedupe
  end
  redis.call(unpack(set))
  return id
end

local function sequence(kind, first, limit)
  local out = {}
  for id = first, first + limit - 1 do
    local found = record(key(kind, id))
    if not found then
      break
    end
    out[#out + 1] = found
  end
  return out
end

local function append_audit(e)
  local seq = redis.call('INCR', key('seq', 'audit'))
  redis.call('HSET', key('audit', seq), 'seq', seq, 'at_ms', e[1], 'actor', e[2],
    'action', e[3], 'subject', e[4], 'outcome', e[5], 'detail', e[6])
  redis.call('RPUSH', key('audit_subject', e[4]), seq)
  return seq
end

-- An audit event given in A at `i` as a count (0 or 6) and its fields:
-- the event (or nil) and the index after it.
local function audit_at(i)
  if A[i] == '0' then
    return nil, i + 1
  end
  return { A[i + 1], A[i + 2], A[i + 3], A[i + 4], A[i + 5], A[i + 6] }, i + 7
end

local function audit_if(code, event)
  if code == 'applied' and event then
    append_audit(event)
  end
end

-- Agents and approvals -----------------------------------------------------

-- The sum of `values` read from hash `k`, in chunks (Lua's unpack is bounded).
local function sum_fields(k, fields)
  local sum = 0
  for first = 1, #fields, 1000 do
    local chunk = { unpack(fields, first, math.min(first + 999, #fields)) }
    for _, v in ipairs(redis.call('HMGET', k, unpack(chunk))) do
      sum = sum + (tonumber(v) or 0)
    end
  end
  return sum
end

local function spent_since(agent, since)
  since = tonumber(since)
  local first = math.floor(since / MINUTE)
  local later = redis.call('ZRANGE', key('agent_spend_minutes', agent), first + 1, '+inf', 'BYSCORE')
  local sum = sum_fields(key('agent_spend', agent), later)
  local boundary = redis.call('ZRANGE', key('agent_orders', agent), since,
    '(' .. ((first + 1) * MINUTE), 'BYSCORE')
  for _, no in ipairs(boundary) do
    local o = redis.call('HMGET', key('order', no), 'state', 'total_fee')
    if counts_toward_budget(o[1]) then
      sum = sum + tonumber(o[2])
    end
  end
  for _, id in ipairs(redis.call('ZRANGE', key('agent_approvals', agent), since, '+inf', 'BYSCORE')) do
    local a = redis.call('HMGET', key('approval', id), 'state', 'amount_fen')
    if a[1] == 'pending' then
      sum = sum + tonumber(a[2])
    end
  end
  return sum
end

local function approval_of(kind, subject)
  local id = redis.call('GET', key('approval_subject', kind, subject))
  if not id then
    return false
  end
  return record(key('approval', id))
end

-- Stores the approval whose six fields start at A[first]; returns its id.
local function write_approval(first)
  local kind, subject, agent = A[first], A[first + 1], A[first + 2]
  local amount, request, at = A[first + 3], A[first + 4], A[first + 5]
  local id = redis.call('INCR', key('seq', 'approval'))
  redis.call('HSET', key('approval', id), 'id', id, 'kind', kind, 'subject', subject,
    'agent_id', agent, 'amount_fen', amount, 'request_json', request, 'state', 'pending',
    'requested_at_ms', at)
  redis.call('SET', key('approval_subject', kind, subject), id)
  redis.call('ZADD', key('approvals', 'pending'), id, id)
  if kind == 'payment' then
    redis.call('ZADD', key('agent_approvals', agent), at, id)
  end
  return id
end

-- Meters -------------------------------------------------------------------

local function meter(id)
  return record(key('meter', id))
end

-- Operations ---------------------------------------------------------------

local ops = {}

function ops.insert_order()
  local found = find_order(A[1], opt(A[2]), opt(A[3]))
  if found then
    return { 'exists', found }
  end
  write_order(4)
  return { 'new' }
end

function ops.order()
  return record(key('order', A[1]))
end

function ops.transition_order()
  local event, patch_at = audit_at(5)
  local code = cas_order(A[1], set_of(A[2]), A[3], pairs_table(patch_at), A[4])
  audit_if(code, event)
  return { code, record(key('order', A[1])) }
end

function ops.orders_in_state()
  return in_states('order', A[1], A[2], A[3])
end

function ops.insert_refund()
  local no, order_no, fee, state = A[1], A[2], A[3], A[4]
  local found = record(key('refund', no))
  if found then
    return { 'exists', found }
  end
  local total = redis.call('HGET', key('order', order_no), 'total_fee')
  if not total then
    return { 'order_missing' }
  end
  if COUNTING[state] then
    local refunded = refunded_total(order_no)
    if refunded + tonumber(fee) > tonumber(total) then
      return { 'exceeds', total, dec(refunded) }
    end
  end
  local k = key('refund', no)
  hset_pairs(k, 5)
  redis.call('HSET', k, 'version', '1')
  redis.call('SADD', key('order_refunds', order_no), no)
  redis.call('ZADD', key('refunds', state), redis.call('HGET', k, 'updated_at_ms'), no)
  return { 'new' }
end

function ops.refund()
  return record(key('refund', A[1]))
end

function ops.transition_refund()
  local code = cas_refund(A[1], set_of(A[2]), A[3], pairs_table(5), A[4])
  return { code, record(key('refund', A[1])) }
end

function ops.refunded_total()
  return dec(refunded_total(A[1]))
end

function ops.record_notification()
  return record_notification(A[1], A[2], A[3], opt(A[4]), opt(A[5]), A[6])
end

function ops.notifications()
  return sequence('notification', tonumber(A[2]) + 1, tonumber(A[1]))
end

function ops.append_audit()
  return append_audit(A)
end

function ops.audit()
  return sequence('audit', tonumber(A[1]) + 1, tonumber(A[2]))
end

-- Nothing is written when the order's terms (amount, currency, algorithm)
-- are not those the notification was checked against: the order comes
-- back as 'differs' for the gateway to check the notification against it.
function ops.apply_payment_notification()
  local no, transaction, paid_at, body, at = A[1], A[2], A[3], A[4], A[5]
  local terms = redis.call('HMGET', key('order', no), 'total_fee', 'fee_type', 'sign_type')
  if terms[1] and (terms[1] ~= A[6] or terms[2] ~= A[7] or terms[3] ~= A[8]) then
    return { 'differs', record(key('order', no)) }
  end
  local event = audit_at(9)
  local patch = { transaction_id = transaction, paid_at_ms = paid_at }
  local code = cas_order(no, { created = true, pending = true }, 'paid', patch, at)
  audit_if(code, event)
  local order = record(key('order', no))
  local verdict
  if code == 'missing' then
    verdict = 'rejected:unknown order'
  elseif code == 'applied' then
    verdict = 'accepted'
  else
    local o = redis.call('HMGET', key('order', no), 'state', 'transaction_id')
    if PAID[o[1]] and (not o[2] or o[2] == transaction) then
      code, verdict = 'already', 'duplicate'
    elseif PAID[o[1]] then
      code, verdict = 'refused', 'rejected:transaction_id differs from the recorded payment'
    else
      code, verdict = 'refused', 'rejected:order is ' .. o[1]
    end
  end
  record_notification('payment', body, at, no, transaction, verdict)
  return { code, order }
end

function ops.refunds_in_state()
  return in_states('refund', A[1], A[2], A[3])
end

function ops.apply_refund_outcome()
  local no, refund_id, to, body, at = A[1], A[2], A[3], opt(A[4]), A[5]
  local event = audit_at(6)
  local from = { requested = true, processing = true }
  local code = cas_refund(no, from, to, { refund_id = refund_id }, at)
  audit_if(code, event)
  local order_no = redis.call('HGET', key('refund', no), 'out_trade_no')
  if order_no then
    settle_order(order_no, at)
  end
  local refund = record(key('refund', no))
  if body then
    local verdict
    if code == 'applied' then
      verdict = 'accepted'
    elseif code == 'missing' then
      verdict = 'rejected:unknown refund'
    elseif code == 'already' then
      local recorded = redis.call('HGET', key('refund', no), 'refund_id')
      if not recorded or recorded == refund_id then
        verdict = 'duplicate'
      else
        verdict = 'rejected:refund_id differs from the recorded refund'
      end
    else
      verdict = 'rejected:refund is ' .. redis.call('HGET', key('refund', no), 'state')
    end
    record_notification('refund', body, at, order_no, refund_id .. ':' .. to, verdict)
  end
  return { code, refund }
end

function ops.settle_order()
  return settle_order(A[1], A[2])
end

function ops.insert_agent()
  local a = pairs_table(1)
  if redis.call('EXISTS', key('agent', a.agent_id)) == 1
    or redis.call('EXISTS', key('agent_token', a.token_sha256)) == 1 then
    return 0
  end
  hset_pairs(key('agent', a.agent_id), 1)
  redis.call('SET', key('agent_token', a.token_sha256), a.agent_id)
  redis.call('ZADD', key('agents'), a.created_at_ms, a.agent_id)
  return 1
end

function ops.agent_by_token()
  local id = redis.call('GET', key('agent_token', A[1]))
  if not id then
    return false
  end
  return record(key('agent', id))
end

function ops.agent()
  return record(key('agent', A[1]))
end

function ops.agents()
  local out = {}
  for _, id in ipairs(redis.call('ZRANGE', key('agents'), 0, -1)) do
    out[#out + 1] = record(key('agent', id))
  end
  return out
end

function ops.revoke_agent()
  local k = key('agent', A[1])
  if redis.call('EXISTS', k) == 1 then
    redis.call('HSETNX', k, 'revoked_at_ms', A[2])
  end
  return record(k)
end

function ops.agent_spend()
  return dec(spent_since(A[1], A[2]))
end

-- A: no, agent, idem, since, limit, total_fee, approval count (0 or 6),
-- the approval's fields, then the order's name/value pairs.
function ops.admit_agent_payment()
  local no, agent, idem = A[1], opt(A[2]), opt(A[3])
  local since, limit, fee = opt(A[4]), opt(A[5]), A[6]
  local approval_fields = tonumber(A[7])
  local found = find_order(no, agent, idem)
  if found then
    return { 'order_exists', found }
  end
  local pending = approval_of('payment', no)
  if pending then
    return { 'approval_exists', pending }
  end
  if limit and agent then
    local spent = spent_since(agent, since)
    if spent + tonumber(fee) > tonumber(limit) then
      return { 'over_budget', dec(spent) }
    end
  end
  if approval_fields > 0 then
    local id = write_approval(8)
    return { 'awaiting', record(key('approval', id)) }
  end
  write_order(8)
  return { 'ordered' }
end

function ops.insert_approval()
  local found = approval_of(A[1], A[2])
  if found then
    return { 'exists', found }
  end
  write_approval(1)
  return { 'new' }
end

function ops.approval()
  return approval_of(A[1], A[2])
end

function ops.approval_by_id()
  return record(key('approval', A[1]))
end

function ops.approvals()
  local state, limit = opt(A[1]), tonumber(A[2])
  if limit <= 0 then
    return {}
  end
  if not state then
    return sequence('approval', 1, limit)
  end
  local out = {}
  for _, id in ipairs(redis.call('ZRANGE', key('approvals', state), 0, limit - 1)) do
    out[#out + 1] = record(key('approval', id))
  end
  return out
end

function ops.decide_approval()
  local id, to, by, reason, at = A[1], A[2], A[3], opt(A[4]), A[5]
  local k = key('approval', id)
  local state = redis.call('HGET', k, 'state')
  local code
  if not state then
    return { 'missing', false }
  elseif state == 'pending' then
    redis.call('HSET', k, 'state', to, 'decided_by', by, 'decided_at_ms', at)
    if reason then
      redis.call('HSET', k, 'reason', reason)
    else
      redis.call('HDEL', k, 'reason')
    end
    redis.call('ZREM', key('approvals', 'pending'), id)
    redis.call('ZADD', key('approvals', to), id, id)
    code = 'applied'
  elseif state == to then
    code = 'already'
  else
    code = 'refused'
  end
  return { code, record(k) }
end

function ops.approvals_to_carry_out()
  local limit = tonumber(A[1])
  local out = {}
  for _, id in ipairs(redis.call('ZRANGE', key('approvals', 'approved'), 0, -1)) do
    if #out >= limit then
      break
    end
    local a = redis.call('HMGET', key('approval', id), 'kind', 'subject')
    local kind = 'order'
    if a[1] == 'refund' then
      kind = 'refund'
    end
    if redis.call('EXISTS', key(kind, a[2])) == 0 then
      out[#out + 1] = record(key('approval', id))
    end
  end
  return out
end

function ops.register_topup()
  local k = key('topup', A[1])
  if redis.call('EXISTS', k) == 0 then
    redis.call('HSET', k, 'payer_id', A[2], 'created_at_ms', A[4])
    local agent = opt(A[3])
    if agent then
      redis.call('HSET', k, 'agent_id', agent)
    end
  end
  return redis.call('HGET', k, 'payer_id')
end

function ops.charge()
  local payer, amount, ref, agent, note, at = A[1], A[2], A[3], A[4], opt(A[5]), A[6]
  local seq = redis.call('GET', key('ledger_ref', 'charge', ref))
  if seq then
    local entry = record(key('ledger', seq))
    local owner = redis.call('HGET', key('ledger', seq), 'payer_id')
    return { 'exists', entry, balance(owner) }
  end
  local before = balance(payer)
  if tonumber(before) < tonumber(amount) then
    return { 'insufficient', before }
  end
  seq = append_ledger(payer, '-' .. amount, 'charge', ref, agent, note, at)
  return { 'charged', record(key('ledger', seq)), balance(payer) }
end

function ops.balance()
  return balance(A[1])
end

function ops.ledger()
  local limit = tonumber(A[2])
  local seqs = redis.call('LRANGE', key('ledger_payer', A[1]), -limit, -1)
  local out = {}
  for i = #seqs, 1, -1 do
    out[#out + 1] = record(key('ledger', seqs[i]))
  end
  return out
end

function ops.open_meter()
  local k = key('meter', A[1])
  if redis.call('EXISTS', k) == 0 then
    redis.call('HSET', k, 'meter_id', A[1], 'agent_id', A[2], 'payer_id', A[3],
      'created_at_ms', A[4], 'total_fen', '0')
  end
  return meter(A[1])
end

function ops.add_usage()
  local id, ref, amount, note, at = A[1], A[2], A[3], opt(A[4]), A[5]
  local found = meter(id)
  if not found then
    return { 'missing', false }
  end
  local usage = key('usage', ref)
  local existing = redis.call('HGET', usage, 'amount_fen')
  if existing then
    return { 'exists', found, existing }
  end
  if redis.call('HEXISTS', key('meter', id), 'settled_at_ms') == 1 then
    return { 'settled', found }
  end
  redis.call('HSET', usage, 'meter_id', id, 'amount_fen', amount, 'at_ms', at)
  if note then
    redis.call('HSET', usage, 'note', note)
  end
  redis.call('HINCRBY', key('meter', id), 'total_fen', amount)
  return { 'added', meter(id) }
end

function ops.meter()
  return meter(A[1])
end

function ops.settle_meter()
  local k = key('meter', A[1])
  if redis.call('EXISTS', k) == 1 and redis.call('HEXISTS', k, 'settled_at_ms') == 0 then
    redis.call('HSET', k, 'out_trade_no', A[2], 'settled_at_ms', A[3])
  end
  return meter(A[1])
end

-- Leases compare the caller's clock, like every other time here: the
-- server's own clock is never read.
function ops.acquire_lease()
  local name, holder, now, until_ms = A[1], A[2], A[3], A[4]
  local k = key('lease', name)
  local current = redis.call('HMGET', k, 'holder', 'expires_at_ms')
  if not current[1] or current[1] == holder or tonumber(current[2]) <= tonumber(now) then
    redis.call('HSET', k, 'holder', holder, 'expires_at_ms', until_ms)
    return 1
  end
  return 0
end

function ops.audit_about()
  local subject, limit = A[1], tonumber(A[2])
  local out = {}
  if limit < 1 then
    return out
  end
  for _, seq in ipairs(redis.call('LRANGE', key('audit_subject', subject), -limit, -1)) do
    out[#out + 1] = record(key('audit', seq))
  end
  return out
end

-- Builds audit_subject from the log once, for events appended before it
-- existed; returns the number of events indexed (0 when already built).
function ops.build_audit_subject_index()
  if redis.call('GET', key('audit_subject_index')) == '1' then
    return 0
  end
  local last = tonumber(redis.call('GET', key('seq', 'audit')) or '0')
  local pattern = key('audit_subject', ''):gsub('[%*%?%[%]\\]', '\\%0') .. '*'
  for _, stale in ipairs(redis.call('KEYS', pattern)) do
    redis.call('DEL', stale)
  end
  for seq = 1, last do
    local subject = redis.call('HGET', key('audit', seq), 'subject')
    if subject then
      redis.call('RPUSH', key('audit_subject', subject), seq)
    end
  end
  redis.call('SET', key('audit_subject_index'), '1')
  return last
end

function ops.order_refunds()
  local out = {}
  for _, no in ipairs(refunds_of(A[1])) do
    local found = record(key('refund', no))
    if found then
      out[#out + 1] = found
    end
  end
  return out
end

function ops.latest_audit_seq()
  return tonumber(redis.call('GET', key('seq', 'audit')) or '0')
end

-- The record's value, or nil when it is missing or expired at `now`.
local function live_console_value(k, now)
  local r = redis.call('HMGET', k, 'value', 'expires_at_ms')
  if not r[1] then
    return nil
  end
  if r[2] ~= '' and tonumber(r[2]) <= tonumber(now) then
    return nil
  end
  return r[1]
end

local function forget_console_record(kind, name)
  redis.call('DEL', key('console', kind, name))
  redis.call('SREM', key('console_keys', kind), name)
end

-- Stores a record, after deleting the kind's records expired at `now`.
function ops.put_console_record()
  local kind, name, value, expires, now = A[1], A[2], A[3], opt(A[4]), A[5]
  for _, other in ipairs(redis.call('SMEMBERS', key('console_keys', kind))) do
    if not live_console_value(key('console', kind, other), now) then
      forget_console_record(kind, other)
    end
  end
  redis.call('HSET', key('console', kind, name), 'value', value, 'expires_at_ms', expires or '')
  redis.call('SADD', key('console_keys', kind), name)
  return 1
end

function ops.console_record()
  return live_console_value(key('console', A[1], A[2]), A[3]) or false
end

function ops.take_console_record()
  local value = live_console_value(key('console', A[1], A[2]), A[3])
  forget_console_record(A[1], A[2])
  return value or false
end

-- Every live record of the kind as key, value, key, value, ...; expired
-- ones are deleted on the way.
function ops.console_records()
  local kind, now = A[1], A[2]
  local names = redis.call('SMEMBERS', key('console_keys', kind))
  table.sort(names)
  local out = {}
  for _, name in ipairs(names) do
    local value = live_console_value(key('console', kind, name), now)
    if value then
      out[#out + 1] = name
      out[#out + 1] = value
    else
      forget_console_record(kind, name)
    end
  end
  return out
end

-- Builds agent_spend from the orders once, for data written before it
-- existed; returns the number of orders indexed (0 when already built).
function ops.build_spend_index()
  if redis.call('GET', key('spend_index')) == '1' then
    return 0
  end
  local indexed = 0
  local pattern = key('agent_orders', ''):gsub('[%*%?%[%]\\]', '\\%0') .. '*'
  local skip = #key('agent_orders', '')
  for _, orders_key in ipairs(redis.call('KEYS', pattern)) do
    local agent = orders_key:sub(skip + 1)
    redis.call('DEL', key('agent_spend', agent), key('agent_spend_minutes', agent))
    for _, no in ipairs(redis.call('ZRANGE', orders_key, 0, -1)) do
      local o = redis.call('HMGET', key('order', no), 'state', 'created_at_ms', 'total_fee')
      if o[1] and counts_toward_budget(o[1]) then
        add_spend(agent, o[2], o[3])
        indexed = indexed + 1
      end
    end
  end
  redis.call('SET', key('spend_index'), '1')
  return indexed
end

local function dispatch(_, argv)
  P = argv[1]
  A = {}
  for i = 3, #argv do
    A[#A + 1] = argv[i]
  end
  local operation = ops[argv[2]]
  if not operation then
    return redis.error_reply('wxpay store: unknown operation')
  end
  return operation()
end

redis.register_function(FUNCTION_NAME, dispatch)
