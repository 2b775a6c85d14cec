"""The OpenAPI document and Swagger UI."""

import pytest
import yaml
from django.urls import get_resolver

pytestmark = pytest.mark.django_db


def test_schema_describes_every_endpoint(client):
    response = client.get("/api/v1/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    assert schema["components"]["securitySchemes"]["tokenAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["tokenAuth"]["description"],
    }
    documented = set(schema["paths"])
    api_urls = get_resolver().url_patterns[1].url_patterns
    routes = {
        "/api/v1/" + str(p.pattern).replace("<str:", "{").replace("<slug:", "{").replace(">", "}")
        for p in api_urls
        if "^" not in str(p.pattern) and not str(p.pattern).endswith("/")
    }
    assert routes == documented
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "200" in operation["responses"] or "201" in operation["responses"], (
                path,
                method,
            )
            assert "400" in operation["responses"], (path, method)
            if path != "/api/v1/health":
                assert {"tokenAuth": []} in operation["security"], (path, method)


def test_schema_as_json_and_swagger_ui(client):
    response = client.get("/api/v1/schema/?format=json")
    assert response.status_code == 200 and response.json()["info"]["title"] == "Trellis API"
    page = client.get("/api/v1/docs/")
    assert page.status_code == 200 and b"swagger" in page.content.lower()
