"""Hostile and malformed inputs, generated in code so that nothing large is kept in the repo.

Each generator returns ``{case name: payload}``; the tests feed them to the components and
expect a clear error or a counted bad record, never a traceback, code execution or a write
outside the output prefix.
"""

from __future__ import annotations

import json

import nbformat

HUGE_LINE_BYTES = 20 * 2**20
BIG_OUTPUT_BYTES = 10 * 2**20
DEPTH = 100_000


def json_lines(width: int = 64) -> dict[str, bytes]:
    """Lines that must each become one error row of a JSON batch job (model input: floats
    of shape [width] named ``pixels``)."""
    good = [0.5] * width
    return {
        "deep-nesting": b"[" * DEPTH + b"]" * DEPTH,
        "deep-nesting-object": b'{"pixels": ' + b"[" * DEPTH + b"]" * DEPTH + b"}",
        "huge-line": b'{"pixels": "' + b"A" * HUGE_LINE_BYTES + b'"}',
        "invalid-utf8": b'{"pixels": "\xff\xfe\xfa"}',
        "lone-surrogate": b'{"pixels": "\\ud800"}',
        "nan": b'{"pixels": [NaN' + b", 0.5" * (width - 1) + b"]}",
        "infinity": b'{"pixels": [Infinity' + b", 0.5" * (width - 1) + b"]}",
        "huge-number": b'{"pixels": [1e400' + b", 0.5" * (width - 1) + b"]}",
        "strings": json.dumps({"pixels": ["x"] * width}).encode(),
        "booleans-and-nulls": json.dumps({"pixels": [True, None] * (width // 2)}).encode(),
        "object-instead-of-list": json.dumps({"pixels": {"a": 1}}).encode(),
        "wrong-name": json.dumps({"images": good}).encode(),
        "extra-input": json.dumps({"pixels": good, "other": 1}).encode(),
        "ragged": json.dumps({"pixels": [[1, 2], [3]]}).encode(),
        "b64-garbage": json.dumps({"pixels": {"b64": "!!!not base64!!!"}}).encode(),
        "truncated-json": b'{"pixels": [0.5, 0.5',
        "binary-junk": bytes(b for b in range(256) if b not in b"\r\n"),
        "bare-string": b'"hello"',
        "empty-object": b"{}",
    }


def good_json_lines(rows) -> list[bytes]:
    return [json.dumps({"pixels": [float(v) for v in row]}).encode() for row in rows]


def tfrecord_file(good_records: list[bytes]) -> tuple[bytes, dict[str, int]]:
    """Good records, then one with a bad data CRC, more good ones, and a truncated tail.

    Returns the file's bytes and how many records of each kind it holds.
    """
    from batch.tfrecords import frame

    half = len(good_records) // 2
    framed = [frame(r) for r in good_records]
    bad_crc = bytearray(frame(good_records[0]))
    bad_crc[-1] ^= 0xFF  # the data checksum no longer matches
    tail = frame(good_records[-1])[:-7]  # cut inside the record: a file cut short
    data = b"".join(framed[:half]) + bytes(bad_crc) + b"".join(framed[half:]) + tail
    return data, {"good": len(good_records), "bad_crc": 1, "truncated": 1}


def notebooks() -> dict[str, bytes]:
    """Notebook files that cannot be run as given."""
    no_params = nbformat.v4.new_notebook()
    no_params.metadata["kernelspec"] = {"name": "python3", "display_name": "python3",
                                        "language": "python"}  # fmt: skip
    no_params.cells.append(nbformat.v4.new_code_cell("x = 1"))
    return {
        "not-json": b"this is not a notebook {",
        "json-not-notebook": b'{"cells": "nope"}',
        "binary": bytes(range(256)) * 10,
        "no-parameters-cell": nbformat.writes(no_params).encode(),
    }


def big_output_notebook() -> bytes:
    """A notebook whose one cell prints 10 MB."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3",
                                 "language": "python"}  # fmt: skip
    nb.cells.append(nbformat.v4.new_code_cell("n = 1\n", metadata={"tags": ["parameters"]}))
    nb.cells.append(nbformat.v4.new_code_cell(f"print('x' * {BIG_OUTPUT_BYTES} * n)"))
    return nbformat.writes(nb).encode()


def echo_notebook() -> bytes:
    """A notebook that records its string parameter ``value`` with scrapbook."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3",
                                 "language": "python"}  # fmt: skip
    nb.cells.append(nbformat.v4.new_code_cell('value = "x"\n', metadata={"tags": ["parameters"]}))
    nb.cells.append(nbformat.v4.new_code_cell("import scrapbook as sb\nsb.glue('value', value)"))
    return nbformat.writes(nb).encode()


def hostile_values(marker: str) -> dict[str, str]:
    """Parameter values that would run ``touch <marker>`` if anything evaluated them."""
    return {
        "command-substitution": f"$(touch {marker})",
        "backticks": f"`touch {marker}`",
        "semicolon": f"x; touch {marker}",
        "pipe-and-redirect": f"x | touch {marker} > /dev/null &",
        "newline-code": f"x\"\nimport os; os.system('touch {marker}')\n\"",
        "quotes": "it's \"quoted\" '''triple''' \\ backslash",
        "python-fstring": "{__import__('os').system('touch " + marker + "')}",
    }


def yaml_tricks(marker: str) -> dict[str, str]:
    """YAML documents that construct objects or run code under an unsafe loader."""
    return {
        "object-apply": f'value: !!python/object/apply:os.system ["touch {marker}"]',
        "object-new": f'value: !!python/object/new:subprocess.Popen [["touch", "{marker}"]]',
        "name": "value: !!python/name:os.system",
        "module": "value: !!python/module:os",
        "top-level-apply": f'!!python/object/apply:os.system ["touch {marker}"]',
    }


def output_templates() -> dict[str, tuple[str, dict[str, str]]]:
    """(template relative to an output prefix, -p parameters) pairs that try to escape it."""
    return {
        "dotdot-in-value": ("out/{sub}/r.ipynb", {"sub": "../../escaped"}),
        "dotdot-literal": ("out/../../escaped/r.ipynb", {}),
        "attribute-access": ("out/{run_id.__class__}/r.ipynb", {}),
        "index-access": ("out/{sub[0]}/r.ipynb", {"sub": "abc"}),
        "positional": ("out/{0}/r.ipynb", {}),
        "unknown-field": ("out/{nope}/r.ipynb", {}),
        "unbalanced": ("out/{sub/r.ipynb", {"sub": "a"}),
    }
