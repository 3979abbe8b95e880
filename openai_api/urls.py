from django.urls import path

from chatengine.routing import catch_all
from openai_api import views
from openai_api.errors import NotFoundView

# No trailing slashes: the paths the openai SDK calls.
urlpatterns = [
    path("conversations", views.ConversationCreateView.as_view(), name="openai-conversations"),
    path(
        "conversations/<str:conversation_id>",
        views.ConversationDetailView.as_view(),
        name="openai-conversation",
    ),
    path(
        "conversations/<str:conversation_id>/items",
        views.ItemListCreateView.as_view(),
        name="openai-items",
    ),
    path(
        "conversations/<str:conversation_id>/items/<str:item_id>",
        views.ItemDetailView.as_view(),
        name="openai-item",
    ),
    path("responses", views.ResponseCreateView.as_view(), name="openai-responses"),
    path("responses/input_tokens", views.InputTokensView.as_view(), name="openai-input-tokens"),
    path("responses/compact", views.ResponseCompactView.as_view(), name="openai-responses-compact"),
    path("responses/<str:response_id>", views.ResponseDetailView.as_view(), name="openai-response"),
    path(
        "responses/<str:response_id>/input_items",
        views.ResponseInputItemsView.as_view(),
        name="openai-response-input-items",
    ),
    catch_all(NotFoundView.as_view(), name="openai-not-found"),
]
