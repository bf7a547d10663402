"""The LM head only at the tokens that are trained: log-probs without a [rows, R, vocab] logits tensor.

A causal LM's forward makes logits at every position, yet the loss mask keeps only the policy's own
tokens (about a third of a search agent's response here; the rest is retrieved text the policy did not
write). For the models below the logits are a plain linear map of the decoder's last hidden state, so
the decoder runs as usual and the head, with its float32 log-softmax over the vocabulary, runs on the
kept positions only. The log-probs there are the same (float rounding aside); they are 0 elsewhere.

It saves time (SmolLM2's head is ~1/5 of its forward FLOPs per token, and the log-softmax over 49k
entries reads and writes ~200 KB per position) and memory: the update's logits and their saved softmax
were its largest tensors, growing with every retrieved token (19 GB peaks with real-BM25 passages).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from zerosearch.algorithms.losses import entropy_from_logits, logprobs_from_logits

# model_type whose CausalLM forward is exactly `lm_head(decoder(...).last_hidden_state)`: read in
# transformers' modeling_{llama,mistral,qwen2,qwen3}.py. Others (logit soft-capping, logit scaling, ...)
# keep the full forward, masked to the same positions.
PLAIN_HEAD = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def split_head(model: Any) -> tuple[Any, Any] | None:
    """(decoder, head) of a model whose logits are head(decoder's last hidden state), else None.
    Works through a PEFT wrapper (attribute access reaches the base model, LoRA layers included)."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "model_type", None) not in PLAIN_HEAD or getattr(cfg, "final_logit_softcapping", None):
        return None
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    return (decoder, head) if decoder is not None and head is not None else None


def outputs_for(model: Any, keep: Tensor | None) -> tuple[Any, Any, Any]:
    """(net, output, head) for a log-prob pass: call `net`, take `output(result)`. With `keep` and a plain
    head: the decoder, its hidden states and the head (to apply at the kept positions); else the model, its
    logits and None."""
    parts = split_head(model) if keep is not None else None
    if parts is None:
        return model, (lambda o: o.logits), None
    return parts[0], (lambda o: o.last_hidden_state), parts[1]


def masked_logprobs(out: Tensor, labels: Tensor, mask: Tensor, temperature: float = 1.0, with_entropy: bool = False,
                    head: Any = None) -> Tensor | tuple[Tensor, Tensor]:
    """log-probs of `labels` [B, R] (and entropies) from the outputs `out` [B, R, *] that predict them:
    [B, R] float32, 0 where `mask` is 0. `out` is hidden states when `head` is given (the head then runs
    at the mask's positions only), else logits."""
    if head is not None:
        return head_logprobs(head, out, labels, mask, temperature, with_entropy)
    logits = out.float() / temperature
    logp = logprobs_from_logits(logits, labels) * mask
    return (logp, entropy_from_logits(logits) * mask) if with_entropy else logp


def head_logprobs(head: Any, hidden: Tensor, labels: Tensor, keep: Tensor, temperature: float = 1.0,
                  with_entropy: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """log softmax(head(h_t) / T)[y_t] at the positions `keep` marks, from the hidden states h [B, R, H]
    that predict labels y [B, R]: [B, R] float32, 0 where keep is 0 (and the entropies, likewise).
    Differentiable: the gradient reaches h and the head's weight through the kept rows only."""
    where = keep.to(hidden.device).bool().nonzero(as_tuple=True)
    logits = head(hidden[where]).float() / temperature  # [N, V]: N kept positions, not B x R
    zeros = torch.zeros(keep.shape, dtype=torch.float32, device=hidden.device)
    logp = zeros.index_put(where, logprobs_from_logits(logits, labels.to(hidden.device)[where]))
    if not with_entropy:
        return logp
    return logp, zeros.index_put(where, entropy_from_logits(logits))
