"""OpenAPI details: the token security scheme and the error responses every operation has."""

from http import HTTPStatus

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse

from api.serializers import ErrorSerializer


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "api.auth.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token from `trellis token create`, sent as "
            "`Authorization: Bearer <key>` or `Authorization: Token <key>`.",
        }


class TrellisAutoSchema(AutoSchema):
    """Adds the `{"error","code","details"}` responses an operation can give."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        codes = [400, 404, 429, 500]
        if not getattr(self.view, "public", False):
            codes += [401, 403]
        if self.method in ("POST", "PUT", "PATCH"):
            codes += [413, 415]
        codes += getattr(self.view, "error_codes", {}).get(self.method, [])
        for code in sorted(codes):
            if str(code) not in responses:
                error = OpenApiResponse(ErrorSerializer, description=HTTPStatus(code).phrase)
                responses[str(code)] = self._get_response_for_code(
                    error, str(code), direction=direction
                )
        return responses
