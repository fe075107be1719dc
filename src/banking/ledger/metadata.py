"""Metadata: the caller's own labels on accounts and movements, a bounded string map.

Pure: no store, no I/O. A map that breaks a rule is ``ValidationFailed`` (field ``metadata``)
and changes nothing anywhere. The same rules bound the pairs of a search
(``GET /api/v1/transactions?metadata[order_id]=42``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final

from banking.domain.errors import ValidationFailed

METADATA_FIELD: Final = "metadata"
# At most this many keys in one map.
METADATA_KEYS_MAX: Final = 50
# A key: 1 to 40 characters of ASCII letters, digits, "_", "." and "-".
METADATA_KEY_LENGTH_MAX: Final = 40
METADATA_KEY_PATTERN: Final = rf"^[A-Za-z0-9_.-]{{1,{METADATA_KEY_LENGTH_MAX}}}$"
# A value: a string of at most 500 printable characters (empty allowed).
METADATA_VALUE_LENGTH_MAX: Final = 500

_KEY: Final = re.compile(METADATA_KEY_PATTERN.removeprefix("^").removesuffix("$"), re.ASCII)


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """``metadata`` as a plain dict sorted by key (None: empty), or ``ValidationFailed``
    (field ``metadata``) naming the first rule it breaks."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValidationFailed("metadata must be an object of strings", field=METADATA_FIELD)
    if len(metadata) > METADATA_KEYS_MAX:
        raise ValidationFailed(
            f"metadata has at most {METADATA_KEYS_MAX} keys", field=METADATA_FIELD
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValidationFailed(
                f"metadata keys are 1 to {METADATA_KEY_LENGTH_MAX} characters of A-Z, a-z, "
                f"0-9, '_', '.' and '-': {str(key)[: METADATA_KEY_LENGTH_MAX + 1]!r} is not",
                field=METADATA_FIELD,
            )
        if not isinstance(value, str):
            raise ValidationFailed(f"metadata[{key}] must be a string", field=METADATA_FIELD)
        if len(value) > METADATA_VALUE_LENGTH_MAX:
            raise ValidationFailed(
                f"metadata[{key}] is longer than {METADATA_VALUE_LENGTH_MAX} characters",
                field=METADATA_FIELD,
            )
        if not value.isprintable():
            raise ValidationFailed(
                f"metadata[{key}] must not contain control characters", field=METADATA_FIELD
            )
    return dict(sorted(metadata.items()))


def canonical_metadata(metadata: Mapping[str, str]) -> str:
    """The map as canonical JSON (sorted keys, no spaces): what fingerprints compare and what
    the stores keep."""
    return json.dumps(dict(metadata), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
