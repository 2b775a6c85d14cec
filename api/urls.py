from django.urls import path

from api import views_system

urlpatterns = [
    path("health", views_system.HealthView.as_view(), name="health"),
]
