"""Turning request bodies into validated inputs, with one clear message per kind of bad input.

Bodies are JSON (``image_b64`` carries the image) or ``multipart/form-data`` (``image`` is a file
part). Multipart is parsed here on the raw bytes, not by Starlette's form parser, because that one
silently decodes a non-UTF-8 field as Latin-1; here a text field must be valid UTF-8.

Example:
    >>> valid_record_id("vqarad_synpic19605")
    'vqarad_synpic19605'
    >>> valid_record_id("../etc/passwd")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mmedrag.server.inputs.BadRequest: invalid record id '../etc/passwd': ids are ...
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from PIL import Image

from mmedrag.errors import InputError, InputTooLarge

_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+=-]{0,255}")
MAX_QUESTION_CHARS = 4000
MAX_IMAGE_PIXELS = 64_000_000


class BadRequest(Exception):
    """A client error: ``status`` (4xx, or 503 when answering is unavailable) and one line.

    Example:
        >>> BadRequest("'k' must be an integer").status
        400
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Part:
    """One multipart part: its raw bytes and, for files, the client's file name."""

    name: str
    data: bytes = b""
    filename: str | None = None
    content_type: str = ""


@dataclass
class Body:
    """A request body reduced to text fields and at most one image."""

    fields: dict[str, Any] = field(default_factory=dict)
    image: Image.Image | None = None
    image_name: str = ""


def valid_record_id(record_id: str) -> str:
    """Return ``record_id`` if it is a plain id (no slash, no leading dot, <= 256 chars)."""
    if not _ID.fullmatch(record_id) or ".." in record_id:
        raise BadRequest(f"invalid record id {record_id[:80]!r}: ids are letters, digits and "
                         "_.:@+=- without slashes")
    return record_id


def decode_text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"field '{name}' is not valid UTF-8 (byte {exc.start})") from None


def decode_image(data: bytes, name: str) -> Image.Image:
    """Decode PNG/JPEG/... or DICOM bytes into an RGB image, or raise BadRequest naming ``name``.

    The bounded loader checks the pixel count before decoding, DICOM (rows × columns × frames)
    included; over ``MAX_IMAGE_PIXELS`` is a 413.
    """
    from mmedrag.ingest.images import load_image

    if not data:
        raise BadRequest(f"image '{name}' is empty")
    try:
        return load_image(data, what=name, max_pixels=MAX_IMAGE_PIXELS)
    except InputError as exc:
        if isinstance(exc, InputTooLarge):
            raise BadRequest(f"image '{name}' is too large: {exc.reason}", status=413) from None
        raise BadRequest(f"'{name}' is not a readable image (PNG, JPEG or DICOM expected): "
                         f"{exc.reason}") from None


def decode_base64_image(value: Any, name: str = "image_b64") -> Image.Image:
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a base64 string")
    if value.startswith("data:"):
        value = value.split(",", 1)[-1]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"'{name}' is not valid base64") from None
    return decode_image(data, name)


MAX_JSON_DEPTH = 32
MAX_NUMBER_CHARS = 40
_STRINGS = re.compile(rb'"(?:\\.|[^"\\])*"')


def json_depth(data: bytes) -> int:
    """Deepest nesting of ``[``/``{`` in JSON text, strings ignored (no recursion, O(n))."""
    import numpy as np

    bare = np.frombuffer(_STRINGS.sub(b'""', data), dtype=np.uint8)
    steps = (np.isin(bare, (ord("["), ord("{"))).astype(np.int32)
             - np.isin(bare, (ord("]"), ord("}"))).astype(np.int32))
    return int(np.cumsum(steps).max(initial=0))


def _number(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadRequest(f"a JSON number is {len(text)} characters long (at most "
                         f"{MAX_NUMBER_CHARS})")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BadRequest(f"JSON number {text[:40]} is out of range")
    return value


def _integer(text: str) -> int:
    _number(text)
    return int(text)


def _constant(name: str) -> Any:
    raise BadRequest(f"JSON constant {name} is not allowed")


def parse_json(body: bytes) -> dict[str, Any]:
    """Parse a JSON object with limits: nesting depth, number length and range (400s)."""
    text = decode_text(body, "request body")
    if json_depth(body) > MAX_JSON_DEPTH:
        raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(text, parse_float=_number, parse_int=_integer,
                          parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON at line {exc.lineno} column {exc.colno}: "
                         f"{exc.msg}") from None
    except (RecursionError, ValueError):
        raise BadRequest("malformed JSON: nested too deeply or a number out of range") from None
    if not isinstance(data, dict):
        raise BadRequest("JSON body must be an object")
    return data


def parse_multipart(body: bytes, content_type: str, max_parts: int = 16) -> list[Part]:
    """Split a multipart/form-data body into parts (raw bytes, nothing decoded)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart body without a boundary")
    parts: list[Part] = []
    buffers: list[bytearray] = []
    header: dict[str, bytes] = {"name": b"", "value": b""}
    headers: dict[str, str] = {}

    def on_part_begin() -> None:
        if len(parts) >= max_parts:
            raise BadRequest(f"too many multipart parts (at most {max_parts})")
        headers.clear()
        parts.append(Part(name=""))
        buffers.append(bytearray())

    def on_part_data(data: bytes, start: int, end: int) -> None:
        buffers[-1].extend(data[start:end])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        headers[header["name"].decode("latin-1").lower()] = header["value"].decode("latin-1")
        header["name"], header["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(headers.get("content-disposition", ""))
        part = parts[-1]
        part.name = decode_text(disposition.get(b"name", b""), "part name")
        filename = disposition.get(b"filename")
        part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        part.content_type = headers.get("content-type", "")

    callbacks = {"on_part_begin": on_part_begin, "on_part_data": on_part_data,
                 "on_header_field": on_header_field, "on_header_value": on_header_value,
                 "on_header_end": on_header_end, "on_headers_finished": on_headers_finished}
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except BadRequest:
        raise
    except Exception as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    for part, buffer in zip(parts, buffers, strict=True):
        part.data = bytes(buffer)
    return [p for p in parts if p.name]


def parse_body(raw: bytes, content_type: str, image_field: str = "image") -> Body:
    """Parse a JSON or multipart body into a ``Body`` (image decoded, fields as str)."""
    media = content_type.split(";")[0].strip().lower()
    out = Body()
    if media == "multipart/form-data":
        for part in parse_multipart(raw, content_type):
            if part.name == image_field:
                if not part.data and not part.filename:
                    continue  # an HTML form's empty file input: no image
                if out.image is not None:
                    raise BadRequest(f"send one '{image_field}' part, not several")
                out.image_name = part.filename or image_field
                out.image = decode_image(part.data, out.image_name)
            else:
                out.fields[part.name] = decode_text(part.data, part.name)
        return out
    if media == "application/x-www-form-urlencoded":
        try:
            out.fields = dict(parse_qsl(decode_text(raw, "request body"), keep_blank_values=True,
                                        encoding="utf-8", errors="strict", max_num_fields=32))
        except UnicodeDecodeError:
            raise BadRequest("a form field is not valid UTF-8") from None
        except ValueError as exc:
            raise BadRequest(f"malformed form body: {exc}") from None
        return out
    if media in ("application/json", "") and raw.strip():
        out.fields = parse_json(raw)
        value = out.fields.pop(f"{image_field}_b64", None)
        if value not in (None, ""):
            out.image_name = f"{image_field}_b64"
            out.image = decode_base64_image(value, out.image_name)
        return out
    if not raw.strip():
        raise BadRequest("empty request body: send JSON or multipart/form-data")
    raise BadRequest(f"unsupported Content-Type {media!r}: send application/json, "
                     "multipart/form-data or a url-encoded form", status=415)


def text_field(fields: dict[str, Any], name: str, required: bool = False,
               max_chars: int = MAX_QUESTION_CHARS) -> str | None:
    value = fields.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise BadRequest(f"'{name}' is required")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"'{name}' is not valid UTF-8 text (lone surrogate)") from None
    if len(value) > max_chars:
        raise BadRequest(f"'{name}' is {len(value)} characters, over the limit of {max_chars}")
    return value.strip()


def int_field(fields: dict[str, Any], name: str, default: int | None, low: int,
              high: int) -> int | None:
    value = fields.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
        if isinstance(value, float) and number != value or isinstance(value, bool):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"'{name}' must be an integer, got {str(value)[:40]!r}") from None
    if not low <= number <= high:
        raise BadRequest(f"'{name}' must be between {low} and {high}, got {number}")
    return number


def bool_field(fields: dict[str, Any], name: str, default: bool = False) -> bool:
    value = fields.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise BadRequest(f"'{name}' must be true or false, got {str(value)[:40]!r}")


def options_field(fields: dict[str, Any], name: str = "options") -> dict[str, str] | None:
    """MCQ options: a JSON object (or, in multipart, its JSON text) of letter -> text."""
    value = fields.get(name)
    if value in (None, "", {}):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BadRequest(f"'{name}' must be a JSON object like {{\"A\": \"...\"}}") from None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadRequest(f"'{name}' must map option letters to texts")
    return value
