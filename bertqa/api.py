"""The Python API: `bertqa.load(...)` -> a QAModel with `answer` and `answer_batch`.

    qa = bertqa.load(model="bundled", target="customcpu", precision="int")
    qa.answer("Who kept the lighthouse?", story)   # Answer(text, score, start, end)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bertqa import native
from bertqa.data.readers import builtin_stories
from bertqa.errors import ModelUnavailable, TargetUnavailable
from bertqa.model.bert import BertForQA
from bertqa.model.loading import (BUNDLED_DIR, DEFAULT_MODEL, can_stream, lazy_model, load_model,
                                  resolve_model)
from bertqa.qa.decode import Answer
from bertqa.qa.history import DEFAULT_HISTORY_MODE
from bertqa.qa.pipeline import OPTION_NAMES, QAOptions, QAPipeline, as_pairs, pair_of_dict
from bertqa.qa.windows import Tokenizer
from bertqa.quant import QuantSpec, layer_summary
from bertqa.export.layout import is_export_dir
from bertqa.saved import is_prepared_dir, open_saved, save_prepared
from bertqa.targets import Prepared, is_custom, prepare_target, streamed


def set_threads(n: int | None) -> int:
    """One thread count for PyTorch's intra-op pool and the native runtime (bertqa.native);
    None keeps torch's (which the native runtime follows)."""
    if n:
        if n < 1:
            raise ValueError(f"threads must be >= 1, got {n}")
        native.set_threads(n)
    return torch.get_num_threads()


def calibration_runner(tokenizer: Tokenizer, options: QAOptions, questions_per_story: int = 3):
    """A callable that runs a few built-in (question, story) pairs through a model: the
    representative inputs for calibrating int16 shifts and smoothing. All their windows go in one
    forward, so that the statistics do not depend on the batch size a user chose, and a
    streaming prepare (quant.streaming) reads each layer's weights once per calibration pass.
    That batch runs packed (bertqa.model.packing): the Linear layers' statistics see the
    windows' real tokens only, never their padding."""
    pairs = [(q, s.context) for s in builtin_stories() for q in s.questions[:questions_per_story]]

    def run(model):
        pipeline = QAPipeline(model, tokenizer, options, max_positions=max_positions(model))
        windows = pipeline.windows([q for q, _ in pairs], [c for _, c in pairs])
        pipeline.logits(windows, batch_size=len(windows))
    return run


def max_positions(model) -> int | None:
    """The longest window the model's position embeddings cover (through a CUDA-graph wrapper),
    or None if unknown."""
    inner = getattr(model, "model", model)
    return getattr(getattr(inner, "config", None), "max_window", None)


class QAModel:
    """A loaded model on a target: answer questions, and say what runs where."""

    def __init__(self, prepared: Prepared, tokenizer: Tokenizer, model_name: str, model_dir: Path,
                 options: QAOptions, n_parameters: int, threads: int, notes: list[str]):
        self.prepared = prepared
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.model_dir = model_dir
        self.n_parameters = n_parameters
        self.threads = threads
        self.notes = notes + prepared.notes
        self.pipeline = QAPipeline(prepared.model, tokenizer, options, prepared.device,
                                   max_positions(prepared.model))

    @property
    def target(self) -> str:
        return self.prepared.target

    @property
    def precision(self) -> str:
        return self.prepared.precision

    @property
    def options(self) -> QAOptions:
        return self.pipeline.options

    def answer(self, question, context=None, *, history=None, history_turns: int = 0,
               history_mode: str = DEFAULT_HISTORY_MODE, top_k: int = 1, options: QAOptions | None = None,
               **option_changes):
        """The best Answer (a list of the top_k best when top_k > 1) for one question about one
        context. `question` may also be a {"question", "context"} dict (no context then) or a
        list of them (-> a list, one result per pair). Keywords change this call's options:
        max_answer_len, allow_no_answer, null_threshold, align_to_words, n_best, max_seq_len,
        doc_stride, max_question_len, batch_size (see QAOptions). history=[(q, a), ...] with
        history_turns=N: the last N turns may go before the question, as history_mode says
        (bertqa.qa.history; history_turns 0, the default, asks the question alone)."""
        opts = self._options_for("answer", options, option_changes)
        if isinstance(question, list):
            if history_turns:
                raise ValueError("history_turns applies to one question, not to a list of pairs")
            results = self.answer_batch(question, context, top_k=top_k, options=opts)
            return results if top_k > 1 else [r[0] for r in results]
        if isinstance(question, dict):
            if context is not None:
                raise ValueError("the question is a {'question', 'context'} dict: give no context besides")
            question, context = pair_of_dict(question, "question")
        return self.pipeline.answer(question, context, history, history_turns, top_k, opts, history_mode)

    def answer_batch(self, questions, contexts=None, histories=None, top_k: int = 1,
                     options: QAOptions | None = None, **option_changes) -> list[list[Answer]]:
        """top_k answers per pair, as a list of lists; windows of all pairs share the batches.
        contexts: one per question, or one string for all of them; None when `questions` are
        {"question", "context"} dicts. Keywords as for answer()."""
        opts = self._options_for("answer_batch", options, option_changes)
        questions, contexts = as_pairs(questions, contexts)
        return self.pipeline.answer_batch(questions, contexts, histories, top_k, opts)

    def _options_for(self, method: str, options: QAOptions | None, changes: dict) -> QAOptions | None:
        unknown = sorted(set(changes) - set(OPTION_NAMES))
        if unknown:
            own = ("history, history_turns, history_mode, top_k, options" if method == "answer"
                   else "histories, top_k, options")
            raise TypeError(f"{method}() got an unexpected keyword argument {unknown[0]!r}; valid "
                            f"keywords: {own}, {', '.join(OPTION_NAMES)}")
        return (options or self.options).with_options(**changes) if changes else options

    def save(self, out_dir: str | Path) -> Path:
        """Write this int8 model (nodes, other tensors, spec, shifts, config, tokenizer) to
        out_dir, so that `bertqa.load(model=out_dir)` starts from it without calibrating."""
        return save_prepared(self.prepared, self.model_dir, self.model_name, out_dir)

    def export(self, out_dir: str | Path, scheme: str = "spec", calibrate: str | None = None,
               qdq_weights: str | None = None) -> Path:
        """Write this model to out_dir as ONNX (bertqa.export: schemes fp32, bf16, spec,
        qdq-a8w8, qdq-xint8, qdq-a16w8), for `bertqa.load(model=out_dir)` (--target onnx)."""
        from bertqa.export import export_qamodel
        return export_qamodel(self, out_dir, scheme, calibrate, qdq_weights)

    def layer_summary(self) -> dict:
        own = getattr(self.prepared.model, "layer_summary", None)     # an ONNX graph's op counts
        return own() if own else layer_summary(self.prepared.model)

    def header(self) -> dict:
        p = self.prepared
        return {"model": self.model_name, "parameters": self.n_parameters, "target": p.target,
                "precision": p.precision, "linear backend": p.backend, "attention": p.attention,
                "quantization": p.spec.label() if p.spec else "-", "threads": self.threads}


@dataclass
class Choice:
    """What a caller chose about how a model runs, once, for every weight source."""
    target: str
    precision: str
    spec: QuantSpec | None = None
    backend: str | None = None
    backend_options: dict = field(default_factory=dict)   # the chosen backend's configure(...)
    attention: str | None = None
    threads: int | None = None


def load(model: str | None = None, target: str | None = None, precision: str | None = None,
         spec: QuantSpec | str | None = None, threads: int | None = None, backend: str | None = None,
         options: QAOptions | None = None, fallback_to_bundled: bool = False,
         aie_device: str | None = None, attention: str | None = None,
         onnx_provider: str | None = None, onnx_provider_options: dict | None = None,
         backend_options: dict | None = None) -> QAModel:
    """Load `model` (None: the seed's BERT-large from the hub cache; 'bundled'; a directory; a hub
    id; a directory written by QAModel.save) and prepare it for target/precision (default cpu
    and fp; for a saved model, the target it was saved for and int). With fallback_to_bundled,
    an unreachable default model falls back to the bundled minilm-l6-squad and a note says so.
    `backend_options` go to the Linear backend's configure; `aie_device` ('auto', 'emulator'
    or 'npu'; None means auto) is the option that picks what runs --target aie's tiles.
    `attention` ('auto', 'fp32', 'bf16'; None means auto) picks what computes attention on
    the host (bertqa.attention). Custom targets read a safetensors checkpoint one Linear layer at
    a time. A directory written by `bertqa export` runs on --target onnx (ONNX Runtime, provider
    `onnx_provider`, default CPU; bertqa.export.runtime)."""
    notes = []
    try:
        model_dir = resolve_model(model)
    except ModelUnavailable as e:
        if not (fallback_to_bundled and model in (None, DEFAULT_MODEL)):
            raise
        notes.append(f"{e}; using the bundled model {BUNDLED_DIR.name} instead "
                     "(choose another with --model DIR_OR_HUB_ID)")
        model_dir = BUNDLED_DIR
    if target == "onnx" or is_export_dir(model_dir) or onnx_provider or onnx_provider_options:
        from bertqa.export.runtime import load_exported
        return load_exported(model_dir, target, precision, threads, options, onnx_provider,
                             onnx_provider_options, spec=spec, backend=backend,
                             aie_device=aie_device, attention=attention,
                             backend_options=backend_options or None)
    all_options = {**(backend_options or {}), **({"aie_device": aie_device} if aie_device else {})}
    spec = QuantSpec.parse(spec) if isinstance(spec, str) else spec
    if is_prepared_dir(model_dir):
        if precision not in (None, "int"):
            raise TargetUnavailable(f"{model_dir} holds a prepared int8 model: --precision int only")
        net, nodes, target, n_params, manifest = open_saved(model_dir, target, spec)
        choice = Choice(target, "int", manifest["spec"], backend, all_options, attention, threads)
        return prepare_qa(net, nodes, choice, model_dir, manifest["model_name"], options, n_params,
                          [f"int8 model prepared earlier, read from {model_dir}"])
    name = BUNDLED_DIR.name if model_dir == BUNDLED_DIR else (model or DEFAULT_MODEL)
    choice = Choice(target or "cpu", precision or "fp", spec, backend, all_options, attention, threads)
    if is_custom(choice.target) and can_stream(model_dir):
        net, fetchers = lazy_model(model_dir)
        nodes = streamed(fetchers)
    else:
        net, nodes = load_model(model_dir), None
    return prepare_qa(net, nodes, choice, model_dir, name, options, parameters(net), notes)


def from_module(net: BertForQA, model_dir: Path, name: str, target: str = "cpu",
                precision: str = "fp", spec: QuantSpec | str | None = None,
                threads: int | None = None, backend: str | None = None,
                options: QAOptions | None = None, *, notes: list[str] | None = None,
                aie_device: str | None = None, backend_options: dict | None = None,
                attention: str | None = None) -> QAModel:
    """A QAModel around an fp32 BertForQA built in code (e.g. `random_model(BertConfig.bert_large())`
    for speed tests), with the tokenizer of `model_dir`, prepared for target/precision."""
    all_options = {**(backend_options or {}), **({"aie_device": aie_device} if aie_device else {})}
    choice = Choice(target, precision, QuantSpec.parse(spec) if isinstance(spec, str) else spec,
                    backend, all_options, attention, threads)
    return prepare_qa(net, None, choice, model_dir, name, options, parameters(net), list(notes or []))


def parameters(net) -> int:
    return sum(p.numel() for p in net.parameters())


def prepare_qa(net, nodes, choice: Choice, model_dir: Path, name: str, options: QAOptions | None,
               n_params: int, notes: list[str]) -> QAModel:
    """The one prepare path of load and from_module: `net` with its weight source `nodes`
    (targets.NodeSource; None: the fp32 weights it holds) on choice's target, with the
    tokenizer of `model_dir`; calibration runs the built-in stories."""
    threads = set_threads(choice.threads)
    options = options or QAOptions()
    tokenizer = Tokenizer(model_dir)
    assert tokenizer.tok.get_vocab_size() <= net.config.vocab_size, \
        f"the tokenizer of {model_dir} has more tokens than the model's vocab_size {net.config.vocab_size}"
    prepared = prepare_target(net, choice.target, choice.precision, choice.spec,
                              calibration_runner(tokenizer, options), choice.backend,
                              options=choice.backend_options, nodes=nodes,
                              attention_mode=choice.attention)
    set_threads(threads)
    return QAModel(prepared, tokenizer, name, model_dir, options, n_params, threads, notes)


def timed_answer(qa: QAModel, question: str, context: str, **kwargs):
    """(answer, milliseconds) for one question."""
    t0 = time.perf_counter()
    ans = qa.answer(question, context, **kwargs)
    return ans, (time.perf_counter() - t0) * 1000.0
