"""Input validation shared by the API views: a serializer's validated data, or the 400."""

from rest_framework.request import Request


def validated(serializer_class, data) -> dict:
    """`data` validated by `serializer_class`; invalid input raises (rendered as the envelope)."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def validated_query(serializer_class, request: Request) -> dict:
    """The query string validated by `serializer_class`."""
    # A plain dict, not the QueryDict: DRF reads form-style input leniently and would take an
    # empty value (`?order=`, `?limit=`) as "absent", where the documented schema (and so
    # every client generator) says it is invalid. Found by the contract test.
    return validated(serializer_class, request.query_params.dict())
