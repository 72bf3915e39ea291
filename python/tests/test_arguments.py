"""Integer arguments are ints: a str, float or bool layer index is a TypeError, never converted
(layer "3" or 2.7 silently became layer 3 or 2)."""
import numpy as np
import pytest
import torch

import layercache


@pytest.mark.parametrize("bad", ["3", 2.7, True, None])
def test_a_layer_index_that_is_not_an_int_is_a_type_error(tmp_path, bad):
    cache = layercache.LayerCache(cache_dir=str(tmp_path / "c"))
    assert cache.cache_layer("m", 2, {"w": torch.ones(4)})
    assert cache.get_layer("m", 2) is not None  # the layer is in memory: the fast path sees it too
    with pytest.raises(TypeError, match="layer_index must be an int"):
        cache.cache_layer("m", bad, {"w": torch.ones(4)})
    with pytest.raises(TypeError, match="layer_index must be an int"):
        cache.get_layer("m", bad)
    with pytest.raises(TypeError, match="layer_index must be an int"):
        cache.get_layer_with_prefetch("m", bad, 4)
    with pytest.raises(TypeError, match="layer_index must be an int"):
        cache.prefetch("m", [bad])


def test_numpy_and_python_ints_are_accepted(tmp_path):
    cache = layercache.LayerCache(cache_dir=str(tmp_path / "c"))
    assert cache.cache_layer("m", np.int64(3), {"w": torch.ones(4)})
    assert torch.equal(cache.get_layer("m", 3)["w"], torch.ones(4))
    assert torch.equal(cache.get_layer("m", np.int32(3))["w"], torch.ones(4))
