"""The search servers' fixtures live in tests/search.py (registered by tests/conftest.py, so the
end-to-end tests share them); `SearchNode` is imported from here by the search tests."""

from tests.search import SearchNode

__all__ = ["SearchNode"]
