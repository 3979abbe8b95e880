from django.urls import path

from conversations import views

# Session ids are matched as plain strings: the selector answers 404 for a non-UUID id,
# exactly as for a missing one.
urlpatterns = [
    path("sessions/", views.SessionListCreateView.as_view(), name="session-list"),
    path("sessions/<str:session_id>/", views.SessionDetailView.as_view(), name="session-detail"),
    path(
        "sessions/<str:session_id>/messages/",
        views.MessageListCreateView.as_view(),
        name="message-list",
    ),
    path("search/", views.SearchView.as_view(), name="search"),
    path("sessions/<str:session_id>/fork/", views.ForkView.as_view(), name="session-fork"),
    path("sessions/<str:session_id>/forks/", views.ForkListView.as_view(), name="session-forks"),
    path(
        "sessions/<str:session_id>/messages/<int:seq>/versions/",
        views.MessageVersionListView.as_view(),
        name="message-versions",
    ),
    path(
        "sessions/<str:session_id>/messages/<int:seq>/",
        views.MessageDetailView.as_view(),
        name="message-detail",
    ),
    path(
        "sessions/<str:session_id>/summaries/",
        views.SummaryListView.as_view(),
        name="summary-list",
    ),
]
