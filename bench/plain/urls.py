"""The same paths as chatengine's, so one wrk script drives both."""

from django.urls import path

from bench.plain import views

urlpatterns = [
    path("bench/floor/constant/", views.NoopView.as_view()),
    path("api/v1/sessions/<uuid:session_id>/messages/", views.MessageListCreateView.as_view()),
]
