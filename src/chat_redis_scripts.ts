/**
 * The Lua scripts of the Redis chat room. Each runs atomically in Redis, so
 * the checks and writes of one step (a name is free, then it is taken; an
 * instance is gone, then its members are freed) cannot interleave with
 * another instance's, and the announcement of a step is published in the
 * same step, in order with everything else on the room's channel.
 *
 * Every script gets the same keys and first arguments:
 * - `KEYS[1]` names: a hash from each member's name in lower case to
 *   `INSTANCE CONNECTION NAME` (who holds it, as it is written);
 * - `KEYS[2]` instances: a sorted set of the live instances, each scored by
 *   the time (Redis's clock, in ms) past which it is taken for dead;
 * - `KEYS[3]` guests: the counter of guest numbers;
 * - `KEYS[4]` epoch: set when the room is first made in this Redis, so that
 *   a Redis that restarted empty can be told from one that kept the room;
 * - `KEYS[5]` history: a list of the room's latest messages (at most
 *   `HISTORY_LENGTH`), for instances that were not listening when they
 *   were published; `KEYS[6]` serial: the number of the last one;
 * - `ARGV[1]` the room's channel, `ARGV[2]` the calling instance, `ARGV[3]`
 *   how long (ms) an instance lives without a heartbeat.
 *
 * Events are published as `{"n": NUMBER, "e": [[KIND, INSTANCE,
 * CONNECTION, ...], ...]}` (see `chat_redis_events.ts` for the kinds), each
 * message numbered one more than the last and kept in the history.
 *
 * @module
 */
import { HISTORY_LENGTH } from "./chat_redis_events.ts";

const PRELUDE = `
local names, instances, guests = KEYS[1], KEYS[2], KEYS[3]
local history, serial = KEYS[5], KEYS[6]
local channel, me, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function registered()
  local expires = redis.call('ZSCORE', instances, me)
  return expires and tonumber(expires) >= now()
end
local function entry(conn, name) return me .. ' ' .. conn .. ' ' .. name end
local function parse(value) return string.match(value, '^(%S+) (%d+) (%S+)$') end
local function publish(events)
  if #events == 0 then return end
  local message = cjson.encode({n = redis.call('INCR', serial), e = events})
  redis.call('RPUSH', history, message)
  redis.call('LTRIM', history, -${HISTORY_LENGTH}, -1)
  redis.call('PUBLISH', channel, message)
end
local function newGuest(conn)
  local name
  repeat
    name = 'guest' .. redis.call('INCR', guests)
  until redis.call('HSETNX', names, name, entry(conn, name)) == 1
  return name
end
`;

/**
 * A new member (`ARGV[4]` its connection): the next free guest name, or
 * nil when the instance is not registered (it must rejoin first).
 */
export const JOIN = PRELUDE + `
if not registered() then return false end
local name = newGuest(ARGV[4])
publish({{'join', me, tonumber(ARGV[4]), name}})
return name
`;

/**
 * `/nick`: member `ARGV[4]` now called `ARGV[5]` takes `ARGV[6]`. Returns 1
 * when renamed, 0 when another member holds the name, -1 when the instance
 * is not registered.
 */
export const RENAME = PRELUDE + `
if not registered() then return -1 end
local conn, current, wanted = ARGV[4], ARGV[5], ARGV[6]
local holder = redis.call('HGET', names, string.lower(wanted))
local mine = entry(conn, '')
if holder and string.sub(holder, 1, #mine) ~= mine then return 0 end
if redis.call('HGET', names, string.lower(current)) == entry(conn, current) then
  redis.call('HDEL', names, string.lower(current))
end
redis.call('HSET', names, string.lower(wanted), entry(conn, wanted))
publish({{'nick', me, tonumber(conn), current, wanted}})
return 1
`;

/**
 * Member `ARGV[4]` called `ARGV[5]` has gone; `ARGV[6]` is 1 when its own
 * instance is shutting down (its members are not told). Announced only if
 * the name was still its own: a member freed as lost was announced then.
 */
export const LEAVE = PRELUDE + `
local conn, name = ARGV[4], ARGV[5]
if redis.call('HGET', names, string.lower(name)) ~= entry(conn, name) then return 0 end
redis.call('HDEL', names, string.lower(name))
publish({{'left', me, tonumber(conn), name, tonumber(ARGV[6])}})
return 1
`;

/**
 * The heartbeat of an instance, and the reaping of the dead: extends the
 * caller's life, then frees the names of every instance past its time and
 * announces their members as lost. Returns -1 (and extends nothing) when
 * the caller is not registered: it must rejoin.
 */
export const TICK = PRELUDE + `
if not registered() then return -1 end
local t = now()
redis.call('ZADD', instances, t + ttl, me)
local dead = redis.call('ZRANGEBYSCORE', instances, '-inf', '(' .. t)
if #dead == 0 then return 0 end
local gone = {}
for _, id in ipairs(dead) do
  redis.call('ZREM', instances, id)
  gone[id] = true
end
local all, events = redis.call('HGETALL', names), {}
for i = 1, #all, 2 do
  local owner, conn, name = parse(all[i + 1])
  if gone[owner] then
    redis.call('HDEL', names, all[i])
    table.insert(events, {'lost', owner, tonumber(conn), name})
  end
end
publish(events)
return #dead
`;

/**
 * (Re)registers the instance: at start, and after Redis was out of reach or
 * the instance was taken for dead. `ARGV[4]` is the room's epoch as the
 * instance last saw it and `ARGV[5]` a fresh one, in case Redis lost the
 * room (restarted empty: then nobody has been told anything meanwhile);
 * `ARGV[6]` the number of the last message the instance heard; `ARGV[7]`
 * a count D, then D members that left while the room was out of reach
 * (connection, name, ...), then the instance's members now (connection,
 * name, ...).
 *
 * The departed are announced as left unless their instance was reaped
 * meanwhile (they were announced then). A member missing from the room is
 * announced as back if it was reaped; one whose name another member took
 * meanwhile gets a new guest name (`moved`). Names the instance holds for
 * no member are freed and announced as left. The guest counter moves past
 * the instance's guest names. Returns the epoch; the number of the last
 * message before this script's own; the moved members (connection, new
 * name, ...); and the messages of the history the instance missed (none
 * when it joins for the first time, all of a room Redis made again).
 */
export const REJOIN = PRELUDE + `
local epoch = redis.call('GET', KEYS[4])
local restarted = epoch ~= ARGV[4]
if not epoch then
  epoch = ARGV[5]
  redis.call('SET', KEYS[4], epoch)
end
redis.call('ZADD', instances, now() + ttl, me)
local last = tonumber(redis.call('GET', serial) or '0')
local from = last
if ARGV[4] ~= '' then from = restarted and 0 or tonumber(ARGV[6]) end
-- Message number m is at index m - (last - kept + 1).
local kept = redis.call('LLEN', history)
local missed = redis.call('LRANGE', history, math.max(from - last + kept, 0), -1)
local events, moved, held = {}, {}, {}
local departed = tonumber(ARGV[7])
local first = 8 + 2 * departed
local highest = tonumber(redis.call('GET', guests) or '0')
for i = first, #ARGV, 2 do
  held[entry(ARGV[i], ARGV[i + 1])] = true
  local number = tonumber(string.match(ARGV[i + 1], '^guest(%d+)$') or '0')
  if number > highest then highest = number end
end
redis.call('SET', guests, highest)
for i = 8, first - 1, 2 do
  local conn, name = ARGV[i], ARGV[i + 1]
  local ours = redis.call('HGET', names, string.lower(name)) == entry(conn, name)
  if ours then redis.call('HDEL', names, string.lower(name)) end
  if ours or restarted then
    table.insert(events, {'left', me, tonumber(conn), name, 0})
  end
end
local all = redis.call('HGETALL', names)
for i = 1, #all, 2 do
  local owner, conn, name = parse(all[i + 1])
  if owner == me and not held[all[i + 1]] then
    redis.call('HDEL', names, all[i])
    table.insert(events, {'left', me, tonumber(conn), name, 0})
  end
end
for i = first, #ARGV, 2 do
  local conn, name = ARGV[i], ARGV[i + 1]
  local holder = redis.call('HGET', names, string.lower(name))
  if holder and holder ~= entry(conn, name) then
    local guest = newGuest(conn)
    table.insert(moved, conn)
    table.insert(moved, guest)
    table.insert(events, {'moved', me, tonumber(conn), name, guest, restarted and 1 or 0})
  elseif not holder then
    redis.call('HSET', names, string.lower(name), entry(conn, name))
    if not restarted then table.insert(events, {'back', me, tonumber(conn), name}) end
  end
end
publish(events)
return {epoch, last, moved, missed}
`;

/**
 * An instance leaves the room for good (it is shutting down): it is no
 * longer registered, and the names it still holds are freed and announced
 * as left (`ARGV[4]` is 1 when its own members are not to be told).
 */
export const DEPART = PRELUDE + `
redis.call('ZREM', instances, me)
local all, events = redis.call('HGETALL', names), {}
for i = 1, #all, 2 do
  local owner, conn, name = parse(all[i + 1])
  if owner == me then
    redis.call('HDEL', names, all[i])
    table.insert(events, {'left', me, tonumber(conn), name, tonumber(ARGV[4])})
  end
end
publish(events)
return #events
`;
