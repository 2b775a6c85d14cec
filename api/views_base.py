"""What every /api/v1 view shares: JSON bodies, the schema class and parsing helpers."""

from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from api.parsers import LimitedJSONParser
from api.schema import TrellisAutoSchema


class ApiView(APIView):
    parser_classes = [LimitedJSONParser]
    schema = TrellisAutoSchema()


class ApiListView(ListAPIView):
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
