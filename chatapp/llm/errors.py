"""The model boundary's one error family: what went wrong, said for a person, with details for the log."""

from __future__ import annotations

import email.utils
import time

import openai

class LLMError(Exception):
    """Anything that went wrong talking to the model. `str(e)` is for the person; `detail` for the log."""

    def __init__(self, kind: str, user_message: str, detail: str = "", retry_after: float | None = None) -> None:
        super().__init__(user_message)
        self.kind = kind
        self.user_message = user_message
        self.detail = detail
        self.retry_after = retry_after  # seconds, when the server said how long to wait

    def __repr__(self) -> str:
        return f"LLMError(kind={self.kind!r}, user_message={self.user_message!r}, detail={self.detail!r})"


MESSAGES = {
    "auth": "The model server refused our API key. An administrator needs to check OPENAI_API_KEY.",
    "not_found": "The model server does not know the model “{model}”. An administrator needs to check "
                 "OPENAI_MODEL.",
    "bad_request": "The model server rejected this request, perhaps because the conversation is too "
                   "long. Try starting a new chat.",
    "rate_limit": "The model server is busy; try again in a minute.",
    "server": "The model server had a problem answering; try again in a moment.",
    "connection": "Could not reach the model server. Check that it is running and that OPENAI_BASE_URL "
                  "is right.",
    "timeout": "The model server took too long to answer; try again in a moment.",
    "malformed": "The model server sent a reply this app could not understand.",
}
# Once text has been shown, a failure means the answer was cut short, not that nothing came.
CUT_SHORT = {
    "connection": "The connection to the model server broke off before the answer was finished; "
                  "try again.",
    "timeout": "The model server stopped sending in the middle of the answer; try again.",
}


# Worth another try before the first token: the server was busy, failed, or could not be reached.
RETRYABLE = {"rate_limit", "server", "connection", "timeout"}


def kind_of(error: openai.OpenAIError) -> str:
    """Sort an SDK exception into one of the kinds a person can act on."""
    if isinstance(error, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return "auth"
    if isinstance(error, openai.NotFoundError):
        return "not_found"
    if isinstance(error, openai.RateLimitError):
        return "rate_limit"
    if isinstance(error, openai.APIResponseValidationError):
        return "malformed"
    if isinstance(error, openai.APIStatusError):
        return "bad_request" if 400 <= error.status_code < 500 and error.status_code != 408 else "server"
    if isinstance(error, openai.APITimeoutError):  # before APIConnectionError: it is a subclass
        return "connection" if _could_not_connect(error) else "timeout"
    if isinstance(error, openai.APIConnectionError):
        return "connection"
    return "server"  # an error event inside the stream, or another SDK failure


def _could_not_connect(error: BaseException) -> bool:
    """The SDK's aiohttp transport reports every failure to connect (refused, no route, unknown
    host) as a connect timeout; the error underneath says which it was."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and not isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def retry_after(error: openai.OpenAIError) -> float | None:
    """Seconds the server asked us to wait (Retry-After-Ms, or Retry-After in seconds or as a date)."""
    response = getattr(error, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        if "retry-after" in headers:
            value = headers["retry-after"]
            try:
                return max(0.0, float(value))
            except ValueError:
                moment = email.utils.parsedate_to_datetime(value)
                return max(0.0, moment.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None
    return None
