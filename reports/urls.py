from django.urls import path

from . import views

app_name = "reports"
urlpatterns = [
    path("rehearsal/<int:pk>/", views.report_page, name="rehearsal"),
    path("rehearsal/<int:pk>/report.pdf", views.report_pdf, name="pdf"),
    path("rehearsal/<int:pk>/report.md", views.report_markdown, name="markdown"),
    path("rehearsal/<int:pk>/report.json", views.report_json, name="json"),
    path("rehearsal/<int:pk>/edit/", views.edit, name="edit"),
    path("rehearsal/<int:pk>/action-items/", views.add_item, name="add_item"),
    path("rehearsal/<int:pk>/action-items/<int:item>/", views.item_done, name="item_done"),
    path("rehearsal/<int:pk>/submit/", views.submit, name="submit"),
    path("rehearsal/<int:pk>/publish/", views.publish, name="publish"),
    path("rehearsal/<int:pk>/v<int:number>/", views.version_page, name="version"),
    path("rehearsal/<int:pk>/v<int:number>/report.pdf", views.version_pdf, name="version_pdf"),
    path("rehearsal/<int:pk>/v<int:number>/report.md", views.version_markdown, name="version_markdown"),
    path("rehearsal/<int:pk>/v<int:number>/reviewed/", views.reviewed, name="reviewed"),
    path("rehearsal/<int:pk>/gantt/", views.live_gantt, name="live_gantt"),
    path("steps/<int:step_run>/log.txt", views.step_log, name="log"),
    path("runbooks/<int:pk>/", views.runbook_page, name="runbook"),
]
