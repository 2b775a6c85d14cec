from django.contrib import admin
from django.urls import include, path, re_path

from api.errors import not_found

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("api.urls")),
    re_path(r"^api(/.*)?$", not_found),
]

# Errors under /api/ are JSON like every other API error; elsewhere Django's pages.
handler400 = "api.errors.handler400"
handler404 = "api.errors.handler404"
handler500 = "api.errors.handler500"
