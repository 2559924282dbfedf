"""Structured output and tool calling through the official `openai` SDK,
against the real binary serving the real default model (SmolLM2-135M,
whose template takes no `tools`: pagoda describes them in the system
message and reads calls in the plain JSON format).

Sampled at temperature 1, a 135M model writes anything; the grammar makes
every output parse and validate, and every forced call name an offered
function with valid arguments.
"""

import concurrent.futures
import json
from typing import Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from conftest import MODEL_NAME, Server

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.(com|org)$"},
        "role": {"enum": ["admin", "user", "guest"]},
        "scores": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 100},
                   "minItems": 1, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12},
                           "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "email", "role", "scores", "address", "active"],
    "additionalProperties": False,
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}

TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a timezone.",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 30}},
            "required": ["timezone"],
            "additionalProperties": False,
        },
    },
}

TOOLS = [WEATHER, TIME]
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris, and what time is it in Tokyo?"}]


def person_request(client, seed, stream=False):
    return client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "Invent a user record for a web app."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
        temperature=1.0,
        seed=seed,
        max_tokens=300,
        stream=stream,
    )


@pytest.fixture(scope="module")
def fast_client():
    """The server with int8 activations (one 8-bit pass): 100 requests go faster."""
    s = Server(activations="int8")
    yield openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    s.stop()


def test_100_sampled_json_schema_requests_give_no_invalid_output(fast_client):
    def one(seed):
        r = person_request(fast_client, seed)
        choice = r.choices[0]
        try:
            jsonschema.validate(json.loads(choice.message.content), PERSON)
        except (json.JSONDecodeError, jsonschema.ValidationError) as e:
            return f"seed {seed}: {e!r}: {choice.message.content!r}"
        if choice.finish_reason != "stop":
            return f"seed {seed}: finish_reason {choice.finish_reason}"
        return None

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(100), timeout=900))
    invalid = [r for r in results if r is not None]
    assert invalid == [], f"{len(invalid)} of 100 invalid: {invalid[:3]}"


def test_streamed_structured_output_is_the_same_valid_json(client):
    for seed in (3, 4):
        whole = person_request(client, seed).choices[0].message.content
        pieces = [c.choices[0].delta.content or "" for c in person_request(client, seed, stream=True)
                  if c.choices]
        assert "".join(pieces) == whole
        jsonschema.validate(json.loads(whole), PERSON)


def test_json_object_regex_and_choice_constraints(client):
    r = client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "Describe a cat."}],
        response_format={"type": "json_object"}, temperature=1.0, seed=1, max_tokens=400,
    )
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    r = client.completions.create(
        model=MODEL_NAME, prompt="Call me at", max_tokens=20, temperature=1.0, seed=2,
        extra_body={"structured_outputs": {"regex": "[0-9]{3}-[0-9]{3}-[0-9]{4}"}},
    )
    text = r.choices[0].text
    assert len(text) == 12 and text[3] == "-" and text[7] == "-", text
    r = client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "Is water wet?"}],
        temperature=1.0, seed=3, extra_body={"guided_choice": ["yes", "no", "it depends"]},
    )
    assert r.choices[0].message.content in ("yes", "no", "it depends")
    # A grammar that leaves one token: the alternatives it rules out get the
    # floor, never a null (JSON has no -inf).
    r = client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "Pick a digit."}],
        temperature=1.0, seed=3, extra_body={"guided_regex": "7"},
        logprobs=True, top_logprobs=5,
    )
    (token,) = r.choices[0].logprobs.content
    assert (r.choices[0].message.content, token.logprob) == ("7", 0.0), r
    assert [a.logprob for a in token.top_logprobs] == [0.0] + [-9999.0] * 4, token
    r = client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "Count."}], temperature=1.0,
        seed=4, extra_body={"structured_outputs": {"grammar": 'start: "1, 2, " ("3" | "4")'}},
    )
    assert r.choices[0].message.content in ("1, 2, 3", "1, 2, 4")


def test_a_schema_keyword_that_cannot_be_enforced_is_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL_NAME, messages=ASK,
            response_format={"type": "json_schema", "json_schema": {
                "name": "s", "schema": {"type": "array", "uniqueItems": True}}},
        )
    assert e.value.body["param"] == "response_format.json_schema.schema"
    assert "uniqueItems" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL_NAME, messages=ASK, tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_stock_price"}},
        )
    assert e.value.body["param"] == "tool_choice"


def test_grammars_that_can_produce_nothing_are_a_400_before_anything_runs(client):
    """Each compiles, but no output can satisfy it (or it is too large to
    step through): refused as the caller's mistake, naming the field, and
    never queued; streamed requests too (no 200 and then an error chunk)."""
    cases = [
        ({"response_format": {"type": "json_schema",
                              "json_schema": {"name": "s", "schema": {"$ref": "#"}}}},
         "response_format.json_schema.schema"),
        ({"extra_body": {"guided_regex": "[^\\s\\S]"}}, "guided_regex"),
        ({"extra_body": {"guided_choice": [f"option {i}" for i in range(10_000)]}},
         "guided_choice"),
    ]
    for stream in (False, True):
        for fields, param in cases:
            with pytest.raises(openai.BadRequestError) as e:
                client.chat.completions.create(
                    model=MODEL_NAME, messages=ASK, max_tokens=8, stream=stream, **fields,
                )
            assert e.value.status_code == 400
            assert e.value.body["param"] == param, (param, e.value.body)
    # Nothing was queued or failed: the server answers as before.
    r = client.chat.completions.create(model=MODEL_NAME, messages=ASK, max_tokens=2)
    assert r.choices[0].finish_reason in ("length", "stop")


def check_call(call, name=None):
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in PARAMETERS
    if name:
        assert call.function.name == name
    jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[call.function.name])


def test_required_and_named_tool_choice_always_yield_a_valid_call(client):
    choices = [("required", None)] * 10 + [
        ({"type": "function", "function": {"name": "get_time"}}, "get_time")] * 10
    for seed, (tool_choice, name) in enumerate(choices):
        r = client.chat.completions.create(
            model=MODEL_NAME, messages=ASK, tools=TOOLS, tool_choice=tool_choice,
            temperature=1.0, seed=seed, max_tokens=200,
        )
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        assert choice.message.tool_calls, choice
        for call in choice.message.tool_calls:
            check_call(call, name)
        if name:
            assert len(choice.message.tool_calls) == 1


def test_streamed_tool_call_deltas_reassemble_into_the_non_stream_result(client):
    for seed in range(3):
        args = dict(model=MODEL_NAME, messages=ASK, tools=TOOLS, tool_choice="required",
                    temperature=1.0, seed=seed, max_tokens=200)
        whole = client.chat.completions.create(**args).choices[0]
        calls, finish = {}, None
        for chunk in client.chat.completions.create(stream=True, **args):
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for d in choice.delta.tool_calls or []:
                    if d.id:
                        assert d.index not in calls and d.function.name
                        calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": ""}
                    calls[d.index]["arguments"] += d.function.arguments or ""
        assert finish == whole.finish_reason == "tool_calls"
        assert [(c["name"], c["arguments"]) for _, c in sorted(calls.items())] == [
            (c.function.name, c.function.arguments) for c in whole.message.tool_calls]
        assert all(c["id"].startswith("call_") for c in calls.values())


def test_the_sdk_tools_flow_runs_a_call_and_answers_from_its_result(client):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, tools=[WEATHER], tool_choice="required",
        temperature=0, max_tokens=100,
    )
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    call = message.tool_calls[0]
    check_call(call, "get_weather")
    messages.append(message)
    messages.append({"role": "tool", "tool_call_id": call.id,
                     "content": json.dumps({"temperature": 18, "sky": "sunny"})})
    # (A 135M model may well call again under `auto`; `none` asks for the answer.)
    second = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, tools=[WEATHER], tool_choice="none",
        temperature=0, max_tokens=60,
    )
    answer = second.choices[0]
    assert answer.finish_reason in ("stop", "length")
    assert answer.message.content and not answer.message.tool_calls
    # The call and its result reached the prompt of the second turn.
    alone = client.chat.completions.create(
        model=MODEL_NAME, messages=messages[:1], tools=[WEATHER], tool_choice="none", max_tokens=1,
    )
    assert second.usage.prompt_tokens > alone.usage.prompt_tokens + 20
    # Under `auto` the model decides; whatever it writes is a call or content.
    third = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, tools=[WEATHER], temperature=0, max_tokens=60,
    )
    choice = third.choices[0]
    assert choice.message.content or choice.message.tool_calls
    for call in choice.message.tool_calls or []:
        check_call(call, "get_weather")


class Address(BaseModel):
    city: str
    country: str


class Person(BaseModel):
    name: str
    age: int
    languages: list[str]
    address: Address


def test_chat_completions_parse_with_a_pydantic_model(client):
    parsed = 0
    for seed in range(3):
        try:
            completion = client.chat.completions.parse(
                model=MODEL_NAME,
                messages=[{"role": "user", "content": "Describe a person who lives in Rome."}],
                response_format=Person, temperature=1.0, seed=seed, max_tokens=300,
            )
        except openai.LengthFinishReasonError:
            continue  # a long string ran out of tokens: the SDK raises for that
        message = completion.choices[0].message
        assert isinstance(message.parsed, Person), message
        assert isinstance(message.parsed.address, Address)
        parsed += 1
    assert parsed, "every output ran out of tokens"


class City(BaseModel):
    name: str = Field(max_length=20)
    country: Literal["IT", "FR", "ES"]


class Trip(BaseModel):
    traveller: str = Field(max_length=20)
    nights: int = Field(ge=1, le=30)
    destination: City


def test_a_forced_call_of_a_pydantic_function_tool_with_nested_models(client):
    # The SDK's schema of Trip puts City under `$defs` and refers to it.
    tool = openai.pydantic_function_tool(Trip, name="book_trip")
    assert "$defs" in tool["function"]["parameters"]
    for seed in range(3):
        r = client.chat.completions.create(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": "Book me three nights in Rome."}],
            tools=[tool], tool_choice={"type": "function", "function": {"name": "book_trip"}},
            temperature=1.0, seed=seed, max_tokens=200,
        )
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        (call,) = choice.message.tool_calls
        assert call.function.name == "book_trip"
        trip = Trip.model_validate_json(call.function.arguments)
        assert isinstance(trip.destination, City)
