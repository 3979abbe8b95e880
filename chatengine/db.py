"""Single-row reads for the hottest paths, without the ORM's per-query building.

Building a `.get()` costs about 0.5 ms of CPU here, several times the query itself; reading
the session row for the ownership check is part of every API request (bench/, "History
page"). The SQL is built once per model and filter, and each value goes through the same
converters the ORM applies (JSON decoding, SQLite's booleans and datetimes), so the instance
is the one `.get()` would return.
"""

import functools
from typing import Any, TypeVar

from django.db import connections, router
from django.db.models import Model

M = TypeVar("M", bound=Model)


def fetch_instance(model: type[M], *, where: tuple[str, ...], params: list[Any]) -> M | None:
    """The one `model` row whose fields in `where` equal `params` (in order), or None.

    `where` names model fields by attname (e.g. ("id", "user_id")); more than one match is
    a programming error, as with `.get()`, so filter on a unique key.
    """
    alias = router.db_for_read(model)
    connection = connections[alias]
    sql, attnames, converters, where_fields = _template(model, where, connection.vendor, alias)
    prepared = [
        f.get_db_prep_value(v, connection) for f, v in zip(where_fields, params, strict=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, prepared)
        rows = cursor.fetchmany(2)
    if not rows:
        return None
    if len(rows) > 1:
        raise model.MultipleObjectsReturned(f"fetch_instance({model.__name__}, {where})")
    values = list(rows[0])
    for index, convert, expression in converters:
        for fn in convert:
            values[index] = fn(values[index], expression, connection)
    return model.from_db(alias, attnames, values)


@functools.cache
def _template(model: type[Model], where: tuple[str, ...], vendor: str, alias: str):
    connection = connections[alias]
    quote = connection.ops.quote_name
    fields = model._meta.concrete_fields
    by_attname = {f.attname: f for f in fields}
    table = model._meta.db_table
    sql = "SELECT {} FROM {} WHERE {}".format(
        ", ".join(f"{quote(table)}.{quote(f.column)}" for f in fields),
        quote(table),
        " AND ".join(f"{quote(by_attname[name].column)} = %s" for name in where),
    )
    converters = []
    for index, field in enumerate(fields):
        column = field.get_col(table)
        convert = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if convert:
            converters.append((index, convert, column))
    where_fields = [by_attname[name] for name in where]
    return sql, [f.attname for f in fields], converters, where_fields
