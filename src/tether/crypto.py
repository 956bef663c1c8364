"""Secrets at rest: credentials, cluster admin URLs, custom variables and release variables are
stored encrypted with Fernet (AES-128-CBC + HMAC). The key comes from `TETHER_SECRET_KEY` or from
`secret.key` in the data dir, created with mode 0600 on first start."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from tether.errors import TetherError


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._key = key

    def derive_id(self, label: str) -> str:
        """A stable hex id for `label` derived from the key (HMAC-SHA256; it tells nothing
        about the key): the same on every node of this installation, and on no other one."""
        return hmac.new(self._key, b"tether id\0" + label.encode(), hashlib.sha256).hexdigest()

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> SecretBox:
        env = os.environ.get("TETHER_SECRET_KEY")
        if env:
            return cls(env.encode())
        path = data_dir / "secret.key"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def seal(self, value: Any) -> str:
        return self._fernet.encrypt(json.dumps(value).encode()).decode()

    def open(self, token: str | None) -> Any:
        if token is None:
            return None
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken as exc:
            raise TetherError(
                "cannot decrypt stored secrets: the secret key (TETHER_SECRET_KEY or "
                "DATA_DIR/secret.key) is not the one they were written with"
            ) from exc
