"""A real tool-calling conversation on a real model, through the official
`openai` SDK: Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M, the file people
download; `scripts/fetch-model.sh qwen2.5-coder-0.5b`) is offered
`get_weather`, calls it with arguments naming the city, gets the result back
as a `tool` message, and answers with it.

Greedy throughout, so the conversation is the same on every run. The model
writes its call as a bare JSON object (no `<tool_call>` tags: llama.cpp's
server writes the same text on the same file), which pagoda reads as a call
as llama.cpp's Hermes parser does. Asked again with the tools still
offered, this small model repeats its call instead of answering (llama.cpp
too); the final turn therefore sets `tool_choice: "none"`, as agent loops
do to get the answer, and the system message asks for a sentence."""

import json

import openai
import pytest

from conftest import MODEL_NAME, ROOT, Server

MODEL = ROOT / "models" / "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}]
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant. After a tool response, answer the user in one plain sentence."},
    {"role": "user", "content": "What is the weather like in Paris right now?"},
]
RESULT = "14 C, light rain"


@pytest.fixture(scope="module")
def coder():
    if not MODEL.exists():
        pytest.exit(f"{MODEL} is missing: run scripts/fetch-model.sh qwen2.5-coder-0.5b", 2)
    s = Server(model=MODEL)
    yield openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    s.stop()


def ask(client, messages, **kw):
    return client.chat.completions.create(
        model=MODEL_NAME, messages=messages, tools=TOOLS, temperature=0, max_tokens=64, **kw
    )


def test_the_model_calls_the_tool_and_answers_with_its_result(coder):
    messages = list(CONVERSATION)
    first = ask(coder, messages)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_")

    # Streamed, the same call arrives in pieces the SDK puts together.
    chunks = list(ask(coder, messages, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    streamed = [t for d in deltas for t in (d.tool_calls or [])]
    assert streamed and streamed[0].function.name == "get_weather"
    assert "".join(t.function.arguments or "" for t in streamed) == call.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls" or any(
        c.choices and c.choices[0].finish_reason == "tool_calls" for c in chunks
    )

    # The call and its result go back; the answer uses the result.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": RESULT})
    final = ask(coder, messages, tool_choice="none")
    answer = final.choices[0]
    assert answer.finish_reason == "stop", answer
    assert not answer.message.tool_calls
    text = answer.message.content
    # "The weather in Paris is currently 14°C with light rain."
    assert "Paris" in text and "14" in text and "rain" in text, text


def test_a_required_call_is_forced_into_the_models_own_tags(coder):
    """`tool_choice: required`: the grammar writes the call in the template's
    `<tool_call>` markup, and the parser streams it as it is written."""
    r = ask(coder, list(CONVERSATION), tool_choice="required")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Paris"
