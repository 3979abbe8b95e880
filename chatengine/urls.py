from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("conversations.urls")),
    path("api/v1/", include("llm.urls")),
]

handler400 = "chatengine.exceptions.bad_request"
handler403 = "chatengine.exceptions.permission_denied"
handler404 = "chatengine.exceptions.page_not_found"
handler500 = "chatengine.exceptions.server_error"
