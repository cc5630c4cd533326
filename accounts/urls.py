from django.urls import path

from . import views

app_name = "accounts"
urlpatterns = [
    path("api-tokens/", views.api_tokens, name="api_tokens"),
    path("api-tokens/<int:pk>/revoke/", views.revoke_api_token, name="api_token_revoke"),
]
