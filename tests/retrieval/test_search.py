"""Search against a brute-force numpy reference: order, scores, filters, k > n, self-exclusion."""

from __future__ import annotations

import numpy as np
import pytest
from retrieval_toys import make_index, toy, unit_vectors

from zapmulti.errors import DataError
from zapmulti.retrieval.search import parse_where, search_vectors


def brute_force(vectors, queries, k, allowed=None, exclude=None):
    """Cosine top-k by numpy: every score computed, sorted, filtered, in the plainest way."""
    out = []
    for q, query in enumerate(queries):
        scores = vectors.astype(np.float64) @ query.astype(np.float64)
        order = np.argsort(-scores, kind="stable")
        if allowed is not None:
            order = order[allowed[order]]
        if exclude is not None:
            order = order[~np.isin(order, exclude[q])]
        out.append((order[:k], scores[order[:k]]))
    return out


def assert_same(hits, reference):
    assert len(hits) == len(reference)
    for (ids, scores), (ref_ids, ref_scores) in zip(hits, reference, strict=True):
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-6)
        assert (ids >= 0).all()


def test_matches_numpy_reference_order_and_scores():
    vectors = unit_vectors(200, 24, seed=1)
    queries = unit_vectors(7, 24, seed=2)
    index = make_index(vectors)
    assert_same(search_vectors(index, queries, k=15), brute_force(vectors, queries, 15))


def test_filter_is_applied_inside_the_search(toy):
    queries = unit_vectors(5, 16, seed=3)
    allowed = np.array([c == "Brown" for c in toy.metadata["colour"]])
    hits = search_vectors(toy, queries, k=8, where=["colour=Brown"])
    assert_same(hits, brute_force(toy.vectors, queries, 8, allowed))
    # A post-filtered top-8 would hold about a third as many items; this holds a full 8.
    assert all(len(ids) == 8 for ids, _ in hits)


def test_filters_combine_and_alternate(toy):
    queries = unit_vectors(3, 16, seed=4)
    colour = toy.metadata["colour"].to_numpy()
    gender = toy.metadata["gender"].to_numpy()
    allowed = np.isin(colour, ["Black", "White"]) & (gender == "Women")
    hits = search_vectors(
        toy, queries, k=100, where=["colour=Black", "colour=White", "gender=Women"]
    )
    assert_same(hits, brute_force(toy.vectors, queries, 100, allowed))
    assert all(len(ids) == allowed.sum() for ids, _ in hits)

    # One column named in two spellings is still one column: its values are alternatives.
    either = search_vectors(toy, queries, k=100, where=["colour=Black", "Colour=White"])
    assert len(either[0][0]) == np.isin(colour, ["Black", "White"]).sum()

    not_black = search_vectors(toy, queries, k=100, where={"colour": "Black"})
    negated = search_vectors(toy, queries, k=100, where=["COLOUR!=Black"])
    assert len(not_black[0][0]) + len(negated[0][0]) == len(toy)


def test_filter_with_no_match_returns_nothing(toy, caplog):
    hits = search_vectors(toy, unit_vectors(2, 16), k=5, where=["colour=Purple"])
    assert all(len(ids) == 0 for ids, _ in hits)
    assert "matches no item" in caplog.text


def test_bad_filters_name_the_problem(toy):
    with pytest.raises(DataError, match="no such column.*colour"):
        search_vectors(toy, unit_vectors(1, 16), where=["size=9"])
    with pytest.raises(DataError, match="KEY=VALUE"):
        parse_where(["colour"])
    with pytest.raises(DataError, match="use one '=' \\(KEY=VALUE\\), e.g. colour=Black"):
        parse_where(["colour==Black"])


def test_grid_is_capped_and_named_by_format(tmp_path, caplog):
    """A grid draws at most 20 neighbours a query whatever k is, in the format its name asks."""
    import pandas as pd
    from PIL import Image

    from zapmulti.errors import ConfigError
    from zapmulti.retrieval.grid import CELL_INCHES, MAX_GRID_NEIGHBOURS, save_grid

    shoe = tmp_path / "shoe.jpg"
    Image.new("RGB", (40, 30), (200, 40, 40)).save(shoe)
    k = 60
    results = pd.DataFrame(
        {"query": str(shoe), "rank": range(1, k + 1), "score": 0.5, "path": str(shoe)}
    )
    caplog.set_level("WARNING")
    save_grid(results, tmp_path / "g.png")
    assert "first 20 neighbours" in caplog.text
    width = Image.open(tmp_path / "g.png").size[0]
    assert width == pytest.approx(CELL_INCHES * (1 + MAX_GRID_NEIGHBOURS) * 110, rel=0.02)
    save_grid(results.head(5), tmp_path / "g.jpg")
    assert Image.open(tmp_path / "g.jpg").format == "JPEG"
    with pytest.raises(ConfigError, match="unknown picture format '.gif'"):
        save_grid(results, tmp_path / "g.gif")


@pytest.mark.parametrize("factory", ["Flat", "HNSW8", "IVF4,Flat"])
def test_k_larger_than_the_catalogue_returns_everything(factory):
    vectors = unit_vectors(40, 8, seed=5)
    index = make_index(vectors, factory)
    hits = search_vectors(index, vectors[:3], k=1000)
    assert_same(hits, brute_force(vectors, vectors[:3], 1000))
    assert all(len(ids) == 40 for ids, _ in hits)


def test_self_exclusion(toy):
    queries = toy.vectors[[4, 9]]
    exclude = [np.array([4]), np.array([9])]
    hits = search_vectors(toy, queries, k=5, exclude=exclude)
    assert_same(hits, brute_force(toy.vectors, queries, 5, exclude=exclude))
    assert 4 not in hits[0][0] and 9 not in hits[1][0]
    # Without exclusion the item finds itself first, with a cosine of 1.
    plain = search_vectors(toy, queries, k=1)
    assert plain[0][0][0] == 4 and plain[0][1][0] == pytest.approx(1.0, abs=1e-5)
    # Leaving itself out of the whole catalogue leaves n - 1.
    everything = search_vectors(toy, queries, k=1000, exclude=exclude)
    assert [len(ids) for ids, _ in everything] == [len(toy) - 1] * 2


def test_approximate_index_under_a_narrow_filter_still_fills_k():
    vectors = unit_vectors(300, 16, seed=6)
    tag = ["rare" if i % 50 == 0 else "common" for i in range(300)]
    for factory in ("HNSW8", "IVF4,Flat", "PQ4"):
        index = make_index(vectors, factory, tag=tag)
        hits = search_vectors(index, vectors[:4], k=10, where=["tag=rare"])
        assert all(len(ids) == 6 for ids, _ in hits), factory
        assert all(set(ids) <= {0, 50, 100, 150, 200, 250} for ids, _ in hits)


def test_query_dimension_is_checked(toy):
    with pytest.raises(DataError, match="dimension 8"):
        search_vectors(toy, unit_vectors(1, 8))
