"""API keys: ``[api.keys]`` (named, so one can be revoked alone) and ``[api] key``
(named ``default``), given as ``Authorization: Bearer KEY`` or ``X-API-Key``."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from nurture.config import ApiSection
from nurture.errors import InvalidValueError
from nurture.web.guard import read_json


class ApiKeys:
    """Which named key a request carries."""

    def __init__(self, settings: ApiSection) -> None:
        self._keys = [(name, key.encode()) for name, key in settings.named_keys().items()]

    @property
    def on(self) -> bool:
        return bool(self._keys)

    def name_of(self, request: Request) -> str | None:
        """The name of the key the request carries, or ``None`` (every key is compared,
        in constant time, so the answer's timing tells nothing)."""
        given = request.headers.get("x-api-key") or ""
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = credential.strip()
        if not given:
            return None
        found = None
        for name, key in self._keys:
            if hmac.compare_digest(given.encode(), key):
                found = name
        return found

    def check(self, request: Request) -> tuple[str, JSONResponse | None]:
        """The key's name, or the answer refusing the call (API off, wrong key)."""
        if not self.on:
            return "", JSONResponse({"detail": "the API is off: set [api] key or [api.keys]"},
                                    503)  # fmt: skip
        name = self.name_of(request)
        if name is None:
            return "", JSONResponse({"detail": "missing or wrong API key"}, 401)
        return name, None

    async def body(self, request: Request) -> tuple[str, Any, JSONResponse | None]:
        """The key's name and the JSON body of an API call, or the answer refusing it."""
        name, refused = self.check(request)
        if refused is not None:
            return "", None, refused
        try:
            return name, read_json(await request.body()), None
        except InvalidValueError as exc:
            return name, None, JSONResponse({"detail": str(exc)}, 400)


#: Most items one API call may carry.
MAX_BATCH = 1000


def batch_items(body: Any, what: str) -> tuple[list[Any], bool] | JSONResponse:
    """The items of an API body (one object, or an array of up to :data:`MAX_BATCH`)
    and whether it was one; or the answer refusing a batch too large."""
    single = not isinstance(body, list)
    items = [body] if single else body
    if len(items) > MAX_BATCH:
        return JSONResponse({"detail": f"at most {MAX_BATCH} {what} per request"}, 400)
    return items, single


def batch_answer(
    results: list[dict[str, Any]], single: bool, counts: dict[str, int]
) -> JSONResponse:
    """One item's own answer, or a batch's: *counts* and every item's result, 207 when
    some were refused."""
    if single:
        result = results[0]
        return JSONResponse({k: v for k, v in result.items() if k != "index"}, result["status"])
    refused = sum(r["status"] >= 400 for r in results)
    summary = {**counts, "refused": refused, "results": results}
    return JSONResponse(summary, 207 if refused else 200)
