import os
import sys

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatengine.settings")

application = get_wsgi_application()

from llm.apps import warn_if_echo_provider  # noqa: E402  (needs the apps loaded)

warn_if_echo_provider()

if "gunicorn" in sys.modules:
    # gunicorn serves us: its own refusals (414, 431, bad framing) answer the envelope too.
    from chatengine import server_errors

    server_errors.install_in_gunicorn()
