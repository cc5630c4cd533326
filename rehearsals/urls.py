from django.urls import path

from . import pages, views

app_name = "rehearsals"
urlpatterns = [
    path("approvals/", pages.approvals_inbox, name="approvals"),
    path("approvals/<int:pk>/<str:decision>/", pages.approval_decide, name="approval_decide"),
    path("hosts/", pages.host_list, name="hosts"),
    path("hosts/new/", pages.host_onboard, name="host_onboard"),
    path("hypervisors/", views.hypervisor_list, name="hypervisors"),
    path("hypervisors/<int:pk>/scan/", views.hypervisor_scan, name="hypervisor_scan"),
    path("hypervisors/<int:pk>/destroy-leftover/", views.hypervisor_destroy_leftover, name="hypervisor_destroy"),
    path("<int:pk>/", views.rehearsal_detail, name="detail"),
    path("<int:pk>/<str:action>/", views.rehearsal_action, name="action"),
]
