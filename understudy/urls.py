from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(template_name="login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/reports/", include("reports.api_urls")),
    path("api/", include("rehearsals.api_urls")),
    path("rehearsals/", include("rehearsals.urls")),
    path("reports/", include("reports.urls")),
    path("", include("rehearsals.incident_urls")),
]
