"""How the C++ library's one exception type, layercache::Error, reaches Python: kInvalidArgument is a
ValueError whose text is the message alone (it says how to fix the call), every other code an OSError
whose text starts with the code's name (include/layercache/status.h, docs/PYTHON.md "Errors")."""
import pytest
import torch

import layercache


def _value_error(excinfo, *words):
    text = str(excinfo.value)
    assert not text.startswith("invalid_argument"), text  # the message alone, no code name
    for w in words:
        assert w in text, text


def test_bad_arguments_checked_in_cpp_are_value_errors_with_the_message_alone(tmp_path):
    with pytest.raises(ValueError) as e:
        layercache.LayerCache(cache_dir=str(tmp_path / "c"), compression_level=10)
    _value_error(e, "compression_level", "between 1 and 9")
    cache = layercache.LayerCache(cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError) as e:
        cache.invalidate_cache(layer_index=3)  # the facade's check (layer_cache_maintenance.cc)
    _value_error(e, "layer_index given without model_id")
    with pytest.raises(ValueError) as e:
        cache.get_layer_with_prefetch("m", 5, 4)  # the prefetch path's check, on the hit path
    _value_error(e, "num_layers")
    with pytest.raises(ValueError) as e:
        cache.download_and_cache("m", 0, "../../etc/passwd")  # the Hub source's check, no Hub asked
    _value_error(e)
    with pytest.raises(ValueError) as e:
        cache.cache_layer("", 0, {"w": torch.ones(4)})  # LayerKey::Validate
    _value_error(e, "model_id is empty")
    assert cache.get_stats()["disk_cache_entries"] == 0


def test_other_codes_are_os_errors_named_by_their_code(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "settings.json").write_text("{not json")
    with pytest.raises(OSError) as e:
        layercache.LayerCache(cache_dir=str(d))
    assert str(e.value).startswith("corruption: "), str(e.value)
    assert "settings.json" in str(e.value), str(e.value)
    assert not isinstance(e.value, ValueError)


def test_a_model_id_that_is_not_a_str_is_a_type_error_naming_the_argument(tmp_path):
    cache = layercache.LayerCache(cache_dir=str(tmp_path / "c"))
    for bad in (None, b"m", 3):
        with pytest.raises(TypeError, match="model_id must be a str"):
            cache.get_layer(bad, 0)
        with pytest.raises(TypeError, match="model_id must be a str"):
            cache.cache_layer(bad, 0, {"w": torch.ones(4)})
        with pytest.raises(TypeError, match="model_id must be a str"):
            cache.prefetch(bad, [0])
    assert cache.get_stats()["disk_cache_entries"] == 0


def test_device_names_are_parsed_by_the_library():
    assert layercache._core.parse_device("cuda") == 0
    assert layercache._core.parse_device("cuda:3") == 3
    assert layercache._core.parse_device("cpu") == -1
    for bad in ("tpu", "cuda:", "cuda:-1", "cuda:1x"):
        with pytest.raises(ValueError, match="not understood"):
            layercache._core.parse_device(bad)
