"""Writes openai-responses.json: the schemas OpenAI's `Response` and `ResponseStreamEvent` reach,
from OpenAI's published OpenAPI spec (https://github.com/openai/openai-openapi, openapi.json),
with descriptions, titles and examples left out and nothing else changed.

    python3 tests/clients/schemas/extract.py /path/to/openapi.json COMMIT
"""
import json
import os
import sys

ROOTS = ["Response", "ResponseStreamEvent"]
PREFIX = "#/components/schemas/"


def refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(PREFIX):
                yield value[len(PREFIX):]
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def is_annotation(key, value):
    # A property schema is an object: only string descriptions and titles are annotations.
    return ((key in ("description", "title") and isinstance(value, str)) or key == "x-oaiMeta"
            or (key in ("example", "examples") and not isinstance(value, dict)))


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if not is_annotation(k, v)}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(spec_path, commit):
    with open(spec_path) as f:
        schemas = json.load(f)["components"]["schemas"]
    needed, stack = set(), list(ROOTS)
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack.extend(refs(schemas[name]))
    out = {
        "$comment": "Third-party file: the schemas under components.schemas that Response and "
        "ResponseStreamEvent reach, extracted by extract.py beside this file (descriptions, titles "
        "and examples left out, nothing else changed) from OpenAI's published OpenAPI spec, "
        f"https://github.com/openai/openai-openapi openapi.json at commit {commit}. MIT License, "
        "Copyright (c) OpenAI: LICENSE-openai-openapi beside this file.",
        "components": {"schemas": {name: strip(schemas[name]) for name in sorted(needed)}},
    }
    target = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openai-responses.json")
    with open(target, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
