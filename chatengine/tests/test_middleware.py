"""How the middleware stack runs under ASGI."""

from unittest import mock

import asgiref.sync
import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient


def _hops_of_one_asgi_request(path: str) -> int:
    """Switches between the event loop and a worker thread while Django serves `path`."""
    hops = 0
    originals = {cls: cls.__call__ for cls in (asgiref.sync.SyncToAsync, asgiref.sync.AsyncToSync)}

    def counting(cls):
        def call(self, *args, **kwargs):
            nonlocal hops
            hops += 1
            return originals[cls](self, *args, **kwargs)

        return call

    async def fetch():
        return await AsyncClient().get(path)

    with (
        mock.patch.object(asgiref.sync.SyncToAsync, "__call__", counting(asgiref.sync.SyncToAsync)),
        mock.patch.object(asgiref.sync.AsyncToSync, "__call__", counting(asgiref.sync.AsyncToSync)),
    ):
        response = async_to_sync(fetch)()
    assert response.status_code == 200
    return hops - 1  # the test's own async_to_sync


@pytest.mark.django_db
def test_under_asgi_the_middleware_stack_runs_in_one_thread_not_hopping_per_middleware():
    # Left: entering the stack's thread and coming back to the loop to resolve the view, the
    # view and CSRF's process_view in that thread, and Django's request_started /
    # request_finished signals and response close. Without SyncStackMiddleware every
    # process_request and process_response of the MiddlewareMixin middlewares was one more
    # hop (19 in all), each a thread wake-up.
    assert _hops_of_one_asgi_request("/healthz") <= 8
