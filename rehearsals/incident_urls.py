from django.urls import path

from . import incident_views as views

app_name = "incidents"
urlpatterns = [
    path("", views.incident_list, name="list"),
    path("incidents/new/", views.incident_create, name="create"),
    path("incidents/<int:pk>/", views.incident_detail, name="detail"),
    path("incidents/<int:pk>/close/", views.incident_close, name="close"),
    path("incidents/<int:pk>/rehearsals/new/", views.rehearsal_create, name="rehearsal_create"),
]
