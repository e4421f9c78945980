"""What the generator cannot learn from the OpenAPI document (``SCHEMATHESIS_HOOKS``).

JSON Schema cannot say that no two order lines name the same SKU (``uniqueItems``
compares whole lines), so a schema-valid order may still be refused with 422, which the
positive-data check would report. The generator is told here instead.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import schemathesis


@schemathesis.hook
def filter_body(ctx: Any, body: Any) -> bool:
    """Keep bodies whose order lines name each SKU once (others are not schema-valid
    in spirit: the contract refuses them, and says so in its description)."""
    del ctx
    lines = body.get("lines") if isinstance(body, dict) else None
    if not isinstance(lines, list):
        return True
    skus = [
        line["sku"] for line in lines if isinstance(line, dict) and isinstance(line.get("sku"), str)
    ]
    return len(skus) == len(set(skus))


@schemathesis.hook
def filter_case(ctx: Any, case: Any) -> bool:
    """The same for whole cases (the coverage phase builds cases, not bodies)."""
    return filter_body(ctx, getattr(case, "body", None))


KEY = re.compile(r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$")


@schemathesis.hook
def map_headers(ctx: Any, headers: Any) -> Any:
    """Make a valid Idempotency-Key unique, as a real client's is. The generator
    reuses its smallest strings, and a key reused with another body is a 409, so the
    stateful phase would hardly ever start a saga to follow the links from. Invalid keys
    (the negative cases) are left as they are."""
    del ctx
    if isinstance(headers, dict):
        for name in [n for n in headers if n.lower() == "idempotency-key"]:
            key = headers[name]
            if isinstance(key, str) and KEY.match(key) and len(key) <= 150:
                headers[name] = f"{key}-{uuid.uuid4().hex}"
    return headers
