"""Which paths are the API, and the rule that every API route answers either spelling.

Clients drop or add a trailing slash. Django's answer, APPEND_SLASH, is a 301 to the slashed
URL: `requests` and `urllib` follow it as a GET, report success, and a POST or PATCH is lost.
So every route under API_PREFIXES matches with and without its trailing slash, and is never
redirected; the URL patterns, `reverse()` and the OpenAPI document keep one spelling.
"""

from django.urls import URLPattern, URLResolver
from django.urls.exceptions import Resolver404
from django.urls.resolvers import RoutePattern

# Path prefixes (after the leading "/") that are the API: answered with the error envelope in
# every mode, and matched with or without a trailing slash.
API_PREFIXES = ("api/", "v1/")


def is_api_path(path: str) -> bool:
    """`path` as Django sees it (`request.path_info`, leading slash) is under the API."""
    return path.lstrip("/").startswith(API_PREFIXES)


class EitherSlashResolver(URLResolver):
    """Resolves a path exactly as written, else with its trailing slash added or removed.

    The exact spelling is tried first over all the routes, so a route never shadows another
    that matches the path as written.
    """

    def resolve(self, path):
        try:
            return super().resolve(path)
        except Resolver404 as exact_miss:
            other = path[:-1] if path.endswith("/") else f"{path}/"
            try:
                return super().resolve(other)
            except Resolver404:
                raise exact_miss from None


def either_slash(urlpatterns: list) -> list:
    """`urlpatterns` with every entry under API_PREFIXES gathered into one EitherSlashResolver
    (where the first of them stood). Applied to the root URLconf as its last step, so a route
    added to it, or to any module it includes under an API prefix, is covered."""
    api, rest, position = [], [], None
    for entry in urlpatterns:
        if _route_of(entry).startswith(API_PREFIXES):
            position = len(rest) if position is None else position
            api.append(entry)
        else:
            rest.append(entry)
    if not api:
        return rest
    rest.insert(position, EitherSlashResolver(RoutePattern(""), api))
    return rest


def _route_of(entry: URLPattern | URLResolver) -> str:
    return str(entry.pattern).removeprefix("^")
