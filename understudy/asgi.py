"""ASGI entry point: Django over HTTP, the live step stream over WebSocket."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "understudy.settings")

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

# Static files are served by the app itself: a handful of small files, and the
# embedded default must work without a separate web server.
django_asgi_app = ASGIStaticFilesHandler(get_asgi_application())

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from rehearsals.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    # Only pages served from our own origins may open a socket (a WebSocket is not bound by CORS);
    # UNDERSTUDY_ALLOWED_ORIGINS never means "any".
    "websocket": OriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
                                 settings.UNDERSTUDY_ALLOWED_ORIGINS),
})
