"""Every piece of text the *policy* sees, in one place: the search-agent instruction (Search-R1 /
ZeroSearch), the rollout's observation and corrective messages, and the evaluation baselines' prompts.

Instruct models get the text through their chat template; base models get it raw. `render_prompt`
decides which, so callers never branch on the model kind. (The simulator's own prompts live in
`zerosearch.engines.sim_prompts`.)
"""

from __future__ import annotations

from typing import Any

SEARCH_AGENT = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first every time "
    "you get new information. After reasoning, if you find you lack some knowledge, you can call a search "
    "engine by <search> query </search>, and it will return the top searched results between "
    "<information> and </information>. You can search as many times as you want. If you find no further "
    "external knowledge needed, you can directly provide the answer inside <answer> and </answer> without "
    "detailed illustrations. For example, <answer> Beijing </answer>. Question: {question}\n"
)

# Evaluation baselines (zerosearch eval --method ...). Same answer tag, so one extractor serves all.
DIRECT = (
    "Answer the given question directly, with a short answer (a few words) inside <answer> and </answer>, "
    "without any explanation. For example, <answer> Beijing </answer>. Question: {question}\n"
)
COT = (
    "Answer the given question. First think step by step inside <think> and </think>, then give a short "
    "answer (a few words) inside <answer> and </answer>. For example, <think> ... </think> "
    "<answer> Beijing </answer>. Question: {question}\n"
)
RAG = (
    "Answer the given question using the documents below. Give a short answer (a few words) inside "
    "<answer> and </answer>, without any explanation. For example, <answer> Beijing </answer>.\n"
    "Documents:\n{documents}\nQuestion: {question}\n"
)
R1 = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first. Then give "
    "the final answer inside <answer> and </answer> without detailed illustrations. For example, "
    "<answer> Beijing </answer>. Question: {question}\n"
)

# The rollout's text between turns. The information block keeps Search-R1's spacing so trained policies
# transfer between the two projects.
INFORMATION = "\n\n<information>{documents}</information>\n\n"
INVALID_ACTION = (
    "\nMy previous action is invalid. If I want to search, I should put the query between <search> and "
    "</search>. If I want to give the final answer, I should put the answer between <answer> and "
    "</answer>. Let me try again.\n"
)
FORCE_ANSWER = "\nI have no searches left, so I must give my final answer now inside <answer> and </answer>.\n"


def render_prompt(text: str, tokenizer: Any | None = None, *, chat: bool | None = None) -> str:
    """Wrap a user message for the model: through the chat template (instruct models) or raw (base).

    `chat=None` picks the chat template when the tokenizer has one. The result ends where the model's
    reply begins, so generation continues straight into the answer.
    """
    use_chat = (tokenizer is not None and getattr(tokenizer, "chat_template", None) is not None) if chat is None else chat
    if not use_chat:
        return text
    if tokenizer is None or getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("chat=True needs a tokenizer with a chat template")
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)


def search_agent_prompt(question: str, tokenizer: Any | None = None, *, chat: bool | None = None) -> str:
    return render_prompt(SEARCH_AGENT.format(question=question.strip()), tokenizer, chat=chat)
