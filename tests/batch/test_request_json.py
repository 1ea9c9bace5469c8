"""`HTTPClient.request_json` and GET streams: the one `_send` path (retries, errors, secrets)."""

from __future__ import annotations

import pytest

from chatstream.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    StreamProtocolError,
)
from chatstream.testing import Faults
from chatstream.testing.openai_batch_server import OpenAIBatchServer
from chatstream.transport.http import HTTPClient, RetryPolicy
from chatstream.transport.ndjson import NDJSONDecoder

SECRET = "sk-secret-value-123"


def client(retries: int = 0) -> HTTPClient:
    return HTTPClient(
        provider="test", retry=RetryPolicy(max_retries=retries, initial=0.001, maximum=0.001)
    )


async def test_json_in_and_out_and_an_error_status_mapped() -> None:
    async with OpenAIBatchServer() as server:
        http = client()
        try:
            page = await http.request_json("GET", server.base_url + "/batches", headers={})
            with pytest.raises(BadRequestError) as caught:
                await http.request_json(
                    "POST", server.base_url + "/batches", headers={}, json={"input_file_id": "x"}
                )
        finally:
            await http.aclose()
    assert page == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    assert server.requests[1].body == {"input_file_id": "x"}
    assert caught.value.status == 400 and "input_file_id" in caught.value.message


async def test_raw_bytes_go_out_unchanged_and_json_comes_back() -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jsonl"\r\n\r\n'
        f'{{"custom_id": "a"}}\n\r\n--{boundary}--\r\n'
    ).encode()
    async with OpenAIBatchServer() as server:
        http = client()
        try:
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
            file = await http.request_json(
                "POST", server.base_url + "/files", headers=headers, data=body
            )
            url = server.base_url + f"/files/{file['id']}/content"
            async with http.open_stream(
                url, json=None, headers={}, decoder=NDJSONDecoder(), method="GET"
            ) as lines:
                content = [line async for line in lines]
        finally:
            await http.aclose()
    assert server.requests[0].raw_body == body
    assert file["purpose"] == "batch" and file["bytes"] == len(b'{"custom_id": "a"}\n')
    assert content == [{"custom_id": "a"}]
    assert server.requests[1].method == "GET" and server.requests[1].raw_body == b""


async def test_errors_are_mapped_and_scrub_the_secrets() -> None:
    async with OpenAIBatchServer(api_key="other") as server:
        http = client()
        try:
            with pytest.raises(AuthenticationError) as caught:
                await http.request_json(
                    "GET",
                    server.base_url + "/batches/x",
                    headers={"Authorization": f"Bearer {SECRET}"},
                    secrets=[SECRET],
                )
            with pytest.raises(NotFoundError):
                await http.request_json("GET", server.base_url + "/nothing", headers={})
        finally:
            await http.aclose()
    assert SECRET not in str(caught.value) and SECRET not in (caught.value.body or "")


async def test_a_body_that_is_not_json_is_a_protocol_error() -> None:
    async with OpenAIBatchServer() as server:
        http = client()
        try:
            file = await http.request_json(
                "POST",
                server.base_url + "/files",
                headers={"Content-Type": "multipart/form-data; boundary=b"},
                data=b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n'
                b"not json at all\r\n--b--\r\n",
            )
            with pytest.raises(StreamProtocolError) as caught:
                await http.request_json(
                    "GET", server.base_url + f"/files/{file['id']}/content", headers={}
                )
        finally:
            await http.aclose()
    assert caught.value.line == "not json at all"


async def test_json_and_data_together_are_refused() -> None:
    http = client()
    with pytest.raises(TypeError):
        await http.request_json("POST", "http://127.0.0.1:9/", headers={}, json={}, data=b"x")
    await http.aclose()


async def test_a_server_error_is_retried_then_answers() -> None:
    # A 500 on the first attempt only: the retry policy of open_stream applies here too.
    async with OpenAIBatchServer() as server:
        server.script(faults=Faults(http_error=500, fail_times=1))
        http = client(retries=1)
        try:
            page = await http.request_json("GET", server.base_url + "/batches", headers={})
        finally:
            await http.aclose()
    assert page["object"] == "list"
    assert len(server.requests) == 2
