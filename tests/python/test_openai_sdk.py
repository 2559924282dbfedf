"""pagoda driven by the official `openai` Python SDK: chat, streaming with
usage, completions, n, seed, logprobs, stop strings, and errors, all on the
real default model."""

import openai
import pytest

from conftest import MODEL_NAME, Server

HELLO = [{"role": "user", "content": "What is the capital of France?"}]


def greedy_chat(client, **kw):
    return client.chat.completions.create(
        model=MODEL_NAME, messages=HELLO, temperature=0, max_tokens=24, **kw
    )


def test_models_list_and_retrieve(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert client.models.retrieve(MODEL_NAME).id == MODEL_NAME


def test_chat_completion_has_openais_shape(client):
    r = greedy_chat(client)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == MODEL_NAME
    assert r.system_fingerprint
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streamed_chat_equals_the_plain_answer_and_ends_with_usage(client):
    plain = greedy_chat(client)
    chunks = list(
        greedy_chat(client, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    text = "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices
    )
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.completion_tokens == plain.usage.completion_tokens
    assert last.usage.prompt_tokens == plain.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_a_stream_without_include_usage_sends_no_usage_chunk(client):
    chunks = list(greedy_chat(client, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_seed_makes_sampling_reproducible_and_n_gives_distinct_choices(client):
    def sample():
        return client.chat.completions.create(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": "Write a line about the sea."}],
            temperature=1.0,
            seed=1234,
            n=3,
            max_tokens=16,
        )

    a, b = sample(), sample()
    texts_a = [c.message.content for c in a.choices]
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert texts_a == [c.message.content for c in b.choices]
    assert len(set(texts_a)) > 1, texts_a
    # Usage counts the tokens of all three choices.
    assert 3 <= a.usage.completion_tokens <= 3 * 16


def test_streamed_n_choices_arrive_under_their_index(client):
    kw = dict(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "Name a colour."}],
        temperature=1.0,
        seed=7,
        n=2,
        max_tokens=12,
    )
    plain = client.chat.completions.create(**kw)
    texts = ["", ""]
    for chunk in client.chat.completions.create(stream=True, **kw):
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
    assert texts == [c.message.content for c in plain.choices]


def test_chat_logprobs(client):
    r = greedy_chat(client, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert entry.top_logprobs[0].token == entry.token
        assert abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-4


def test_stop_string_ends_the_answer_before_it(client):
    full = greedy_chat(client).choices[0].message.content
    assert "Paris" in full
    r = greedy_chat(client, stop=["Paris"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[: full.index("Paris")]
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in greedy_chat(client, stop=["Paris"], stream=True)
        if c.choices
    )
    assert streamed == r.choices[0].message.content


def test_completions_plain_streamed_echo_and_logprobs(client):
    kw = dict(model=MODEL_NAME, prompt="The capital of France is", temperature=0, max_tokens=8)
    plain = client.completions.create(**kw)
    assert plain.object == "text_completion"
    assert plain.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw) if c.choices)
    assert streamed == plain.choices[0].text
    echoed = client.completions.create(echo=True, **kw)
    assert echoed.choices[0].text == "The capital of France is" + plain.choices[0].text
    lp = client.completions.create(logprobs=2, **kw).choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == plain.usage.completion_tokens
    assert "".join(lp.tokens) == plain.choices[0].text
    assert all(len(t) <= 2 for t in lp.top_logprobs)
    streamed_tokens = []
    for chunk in client.completions.create(stream=True, logprobs=2, **kw):
        for c in chunk.choices:
            if c.logprobs:
                streamed_tokens += c.logprobs.tokens
    assert streamed_tokens == lp.tokens


def test_completions_with_several_prompts_index_choices_by_prompt(client):
    r = client.completions.create(
        model=MODEL_NAME, prompt=["1, 2, 3,", "a, b, c,"], n=2, temperature=0, max_tokens=4
    )
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text == r.choices[1].text  # greedy: same prompt, same text
    assert r.choices[0].text != r.choices[2].text


def test_invalid_fields_are_400_with_param(client):
    with pytest.raises(openai.BadRequestError) as e:
        greedy_chat(client, extra_body={"temperature": 3})
    assert e.value.status_code == 400
    assert e.value.param == "temperature"
    assert e.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_NAME, messages=[])
    assert e.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "robot", "content": "hi"}])
    assert e.value.param == "messages[0].role"


def test_a_prompt_beyond_the_context_is_context_length_exceeded(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_NAME, messages=HELLO, max_tokens=10_000_000)
    assert e.value.code == "context_length_exceeded"


def test_an_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-nothing", messages=HELLO)
    assert e.value.code == "model_not_found"
    assert e.value.param == "model"


def test_api_keys_are_enforced():
    s = Server("--api-key", "sk-right")
    try:
        wrong = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            wrong.models.list()
        assert e.value.code == "invalid_api_key"
        right = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-right", max_retries=0)
        assert [m.id for m in right.models.list().data] == [MODEL_NAME]
    finally:
        s.stop()
