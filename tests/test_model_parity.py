"""Logit parity with transformers.BertForQuestionAnswering (a test-only dependency)."""
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is a test-only dependency")

from bertqa.model.bert import BertConfig  # noqa: E402
from bertqa.model.loading import load_model, model_from_tensors  # noqa: E402


def inputs(vocab: int, batch: int = 2, seq: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    types = torch.zeros_like(ids)
    types[:, seq // 3:] = 1
    mask = torch.ones_like(ids)
    mask[-1, seq - 5:] = 0                      # one padded row
    return ids, types, mask


def hf_logits(hf, ids, types, mask):
    with torch.no_grad():
        out = hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
    return out.start_logits, out.end_logits


def assert_parity(ours, hf, vocab):
    ids, types, mask = inputs(vocab)
    with torch.no_grad():
        s, e = ours(ids, types, mask)
    hs, he = hf_logits(hf, ids, types, mask)
    keep = mask.bool()
    assert (s - hs)[keep].abs().max() < 1e-4
    assert (e - he)[keep].abs().max() < 1e-4


def random_hf(config: dict, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(**config, attn_implementation="sdpa")
    return transformers.BertForQuestionAnswering(cfg).eval()


def test_bundled_model_matches_transformers(bundled_dir):
    hf = transformers.BertForQuestionAnswering.from_pretrained(str(bundled_dir), dtype=torch.float32).eval()
    assert_parity(load_model(bundled_dir), hf, 30522)


@pytest.mark.parametrize("shape", [
    dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
    dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=3, intermediate_size=200),
])
def test_random_configs_match_transformers_through_a_checkpoint_on_disk(tmp_path, shape):
    config = dict(vocab_size=500, max_position_embeddings=64, **shape)
    hf = random_hf(config)
    hf.save_pretrained(tmp_path)                # config.json + model.safetensors
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
    assert_parity(load_model(tmp_path), hf, 500)


def test_pytorch_model_bin_is_read_with_weights_only(tmp_path):
    config = dict(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=32)
    hf = random_hf(config, seed=1)
    hf.config.to_json_file(tmp_path / "config.json")
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    assert_parity(load_model(tmp_path), hf, 300)


def test_bert_large_shapes_match_transformers():
    large = BertConfig.bert_large()
    config = dict(vocab_size=1000, hidden_size=large.hidden_size, num_hidden_layers=large.num_hidden_layers,
                  num_attention_heads=large.num_attention_heads, intermediate_size=large.intermediate_size,
                  max_position_embeddings=64)
    hf = random_hf(config, seed=2)
    state = hf.state_dict()
    ours = model_from_tensors(BertConfig(**config), list(state), state.__getitem__)
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for n, p in hf.named_parameters() if "pooler" not in n)
    assert_parity(ours, hf, 1000)
