"""Input fields for JSON bodies that take what the schema says and nothing else: DRF's own fields are lenient for
HTML forms (``"5"`` for 5, ``5`` for ``"5"``, ``"yes"`` for true), which a JSON API documenting types should not
be. Query strings, which are always text, keep DRF's fields."""
from __future__ import annotations

from django.db import models
from rest_framework import serializers


class Text(serializers.CharField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class Integer(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class Boolean(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class PrimaryKey(serializers.PrimaryKeyRelatedField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("incorrect_type", data_type=type(data).__name__)
        return super().to_internal_value(data)


class ModelSerializer(serializers.ModelSerializer):
    """A ModelSerializer whose writable fields are the strict ones above."""
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: Text, models.TextField: Text, models.BooleanField: Boolean,
        models.IntegerField: Integer, models.PositiveIntegerField: Integer, models.BigIntegerField: Integer,
        models.PositiveBigIntegerField: Integer, models.SmallIntegerField: Integer,
        models.PositiveSmallIntegerField: Integer,
    }
    serializer_related_field = PrimaryKey
