"""The process's Redis client, whatever the topology: one function for every user of Redis
(the history cache, the throttles), so none of them knows whether Redis is one server or a
cluster.

- REDIS_CLUSTER unset: the Django cache's own connection (django-redis, with the history
  cache's short timeouts from settings), or None when the cache is not Redis (local memory).
- REDIS_CLUSTER=1: redis-py's `RedisCluster`, started from REDIS_URL (any node: it learns the
  others and the slot map, follows MOVED/ASK, and reloads the map after a connection error,
  which is how it finds the replica promoted after a master dies). It gets the same short
  timeouts and no retries of its own: a failed call falls back at once (chatengine.backoff).
  A multi-key command or script must name keys of one slot: the history cache's keys carry
  the session id as a hash tag (`{<session id>}`) for that.

`ClusterCache` is the Django cache over that client (throttle counts, /readyz): Django's own
Redis backend, handed the cluster client instead of a single server's.
"""

import functools

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis import Redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry


def client() -> Redis | RedisCluster | None:
    """The Redis client of this process (one per configuration, shared by every thread)."""
    if settings.REDIS_CLUSTER:
        return _cluster(settings.REDIS_URL, settings.CHATENGINE_CACHE_TIMEOUT_MS)
    from django_redis import get_redis_connection
    from django_redis.cache import RedisCache as DjangoRedisCache

    alias = settings.CHATENGINE_CACHE_ALIAS
    if isinstance(caches[alias], DjangoRedisCache):
        return get_redis_connection(alias)
    return None


@functools.lru_cache(maxsize=4)
def _cluster(url: str, timeout_ms: int) -> RedisCluster:
    return RedisCluster.from_url(
        url,
        socket_connect_timeout=timeout_ms / 1000,
        socket_timeout=timeout_ms / 1000,
        retry=Retry(NoBackoff(), 0),
    )


class _ClusterCacheClient(RedisCacheClient):
    """Django's Redis cache client on the cluster client. Keys of one call may lie in
    different slots, so the multi-key calls use redis-py's per-slot ("nonatomic") forms."""

    def get_client(self, key=None, *, write=False):
        return client()

    def get_many(self, keys):
        keys = list(keys)
        values = self.get_client().mget_nonatomic(keys)
        found = zip(keys, values, strict=True)
        return {k: self._serializer.loads(v) for k, v in found if v is not None}

    def set_many(self, data, timeout):
        cluster = self.get_client()
        cluster.mset_nonatomic({k: self._serializer.dumps(v) for k, v in data.items()})
        if timeout is not None:
            for key in data:
                cluster.expire(key, timeout)


class ClusterCache(RedisCache):
    """CACHES BACKEND for a Redis Cluster (settings set it when REDIS_CLUSTER=1)."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _ClusterCacheClient
