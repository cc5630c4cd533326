from django.urls import path

from .consumers import RehearsalConsumer

websocket_urlpatterns = [
    path("ws/rehearsals/<int:pk>/", RehearsalConsumer.as_asgi()),
]
