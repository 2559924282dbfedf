"""A reasoning model through the official `openai` SDK: the thinking comes
back as `reasoning_content` (an extra field the SDK keeps), apart from the
answer, plain and streamed, with `reasoning_effort` and the
`max_reasoning_tokens` extension (through `extra_body`). The model is the
tiny R1-style checkpoint with the template that opens the thinking block."""

import openai
import pytest

from conftest import MODEL_NAME, ROOT, Server

FIXTURE = ROOT / "tests" / "fixtures" / "tiny-r1-qwen2"
MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(scope="module")
def r1_client():
    s = Server("--chat-template", str(FIXTURE / "chat_template_think.jinja"), model=FIXTURE)
    yield openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    s.stop()


def ask(client, **kw):
    return client.chat.completions.create(
        model=MODEL_NAME, messages=MESSAGES, temperature=0, max_tokens=16, **kw
    )


def test_reasoning_content_is_apart_from_the_answer(r1_client):
    r = ask(r1_client, extra_body={"max_reasoning_tokens": 4})
    message = r.choices[0].message
    reasoning = getattr(message, "reasoning_content", None)
    assert reasoning, "the SDK keeps reasoning_content"
    assert message.content and "think>" not in message.content
    assert r.usage.completion_tokens_details.reasoning_tokens > 4

    chunks = list(ask(r1_client, stream=True, extra_body={"max_reasoning_tokens": 4}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    streamed_reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    streamed_content = "".join(d.content or "" for d in deltas)
    assert (streamed_reasoning, streamed_content) == (reasoning, message.content)
    first_content = next(i for i, d in enumerate(deltas) if d.content)
    assert not any(getattr(d, "reasoning_content", None) for d in deltas[first_content:])


def test_reasoning_effort_none_skips_the_thinking(r1_client):
    r = ask(r1_client, reasoning_effort="none")
    assert getattr(r.choices[0].message, "reasoning_content", None) is None
    assert r.choices[0].message.content


def test_earlier_reasoning_is_accepted_in_the_conversation(r1_client):
    r = r1_client.chat.completions.create(
        model=MODEL_NAME,
        max_tokens=2,
        messages=[
            *MESSAGES,
            {"role": "assistant", "content": "4", "reasoning_content": "2 + 2 = 4"},
            {"role": "user", "content": "And 3 + 3?"},
        ],
    )
    assert r.choices[0].finish_reason == "length"
