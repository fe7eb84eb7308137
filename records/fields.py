"""Model fields whose values are stored sealed with AES-256-GCM.

A value is sealed in ``pre_save``, when the row's primary key is known, so the
associated data can bind it to table, column and row. It is opened lazily on
first attribute access, so a list page pays only for the fields it shows.

Ciphertext cannot be compared or ordered by the database: every lookup but
``isnull`` raises, ordering by a sealed field raises (through the models'
``SealedQuerySet``), and ``QuerySet.update`` with a plain value is refused,
rather than silently matching nothing, sorting ciphertext or writing
plaintext.
"""

import datetime
import decimal

from django.core.exceptions import FieldDoesNotExist, FieldError
from django.db import models
from django.db.models import F
from django.db.models.expressions import OrderBy
from django.db.models.lookups import Exact
from django.db.models.query_utils import DeferredAttribute
from django.db.models.sql import Query

from records import crypto


class SealedText(str):
    """A value already sealed for its row, the only thing written to the column."""


class StoredCiphertext:
    """Ciphertext loaded from the database, not yet opened."""

    __slots__ = ("token",)

    def __init__(self, token: str):
        self.token = token


class EncryptedAttribute(DeferredAttribute):
    """Opens a loaded value on first access and keeps the plaintext.

    Every field a chart shows passes through here, so the common case (the
    value already loaded) avoids the deferred-loading machinery, and opening
    is done in place rather than through the field's general methods: at a
    few hundred fields a page, every extra call layer shows in the total.
    """

    def __get__(self, instance, cls=None):
        if instance is None:
            return self
        data = instance.__dict__
        field = self.field
        attname = field.attname
        value = data[attname] if attname in data else super().__get__(instance, cls)
        if type(value) is not StoredCiphertext:
            return value

        # The row id is encoded once per row, and made again only if the
        # instance has been given another primary key since.
        pk_attname, prefix = field._binding or field.binding()
        pk = data.get(pk_attname)
        row = data.get(_ROW_ID)
        if row is None or row[0] is not pk:
            if pk is None:
                # Not a row from the database: the general path explains.
                value = data[attname] = field.open_for(instance, value.token)
                return value
            row = data[_ROW_ID] = (pk, str(pk).encode())

        text = crypto.open_sealed(value.token, prefix + row[1])
        value = data[attname] = field.opened(text) if field.parses else text
        return value

    def __set__(self, instance, value):
        instance.__dict__[self.field.attname] = value


_ROW_ID = "_sealed_row_id"


class SealedExact(Exact):
    """Equality with an exact sealed token, for key rotation's compare-and-swap.

    Only a ``SealedText`` passes ``get_db_prep_value``, so this can never
    compare a column with plaintext.
    """

    lookup_name = "sealed"

    def get_rhs_op(self, connection, rhs):
        return connection.operators["exact"] % rhs


class EncryptedField(models.TextField):
    """Base for sealed fields; subclasses say how their type becomes text."""

    descriptor_class = EncryptedAttribute
    allowed_lookups = frozenset({"isnull", "sealed"})
    type_label = "text"

    def to_plaintext(self, value) -> str:
        return str(value)

    def from_plaintext(self, text: str):
        return text

    # Text is its own value; skipping the call saves time on every chart field.
    parses = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.parses = cls.from_plaintext is not EncryptedField.from_plaintext

    _binding = None

    def binding(self) -> tuple[str, bytes]:
        """The row's primary-key attribute and ``table.column:`` as bytes.

        The associated data is that prefix and the row id. Worked out on first
        use, as the table name and primary key are final only once the model
        is, and kept because the descriptor asks for it on every opening.
        """
        if self._binding is None:
            options = self.model._meta
            prefix = f"{options.db_table}.{self.column}:".encode()
            self._binding = (options.pk.attname, prefix)
        return self._binding

    def associated_data_for(self, pk) -> bytes:
        if pk is None:
            raise ValueError(
                f"{self.model.__name__} needs its primary key before sealing; "
                "encrypted models use client-side UUID keys"
            )
        return self.binding()[1] + str(pk).encode()

    def associated_data(self, instance) -> bytes:
        return self.associated_data_for(instance.pk)

    def open_token(self, pk, token: str):
        text = crypto.open_sealed(token, self.associated_data_for(pk))
        return self.opened(text) if self.parses else text

    def open_for(self, instance, token: str):
        return self.open_token(instance.pk, token)

    def opened(self, text: str):
        """The field's value from its opened text, IntegrityError if it is not one."""
        try:
            return self.from_plaintext(text)
        except (ValueError, TypeError, ArithmeticError):
            # The parser's own message would quote the decrypted value.
            raise crypto.IntegrityError(
                f"{self.model.__name__}.{self.name} does not hold a {self.type_label}"
            ) from None

    def seal_for(self, pk, value) -> SealedText:
        text = self.to_plaintext(value)
        return SealedText(crypto.seal(text, self.associated_data_for(pk)))

    def pre_save(self, model_instance, add):
        value = getattr(model_instance, self.attname)
        if value is None:
            return None
        return self.seal_for(model_instance.pk, value)

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        return StoredCiphertext(value)

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None or isinstance(value, SealedText):
            return value
        raise FieldError(
            f"{self.model.__name__}.{self.name} is encrypted: write it through "
            "model.save() (QuerySet.update and bulk_update cannot seal it)"
        )

    def get_lookup(self, lookup_name):
        if lookup_name not in self.allowed_lookups:
            raise FieldError(
                f"{self.model.__name__}.{self.name} is encrypted and cannot be "
                f"searched with '{lookup_name}': use its blind index"
            )
        if lookup_name == "sealed":
            return SealedExact
        return super().get_lookup(lookup_name)

    def get_transform(self, lookup_name):
        raise FieldError(f"{self.model.__name__}.{self.name} is encrypted")

    def value_to_string(self, obj):
        # Serialising (dumpdata) must never spill plaintext.
        raise FieldError(f"{self.model.__name__}.{self.name} is encrypted")


class EncryptedTextField(EncryptedField):
    def to_plaintext(self, value) -> str:
        if not isinstance(value, str):
            raise TypeError(f"{self.name} takes text, not {type(value).__name__}")
        return value


class EncryptedDateField(EncryptedField):
    type_label = "date"

    def to_plaintext(self, value) -> str:
        if not isinstance(value, datetime.date) or isinstance(value, datetime.datetime):
            raise TypeError(f"{self.name} takes a date, not {type(value).__name__}")
        return value.isoformat()

    def from_plaintext(self, text: str):
        return datetime.date.fromisoformat(text)


class EncryptedIntegerField(EncryptedField):
    type_label = "whole number"

    def to_plaintext(self, value) -> str:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{self.name} takes an int, not {type(value).__name__}")
        return str(value)

    def from_plaintext(self, text: str):
        return int(text)


class EncryptedDecimalField(EncryptedField):
    """Exact decimals; floats are refused because their text is not exact."""

    type_label = "decimal"

    def to_plaintext(self, value) -> str:
        if isinstance(value, bool) or not isinstance(value, decimal.Decimal | int):
            raise TypeError(f"{self.name} takes a Decimal, not {type(value).__name__}")
        return str(decimal.Decimal(value))

    def from_plaintext(self, text: str):
        value = decimal.Decimal(text)
        if not value.is_finite():
            raise ValueError("not a finite decimal")
        return value


def _ordering_name(item) -> str | None:
    if isinstance(item, str):
        return item.lstrip("-+")
    if isinstance(item, OrderBy):
        item = item.expression
    if isinstance(item, F):
        return item.name
    return None


def refuse_sealed_ordering(model, item) -> None:
    """Raise FieldError if ``item`` orders ``model`` by a sealed field.

    The database would sort ciphertext, which is random: a silently wrong
    order is worse than an error.
    """
    name = _ordering_name(item)
    if not name or name == "?":
        return
    options = model._meta
    for part in name.split("__"):
        try:
            field = options.get_field(part)
        except FieldDoesNotExist:
            return
        if isinstance(field, EncryptedField):
            raise FieldError(
                f"cannot order by {name!r}: {field.model.__name__}.{field.name} "
                "is encrypted and the database would sort ciphertext; sort the "
                "decrypted values in Python instead"
            )
        if not field.is_relation or field.related_model is None:
            return
        options = field.related_model._meta


class SealedQuery(Query):
    def add_ordering(self, *ordering):
        for item in ordering:
            refuse_sealed_ordering(self.model, item)
        super().add_ordering(*ordering)


class SealedQuerySet(models.QuerySet):
    """A queryset that refuses to order by a sealed field."""

    def __init__(self, model=None, query=None, using=None, hints=None):
        super().__init__(model, query or SealedQuery(model), using, hints)
