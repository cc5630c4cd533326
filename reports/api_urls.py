from django.urls import path

from . import api

app_name = "reports_api"
urlpatterns = [
    path("<int:pk>/", api.report, name="report"),
    path("<int:pk>/v<int:number>/", api.version, name="version"),
    path("<int:pk>/actions/<str:action>/", api.action, name="action"),
]
