import gc
import os

from django.core.signals import request_started
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from config.connections import close_dead_connections  # noqa: E402
from config.framing import RequestFraming  # noqa: E402

application = RequestFraming(get_wsgi_application())

request_started.connect(close_dead_connections)

# `trellis serve` runs uWSGI, which imports this module once, in its master process,
# and the web workers are forked from it. Import now what the first request would (the
# URLconf with every view and serializer) and keep the collector off those objects, so
# the workers share these pages instead of each building its own copy.
from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns  # noqa: B018
gc.freeze()
