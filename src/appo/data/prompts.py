"""Prompt templates: the reference RL system prompt and the evaluation prompt types, as named,
user-overridable templates, rendered with a tokenizer's chat template.

``code_search`` is the reference RL/evaluation system prompt verbatim (the RL parquet prompt with its
``\\boxed`` repaired; 1 148 characters). The other evaluation types (``search``, ``math``, ``base``,
``code_search_cn``, ``react``) follow the reference's intent — which tools are offered and the answer
format — in this project's own wording; they are not byte-identical to the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appo.data.readers import Example

_TAGS_INTRO = (
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags "
    "respectively"
)

CODE_SEARCH_SYSTEM = (
    "You are a helpful assistant that can solve the given question step by step with the help of the "
    "wikipedia search tool and python interpreter tool. Given a question, you need to first think about the "
    "reasoning process in the mind and then provide the answer. During thinking, you can invoke the "
    "wikipedia search tool to search and python interpreter tool to calculate the math problem for fact "
    "information about specific topics if needed. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags respectively, and the search query and result are "
    "enclosed within <search> </search> and <result> </result> tags respectively. For example, <think> This "
    "is the reasoning process. </think> <search> search query here </search> <result> search result here "
    "</result> <think> This is the reasoning process. </think> <python> python code here </python> <result> "
    "python interpreter result here </result> <think> This is the reasoning process. </think> <answer> The "
    "final answer is \\[ \\boxed{answer here} \\] </answer>. In the last part of the answer, the final exact "
    "answer is enclosed within \\boxed{} with latex format."
)

SEARCH_SYSTEM = (
    "You are a helpful assistant that answers the given question step by step with the help of a wikipedia "
    "search tool. First think about the reasoning process, then give the answer. While thinking you may "
    "search for facts you need: write a query inside <search> </search>; the results are returned inside "
    f"<result> </result>. {_TAGS_INTRO}. For example, <think> reasoning </think> <search> query </search> "
    "<result> results </result> <think> reasoning </think> <answer> The final answer is \\[ \\boxed{answer "
    "here} \\] </answer>. Put the final exact answer inside \\boxed{} in LaTeX format."
)

MATH_SYSTEM = (
    "You are a helpful assistant that solves the given problem step by step with the help of a python "
    "interpreter. First think about the reasoning process, then give the answer. While thinking you may run "
    "python code written inside <python> </python>; its output is returned inside <result> </result>. "
    f"{_TAGS_INTRO}. For example, <think> reasoning </think> <python> code </python> <result> output "
    "</result> <think> reasoning </think> <answer> The final answer is \\[ \\boxed{answer here} \\] "
    "</answer>. Put the final exact answer inside \\boxed{} in LaTeX format."
)

BASE_SYSTEM = (
    "You are a helpful assistant. Solve the given question step by step: first think about the reasoning "
    f"process, then give the answer. {_TAGS_INTRO}, e.g. <think> reasoning </think> <answer> The final "
    "answer is \\[ \\boxed{answer here} \\] </answer>. Put the final exact answer inside \\boxed{} in LaTeX "
    "format."
)

CODE_SEARCH_CN_SYSTEM = (
    "你是一个乐于助人的助手，可以借助维基百科搜索工具和 Python 解释器工具逐步解决给定的问题。"
    "请先在脑海中思考推理过程，再给出答案。思考过程中可以调用搜索工具查找事实信息，或调用 Python 解释器进行计算。"
    "推理过程和答案分别放在 <think> </think> 和 <answer> </answer> 标签中，搜索查询和结果分别放在 "
    "<search> </search> 和 <result> </result> 标签中，Python 代码放在 <python> </python> 标签中。"
    "例如：<think> 推理过程 </think> <search> 搜索查询 </search> <result> 搜索结果 </result> "
    "<think> 推理过程 </think> <python> Python 代码 </python> <result> 运行结果 </result> "
    "<think> 推理过程 </think> <answer> 最终答案 </answer>。"
)

REACT_SYSTEM = (
    "Answer the question by interleaving Thought, Action and Observation steps. A Thought reasons about "
    "the current situation. An Action is either Search[query], which returns relevant passages as an "
    "Observation, or Finish[answer], which ends the task with the final answer. You may use up to 10 "
    "search actions. Give the final answer as Finish[answer]."
)


@dataclass(frozen=True)
class PromptTemplate:
    """A system prompt plus a user-message template (``{question}`` is substituted)."""

    name: str
    system: str | None
    user: str = "{question}"

    def messages(self, question: str, **fields: Any) -> list[dict[str, str]]:
        msgs: list[dict[str, str]] = []
        if self.system:
            msgs.append({"role": "system", "content": self.system})
        msgs.append({"role": "user", "content": self.user.format(question=question, **fields)})
        return msgs


_PROMPTS: dict[str, PromptTemplate] = {
    "code_search": PromptTemplate("code_search", CODE_SEARCH_SYSTEM),
    "search": PromptTemplate("search", SEARCH_SYSTEM),
    "math": PromptTemplate("math", MATH_SYSTEM),
    "base": PromptTemplate("base", BASE_SYSTEM),
    "code_search_cn": PromptTemplate("code_search_cn", CODE_SEARCH_CN_SYSTEM),
    "react": PromptTemplate("react", REACT_SYSTEM),
}
_PROMPTS["rl"] = PromptTemplate("rl", CODE_SEARCH_SYSTEM)
DEFAULT_PROMPT = "code_search"


def available_prompts() -> list[str]:
    return sorted(_PROMPTS)


def register_prompt(template: PromptTemplate, *, overwrite: bool = True) -> None:
    """Add or replace a named template (user overrides)."""
    if template.name in _PROMPTS and not overwrite:
        raise ValueError(f"prompt {template.name!r} already exists")
    _PROMPTS[template.name] = template


def get_prompt(spec: str | PromptTemplate | None = None) -> PromptTemplate:
    """Resolve a template: a :class:`PromptTemplate`, a registered name, or a path to a text file whose
    contents become the system prompt. ``None`` gives ``code_search``."""
    if spec is None:
        spec = DEFAULT_PROMPT
    if isinstance(spec, PromptTemplate):
        return spec
    if spec in _PROMPTS:
        return _PROMPTS[spec]
    path = Path(spec)
    if path.suffix in (".txt", ".md") and path.is_file():
        return PromptTemplate(path.stem, path.read_text(encoding="utf-8"))
    raise KeyError(f"unknown prompt {spec!r}; known: {', '.join(available_prompts())} or a .txt file path")


def build_messages(
    example: Example | str, template: str | PromptTemplate | None = None
) -> list[dict[str, str]]:
    """Chat messages for an example or a bare question.

    An :class:`Example` that carries its own ``messages`` (RL parquet rows) keeps them unless a
    ``template`` is given explicitly; otherwise the template's system prompt and the question are used.
    """
    if isinstance(example, Example):
        if template is None and example.messages:
            return [dict(m) for m in example.messages]
        return get_prompt(template).messages(example.question)
    return get_prompt(template).messages(example)


def apply_chat_template(
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    *,
    add_generation_prompt: bool = True,
    **kwargs: Any,
) -> str:
    """Render ``messages`` to the prompt string with the tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no chat_template; set tokenizer.chat_template first"
        )
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
    )


def render_prompt(
    example: Example | str,
    tokenizer: Any,
    template: str | PromptTemplate | None = None,
    **kwargs: Any,
) -> str:
    """``apply_chat_template(tokenizer, build_messages(example, template))``."""
    return apply_chat_template(tokenizer, build_messages(example, template), **kwargs)
