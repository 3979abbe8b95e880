"""The app's URLs plus floor views: what the same server, auth and DRF cost with no work."""

import os
from pathlib import Path

from django.http import HttpResponse
from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from chatengine.urls import urlpatterns as app_urlpatterns


class ConstantFloorView(APIView):
    """Same server, same token auth, same DRF rendering; no database work beyond auth."""

    def get(self, request):
        return Response({"ok": True})


class MemoryPageFloorView(APIView):
    """The same history page's JSON bytes from memory (read once from BENCH_FLOOR_PAGE): the
    floor for the history endpoint, with the same server, auth and throttling."""

    _page: bytes | None = None

    def get(self, request):
        if MemoryPageFloorView._page is None:
            MemoryPageFloorView._page = Path(os.environ["BENCH_FLOOR_PAGE"]).read_bytes()
        return HttpResponse(MemoryPageFloorView._page, content_type="application/json")


urlpatterns = [
    path("bench/floor/constant/", ConstantFloorView.as_view()),
    path("bench/floor/page/", MemoryPageFloorView.as_view()),
    path("", include(app_urlpatterns)),
]
