"""MRN check digits catch the slips people make when reading or typing a number."""

import pytest

from records import mrn

SAMPLE = [mrn.generate() for _ in range(200)]


def _single_digit_changes(value: str):
    for position, digit in enumerate(value):
        for replacement in "0123456789":
            if replacement != digit:
                yield value[:position] + replacement + value[position + 1 :]


def _adjacent_transpositions(value: str):
    for position in range(len(value) - 1):
        if value[position] != value[position + 1]:
            yield (
                value[:position]
                + value[position + 1]
                + value[position]
                + value[position + 2 :]
            )


@pytest.mark.parametrize("valid", SAMPLE[:5] + ["84338799"])
def test_generated_mrns_are_valid(valid):
    assert mrn.is_valid(valid)
    assert len(valid) == mrn.LENGTH


def test_every_single_digit_change_is_rejected():
    for valid in SAMPLE:
        assert not any(mrn.is_valid(v) for v in _single_digit_changes(valid)), valid


def test_every_adjacent_transposition_is_rejected():
    for valid in SAMPLE:
        assert not any(mrn.is_valid(v) for v in _adjacent_transpositions(valid)), valid


@pytest.mark.parametrize("text", ["", "1234", "abcdefgh", "8433 879 9x", "٨٤٣٣٨٧٩٩"])
def test_malformed_input_is_not_an_mrn(text):
    assert not mrn.is_valid(text)


def test_grouped_input_is_accepted():
    value = SAMPLE[0]

    assert mrn.is_valid(f"{value[:4]}-{value[4:]}")
    assert mrn.is_valid(f" {value[:4]} {value[4:]} ")
