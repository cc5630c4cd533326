from django.urls import path

from . import views

app_name = "runbooks"
urlpatterns = [
    path("", views.runbook_list, name="list"),
    path("steps/", views.runbook_steps, name="steps"),
    path("<int:pk>/", views.runbook_detail, name="detail"),
    path("<int:pk>/new-version/", views.runbook_new_version, name="new_version"),
    path("<int:pk>/compare/", views.runbook_compare, name="compare"),
    path("<int:pk>/steps/add/", views.step_add, name="step_add"),
    path("<int:pk>/steps/<int:step>/", views.step_edit, name="step_edit"),
    path("<int:pk>/steps/<int:step>/<str:change>/", views.step_change, name="step_change"),
]
