"""Answers, metrics and the training reward. Pure functions, no torch.

- The answer is the content of the last `<answer>...</answer>` in the *response* (never the prompt: the
  instruction itself contains an example answer, which the reference code could score by mistake).
- Training reward = token F1 against the gold answers (max over them); EM as a reward made policies pad
  their answers, F1 does not reward that. No extractable answer -> 0.
- Evaluation = EM (what the paper reports), with cover-EM (gold contained in the answer; what the
  reference code calls "EM") and F1 reported beside it under their honest names.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
# A block's content never holds another "<answer>": an opening tag left unclosed before the real answer
# (in a thought, or in a turn cut at its token budget) must not swallow it ("<answer> x<answer> Paris
# </answer>" answers "Paris", not "x<answer> Paris").
_ANSWER = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.S)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation, drop articles a/an/the, collapse whitespace."""
    s = s.lower().translate(_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def extract_answer(response: str) -> str | None:
    """The stripped content of the last complete `<answer>...</answer>` in `response`, else None."""
    matches = _ANSWER.findall(response)
    return matches[-1].strip() if matches else None


def exact_match(prediction: str | None, golds: Sequence[str]) -> float:
    if prediction is None:
        return 0.0
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in golds))


def cover_exact_match(prediction: str | None, golds: Sequence[str]) -> float:
    """1 if some normalised gold answer is contained in the normalised prediction (token-aligned)."""
    if prediction is None:
        return 0.0
    p = f" {normalize_answer(prediction)} "
    return float(any(normalize_answer(g) and f" {normalize_answer(g)} " in p for g in golds))


def _f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction), normalize_answer(gold)
    # As in the SQuAD/HotpotQA scripts: a yes/no/noanswer mismatch scores 0 even if tokens overlap.
    if (p in ("yes", "no", "noanswer") or g in ("yes", "no", "noanswer")) and p != g:
        return 0.0
    p_tokens, g_tokens = p.split(), g.split()
    common = Counter(p_tokens) & Counter(g_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p_tokens), same / len(g_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, golds: Sequence[str]) -> float:
    """Token F1 between prediction and gold, maximised over the gold answers."""
    if prediction is None:
        return 0.0
    return max((_f1(prediction, g) for g in golds), default=0.0)


# --- format ------------------------------------------------------------------------------------------

_TAG = re.compile(r"<(/?)(think|search|information|answer)>")


def is_valid_format(response: str) -> bool:
    """A well-formed trajectory: tags balanced and never nested, at least one <answer>, and nothing but
    whitespace after the final </answer>."""
    depth_tag: str | None = None
    answers = 0
    for m in _TAG.finditer(response):
        closing, tag = m.group(1) == "/", m.group(2)
        if not closing:
            if depth_tag is not None:
                return False
            depth_tag = tag
        else:
            if depth_tag != tag:
                return False
            depth_tag = None
            answers += tag == "answer"
    if depth_tag is not None or answers == 0:
        return False
    return response[response.rfind("</answer>") + len("</answer>"):].strip() == ""


def f1_reward(response: str, golds: Sequence[str], *, format_weight: float = 0.0) -> float:
    """The training reward: F1 of the extracted answer (0 when none).

    With `format_weight` = λ_f > 0 (off by default) the Search-R1 format term is added: a well-formed
    trajectory earns at least λ_f, a malformed one keeps only (1 - λ_f) of its F1. So correct+valid = 1,
    correct+malformed = 1 - λ_f, wrong+valid = λ_f, wrong+malformed = 0.
    """
    f1 = f1_score(extract_answer(response), golds)
    if format_weight <= 0.0:
        return f1
    if is_valid_format(response):
        return max(f1, format_weight)
    return f1 * (1.0 - format_weight)


def answer_metrics(prediction: str | None, golds: Sequence[str]) -> dict[str, float]:
    """EM, cover-EM and F1 of one prediction, as reported by evaluation."""
    return {"em": exact_match(prediction, golds), "cover_em": cover_exact_match(prediction, golds),
            "f1": f1_score(prediction, golds)}
