"""The API's refusals: one JSON body, ``{"error": {"code", "message", "index"?}}``, with a
stable code and the HTTP status that goes with it."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

NO_STORE = {"Cache-Control": "no-store"}


class ApiError(Exception):
    """A refusal: HTTP ``status``, stable ``code``, a sentence; ``headers`` to add."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        index: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.index = index
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        """The refusal as the API answers it."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.index is not None:
            body["index"] = self.index
        return JSONResponse({"error": body}, self.status, headers=NO_STORE | self.headers)


def invalid(exc: ValidationError, prefix: str = "") -> ApiError:
    """A request body that does not validate: the first problem, where it is."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    index = None
    if len(first["loc"]) > 1 and first["loc"][0] == "triggers":
        index = first["loc"][1] if isinstance(first["loc"][1], int) else None
    message = f"{prefix}{where or 'body'}: {first['msg']}"
    return ApiError(422, "invalid_request", message, index=index)
