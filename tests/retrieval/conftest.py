"""Fixtures of the retrieval tests."""

from __future__ import annotations

import pytest
from retrieval_toys import make_index, unit_vectors


@pytest.fixture
def toy():
    """60 random unit vectors in 16 dimensions, with a colour and a gender label."""
    vectors = unit_vectors(60, 16)
    colours = ["Black", "White", "Brown"] * 20
    genders = ["Men", "Women", None, "Women"] * 15
    return make_index(vectors, colour=colours, gender=genders)
