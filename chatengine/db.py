"""Row reads for the hottest paths, without the ORM's per-query building.

Building a `.get()` or a filtered list costs 0.5-1 ms of CPU here, several times the query
itself; the session row is read for the ownership check on every API request, and a long
session's system messages before every reply (bench/, "History page", "Context build"). The
SQL is built once per model and filter, and each value goes through the converters the ORM
applies (JSON decoding, SQLite's booleans and datetimes), so the instances are the ones the
ORM would return.
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
    rows = _fetch(model, where=where, params=params, order_by=(), limit=2)
    if len(rows) > 1:
        raise model.MultipleObjectsReturned(f"fetch_instance({model.__name__}, {where})")
    return rows[0] if rows else None


def fetch_instances(
    model: type[M],
    *,
    where: tuple[str, ...],
    params: list[Any],
    order_by: tuple[str, ...],
    limit: int | None = None,
) -> list[M]:
    """The `model` rows matching `where`, ordered by `order_by`, at most `limit` of them.

    `where` entries are attnames compared for equality, or with a lookup as in the ORM:
    "seq__lt", "seq__lte", "seq__gt", "seq__gte". `order_by` entries are attnames, "-" first
    for descending.
    """
    return _fetch(model, where=where, params=params, order_by=order_by, limit=limit)


def _fetch(model, *, where, params, order_by, limit) -> list:
    alias = router.db_for_read(model)
    connection = connections[alias]
    sql, attnames, converters, where_fields = _template(
        model, where, order_by, limit is not None, connection.vendor, alias
    )
    prepared = [
        f.get_db_prep_value(v, connection) for f, v in zip(where_fields, params, strict=True)
    ]
    if limit is not None:
        prepared.append(limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, prepared)
        rows = cursor.fetchall()
    instances = []
    for row in rows:
        values = list(row)
        for index, convert, expression in converters:
            for fn in convert:
                values[index] = fn(values[index], expression, connection)
        instances.append(model.from_db(alias, attnames, values))
    return instances


_OPERATORS = {"": "=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


@functools.cache
def _template(model, where, order_by, limited: bool, vendor: str, alias: str):
    connection = connections[alias]
    quote = connection.ops.quote_name
    fields = model._meta.concrete_fields
    by_attname = {f.attname: f for f in fields}
    table = model._meta.db_table
    conditions, where_fields = [], []
    for entry in where:
        name, _, lookup = entry.partition("__")
        field = by_attname[name]
        conditions.append(f"{quote(field.column)} {_OPERATORS[lookup]} %s")
        where_fields.append(field)
    sql = "SELECT {} FROM {} WHERE {}".format(
        ", ".join(f"{quote(table)}.{quote(f.column)}" for f in fields),
        quote(table),
        " AND ".join(conditions),
    )
    if order_by:
        sql += " ORDER BY " + ", ".join(
            quote(by_attname[name.lstrip("-")].column) + (" DESC" if name[0] == "-" else "")
            for name in order_by
        )
    if limited:
        sql += " LIMIT %s"
    converters = []
    for index, field in enumerate(fields):
        column = field.get_col(table)
        convert = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if convert:
            converters.append((index, convert, column))
    return sql, [f.attname for f in fields], converters, where_fields
