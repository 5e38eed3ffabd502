"""JSON schemas the grammar tests generate under, each with a prompt that invites it.

Every string and array is bounded, so a reply always closes within the tests' token cap.
"""

from __future__ import annotations

from typing import Any

NAME = {"type": "string", "minLength": 1, "maxLength": 12}

SCHEMAS: dict[str, tuple[str, dict[str, Any]]] = {
    "person": (
        "Describe a person with a name and an age.",
        {
            "type": "object",
            "properties": {"name": NAME, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": False,
        },
    ),
    "colour enum": (
        "Name your favourite colour.",
        {"enum": ["red", "green", "blue"]},
    ),
    "bounded array": (
        "List some prime numbers.",
        {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4},
    ),
    "nested object": (
        "Give an address of a shop.",
        {
            "type": "object",
            "properties": {
                "shop": NAME,
                "address": {
                    "type": "object",
                    "properties": {"street": NAME, "city": NAME, "number": {"type": "integer"}},
                    "required": ["street", "city", "number"],
                    "additionalProperties": False,
                },
            },
            "required": ["shop", "address"],
            "additionalProperties": False,
        },
    ),
    "integer range": (
        "Rate the weather from one to five.",
        {
            "type": "object",
            "properties": {"rating": {"type": "integer", "minimum": 1, "maximum": 5}},
            "required": ["rating"],
            "additionalProperties": False,
        },
    ),
    "number range": (
        "How tall is a child in metres?",
        {
            "type": "object",
            "properties": {"height": {"type": "number", "minimum": 0.5, "exclusiveMaximum": 2.0}},
            "required": ["height"],
            "additionalProperties": False,
        },
    ),
    "boolean": ("Is the sea salty?", {"type": "boolean"}),
    "pattern": (
        "Name a fruit in lowercase.",
        {"type": "string", "pattern": "^[a-z]{3,8}$"},
    ),
    "array of objects": (
        "List two pets with their kind.",
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": NAME, "kind": {"enum": ["cat", "dog", "fish"]}},
                "required": ["name", "kind"],
                "additionalProperties": False,
            },
            "minItems": 1,
            "maxItems": 2,
        },
    ),
    "optional field": (
        "Describe a book.",
        {
            "type": "object",
            "properties": {
                "title": NAME,
                "pages": {"type": "integer", "minimum": 1, "maximum": 2000},
                "subtitle": NAME,
            },
            "required": ["title", "pages"],
            "additionalProperties": False,
        },
    ),
    "any of": (
        "Give an identifier, a word or a number.",
        {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 99}, NAME]},
    ),
    "constant and enum": (
        "Report a status.",
        {
            "type": "object",
            "properties": {
                "version": {"const": 2},
                "status": {"enum": ["ok", "degraded", "down"]},
            },
            "required": ["version", "status"],
            "additionalProperties": False,
        },
    ),
}

# A tool's parameters, for the tool-calling tests.
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
