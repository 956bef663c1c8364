"""Public ids (tether.publicids): stable per installation key, and cheap enough for a list of
hundreds of rows (issue 12's scale benchmark: the projects list makes 300 of them a page)."""

from __future__ import annotations

from cryptography.fernet import Fernet

from tether.crypto import SecretBox
from tether.publicids import Kind, find, public_id


class CountingBox(SecretBox):
    """A real SecretBox that counts its key derivations."""

    derivations = 0

    def derive_id(self, label: str) -> str:
        self.derivations += 1
        return super().derive_id(label)


def test_the_namespace_is_derived_once_per_box() -> None:
    box = CountingBox(Fernet.generate_key())
    ids = [public_id(box, Kind.ENVIRONMENT, n) for n in range(300)]
    assert len(set(ids)) == 300
    assert box.derivations == 1
    assert find(box, Kind.ENVIRONMENT, ids[123], range(300)) == 123
    assert box.derivations == 1


def test_ids_depend_on_the_key_alone() -> None:
    key = Fernet.generate_key()
    first, again, other = SecretBox(key), SecretBox(key), SecretBox(Fernet.generate_key())
    assert public_id(first, Kind.PROJECT, 7) == public_id(again, Kind.PROJECT, 7)
    assert public_id(first, Kind.PROJECT, 7) != public_id(other, Kind.PROJECT, 7)
    assert public_id(first, Kind.PROJECT, 7) != public_id(first, Kind.ENVIRONMENT, 7)
