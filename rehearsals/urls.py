from django.urls import path

from . import views

app_name = "rehearsals"
urlpatterns = [
    path("<int:pk>/", views.rehearsal_detail, name="detail"),
    path("<int:pk>/<str:action>/", views.rehearsal_action, name="action"),
]
