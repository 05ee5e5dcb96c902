"""Model resolution and loading errors: missing or incomplete directories, offline hub."""
import shutil

import pytest

from bertqa.errors import ModelError, ModelUnavailable
from bertqa.model.loading import map_name, resolve_model


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))


def test_incomplete_directory_names_each_missing_file(tmp_path, bundled_dir):
    shutil.copy(bundled_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelError, match=r"missing model\.safetensors or pytorch_model\.bin, tokenizer\.json or vocab\.txt"):
        resolve_model(str(tmp_path))


def test_a_file_is_not_a_model_directory(tmp_path):
    f = tmp_path / "model.txt"
    f.write_text("x")
    with pytest.raises(ModelError, match="not a directory"):
        resolve_model(str(f))


def test_corrupt_weights_are_a_model_error(tmp_path, bundled_dir):
    import bertqa
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(bundled_dir / name, tmp_path / name)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot read the weights"):
        bertqa.load(model=str(tmp_path))


def test_non_bert_config_is_refused(tmp_path, bundled_dir):
    import bertqa
    for name in ("tokenizer.json", "model.safetensors"):
        (tmp_path / name).symlink_to(bundled_dir / name)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ModelError, match="model_type 'gpt2' is not supported"):
        bertqa.load(model=str(tmp_path))


def test_offline_hub_id_is_unavailable_not_a_hang(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelUnavailable, match="not in the Hugging Face cache"):
        resolve_model("someone/some-model")


def test_default_model_falls_back_to_the_bundled_one_with_a_note(tmp_path, monkeypatch):
    import bertqa
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    qa = bertqa.load(fallback_to_bundled=True)
    assert qa.model_name == "minilm-l6-squad"
    assert any("bundled model" in n and "--model" in n for n in qa.notes)
    with pytest.raises(ModelUnavailable):
        bertqa.load()                               # without the fallback: a clear error


def test_checkpoint_names_map_including_old_gamma_beta():
    assert map_name("bert.encoder.layer.3.attention.self.key.bias") == "layers.3.attention.key.bias"
    assert map_name("bert.encoder.layer.0.output.LayerNorm.gamma") == "layers.0.ffn.norm.weight"
    assert map_name("bert.pooler.dense.weight") is None
    with pytest.raises(ModelError, match="does not belong"):
        map_name("cls.predictions.bias")
