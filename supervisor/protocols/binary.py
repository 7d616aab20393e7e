"""Socket.IO binary attachments: placeholders in, bytes out, and back (pure).

socket.io-parser (``lib/binary.ts``, v4.2) sends an event or ack whose data
holds binary as a text packet of type ``5`` (BINARY_EVENT) or ``6``
(BINARY_ACK) with the attachment count before a dash, ``51-["up",{...}]``,
followed by that many binary frames. In the JSON each binary value is replaced
by ``{"_placeholder": true, "num": N}``, numbered in depth-first order (array
items in order, object values in key order); the receiver puts attachment
``N`` back wherever a placeholder says so, at any depth. An object whose
``_placeholder`` is ``true`` with a ``num`` that is not an index of a received
attachment is an error (socket.io-parser throws "illegal attachments").
"""

from __future__ import annotations

from typing import Any

PLACEHOLDER = "_placeholder"
NUM = "num"

MAX_ATTACHMENTS = 1024
"""Attachments one packet may announce; more is malformed (bounds the reassembly)."""
MAX_ATTACHMENT_BYTES = 64 * 1024 * 1024
"""Bytes one packet's attachments may add up to; more is malformed."""

Binary = bytes | bytearray | memoryview


def has_binary(data: Any) -> bool:
    """Whether ``data`` holds bytes anywhere (lists, tuples and dict values searched)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, Binary):
            return True
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return False


def deconstruct(data: Any) -> tuple[Any, list[bytes]]:
    """``data`` with each bytes value replaced by a placeholder, and the attachments in order.

    Tuples become lists (JSON arrays). Raises ``ValueError`` past ``MAX_ATTACHMENTS``.
    """
    attachments: list[bytes] = []

    def walk(item: Any) -> Any:
        if isinstance(item, Binary):
            if len(attachments) >= MAX_ATTACHMENTS:
                msg = f"more than {MAX_ATTACHMENTS} binary attachments in one packet"
                raise ValueError(msg)
            attachments.append(bytes(item))
            return {PLACEHOLDER: True, NUM: len(attachments) - 1}
        if isinstance(item, list | tuple):
            return [walk(value) for value in item]
        if isinstance(item, dict):
            return {key: walk(value) for key, value in item.items()}
        return item

    return walk(data), attachments


def reconstruct(data: Any, attachments: list[bytes]) -> Any:
    """``data`` with every placeholder replaced by its attachment; ValueError if one is bad.

    Works on a tree parsed from JSON (so it has no cycles); the depth is bounded
    by what the JSON parser accepted, and the walk uses an explicit stack.
    """
    root: list[Any] = [data]
    stack: list[tuple[list[Any] | dict[str, Any], int | str]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        item = container[key]  # type: ignore[index]
        if isinstance(item, dict):
            if item.get(PLACEHOLDER) is True:
                container[key] = _attachment(item.get(NUM), attachments)  # type: ignore[index]
            else:
                stack.extend((item, name) for name in item)
        elif isinstance(item, list):
            stack.extend((item, index) for index in range(len(item)))
    return root[0]


def _attachment(num: Any, attachments: list[bytes]) -> bytes:
    if isinstance(num, int) and not isinstance(num, bool) and 0 <= num < len(attachments):
        return attachments[num]
    msg = f"illegal attachment placeholder num={num!r} ({len(attachments)} attachments)"
    raise ValueError(msg)
