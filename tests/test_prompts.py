"""The policy prompt renders for chat models (through the template) and base models (raw text)."""

from __future__ import annotations

import pytest

from zerosearch.models import load
from zerosearch.prompts import COT, DIRECT, R1, RAG, SEARCH_AGENT, render_prompt, search_agent_prompt
from zerosearch.reward import extract_answer


@pytest.fixture(scope="module")
def tok():
    return load("tiny-random")[1]


def test_search_agent_prompt_chat_and_base(tok):
    chat = search_agent_prompt("  Who founded Tamsin Foundry?  ", tok)
    assert chat.startswith("<|im_start|>system") and chat.endswith("<|im_start|>assistant\n")
    assert "Question: Who founded Tamsin Foundry?\n<|im_end|>" in chat
    base = search_agent_prompt("Who founded Tamsin Foundry?", tok, chat=False)
    assert base == SEARCH_AGENT.format(question="Who founded Tamsin Foundry?")
    assert search_agent_prompt("q", None) == SEARCH_AGENT.format(question="q")  # no tokenizer: raw text
    for tag in ("<think>", "<search>", "</search>", "<information>", "<answer>"):
        assert tag in base


def test_chat_without_template_is_an_error():
    with pytest.raises(ValueError, match="chat template"):
        render_prompt("hi", None, chat=True)


def test_every_baseline_prompt_example_uses_the_one_answer_tag():
    for template in (SEARCH_AGENT, DIRECT, COT, R1, RAG):
        text = template.format(question="q", documents="Doc 1(Title: t) x")
        # The in-prompt example is in the prompt, not the response: extraction must not pick it up.
        assert "<answer> Beijing </answer>" in text
        assert extract_answer(text + "<answer> Paris </answer>") == "Paris"
