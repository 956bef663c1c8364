"""Schemathesis hooks for `test_api_schemathesis.py`, loaded by `st run` (SCHEMATHESIS_HOOKS).

They keep the run able to go on, nothing more: every other request goes out as generated.
- The tokens named in TETHER_ST_KEEP_TOKENS are never revoked: the stateful phase finds their
  names in `GET /tokens` and would revoke the very token the run authenticates with (and the
  admin's), after which every request is a 401. Tokens the run creates itself may be revoked.
- A long-poll `wait` in range is cut to a second: a 60 s wait per request would spend the run's
  time waiting for operations that never finish (a `wait` out of range still goes out as is).
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

KEEP_TOKENS = frozenset(filter(None, os.environ.get("TETHER_ST_KEEP_TOKENS", "").split(",")))
#: what a protected token's name is replaced with (no token has it: the revoke is a 404)
NOBODY = "kept-by-the-test"
LONGEST_WAIT = 1.0


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    params = case.path_parameters
    if (str(case.method).upper() == "DELETE" and case.path.endswith("/tokens/{name}")
            and isinstance(params, dict) and params.get("name") in KEEP_TOKENS):
        params["name"] = NOBODY
    query = case.query
    if isinstance(query, dict) and "wait" in query:
        wait = query["wait"]
        if isinstance(wait, int | float) and not isinstance(wait, bool) \
                and LONGEST_WAIT < wait <= 60:
            query["wait"] = LONGEST_WAIT
