"""What every /api/v1 view shares: JSON bodies, the schema class and parsing helpers."""

from rest_framework.exceptions import NotFound
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from api.parsers import LimitedJSONParser
from api.schema import TrellisAutoSchema

BODY_METHODS = ("POST", "PUT", "PATCH")


class Strict:
    """Once the caller is authenticated and allowed: ids in the URL that no object can have
    are 404, and a body is parsed even where the view reads none of it, so a malformed body
    or one of another content type is always refused (400, 415) and never acted upon."""

    parse_eagerly = True

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        for value in kwargs.values():
            if isinstance(value, str) and "\x00" in value:
                raise NotFound("no such object: ids never contain NUL characters")
        handles = hasattr(self, request.method.lower())  # else 405, whatever the body
        if self.parse_eagerly and request.method in BODY_METHODS and handles:
            request.data  # noqa: B018 - parsing raises ParseError or UnsupportedMediaType


class ApiView(Strict, APIView):
    parser_classes = [LimitedJSONParser]
    schema = TrellisAutoSchema()


class ApiListView(Strict, ListAPIView):
    parser_classes = [LimitedJSONParser]
    schema = TrellisAutoSchema()


def parse(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def query(request, serializer_class) -> dict:
    return parse(serializer_class, request.query_params)


def body(request, serializer_class) -> dict:
    return parse(serializer_class, request.data)


def respond(serializer_class, instance, status: int = 200, many: bool = False) -> Response:
    return Response(serializer_class(instance, many=many).data, status=status)
