"""Bytes to text: UTF-8 (a BOM is dropped), UTF-16 with a BOM, else cp1252 or
latin-1 with a warning. Binary data is refused by its content, whatever the name."""

from __future__ import annotations

import codecs
import re

from localassist.errors import DocumentError

# C0/C1 control characters other than tab, newline, CR, form feed and vertical tab:
# text almost never has them, binary data that happens to decode is full of them.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_MAX_CONTROL_RATIO = 0.1


def decode(data: bytes, name: str) -> tuple[str, str, list[str]]:
    """Return (text with \\n line ends, encoding, warnings)."""
    warnings: list[str] = []
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        # UTF-16 is full of NUL bytes, so it is recognised by its BOM before the NUL test
        try:
            text, encoding = data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            raise _binary(name, "it is not valid UTF-16 after a UTF-16 byte order mark") from None
    elif b"\x00" in data:
        raise _binary(name, "it contains NUL bytes")
    else:
        try:
            text = data.decode("utf-8-sig")
            encoding = "utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-8"
        except UnicodeDecodeError as error:
            try:
                text, encoding = data.decode("cp1252"), "cp1252"
            except UnicodeDecodeError:
                text, encoding = data.decode("latin-1"), "latin-1"
            warnings.append(f"{name} is not valid UTF-8 (byte {error.start}); read it as {encoding}")
    controls = len(_CONTROL.findall(text))
    if text and controls / len(text) > _MAX_CONTROL_RATIO:
        raise _binary(name, f"{controls:,} of its {len(text):,} characters are control characters")
    return text.replace("\r\n", "\n").replace("\r", "\n"), encoding, warnings


def _binary(name: str, why: str) -> DocumentError:
    return DocumentError(f"{name} looks like a binary file, not text ({why}); give a text, PDF, CSV, HTML or JSON file")
