"""Which paths are the API, and the rule that every API route answers either spelling.

Clients drop or add a trailing slash. Django's answer, APPEND_SLASH, is a 301 to the slashed
URL: `requests` and `urllib` follow it as a GET, report success, and a POST or PATCH is lost.
So every route under API_PREFIXES matches with and without its trailing slash, and is never
redirected; the URL patterns, `reverse()` and the OpenAPI document keep one spelling.
"""

from django.urls import URLPattern, URLResolver, re_path
from django.urls.exceptions import Resolver404
from django.urls.resolvers import RoutePattern

# Path prefixes (after the leading "/") that are the API: answered with the error envelope in
# every mode, and matched with or without a trailing slash.
API_PREFIXES = ("api/", "v1/")


def is_api_path(path: str) -> bool:
    """`path` as Django sees it (`request.path_info`, leading slash) is under the API."""
    return path.lstrip("/").startswith(API_PREFIXES)


# The names of catch-all routes (`catch_all`): they answer only when neither spelling of a
# path matches a real route.
_CATCH_ALL_NAMES: set[str] = set()


def catch_all(view, *, name: str) -> URLPattern:
    """A route for every path of its prefix that no other route serves (a 404 of its own)."""
    _CATCH_ALL_NAMES.add(name)
    return re_path(r"^.*$", view, name=name)


class EitherSlashResolver(URLResolver):
    """Resolves a path exactly as written, else with its trailing slash added or removed.

    The exact spelling is tried first over all the routes, so a route never shadows another
    that matches the path as written; a catch-all route answers only when the other spelling
    matches no real route either.
    """

    def resolve(self, path):
        try:
            exact = super().resolve(path)
        except Resolver404 as exact_miss:
            exact, miss = None, exact_miss
        if exact is not None and exact.url_name not in _CATCH_ALL_NAMES:
            return exact
        other = path[:-1] if path.endswith("/") else f"{path}/"
        try:
            found = super().resolve(other)
        except Resolver404:
            found = None
        if found is not None and found.url_name not in _CATCH_ALL_NAMES:
            return found
        if exact is not None:
            return exact
        raise miss


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
