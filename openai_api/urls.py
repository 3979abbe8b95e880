from django.urls import path, re_path

from openai_api import views
from openai_api.errors import NotFoundView

# No trailing slashes: the paths the openai SDK calls.
urlpatterns = [
    path("conversations", views.ConversationCreateView.as_view()),
    path("conversations/<str:conversation_id>", views.ConversationDetailView.as_view()),
    path("conversations/<str:conversation_id>/items", views.ItemListCreateView.as_view()),
    path("conversations/<str:conversation_id>/items/<str:item_id>", views.ItemDetailView.as_view()),
    path("responses", views.ResponseCreateView.as_view()),
    path("responses/input_tokens", views.InputTokensView.as_view()),
    path("responses/<str:response_id>", views.ResponseDetailView.as_view()),
    path("responses/<str:response_id>/input_items", views.ResponseInputItemsView.as_view()),
    re_path(r"^.*$", NotFoundView.as_view()),
]
