from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from understudy.api.errors import not_found

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(template_name="login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/", include("accounts.urls")),
    path("api/v1/", include("understudy.api.urls")),
    path("rehearsals/", include("rehearsals.urls")),
    path("reports/", include("reports.urls")),
    path("runbooks/", include("runbooks.urls")),
    path("", include("rehearsals.incident_urls")),
]

# A path nobody serves: JSON under /api/, the usual page elsewhere.
handler404 = not_found
