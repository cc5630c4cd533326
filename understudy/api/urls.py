"""``/api/v1/``: one router over the apps' viewsets, the OpenAPI schema and its docs page.

The router's routes are anchored (``…/$``), so a path it does not know falls through to what the project's URL
configuration lists after it; the step-run event and log endpoints are mounted before it, on their own."""
from django.contrib.auth.decorators import login_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from rehearsals.api import log as step_run_log
from rehearsals.api import views as rehearsals_api
from reports.api import views as reports_api

app_name = "api"


class Router(DefaultRouter):
    include_format_suffixes = False   # JSON only: no ".json" twins of every route


router = Router()
rehearsals_api.register(router)
reports_api.register(router)

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI from the package's own static files (drf-spectacular-sidecar), no CDN; for people: a browser
    # without a session is sent to the login page. (Not ReDoc: its page template loads web fonts from Google.)
    path("docs/", login_required(SpectacularSwaggerView.as_view(url_name="api:schema")), name="docs"),
    *step_run_log.urlpatterns(),   # before the router: step-runs/<id>/… below a step run is not the router's
    *router.urls,
]
