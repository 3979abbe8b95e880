from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from chatengine import views
from chatengine.routing import either_slash

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("conversations.urls")),
    path("healthz", views.HealthzView.as_view(), name="healthz"),
    path("readyz", views.ReadyzView.as_view(), name="readyz"),
    path("metrics", views.MetricsView.as_view(), name="metrics"),
    path("api/v1/", include("llm.urls")),
    path("api/v1/", include("accounts.urls")),
    path("api/v1/", include("accounting.urls")),
    path("v1/", include("openai_api.urls")),
    # API documentation (public): the OpenAPI schema, Swagger UI and Redoc.
    path("api/schema/", SpectacularAPIView.as_view(), name="openapi-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="openapi-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="openapi-schema"), name="api-redoc"),
]
# Last: every route above (and in the modules it includes) under an API prefix answers with
# and without its trailing slash, never with a redirect (chatengine/routing.py).
urlpatterns = either_slash(urlpatterns)

handler400 = "chatengine.exceptions.bad_request"
handler403 = "chatengine.exceptions.permission_denied"
handler404 = "chatengine.exceptions.page_not_found"
handler500 = "chatengine.exceptions.server_error"
