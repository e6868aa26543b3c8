"""JSON schemas shared by the client checks (imported; runs nothing)."""

# A small record with every kind of field a designer would ask for: bounded strings, a
# bounded integer, a short array and an enum.
PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "maxLength": 30},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
        "mood": {"enum": ["happy", "calm", "busy"]},
    },
    "required": ["name", "age", "city", "hobbies", "mood"],
    "additionalProperties": False,
}
