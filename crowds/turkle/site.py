"""Embedded Django settings and URLconf for a local Turkle 3.1.0 server.

The Turkle wheel ships no settings module (docs/platforms.md §1.1), so this module is both the
``DJANGO_SETTINGS_MODULE`` and the ``ROOT_URLCONF`` of the server that :mod:`crowds.turkle.server`
starts. Everything it needs comes from the environment of the server process:

``CAGE_EVAL_TURKLE_HOME``
    the server home directory (required): SQLite database, ``secret_key`` (mode 0600, written by
    :func:`crowds.turkle.server.init_home`), images served to workers under ``/cage-images/``.
``CAGE_EVAL_TURKLE_ALLOWED_HOSTS``
    extra host names, comma separated, for a server bound to a non-loopback address (optional).
``CAGE_EVAL_TURKLE_INSTANCE``
    a random value the starting process chose; ``/cage-eval/instance/`` answers it, so the starter
    knows the server answering on the port is the one it started (not something already there).

Security choices, each one a known gap in a naive embedding (docs/platforms.md §1.2 and §3, item 10):

- the REST API requires an authenticated **staff** user (token or session); Turkle's own site only
  asks for any authenticated user, which would let every worker account read results and create users;
- ``TURKLE_AUTO_ACCEPT_DEFAULT`` is set (Turkle has no default and a task page fails without it);
- ``X_FRAME_OPTIONS = 'SAMEORIGIN'`` because Turkle shows its own task pages in an iframe;
- ``DEBUG`` is off (no tracebacks shown to workers); static files are served by
  ``runserver --insecure``, which is meant for exactly this local use;
- the secret key is generated per server home and never printed;
- ``Content-Length`` is corrected to count bytes (Turkle's CSV downloads count characters).
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

HOME_ENV = "CAGE_EVAL_TURKLE_HOME"
ALLOWED_HOSTS_ENV = "CAGE_EVAL_TURKLE_ALLOWED_HOSTS"
INSTANCE_ENV = "CAGE_EVAL_TURKLE_INSTANCE"
PROXY_ENV = "CAGE_EVAL_TURKLE_PROXY"
#: Answers this server's instance value (see the module docstring).
INSTANCE_PATH = "cage-eval/instance/"
SECRET_KEY_FILE = "secret_key"
DATABASE_FILE = "turkle.sqlite3"
IMAGES_DIR = "images"
#: URL prefix under which images copied into ``HOME/images`` are served to logged-in users.
IMAGES_URL_PREFIX = "/cage-images/"


def _home() -> Path:
    value = os.environ.get(HOME_ENV, "")
    if not value:
        raise ImproperlyConfigured(f"{HOME_ENV} is not set; start the server with crowds.turkle.server")
    return Path(value).resolve()


def _secret_key(home: Path) -> str:
    path = home / SECRET_KEY_FILE
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"{path}: unreadable ({exc.strerror}); "
                                   "initialise the home with crowds.turkle.server.init_home") from None
    if len(key) < 50:
        raise ImproperlyConfigured(f"{path}: secret key too short; delete it and start again")
    return key


HOME = _home()
SECRET_KEY = _secret_key(HOME)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"] + [
    h.strip() for h in os.environ.get(ALLOWED_HOSTS_ENV, "").split(",") if h.strip()
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(HOME / DATABASE_FILE),
        # Turkle catches "database is locked" and asks the worker to retry; wait a little first.
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # turkle before admin: its registration templates (login page) must win.
    "turkle",
    "django.contrib.admin",
    "rest_framework",
    "rest_framework.authtoken",
    "turkle.api",
    "guardian",
    "djaa_list_filter2",
]
AUTHENTICATION_BACKENDS = (
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
)
MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "crowds.turkle.site.content_length_in_bytes",
    "crowds.turkle.gateway.middleware",
)
X_FRAME_OPTIONS = "SAMEORIGIN"
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
ROOT_URLCONF = "crowds.turkle.site"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.contrib.auth.context_processors.auth",
                "django.template.context_processors.request",
                "django.contrib.messages.context_processors.messages",
                "turkle.utils.turkle_vars",
            ]
        },
    }
]
REST_FRAMEWORK = {
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    # Without this block DRF's AllowAny applies and the API is open to anyone who can connect.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
}
STATIC_URL = "/static/"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "index"
LOGOUT_REDIRECT_URL = "index"

#: Behind an HTTPS reverse proxy (``turkle serve --behind-https-proxy``): trust its
#: X-Forwarded-Proto for the scheme, send cookies only over HTTPS, and accept form posts whose
#: Origin is one of the public host names.
CAGE_EVAL_BEHIND_PROXY = os.environ.get(PROXY_ENV, "") == "1"
if CAGE_EVAL_BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    CSRF_TRUSTED_ORIGINS = [f"https://{h}" for h in ALLOWED_HOSTS if not h.startswith("[")]

TURKLE_SITE_NAME = "Turkle (cage-eval)"
TURKLE_AUTO_ACCEPT_DEFAULT = True
TURKLE_EMAIL_ENABLED = False
TURKLE_ANONYMOUS_TASKS = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["console"], "level": "INFO"}},
}


def content_length_in_bytes(get_response):
    """Middleware: make ``Content-Length`` count bytes.

    Turkle 3.1.0's results and input downloads set it to the number of *characters*, so any
    non-ASCII text (a username, an answer) makes clients stop reading early.
    """

    def middleware(request):
        response = get_response(request)
        if response.has_header("Content-Length") and not response.streaming:
            response["Content-Length"] = str(len(response.content))
        return response

    return middleware


def _instance(request):
    """The value the starting process gave this server (plain text, no secret)."""
    from django.http import HttpResponse

    return HttpResponse(os.environ.get(INSTANCE_ENV, ""), content_type="text/plain")


def _urlpatterns() -> list:
    from django.contrib import admin
    from django.contrib.auth.decorators import login_required
    from django.urls import include, path, re_path
    from django.views.static import serve

    from crowds.turkle import gateway as turkle_gateway

    prefix = IMAGES_URL_PREFIX.strip("/")
    return [
        path(INSTANCE_PATH, _instance, name="cage_eval_instance"),
        *turkle_gateway.urlpatterns(),
        path("admin/", admin.site.urls),
        path("", include("django.contrib.auth.urls")),
        path("", include("turkle.urls")),
        path("api/", include("turkle.api.urls")),
        re_path(
            rf"^{prefix}/(?P<path>[A-Za-z0-9_.-]+)$",
            login_required(serve),
            {"document_root": str(HOME / IMAGES_DIR)},
            name="cage_images",
        ),
    ]


def __getattr__(name: str):
    # This module is also the URLconf. Django imports settings before the app registry is ready,
    # and the URL patterns import the admin, so they are built on first access (PEP 562) instead
    # of at import time.
    if name == "urlpatterns":
        patterns = _urlpatterns()
        globals()["urlpatterns"] = patterns
        return patterns
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
