from django.urls import path

from . import api

app_name = "api"
urlpatterns = [
    path("rehearsals/<int:pk>/", api.rehearsal, name="rehearsal"),
    path("rehearsals/<int:pk>/steps/<int:step_run>/events/", api.events, name="events"),
    path("rehearsals/<int:pk>/actions/<str:action>/", api.action, name="action"),
]
