"""A Hugging Face model as a :class:`~txray.serve.live.LiveModel`, loaded as ``txray record`` loads it, with
the head its checkpoint has."""

from __future__ import annotations

from typing import Any

from .live import LiveModel, Readout

HEADS = (
    # (architecture name ends with, transformers Auto class, output kind)
    ("ForSequenceClassification", "AutoModelForSequenceClassification", "class"),
    ("ForCausalLM", "AutoModelForCausalLM", "next word"),
    ("LMHeadModel", "AutoModelForCausalLM", "next word"),
    ("ForMaskedLM", "AutoModelForMaskedLM", "masked word"),
)
"""The heads ``txray serve`` shows the output of; a checkpoint with none is a bare encoder (its pooled output)."""


def head_of(architectures: list[str] | None) -> tuple[str, str]:
    """(Auto class, output kind) for a checkpoint's ``config.architectures``."""
    for arch in architectures or []:
        for suffix, auto, kind in HEADS:
            if arch.endswith(suffix):
                return auto, kind
    return "AutoModel", "embedding"


def load_hf(name: str, layer: str, tokenizer: str | None = None, device: str = "cpu") -> LiveModel:
    """The model ``name`` (a folder or a hub name in the local cache) with its head, for ``txray serve --model``.
    Raises :class:`~txray.cli._common.UsageError` for a model that cannot be loaded or a layer it lacks."""
    from transformers import AutoConfig

    from ..cli._common import UsageError
    from ..cli.record import check_model, load_model

    check_model(name)
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read the config of model {name!r}: {err}") from None
    auto, kind = head_of(getattr(config, "architectures", None))
    model, words = load_model(name, device, tokenizer, auto)
    try:
        return hf_live_model(name, model, words, layer, kind)
    except ValueError as err:
        raise UsageError(f"--layer {layer}: {err}") from None


def hf_live_model(name: str, model: Any, tokenizer: Any, layer: str, kind: str) -> LiveModel:
    """A loaded transformers model and its fast tokenizer as a live model whose output is read as ``kind``."""
    import torch

    def forward(m: Any, ids: torch.Tensor) -> Any:
        return m(input_ids=ids, attention_mask=torch.ones_like(ids))

    def tokens(ids: Any) -> list[str]:
        return list(tokenizer.convert_ids_to_tokens(list(ids)))

    append: list[int] = []
    if kind == "class":
        id2label = getattr(model.config, "id2label", None) or {}
        readout = Readout(
            kind, lambda out, ids: out.logits[0].float().softmax(-1), lambda ix: [str(id2label.get(i, i)) for i in ix]
        )
    elif kind == "next word":
        readout = Readout(kind, lambda out, ids: out.logits[0, -1].float().softmax(-1), tokens)
    elif kind == "masked word":
        if tokenizer.mask_token_id is None:
            raise ValueError(f"model {name!r} is a masked language model, but its tokenizer has no mask token")
        mask = int(tokenizer.mask_token_id)
        append = [mask]

        def masked(out: Any, ids: torch.Tensor) -> torch.Tensor:
            at = int((ids[0] == mask).nonzero()[-1])
            return out.logits[0, at].float().softmax(-1)

        readout = Readout(kind, masked, tokens)
    else:

        def pooled(out: Any, ids: torch.Tensor) -> torch.Tensor:
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            return hidden[0].float().mean(0)

        readout = Readout("embedding", pooled, lambda ix: [f"dimension {i}" for i in ix])
    return LiveModel(name, model, tokenizer, layer, forward, readout, append)
