import pytest

from lcf_jax.adapters.layer_map import layer_map, layers_with_source


def test_last_aligned_equal_depth_is_identity():
    assert layer_map(4, 4, "last_aligned") == (0, 1, 2, 3)


def test_last_aligned_sharer_deeper_skips_front_sharer_layers():
    # SmolLM2 (30) -> Gemma3 (18): receiver t reads sharer 12 + t.
    m = layer_map(30, 18, "last_aligned")
    assert m == tuple(range(12, 30))
    assert layer_map(5, 2, "last_aligned") == (3, 4)


def test_last_aligned_receiver_deeper_clamps_front_to_sharer_zero():
    # C2C clamps: every receiver layer has a source; the front ones all read sharer layer 0.
    assert layer_map(2, 5, "last_aligned") == (0, 0, 0, 0, 1)
    m = layer_map(24, 28, "last_aligned")  # Qwen2.5-0.5B -> Qwen3-0.6B
    assert m[:5] == (0, 0, 0, 0, 0) and m[4:] == tuple(range(24)) and len(m) == 28
    assert layers_with_source(m) == tuple(range(28))


def test_last_aligned_strict_marks_unsourced_layers():
    assert layer_map(2, 5, "last_aligned_strict") == (-1, -1, -1, 0, 1)
    assert layers_with_source(layer_map(2, 5, "last_aligned_strict")) == (3, 4)
    assert layer_map(5, 2, "last_aligned_strict") == (3, 4)


def test_proportional_both_directions():
    assert layer_map(4, 4, "proportional") == (0, 1, 2, 3)
    m = layer_map(30, 18, "proportional")
    assert m[0] == 0 and m[-1] == 29 and list(m) == sorted(m) and len(set(m)) == 18
    m = layer_map(3, 7, "proportional")
    assert m == (0, 0, 1, 1, 1, 2, 2)
    # tie (t=1 of 3 between sharer 0 and 1 of 2): lower index, as C2C's stable sort
    assert layer_map(2, 3, "proportional") == (0, 0, 1)


def test_layer_map_errors():
    with pytest.raises(ValueError, match="unknown layer map"):
        layer_map(2, 2, "nearest")
    with pytest.raises(ValueError, match="positive"):
        layer_map(0, 2)
