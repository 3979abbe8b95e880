from django.urls import path

from llm import views

urlpatterns = [
    path("sessions/<str:session_id>/reply/", views.ReplyView.as_view(), name="session-reply"),
    path(
        "sessions/<str:session_id>/reply/stream/",
        views.ReplyStreamView.as_view(),
        name="session-reply-stream",
    ),
    path(
        "sessions/<str:session_id>/messages/<int:seq>/regenerate/",
        views.RegenerateView.as_view(),
        name="message-regenerate",
    ),
    path(
        "sessions/<str:session_id>/messages/<int:seq>/regenerate/stream/",
        views.RegenerateStreamView.as_view(),
        name="message-regenerate-stream",
    ),
    path(
        "sessions/<str:session_id>/messages/<int:seq>/edit/",
        views.EditView.as_view(),
        name="message-edit",
    ),
    path(
        "sessions/<str:session_id>/context/",
        views.ContextPreviewView.as_view(),
        name="session-context",
    ),
]
