from django.contrib import admin
from django.urls import include, path

from chatengine import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("conversations.urls")),
    path("healthz", views.HealthzView.as_view(), name="healthz"),
    path("readyz", views.ReadyzView.as_view(), name="readyz"),
    path("metrics", views.MetricsView.as_view(), name="metrics"),
    path("api/v1/", include("llm.urls")),
]

handler400 = "chatengine.exceptions.bad_request"
handler403 = "chatengine.exceptions.permission_denied"
handler404 = "chatengine.exceptions.page_not_found"
handler500 = "chatengine.exceptions.server_error"
