"""How much one row may hold, so that every item stored from it fits DynamoDB's 400 KB item limit.

A row becomes a recipient (or a panel member, or a subscription) whose attributes are its columns.
The item holds those attributes and a few hundred bytes of its own (keys, status, code, times), and
the sender adds some more; 64 KiB leaves the rest of the 400 KB to them with room to spare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

MAX_ROW_BYTES = 64 * 1024


def attributes_size(attributes: Mapping[str, object]) -> int:
    """The bytes DynamoDB counts for these attributes stored as a map of strings.

    Each name and value in UTF-8, one byte per element and three for the map
    (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html).
    """
    return 3 + sum(len(str(name).encode()) + len(_text(value).encode()) + 1 for name, value in attributes.items())


def oversized(entries: Sequence[Mapping[str, object]]) -> list[str]:
    """What is wrong with each entry (of a command's list) too large to store, naming its largest value."""
    problems = []
    for index, entry in enumerate(entries):
        size = attributes_size(entry)
        if size > MAX_ROW_BYTES:
            sizes = {str(name): len(_text(value).encode()) for name, value in entry.items()}
            name = max(sizes, key=sizes.__getitem__)
            problems.append(
                f"entry {index} takes {size} bytes ({name}: {sizes[name]}); an entry may take up to {MAX_ROW_BYTES}"
            )
    return problems


def _text(value: object) -> str:
    return "" if value is None else str(value)
