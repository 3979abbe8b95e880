from django.urls import path

from accounts import views

# Token ids are matched as plain strings: the selector answers 404 for a non-UUID id, exactly
# as for a missing one.
urlpatterns = [
    path("tokens/", views.TokenListCreateView.as_view(), name="token-list"),
    path("tokens/<str:token_id>/", views.TokenDetailView.as_view(), name="token-detail"),
]
