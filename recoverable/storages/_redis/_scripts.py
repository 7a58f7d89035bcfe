"""The Lua scripts of the Redis storage client: each one atomic on the server, each touching one hash slot.

A script answers with a status first: 1 done, 0 a condition failed (then the record's current version,
empty when there is none), -1 the store does not exist (it was dropped).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from recoverable.storages._redis._dependency import redis_exceptions

if TYPE_CHECKING:
    from collections.abc import Sequence

    from recoverable.storages._redis._dependency import redis_asyncio

__all__ = [
    "COPY",
    "DELETE",
    "GET",
    "LIST",
    "PURGE_BATCH",
    "RECORD_EXISTS",
    "REGISTER",
    "SET",
    "TOUCH",
    "UNREGISTER",
    "Script",
]

STORE_GONE = -1
CONFLICT = 0
DONE = 1


class Script:
    """A Lua script run by its SHA1, loaded into the server's script cache on the first miss."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(
        self,
        client: redis_asyncio.Redis | redis_asyncio.RedisCluster,
        keys: Sequence[bytes],
        args: Sequence[bytes | str | int],
    ) -> Any:
        """Run the script with `keys` (all of one hash slot) and `args`; return its answer."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except redis_exceptions.NoScriptError:
            # EVAL caches the script too, so the next EVALSHA finds it (on that node, for a cluster).
            return await client.eval(self.source, len(keys), *keys, *args)


REGISTER = Script(
    """
-- KEYS: the name or alias index, the stores hash. ARGV: the label, a new store id, its registry entry.
-- Returns the id of the store the label names, registering the new one when it names none.
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id then return id end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return ARGV[2]
"""
)

UNREGISTER = Script(
    """
-- KEYS: the stores hash, the names index, the aliases index, the dropped set. ARGV: store id, name or '',
-- alias or ''. The id goes into the dropped set until all the store's keys are deleted.
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
if ARGV[2] ~= '' and redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[3], ARGV[3]) == ARGV[1] then redis.call('HDEL', KEYS[3], ARGV[3]) end
return 1
"""
)

TOUCH = Script(
    """
-- KEYS: meta. ARGV: now. Records an access; tells whether the store exists.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], 'accessed_at', ARGV[1])
return 1
"""
)

GET = Script(
    """
-- KEYS: meta, record. Returns {1, value, content type, version}, {0} when there is no record, {-1}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local r = redis.call('HMGET', KEYS[2], 'v', 'ct', 'ver')
if not r[3] then return {0} end
return {1, r[1], r[2], r[3]}
"""
)

RECORD_EXISTS = Script(
    """
-- KEYS: meta, record. Returns {1, 1 or 0}, or {-1}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
return {1, redis.call('EXISTS', KEYS[2])}
"""
)

SET = Script(
    """
-- KEYS: meta, keys, record. ARGV: key, value, content type, if_absent ('1'/'0'),
-- check the version ('1'/'0'), the expected version, now.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local current = redis.call('HGET', KEYS[3], 'ver')
if ARGV[4] == '1' and current then return {0, current} end
if ARGV[5] == '1' and current ~= ARGV[6] then return {0, current or ''} end
local version = redis.call('HINCRBY', KEYS[1], 'counter', 1)
redis.call('HSET', KEYS[3], 'v', ARGV[2], 'ct', ARGV[3], 'ver', version)
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('HSET', KEYS[1], 'modified_at', ARGV[7])
return {1, tostring(version)}
"""
)

COPY = Script(
    """
-- KEYS: meta, keys, source record, destination record. ARGV: destination key, check the version ('1'/'0'),
-- the expected version, now. Returns {1, new version}, {1} when there is no source record (nothing written),
-- {0, the source's current version}, or {-1}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local current = redis.call('HGET', KEYS[3], 'ver')
if ARGV[2] == '1' and current ~= ARGV[3] then return {0, current or ''} end
if not current then return {1} end
local version = redis.call('HINCRBY', KEYS[1], 'counter', 1)
if KEYS[3] ~= KEYS[4] then
  -- COPY duplicates the record inside the server, and is what reaches the AOF and the replicas: not the value.
  local copied = redis.pcall('COPY', KEYS[3], KEYS[4], 'REPLACE')
  if type(copied) == 'table' and copied.err then
    -- A server older than 6.2 has no COPY: the fields go through the script instead.
    local r = redis.call('HMGET', KEYS[3], 'v', 'ct')
    redis.call('DEL', KEYS[4])
    redis.call('HSET', KEYS[4], 'v', r[1], 'ct', r[2])
  end
end
redis.call('HSET', KEYS[4], 'ver', version)
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('HSET', KEYS[1], 'modified_at', ARGV[4])
return {1, tostring(version)}
"""
)

DELETE = Script(
    """
-- KEYS: meta, keys, record. ARGV: key, check the version ('1'/'0'), the expected version, now.
-- Returns {1, 1 or 0 (whether there was a record)}, {0, current version}, or {-1}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local current = redis.call('HGET', KEYS[3], 'ver')
if ARGV[2] == '1' and current ~= ARGV[3] then return {0, current or ''} end
if not current then return {1, 0} end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'modified_at', ARGV[4])
return {1, 1}
"""
)

LIST = Script(
    """
-- KEYS: meta, keys. ARGV: ZRANGEBYLEX min, max, count, the record key prefix.
-- Returns {1, key, size, key, size, ...} or {-1}. The record hashes are read by a name built here:
-- they share the hash tag of KEYS, so they are in the same slot.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local keys = redis.call('ZRANGEBYLEX', KEYS[2], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {1}
for _, k in ipairs(keys) do
  out[#out + 1] = k
  out[#out + 1] = redis.call('HSTRLEN', ARGV[4] .. k, 'v')
end
return out
"""
)

PURGE_BATCH = Script(
    """
-- KEYS: meta, keys. ARGV: the record key prefix, batch size, now, 'purge' or 'drop'.
-- Deletes up to a batch of records; returns how many, or -1 when purging a store that does not exist.
local purge = ARGV[4] == 'purge'
if purge and redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local keys = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)
for _, k in ipairs(keys) do redis.call('DEL', ARGV[1] .. k) end
if #keys > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, #keys - 1) end
if purge then redis.call('HSET', KEYS[1], 'modified_at', ARGV[3]) end
return #keys
"""
)
