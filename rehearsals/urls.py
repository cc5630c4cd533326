from django.urls import path

from . import views

app_name = "rehearsals"
urlpatterns = [
    path("hypervisors/", views.hypervisor_list, name="hypervisors"),
    path("hypervisors/<int:pk>/scan/", views.hypervisor_scan, name="hypervisor_scan"),
    path("hypervisors/<int:pk>/destroy-leftover/", views.hypervisor_destroy_leftover, name="hypervisor_destroy"),
    path("<int:pk>/", views.rehearsal_detail, name="detail"),
    path("<int:pk>/<str:action>/", views.rehearsal_action, name="action"),
]
