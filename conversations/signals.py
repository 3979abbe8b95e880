"""Keep the history cache provably fresh when a message changes outside `append_message`.

An edit or delete of a Message (admin, shell, a future service) touches its session's
`updated_at` in the same transaction, so the session-row stamp every cached tail is checked
against changes even if the invalidation below never reaches Redis; the invalidation itself
just frees the stale tail early. Cost: with a post_delete receiver Django can no longer
fast-delete a session's messages, so deleting a session loads its messages to send the
signals (the receiver ignores them: the session row is gone, so nothing can read its tail).
Queryset `.update()` on messages sends no signal and is not allowed on history.
"""

from functools import partial

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from conversations import cache as history_cache
from conversations.models import ChatSession, Message


def _touch_and_invalidate(session_id) -> None:
    ChatSession.objects.filter(pk=session_id).update(updated_at=timezone.now())
    transaction.on_commit(partial(history_cache.invalidate, session_id=session_id))


@receiver(post_save, sender=Message, dispatch_uid="conversations.message_edited")
def message_edited(sender, instance: Message, created: bool, raw: bool = False, **kwargs) -> None:
    if created or raw:
        return  # appends keep the tail current themselves (write-through in append_message)
    _touch_and_invalidate(instance.session_id)


@receiver(post_delete, sender=Message, dispatch_uid="conversations.message_deleted")
def message_deleted(sender, instance: Message, origin=None, **kwargs) -> None:
    if isinstance(origin, ChatSession) or getattr(origin, "model", None) is ChatSession:
        return  # the whole session is going (one or a queryset): nothing can read its tail
    _touch_and_invalidate(instance.session_id)
