"""Model fields whose values are stored sealed with AES-256-GCM.

A value is sealed in ``pre_save``, when the row's primary key is known, so the
associated data can bind it to table, column and row. It is opened lazily on
first attribute access, so a list page pays only for the fields it shows.

Ciphertext cannot be compared or ordered by the database: every lookup but
``isnull`` raises, and ``QuerySet.update`` with a plain value is refused,
rather than silently matching nothing or writing plaintext.
"""

import datetime

from django.core.exceptions import FieldError
from django.db import models
from django.db.models.query_utils import DeferredAttribute

from records import crypto


class SealedText(str):
    """A value already sealed for its row, the only thing written to the column."""


class StoredCiphertext:
    """Ciphertext loaded from the database, not yet opened."""

    __slots__ = ("token",)

    def __init__(self, token: str):
        self.token = token


class EncryptedAttribute(DeferredAttribute):
    def __get__(self, instance, cls=None):
        if instance is None:
            return self
        value = super().__get__(instance, cls)
        if isinstance(value, StoredCiphertext):
            value = self.field.open_for(instance, value.token)
            instance.__dict__[self.field.attname] = value
        return value

    def __set__(self, instance, value):
        instance.__dict__[self.field.attname] = value


class EncryptedField(models.TextField):
    """Base for sealed fields; subclasses say how their type becomes text."""

    descriptor_class = EncryptedAttribute
    allowed_lookups = frozenset({"isnull"})

    def to_plaintext(self, value) -> str:
        return str(value)

    def from_plaintext(self, text: str):
        return text

    def associated_data(self, instance) -> bytes:
        if instance.pk is None:
            raise ValueError(
                f"{self.model.__name__} needs its primary key before sealing; "
                "encrypted models use client-side UUID keys"
            )
        return f"{self.model._meta.db_table}.{self.column}:{instance.pk}".encode()

    def open_for(self, instance, token: str):
        text = crypto.open_sealed(token, self.associated_data(instance))
        return self.from_plaintext(text)

    def pre_save(self, model_instance, add):
        value = getattr(model_instance, self.attname)
        if value is None:
            return None
        text = self.to_plaintext(value)
        return SealedText(crypto.seal(text, self.associated_data(model_instance)))

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
        return super().get_lookup(lookup_name)

    def get_transform(self, lookup_name):
        raise FieldError(f"{self.model.__name__}.{self.name} is encrypted")

    def value_to_string(self, obj):
        # Serialising (dumpdata) must never spill plaintext.
        raise FieldError(f"{self.model.__name__}.{self.name} is encrypted")


class EncryptedTextField(EncryptedField):
    pass


class EncryptedDateField(EncryptedField):
    def to_plaintext(self, value) -> str:
        if not isinstance(value, datetime.date) or isinstance(value, datetime.datetime):
            raise TypeError(f"{self.name} takes a date, not {type(value).__name__}")
        return value.isoformat()

    def from_plaintext(self, text: str):
        return datetime.date.fromisoformat(text)
