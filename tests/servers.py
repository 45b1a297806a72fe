"""Small HTTP servers on loopback for the OpenAI-compatible backend's tests: a server that
answers in the DeepSeek API's `reasoning_content` shape, a fault-injecting proxy, a server that
accepts connections and never answers, and a port where nothing listens."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
from collections import Counter
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web


class Background:
    """An aiohttp app on 127.0.0.1:<free port>, served from its own thread."""

    def __init__(self, app: web.Application):
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = 0
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.runner = web.AppRunner(app, handle_signals=False)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        started.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def deepseek_server(
    key: str, fail_every: int = 0, delay: float = 0.0, fail_all: bool = False,
    context: int | None = None,
) -> tuple[Background, Counter]:  # fmt: skip
    """Answers like `deepseek-reasoner`: reasoning in `reasoning_content`, one choice, usage.
    Checks the bearer key; every `fail_every`-th request (every one with `fail_all`) gets a
    500 whose body echoes the request headers (a hostile server: the key must still not reach
    any output). `delay`: seconds each answer takes. `context`: refuse prompt + max_tokens over
    it with a 400, as vLLM did before it clamped by itself (20 prompt tokens)."""
    seen: Counter[str] = Counter()

    async def chat(request: web.Request) -> web.Response:
        seen["requests"] += 1
        number = seen["requests"]  # before any await: concurrent handlers interleave there
        if delay:
            await asyncio.sleep(delay)
        if request.headers.get("Authorization") != f"Bearer {key}":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        body = await request.json()
        if fail_all or (fail_every and number % fail_every == 0):
            return web.json_response(
                {"error": {"message": f"boom {dict(request.headers)}"}}, status=500
            )
        if context and body.get("max_tokens", 0) + 20 > context:  # vLLM < 0.10's refusal
            seen["overflow"] += 1
            message = (f"This model's maximum context length is {context} tokens. However, you "
                       f"requested {body['max_tokens'] + 20} tokens (20 in the messages, "
                       f"{body['max_tokens']} in the completion). Please reduce the length.")  # fmt: skip
            return web.json_response({"error": {"message": message}}, status=400)
        question = body["messages"][-1]["content"]
        a, b = (int(x) for x in question.split("What is ")[1].split("?")[0].split(" + "))
        message = {
            "role": "assistant",
            "content": f"The sum is \\boxed{{{a + b}}}.",
            "reasoning_content": f"{a} plus {b} is {a + b}.",
        }
        return web.json_response({
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32},
        })  # fmt: skip

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return Background(app), seen


def fault_proxy(upstream: str, stall_seconds: float) -> tuple[Background, Counter]:
    """Forwards to `upstream`, but about 30% of problems meet faults, chosen from a hash of the
    request so the test is deterministic: some fail three times in a row (more than the
    client's retries: the row is written as an error, and the rerun gets through), others
    fail once (the client's retry gets through). Faults: HTTP 500, HTTP 429, a stall past the
    client's timeout, a dropped connection."""
    attempts: Counter[str] = Counter()
    faults: Counter[str] = Counter()

    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body: dict[str, Any] = json.loads(raw)
        key = hashlib.sha1(json.dumps(body["messages"]).encode()).hexdigest()
        bucket = int(key, 16) % 20
        attempts[key] += 1
        failing = (bucket < 3 and attempts[key] <= 3) or (3 <= bucket < 6 and attempts[key] == 1)
        if failing:
            kind = ["500", "429", "stall", "drop"][(bucket + attempts[key]) % 4]
            faults[kind] += 1
            if kind == "500":
                return web.json_response({"error": {"message": "injected"}}, status=500)
            if kind == "429":
                return web.json_response(
                    {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0"}
                )
            if kind == "stall":
                await asyncio.sleep(stall_seconds)
                return web.json_response({"error": {"message": "too late"}}, status=500)
            request.transport.close()  # dropped connection, no response at all
            return web.Response()
        async with (
            ClientSession(timeout=ClientTimeout(total=600)) as session,
            session.post(
                upstream + "/chat/completions",
                data=raw,
                headers={"Content-Type": "application/json"},
            ) as r,
        ):
            return web.Response(
                body=await r.read(), status=r.status, content_type="application/json"
            )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    return Background(app), faults


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never answers: a hung endpoint."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)  # kept open, never read from nor written to

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


def closed_port() -> int:
    """A loopback port where nothing listens (connections are refused)."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]
