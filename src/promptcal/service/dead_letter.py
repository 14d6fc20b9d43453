"""Dead letters: the headers that say why a message was rejected.

A dead-letter message carries the original message's key and value bytes unchanged
(so it can be inspected or re-published as it was) plus the headers below.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promptcal.core.errors import InvalidInputError

#: Header names of a dead-letter message. Its key and value are the original message's
#: key and bytes, unchanged, so it can be inspected or re-published as it was.
HEADER_ERROR_TYPE = "error-type"
HEADER_ERROR_MESSAGE = "error-message"
HEADER_SOURCE_TOPIC = "source-topic"
HEADER_SOURCE_PARTITION = "source-partition"
HEADER_SOURCE_OFFSET = "source-offset"
DEAD_LETTER_HEADERS: tuple[str, ...] = (
    HEADER_ERROR_TYPE,
    HEADER_ERROR_MESSAGE,
    HEADER_SOURCE_TOPIC,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_OFFSET,
)

#: Longest error message kept in a header [characters]; longer ones are truncated.
MAX_ERROR_MESSAGE_CHARS = 2000


class DeadLetter(BaseModel):
    """What the dead-letter headers say about a rejected message.

    Build the headers with :meth:`headers`; read them back with :meth:`from_headers`.
    Header values are UTF-8 text; partition and offset are decimal integers.
    """

    model_config = ConfigDict(frozen=True)

    error_type: str = Field(description="Exception class name, e.g. 'InvalidInputError'.")
    error_message: str = Field(description="Exception message (truncated to 2000 chars).")
    source_topic: str = Field(description="Topic the original message was read from.")
    source_partition: int = Field(ge=0, description="Its partition.")
    source_offset: int = Field(ge=0, description="Its offset.")

    @classmethod
    def from_error(
        cls, error: BaseException, source_topic: str, source_partition: int, source_offset: int
    ) -> DeadLetter:
        """Describe ``error`` raised while handling the message at topic/partition/offset."""
        message = str(error)
        if len(message) > MAX_ERROR_MESSAGE_CHARS:
            message = message[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."
        return cls(
            error_type=type(error).__name__,
            error_message=message,
            source_topic=source_topic,
            source_partition=source_partition,
            source_offset=source_offset,
        )

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers, in :data:`DEAD_LETTER_HEADERS` order."""
        values = (
            self.error_type,
            self.error_message,
            self.source_topic,
            str(self.source_partition),
            str(self.source_offset),
        )
        return [(k, v.encode("utf-8")) for k, v in zip(DEAD_LETTER_HEADERS, values, strict=True)]

    @classmethod
    def from_headers(
        cls, headers: list[tuple[str, bytes | str | None]] | dict[str, bytes | str | None] | None
    ) -> DeadLetter:
        """Read the headers of a dead-letter message (extra headers are ignored).

        Raises
        ------
        InvalidInputError
            A required header is missing or malformed.
        """
        items = headers.items() if isinstance(headers, dict) else (headers or [])
        found: dict[str, str] = {}
        for name, value in items:
            if name in DEAD_LETTER_HEADERS and value is not None:
                text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
                found[name] = text
        missing = [h for h in DEAD_LETTER_HEADERS if h not in found]
        if missing:
            raise InvalidInputError(f"dead-letter message lacks headers {missing}")
        try:
            return cls(
                error_type=found[HEADER_ERROR_TYPE],
                error_message=found[HEADER_ERROR_MESSAGE],
                source_topic=found[HEADER_SOURCE_TOPIC],
                source_partition=int(found[HEADER_SOURCE_PARTITION]),
                source_offset=int(found[HEADER_SOURCE_OFFSET]),
            )
        except (ValueError, ValidationError) as exc:
            raise InvalidInputError(f"malformed dead-letter headers {found}: {exc}") from exc
