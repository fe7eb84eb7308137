"""Model fields whose values are stored sealed with AES-256-GCM.

A value is sealed in ``pre_save``, when the row's primary key is known, so the
associated data can bind it to table, column and row. It is opened lazily on
first attribute access, so a list page pays only for the fields it shows; the
first read of a field opens it on every row the same query loaded, so a chart
pays for its AES-GCM work in one tight loop per column rather than spread
through template rendering.

A field may be sealed with another of its row (``sealed_with``): the host's
column then holds one sealed value carrying both, and the companion's column
holds no value of its own (empty bytes). A chart's record opens with one
AES-GCM call instead of three. The group's associated data names its table,
the host's and companions' columns and the row, so moved anywhere else it
does not open. Whether a host holds a group is told by the row's empty
companion columns, never by the plaintext: a host value sealed alone (before
grouping) may hold any text.

Models with sealed fields inherit from ``SealedModel``, which keeps a loaded
row's ciphertexts beside its attributes (``values()`` and ``values_list()``
give the ciphertext as stored). Key rotation reads them with ``loaded_token``.

Ciphertext cannot be compared or ordered by the database: every lookup but
``isnull`` raises, ordering by a sealed field raises (through the models'
``SealedQuerySet``), and ``QuerySet.update`` with a plain value is refused,
rather than silently matching nothing, sorting ciphertext or writing
plaintext.
"""

import datetime
import decimal
import weakref
from itertools import islice

from django.apps import apps as django_apps
from django.core import checks
from django.core.exceptions import FieldDoesNotExist, FieldError, ImproperlyConfigured
from django.db import models
from django.db.models import DEFERRED, F
from django.db.models.expressions import OrderBy
from django.db.models.lookups import Exact
from django.db.models.query import ModelIterable
from django.db.models.query_utils import DeferredAttribute
from django.db.models.sql import Query

from records import crypto


class SealedBytes(bytes):
    """A value already sealed for its row, the only thing written to the column."""


class SealedText(str):
    """A value sealed in the earlier text format, as loaded (SQLite gives it as
    text): key rotation compares a row's values as they were read."""


# What a companion's column holds: no value of its own, its value being
# sealed inside its host's. Never the result of sealing, which is never empty.
IN_HOST = SealedBytes(b"")


_BINARY = (bytes, memoryview)


def is_in_host(token) -> bool:
    """Whether a loaded value says "sealed inside my host" rather than a value."""
    return isinstance(token, _BINARY) and not token


# A host's plaintext, sealed with its companions: this mark, then the texts of
# the host and of each companion (in the order of their names) with a
# separator between them. A text holding either of the two characters below
# is written with them escaped (by the third), so a text never splits.
_GROUP_MARK = "\x1e"
_SEPARATOR = "\x1f"
_ESCAPE = "\x1b"
_ESCAPED_SEPARATOR = _ESCAPE + "s"
_ESCAPED_ESCAPE = _ESCAPE + "e"


def joined_group(texts: list[str]) -> str:
    """The plaintext of a host sealed with its companions: one text each."""
    if any(_SEPARATOR in text or _ESCAPE in text for text in texts):
        texts = [
            text.replace(_ESCAPE, _ESCAPED_ESCAPE).replace(
                _SEPARATOR, _ESCAPED_SEPARATOR
            )
            for text in texts
        ]
    return _GROUP_MARK + _SEPARATOR.join(texts)


def parted_group(text: str, count: int) -> list[str]:
    """The ``count`` texts of a group's plaintext; IntegrityError if it is not
    one of that size."""
    if not text.startswith(_GROUP_MARK):
        raise crypto.IntegrityError("a sealed group of values is malformed")
    # One split in C: opening a group must cost less than the AES-GCM calls
    # it saves.
    parts = text[1:].split(_SEPARATOR)
    if len(parts) != count:
        raise crypto.IntegrityError(
            f"a sealed group holds {len(parts)} values where {count} belong"
        )
    if _ESCAPE in text:
        parts = [
            part.replace(_ESCAPED_SEPARATOR, _SEPARATOR).replace(
                _ESCAPED_ESCAPE, _ESCAPE
            )
            for part in parts
        ]
    return parts


def group_prefix(table: str, host_column: str, companion_columns) -> bytes:
    """``table.host+companion+...:``, the associated data of a group before its
    row id: it names every column the group holds, in the group's order."""
    return f"{table}.{'+'.join((host_column, *companion_columns))}:".encode()


def holds_group(companion_tokens) -> bool:
    """Whether a row's host value is a group, from its companions' values as
    loaded: some companion column is empty."""
    return any(is_in_host(token) for token in companion_tokens)


def sealed_as_loaded(token) -> SealedBytes | SealedText:
    """A loaded sealed value marked as ciphertext, to compare it as stored."""
    if isinstance(token, str):
        return SealedText(token)
    return SealedBytes(token)


# Keys of ``instance.__dict__`` kept beside the fields: the ciphertext of each
# sealed value as loaded, and the rows loaded together with this one.
_TOKENS = "_sealed_tokens"
_BATCH = "_sealed_batch"

# Rows opened together at most: bounds what one row keeps alive when a large
# result is streamed with QuerySet.iterator().
BATCH_ROWS = 500


class SealedModel(models.Model):
    """Base for every model with an encrypted field.

    A loaded row keeps its ciphertexts in one dict, ``_sealed_tokens``; a
    sealed value's attribute stays out of ``__dict__`` until it is read, so
    the first read goes through ``EncryptedAttribute``, which opens it and
    puts the plaintext there, and every later read is a plain attribute.
    """

    class Meta:
        abstract = True

    def __getstate__(self):
        # A pickled or copied row stands alone: it must not carry the other
        # rows of its page (their plaintext included) along with it.
        state = super().__getstate__()
        state.pop(_BATCH, None)
        return state

    def save(self, *args, **kwargs):
        # Django takes an attribute missing from __dict__ for a deferred
        # field and would leave it out of the UPDATE. pre_save would open
        # these values anyway; opening them first keeps save() writing the
        # whole row, as for any other model.
        update_fields = kwargs.get("update_fields")
        if update_fields is None:
            attributes = self.__dict__
            # A list: opening a value can read a deferred one into the dict.
            for attname in list(attributes.get(_TOKENS, ())):
                if attname not in attributes:
                    getattr(self, attname)
            self._load_deferred_group_members()
        else:
            # A host's column holds its companions' values too: writing one
            # of them alone would leave the other column out of date.
            kwargs["update_fields"] = _with_sealed_groups(type(self), update_fields)
        super().save(*args, **kwargs)

    def _load_deferred_group_members(self) -> None:
        # Django writes only the fields a row was loaded with. A group is one
        # value: if any member is written, its host must be, with every text.
        deferred = self.get_deferred_fields()
        if not deferred:
            return
        for members in sealed_groups(type(self)):
            names = [member.attname for member in members]
            if not deferred.issuperset(names):
                for name in names:
                    if name in deferred:
                        getattr(self, name)

    @classmethod
    def from_db(cls, db, field_names, values):
        columns, sealed = _SEALED_COLUMNS.get(cls) or _sealed_columns(cls)
        if len(values) == columns:
            values = list(values)
        else:
            # Some columns were deferred: place the loaded ones as Django does.
            loaded = iter(values)
            values = [
                next(loaded) if field.attname in field_names else DEFERRED
                for field in cls._meta.concrete_fields
            ]

        # Each ciphertext goes to the row's token dict, and __init__ leaves
        # its attribute unset. One loop per row: Django would otherwise call
        # the field's converter for every value.
        tokens = {}
        for position, attname in sealed:
            token = values[position]
            if token is not None and token is not DEFERRED:
                tokens[attname] = token
                values[position] = DEFERRED

        # As Model.from_db does, without a second look at the values.
        instance = cls(*values)
        instance._state.adding = False
        instance._state.db = db
        instance.__dict__[_TOKENS] = tokens
        return instance

    def get_deferred_fields(self):
        # A value still sealed was loaded, not deferred: refresh_from_db()
        # reloads it like any other.
        deferred = super().get_deferred_fields()
        tokens = self.__dict__.get(_TOKENS)
        return deferred.difference(tokens) if tokens else deferred


def _with_sealed_groups(model, names) -> set[str]:
    names = set(names)
    for members in sealed_groups(model):
        if any(member.name in names for member in members):
            names.update(member.name for member in members)
    return names


_SEALED_GROUPS: dict[type, list[tuple]] = {}


def sealed_groups(model) -> list[tuple]:
    """Each group of ``model``: its host, then its companions."""
    groups = _SEALED_GROUPS.get(model)
    if groups is None:
        groups = []
        for field in model._meta.concrete_fields:
            if isinstance(field, EncryptedField) and not field.sealed_with:
                host, companions = field.group()
                if companions:
                    groups.append((host, *companions))
        _SEALED_GROUPS[model] = groups
    return groups


# Per model class: how many columns a full row has, and where its sealed
# values sit. Keyed by the class itself, as a subclass has columns of its own.
_SEALED_COLUMNS: dict[type, tuple[int, tuple[tuple[int, str], ...]]] = {}


def _sealed_columns(model) -> tuple[int, tuple[tuple[int, str], ...]]:
    fields = model._meta.concrete_fields
    sealed = tuple(
        (position, field.attname)
        for position, field in enumerate(fields)
        if isinstance(field, EncryptedField)
    )
    _SEALED_COLUMNS[model] = (len(fields), sealed)
    return _SEALED_COLUMNS[model]


def loaded_token(instance, field) -> bytes | str | None:
    """The sealed value of ``field`` as loaded from the database; None if NULL.

    For key rotation, which re-seals and compares ciphertext, never
    plaintext: what has been read or assigned since loading does not change
    it. Raises TypeError for a value that did not come from the database.
    """
    attributes = instance.__dict__
    tokens = attributes.get(_TOKENS, {})
    if field.attname in tokens:
        return tokens[field.attname]
    if attributes.get(field.attname) is None:
        return None
    raise TypeError("a freshly loaded row holds only ciphertext")


class _LoadedTogether:
    """The rows of one query, to open a column for all of them at once.

    The first read of a sealed field on any of them opens that field on every
    row still holding it sealed, in one call to the cipher; other fields stay
    sealed until read. A row whose value does not open is left sealed, so
    that its error is raised where that row is read, as if opened alone.

    The rows are held by weak reference: each row keeps the group alive, but
    not the other rows, so a page's rows (and their plaintext) are freed as
    soon as the page is done with them, without waiting for the cycle
    collector, whose passes over them cost more than the links save. Their
    token dicts hold only ciphertext and are held directly, so a column's
    tokens are gathered without visiting each row.
    """

    __slots__ = ("opened", "pks", "row_ids", "rows", "tokens")

    def __init__(self, rows: list):
        self.rows = [weakref.ref(row) for row in rows]
        self.tokens = [row.__dict__[_TOKENS] for row in rows]
        self.opened = set()
        self.pks = self.row_ids = None

    def _identify_rows(self, pk_attname: str) -> None:
        # Each row's id for the associated data, encoded once for all its
        # columns. The primary key it came from is kept, so that a row given
        # another key since is not opened for the old one.
        pks, row_ids = [], []
        for reference in self.rows:
            instance = reference()
            pk = None if instance is None else instance.__dict__.get(pk_attname)
            if pk is None:
                pks.append(_NO_ROW)
                row_ids.append(b"")
            else:
                pks.append(pk)
                row_ids.append(crypto.row_id(pk))
        self.pks, self.row_ids = pks, row_ids

    def open_column(self, field) -> None:
        host, companions = field.group()
        attname = field.attname
        if companions and field is not host:
            # A companion's value is in its host's: opening the host opens it.
            # One left sealed (stored before grouping, or not opening) opens
            # on its own when read.
            if host.attname not in self.opened:
                self.open_column(host)
            self.opened.add(attname)
            return

        self.opened.add(attname)
        pk_attname, prefix = field._binding or field.binding()
        if companions:
            prefix = field.group_binding()
        if self.row_ids is None:
            self._identify_rows(pk_attname)

        tokens = [row_tokens.get(attname) for row_tokens in self.tokens]
        opened = crypto.open_sealed_column(prefix, tokens, self.row_ids)

        # A value opens only into a row still missing it (one assigned since
        # loading stays), and only for the key it was loaded under.
        parses = field.parses
        names = [companion.attname for companion in companions]
        rows = zip(self.rows, self.pks, opened, self.tokens, strict=True)
        for reference, pk, text, row_tokens in rows:
            if text is None:
                continue
            instance = reference()
            if instance is None:
                continue
            attributes = instance.__dict__
            if attributes.get(pk_attname) is not pk:
                continue
            if companions:
                # _open_group's work, written out: a call per row costs about
                # as much as the AES-GCM call the group saves.
                try:
                    parts = parted_group(text, len(names) + 1)
                except crypto.IntegrityError:
                    continue  # left sealed: reading the row raises the error
                grouped = False
                for name, part in zip(names, parts[1:], strict=True):
                    if row_tokens.get(name) == IN_HOST:
                        grouped = True
                        if name not in attributes:
                            attributes[name] = part
                # A row whose columns say its code is alone is left sealed:
                # read, it fails to open as a code alone.
                if grouped and attname not in attributes:
                    attributes[attname] = parts[0]
                continue
            if attname in attributes:
                continue
            if parses:
                try:
                    text = field.opened(text)
                except crypto.IntegrityError:
                    continue
            attributes[attname] = text


# Stands for a row without a primary key: no row's key is ever this object.
_NO_ROW = object()


class SealedModelIterable(ModelIterable):
    """Model rows that know the rows they were loaded with.

    A result read whole (the usual case) is linked after it is read, at no
    cost per row beyond the link itself; one streamed by
    ``QuerySet.iterator()`` is linked a batch at a time.
    """

    def __iter__(self):
        rows = super().__iter__()
        if not issubclass(self.queryset.model, SealedModel):
            return rows
        if not self.chunked_fetch:
            rows = list(rows)
            load_together(rows)
            return iter(rows)
        return self._in_batches(rows)

    @staticmethod
    def _in_batches(rows):
        while batch := list(islice(rows, BATCH_ROWS)):
            load_together(batch)
            yield from batch


def load_together(rows) -> None:
    """Link rows of one query so that each sealed column opens for all at once."""
    for start in range(0, len(rows), BATCH_ROWS):
        batch = rows[start : start + BATCH_ROWS]
        together = _LoadedTogether(batch)
        for row in batch:
            row.__dict__[_BATCH] = together


class EncryptedAttribute(DeferredAttribute):
    """Opens a sealed value on its first read; the plaintext then stays put.

    Like Django's own, this descriptor is only consulted while the attribute
    is missing from the instance's ``__dict__``: for a value still sealed,
    or a deferred one. Once opened, reads cost what they cost on any model.
    """

    def __get__(self, instance, cls=None):
        if instance is None:
            return self
        attributes = instance.__dict__
        field = self.field
        attname = field.attname
        if attname in attributes:
            return attributes[attname]
        tokens = attributes.get(_TOKENS)
        if tokens is None or attname not in tokens:
            # Deferred: Django loads it, and it comes back opened.
            return super().__get__(instance, cls)

        together = attributes.get(_BATCH)
        if together is not None and attname not in together.opened:
            together.open_column(field)
            if attname in attributes:
                return attributes[attname]

        # Alone, left sealed by its column's opening, or in the earlier text
        # format: opened here, which raises the value's own error if it does
        # not open.
        pk_attname, _prefix = field._binding or field.binding()
        pk = attributes.get(pk_attname)
        token = tokens[attname]
        host, companions = field.group()
        if companions and (field is host or is_in_host(token)):
            _open_group(instance, host, companions, pk, tokens)
            if attname not in attributes:
                raise crypto.IntegrityError(
                    f"{field.model.__name__}.{field.name} is missing from the "
                    f"value of {host.name} it is sealed with"
                )
            return attributes[attname]
        if companions:
            _check_stored_alone(instance, field, host, companions, pk, tokens)

        value = field.open_token(pk, token)
        attributes[attname] = value
        return value


def _check_stored_alone(instance, field, host, companions, pk, tokens) -> None:
    """Refuse a companion's own value unless its whole row is stored as before
    grouping: no companion column empty, and the host opening alone.

    Otherwise the value was put back from elsewhere (a backup, say) beside
    a group, and would show a text the row no longer holds.
    """
    if holds_group(tokens.get(companion.attname) for companion in companions):
        raise crypto.IntegrityError(
            f"{field.model.__name__}.{field.name} holds a value of its own, "
            f"though its row's texts are sealed with {host.name}"
        )
    # Raises unless the host opens alone, as it does in a row stored before
    # grouping; a group there means every text column was put back.
    _open_group(instance, host, companions, pk, tokens)


def _open_group(instance, host, companions, pk, tokens) -> None:
    """Open a host's value as stored, into its row's attributes still missing.

    The row's companion columns say whether the host holds a group, and the
    group's associated data differs from the host's own, so a row whose
    columns were changed to say otherwise does not open.
    """
    names = [host.attname, *(companion.attname for companion in companions)]
    deferred = [name for name in names if name not in tokens]
    if deferred:
        # Not loaded with the row: read as stored now, as together they say
        # what the host holds.
        manager = type(instance)._base_manager.using(instance._state.db)
        stored = manager.values_list(*deferred).get(pk=pk)
        for name, token in zip(deferred, stored, strict=True):
            if token is not None:
                tokens[name] = token
    token = tokens.get(host.attname)
    if token is None:
        raise crypto.IntegrityError(
            f"{host.model.__name__}.{host.name} holds no value, though values "
            "are sealed with it"
        )
    attributes = instance.__dict__
    if holds_group(tokens.get(companion.attname) for companion in companions):
        parts = host.open_group(pk, token)
        for companion, part in zip(companions, parts[1:], strict=True):
            name = companion.attname
            if name not in attributes and is_in_host(tokens.get(name)):
                attributes[name] = part
        value = parts[0]
    else:
        value = host.open_token(pk, token)
    if host.attname not in attributes:
        attributes[host.attname] = value


class SealedExact(Exact):
    """Equality with an exact sealed token, for key rotation's compare-and-swap.

    Only a ``SealedBytes`` or ``SealedText`` passes ``get_db_prep_value``, so
    this can never compare a column with plaintext.
    """

    lookup_name = "sealed"

    def get_rhs_op(self, connection, rhs):
        return connection.operators["exact"] % rhs


class EncryptedField(models.TextField):
    """Base for sealed fields; subclasses say how their type becomes text.

    The column is binary (BLOB, bytea): it holds sealed bytes, never text.
    """

    descriptor_class = EncryptedAttribute
    allowed_lookups = frozenset({"isnull", "sealed"})
    type_label = "text"
    # Which field's value carries this one's is not a matter for the schema:
    # both columns stay as they are.
    non_db_attrs = (*models.TextField.non_db_attrs, "sealed_with")

    def __init__(self, *args, sealed_with: str | None = None, **kwargs):
        self.sealed_with = sealed_with
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        if self.sealed_with:
            kwargs["sealed_with"] = self.sealed_with
        return name, path, args, kwargs

    _group = None

    def group(self) -> tuple["EncryptedField", tuple["EncryptedField", ...]]:
        """The field whose value carries this one's (itself, unless sealed with
        another) and the fields sealed with that one; none for most fields."""
        if self._group is None:
            self._group = _sealed_group(self)
        return self._group

    _group_binding = None

    def group_binding(self) -> bytes:
        """A host's group prefix (see ``group_prefix``), worked out once."""
        if self._group_binding is None:
            options = self.model._meta
            columns = [companion.column for companion in self.group()[1]]
            self._group_binding = group_prefix(options.db_table, self.column, columns)
        return self._group_binding

    def check(self, **kwargs):
        errors = super().check(**kwargs)
        if self.sealed_with:
            try:
                _sealed_group(self)
            except ImproperlyConfigured as error:
                errors.append(checks.Error(str(error), obj=self, id="records.E101"))
        return errors

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

    def get_internal_type(self):
        return "BinaryField"

    def associated_data_for(self, pk) -> bytes:
        self._check_row(pk)
        return crypto.associated_data_of(self.binding()[1], pk)

    def _check_row(self, pk) -> None:
        if pk is None:
            raise ValueError(
                f"{self.model.__name__} needs its primary key before sealing; "
                "encrypted models use client-side UUID keys"
            )

    def open_token(self, pk, token):
        """The value of ``token`` as loaded (either format) for row ``pk``."""
        self._check_row(pk)
        text = crypto.open_stored(token, self.binding()[1], pk)
        return self.opened(text) if self.parses else text

    def opened(self, text: str):
        """The field's value from its opened text, IntegrityError if it is not one."""
        try:
            return self.from_plaintext(text)
        except (ValueError, TypeError, ArithmeticError):
            # The parser's own message would quote the decrypted value.
            raise crypto.IntegrityError(
                f"{self.model.__name__}.{self.name} does not hold a {self.type_label}"
            ) from None

    def seal_for(self, pk, value) -> SealedBytes:
        text = self.to_plaintext(value)
        return SealedBytes(crypto.seal(text, self.associated_data_for(pk)))

    def seal_group(self, pk, texts: list[str]) -> SealedBytes:
        """A host's text and its companions' (in ``group()`` order), sealed as
        one value for row ``pk``."""
        self._check_row(pk)
        associated_data = crypto.associated_data_of(self.group_binding(), pk)
        return SealedBytes(crypto.seal(joined_group(texts), associated_data))

    def open_group(self, pk, token) -> list[str]:
        """The texts of a host's group as stored for row ``pk``, host first."""
        self._check_row(pk)
        text = crypto.open_stored(token, self.group_binding(), pk)
        return parted_group(text, len(self.group()[1]) + 1)

    def reseal(self, pk, token, *, group: bool = False) -> SealedBytes | None:
        """``token`` sealed again under the current key in the binary format;
        None if it is so already, or if its value is sealed in its host's.
        ``group``: the token is a host's group, as its row's columns say."""
        if self.sealed_with and is_in_host(token):
            return None
        self._check_row(pk)
        prefix = self.group_binding() if group else self.binding()[1]
        resealed = crypto.reseal(token, prefix, pk)
        return None if resealed is None else SealedBytes(resealed)

    def pre_save(self, model_instance, add):
        host, companions = self.group()
        if companions:
            if self is not host:
                return IN_HOST
            texts = [
                member.to_plaintext(getattr(model_instance, member.attname))
                for member in (host, *companions)
            ]
            return self.seal_group(model_instance.pk, texts)

        value = getattr(model_instance, self.attname)
        if value is None:
            return None
        return self.seal_for(model_instance.pk, value)

    def contribute_to_class(self, cls, name, private_only=False):
        super().contribute_to_class(cls, name, private_only=private_only)

        # Without SealedModel's loading, ciphertext would be read as if it
        # were the value. Models outside the app registry (migrations' and
        # the schema editor's copies) are exempt: they never open values,
        # and would show ciphertext, never plaintext.
        registered = cls._meta.apps is django_apps
        if registered and not issubclass(cls, SealedModel):
            raise ImproperlyConfigured(
                f"{cls.__name__}.{name} is encrypted: {cls.__name__} must "
                "inherit from records.fields.SealedModel"
            )

    def get_prep_value(self, value):
        # TextField would turn bytes into their repr; the sealed value (or
        # the refusal below) is what reaches the database.
        return value

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None or isinstance(value, SealedBytes | SealedText):
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


def _sealed_group(field) -> tuple[EncryptedField, tuple[EncryptedField, ...]]:
    options = field.model._meta
    host = field
    if field.sealed_with:
        try:
            host = options.get_field(field.sealed_with)
        except FieldDoesNotExist:
            host = None
        # Text only, as the group's plaintext is the members' texts; never
        # NULL, which the group could not tell from empty.
        usable = (
            type(host) is EncryptedTextField
            and type(field) is EncryptedTextField
            and not host.sealed_with
            and not (host.null or field.null)
        )
        if not usable:
            raise ImproperlyConfigured(
                f"{options.object_name}.{field.name} is sealed with "
                f"{field.sealed_with!r}, which must be an encrypted text field of "
                "the same model sealed alone; neither may be null"
            )
    return host, _companions_of(host, options.concrete_fields)


def _companions_of(host, fields) -> tuple[EncryptedField, ...]:
    """The fields sealed with ``host``, in the order its plaintext holds them."""
    return tuple(
        sorted(
            (
                field
                for field in fields
                if isinstance(field, EncryptedField) and field.sealed_with == host.name
            ),
            key=lambda field: field.attname,
        )
    )


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
        self._iterable_class = SealedModelIterable
