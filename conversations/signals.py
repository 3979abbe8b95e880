"""Drop a session's cached tail once a change to its stored messages has committed.

The change itself already made the tail stale: whatever path it took (a service, the admin,
a queryset update, a shell), it moved the session's history stamp in the same transaction
(conversations/models.py, MessageQuerySet). Dropping the tail here only frees it early; if
Redis is unreachable at that moment, readers still rebuild it because the stamp no longer
matches.
"""

from functools import partial

from django.db import transaction
from django.dispatch import receiver

from conversations import cache as history_cache
from conversations.models import history_changed


@receiver(history_changed, dispatch_uid="conversations.history_changed")
def drop_cached_tails(sender, session_ids, using, **kwargs) -> None:
    for session_id in session_ids:
        transaction.on_commit(partial(history_cache.invalidate, session_id=session_id), using=using)
