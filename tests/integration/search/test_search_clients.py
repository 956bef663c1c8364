"""Real application clients configured from the search variables of an instance provisioned on
the session's OpenSearch 2.19.4 (`opensearch_server`, or the running server
`TETHER_TEST_OPENSEARCH_URL` names): the `elasticsearch` Python client with
`{P}_ELASTICSEARCH_DSN`, and Django with django-haystack's Elasticsearch backend with
`{P}_HAYSTACK_URL`. (opensearch-py is in test_elasticsearch_provider.py.) No mocks.

Client versions. `elasticsearch` 7.13.x: 7.14 and later refuse a server that is not
Elasticsearch (7.17.12 against this OpenSearch: UnsupportedProductError "The client noticed that
the server is not Elasticsearch and we do not support this unknown product"), 8.x as well;
django-haystack's `elasticsearch7_backend` wants a 7.x client, so both use 7.13 (the `test` extra
pins `elasticsearch>=7.13,<7.14`). The client takes the URL's path as a URL prefix for every
request, so an application splits the variable: `SCHEME://USER:PASSWORD@HOST:PORT` for the client
(it URL-decodes user and password itself) and the path, the index prefix, as the index name
(haystack's INDEX_NAME is the index named by the prefix itself, which the instance's role
allows).

Server modules. haystack's backend creates its index with `ngram` and `edge_ngram` token filters
and maps text fields with the `snowball` analyzer: all from OpenSearch's `analysis-common`
module, which the integ-test zip lacks (it only has transport-netty4). `tether.servers.search`
adds the module from the jar Maven Central publishes (`org.opensearch.plugin:analysis-common`,
no plugin zip exists). Without it the index creation is refused (400, unknown filter type),
which haystack ignores (`ignore=400`), and its next call, putting the mapping, fails with 404
index_not_found: the Django application fails at its first save, and the test's failure message
adds which token filters the server lacks.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest

from tests.integration.search.conftest import SearchNode
from tether.errors import ClusterError
from tether.providers.base import ClusterSpec, ResourceNames
from tether.providers.elasticsearch import ElasticsearchProvider
from tether.servers.search import distribution, parse_release

# elasticsearch 7.13 serialises NumPy types when NumPy is importable, naming aliases NumPy 2
# removed (np.float_): with NumPy 2 installed (the bench extra's matplotlib brings it) its import
# fails. It is imported as if NumPy were absent (a None in sys.modules makes `import numpy`
# raise ImportError); what had NumPy imported already keeps it.
_numpy = sys.modules.get("numpy")
sys.modules["numpy"] = None  # type: ignore[assignment]
try:
    from elasticsearch import (
        AuthenticationException,
        AuthorizationException,
        Elasticsearch,
        helpers,
    )
finally:
    if _numpy is None:
        del sys.modules["numpy"]
    else:
        sys.modules["numpy"] = _numpy

pytestmark = [pytest.mark.integration,
              # elasticsearch 7.13 on urllib3 1.26.x
              pytest.mark.filterwarnings("ignore:HTTPResponse.getheaders:DeprecationWarning")]

PROVIDER = ElasticsearchProvider()


def split_url(url: str) -> tuple[str, str]:
    """(`SCHEME://USER:PASSWORD@HOST:PORT`, index prefix) from a search variable."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}", unquote(parts.path.strip("/"))


def test_elasticsearch_client_with_the_dsn(
        cluster: ClusterSpec, opensearch_server: SearchNode,
        make_names: Callable[[str], ResourceNames]) -> None:
    """elasticsearch 7.13 from `{P}_ELASTICSEARCH_DSN`: index, get, search, bulk and count in
    the prefix; refused on another instance's prefix and with a wrong password."""
    names, other = make_names("es"), make_names("es2")
    creds = PROVIDER.provision(cluster, names, "p@ss/word:%" + secrets.token_urlsafe(16))
    PROVIDER.provision(cluster, other, secrets.token_urlsafe(24))
    dsn = PROVIDER.env_vars("SEARCH", creds)["SEARCH_ELASTICSEARCH_DSN"]
    base, prefix = split_url(dsn)
    assert prefix == names.base
    client = Elasticsearch([base], timeout=30)
    assert client.info()["version"]["distribution"] == "opensearch"

    index = f"{prefix}-articles"
    client.indices.create(index=index, body={"mappings": {"properties": {
        "title": {"type": "text"}, "tag": {"type": "keyword"}}}})
    client.index(index=index, id="1", body={"title": "hello world", "tag": "greeting"},
                 refresh=True)
    assert client.get(index=index, id="1")["_source"]["title"] == "hello world"
    ok, errors = helpers.bulk(client, ({"_index": index, "_id": str(i), "title": f"doc {i}",
                                        "tag": "bulk"} for i in range(2, 12)), refresh=True)
    assert ok == 10 and not errors
    assert client.count(index=index)["count"] == 11
    hits = client.search(index=index, body={"query": {"match": {"title": "hello"}}})
    assert [h["_id"] for h in hits["hits"]["hits"]] == ["1"]
    tagged = client.search(index=index, body={"query": {"term": {"tag": "bulk"}}, "size": 0})
    assert tagged["hits"]["total"]["value"] == 10
    client.indices.create(index=prefix)  # the index named by the prefix itself
    client.delete(index=index, id="1", refresh=True)
    assert client.count(index=index)["count"] == 10

    foreign = f"{other.base}-articles"
    opensearch_server.request("PUT", f"/{foreign}/_doc/1?refresh=true",
                              json={"title": "hello other world"}).raise_for_status()
    with pytest.raises(AuthorizationException):
        client.indices.create(index=f"{other.base}-mine")
    with pytest.raises(AuthorizationException):
        client.index(index=foreign, id="2", body={"title": "intruder"})
    with pytest.raises(AuthorizationException):
        client.get(index=foreign, id="1")
    with pytest.raises(AuthorizationException):
        client.search(index=foreign, body={"query": {"match": {"title": "hello"}}})
    with pytest.raises(AuthorizationException):
        client.search(index=f"{other.base}*")
    password = quote(str(creds.values["password"]), safe="")
    assert password in base
    wrong = Elasticsearch([base.replace(password, "wrong-password-123")], timeout=30)
    with pytest.raises(AuthenticationException):
        wrong.info()
    client.indices.delete(index=index)


#: A minimal Django project: one model, one haystack SearchIndex (a document field, an edge
#: n-gram field for autocomplete, an n-gram field), Django's own database in SQLite.
NOTES_MODELS = """
from django.db import models


class Note(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField()

    class Meta:
        app_label = "notes"
"""

NOTES_INDEXES = """
from haystack import indexes

from notes.models import Note


class NoteIndex(indexes.SearchIndex, indexes.Indexable):
    text = indexes.CharField(document=True, model_attr="body")
    title = indexes.CharField(model_attr="title")
    title_auto = indexes.EdgeNgramField(model_attr="title")
    title_ngram = indexes.NgramField(model_attr="title")

    def get_model(self):
        return Note
"""

#: The application: settings configured in the process from `SEARCH_HAYSTACK_URL` (URL without
#: the path, INDEX_NAME = the path), rebuild_index, queries, the realtime signal processor on
#: save and delete; then a second connection whose INDEX_NAME is another instance's prefix
#: (OTHER_PREFIX), which must be refused. SILENTLY_FAIL off: haystack would log and carry on.
DJANGO_APP = """
import json, os, sys
from urllib.parse import unquote, urlsplit

import django
from django.conf import settings

url = urlsplit(os.environ["SEARCH_HAYSTACK_URL"])
engine = "haystack.backends.elasticsearch7_backend.Elasticsearch7SearchEngine"


def connection(index_name):
    return {"ENGINE": engine, "URL": f"{url.scheme}://{url.netloc}", "INDEX_NAME": index_name,
            "TIMEOUT": 30, "SILENTLY_FAIL": False}


settings.configure(
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                           "NAME": os.environ["NOTES_DB"]}},
    INSTALLED_APPS=["django.contrib.contenttypes", "haystack", "notes"],
    HAYSTACK_CONNECTIONS={"default": connection(unquote(url.path.strip("/"))),
                          "intruder": connection(os.environ["OTHER_PREFIX"])},
    HAYSTACK_SIGNAL_PROCESSOR="haystack.signals.RealtimeSignalProcessor",
    USE_TZ=True,
)
django.setup()

import elasticsearch
from django.core.management import call_command
from haystack import connections
from haystack.query import SearchQuerySet

from notes.models import Note

call_command("migrate", run_syncdb=True, interactive=False, verbosity=0)
for title, body in (("Haystack on OpenSearch", "searching notes with django-haystack"),
                    ("Shopping list", "apples, bread and cheese"),
                    ("Holiday plans", "a week by the sea in June")):
    Note.objects.create(title=title, body=body)
call_command("rebuild_index", interactive=False, using=["default"], verbosity=0)
out = {
    "index_name": connections["default"].get_backend().index_name,
    "indexed": SearchQuerySet().all().count(),
    "content": sorted(r.title for r in SearchQuerySet().filter(content="cheese")),
    "autocomplete": sorted(r.title for r in SearchQuerySet().autocomplete(title_auto="hol")),
    "ngram": sorted(r.title for r in SearchQuerySet().filter(title_ngram="stack")),
}
note = Note.objects.create(title="Garden", body="tomatoes need sun")  # indexed on save
out["after_save"] = [r.pk for r in SearchQuerySet().filter(content="tomatoes")] == [str(note.pk)]
Note.objects.get(title="Shopping list").delete()  # removed from the index on delete
out["after_delete"] = SearchQuerySet().filter(content="cheese").count()

refused = {}
intruder = connections["intruder"].get_backend()
for what, attempt in (
        ("update", lambda: intruder.update(connections["intruder"].get_unified_index()
                                           .get_index(Note), Note.objects.all())),
        ("search", lambda: intruder.search("sea")),
        ("clear", lambda: intruder.clear())):
    try:
        attempt()
    except elasticsearch.TransportError as exc:
        refused[what] = exc.status_code
    else:
        refused[what] = "allowed"
out["intruder"] = refused
print(json.dumps(out))
"""


def run_django_app(tmp_path: Path, haystack_url: str, other_prefix: str,
                   hint: str = "") -> dict[str, Any]:
    app = tmp_path / "notes"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "models.py").write_text(textwrap.dedent(NOTES_MODELS))
    (app / "search_indexes.py").write_text(textwrap.dedent(NOTES_INDEXES))
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(SEARCH_HAYSTACK_URL=haystack_url, OTHER_PREFIX=other_prefix,
               NOTES_DB=str(tmp_path / "notes.sqlite3"),
               PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", DJANGO_APP], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env, check=False,
                          stdin=subprocess.DEVNULL)
    password = unquote(urlsplit(haystack_url).password or "")
    stderr = proc.stderr[-4000:].replace(password, "***").replace(quote(password, safe=""),
                                                                    "***")
    assert proc.returncode == 0, stderr + hint
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_django_haystack_with_the_haystack_url(
        cluster: ClusterSpec, opensearch_server: SearchNode, tmp_path: Path,
        make_names: Callable[[str], ResourceNames]) -> None:
    """Django + django-haystack (elasticsearch7 backend) configured from `{P}_HAYSTACK_URL`:
    the first save (the realtime signal processor) and rebuild_index make the index named by
    the prefix with haystack's n-gram analysis and index the model; full-text, autocomplete
    and n-gram queries find the notes; the index follows a save and a delete; another
    instance's prefix is refused."""
    # haystack's index settings need the analysis-common module (see the module docstring)
    missing = [token_filter for token_filter in ("ngram", "edge_ngram")
               if opensearch_server.request("POST", "/_analyze", json={
                   "tokenizer": "standard", "text": "haystack",
                   "filter": [{"type": token_filter, "min_gram": 2, "max_gram": 3}]}
               ).status_code != 200]
    hint = (f"\nthe server lacks the token filters {', '.join(missing)} (OpenSearch's "
            "analysis-common module, which tether.servers.search installs)" if missing else "")

    names, other = make_names("dj"), make_names("dj2")
    creds = PROVIDER.provision(cluster, names, "dj:" + secrets.token_urlsafe(18))
    PROVIDER.provision(cluster, other, secrets.token_urlsafe(24))
    url = PROVIDER.env_vars("SEARCH", creds)["SEARCH_HAYSTACK_URL"]
    assert urlsplit(url).path == f"/{names.base}"
    opensearch_server.request("PUT", f"/{other.base}").raise_for_status()
    opensearch_server.request("PUT", f"/{other.base}/_doc/1?refresh=true",
                              json={"text": "the other instance's sea"}).raise_for_status()

    out = run_django_app(tmp_path, url, other.base, hint)
    assert not missing

    assert out["index_name"] == names.base
    assert out["indexed"] == 3
    assert out["content"] == ["Shopping list"]
    assert out["autocomplete"] == ["Holiday plans"]
    assert out["ngram"] == ["Haystack on OpenSearch"]
    assert out["after_save"] is True and out["after_delete"] == 0
    assert out["intruder"] == {"update": 403, "search": 403, "clear": 403}, out["intruder"]

    # what haystack made is the instance's index, with its n-gram analysis
    index = names.base
    settings = opensearch_server.request("GET", f"/{index}/_settings").json()[index]
    filters = settings["settings"]["index"]["analysis"]["filter"]
    assert {f["type"] for f in filters.values()} == {"ngram", "edge_ngram"}
    mapping = opensearch_server.request("GET", f"/{index}/_mapping").json()[index]
    fields = mapping["mappings"]["properties"]
    assert fields["title_auto"]["analyzer"] == "edgengram_analyzer"
    assert fields["title_ngram"]["analyzer"] == "ngram_analyzer"
    opensearch_server.request("POST", f"/{index}/_refresh").raise_for_status()
    assert opensearch_server.request("GET", f"/{index}/_count").json()["count"] == 3
    # the other instance's index is as it was
    assert opensearch_server.request("GET", f"/{other.base}/_count").json()["count"] == 1


def test_a_cache_without_the_analysis_module_gets_it_in_place(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    """A cache unpacked before Tether added analysis-common (the OpenSearch dist without
    `modules/analysis-common`) gets the module added in place from its jar alone (no second
    download of the distribution): the jar and the descriptor, readable by the servers, the jar
    deleted from zips/ after. A jar without the module's class leaves `modules/` untouched.
    Stand-in files, no download: the real jar is what the servers above run with."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TETHER_SEARCH_CACHE", str(cache))
    release = parse_release("opensearch-2.19.4")
    dist = cache / "dist" / release.name
    (dist / "bin").mkdir(parents=True)
    (dist / "bin" / "opensearch").write_text("#!/bin/sh\n")
    (dist / "modules" / "transport-netty4").mkdir(parents=True)
    zips = cache / "zips"
    zips.mkdir()
    jar = zips / "analysis-common-2.19.4.jar"
    with zipfile.ZipFile(jar, "w") as zf:
        zf.writestr("org/opensearch/analysis/other/Nothing.class", b"")
    with pytest.raises(ClusterError, match="not OpenSearch's analysis-common module"):
        distribution(release)
    assert sorted(p.name for p in (dist / "modules").iterdir()) == ["transport-netty4"]
    assert sorted(p.name for p in (cache / "dist").iterdir()) == [release.name]

    with zipfile.ZipFile(jar, "w") as zf:
        zf.writestr("org/opensearch/analysis/common/CommonAnalysisPlugin.class", b"")
    assert distribution(release) == dist
    module = dist / "modules" / "analysis-common"
    assert sorted(p.name for p in module.iterdir()) == ["analysis-common-2.19.4.jar",
                                                        "plugin-descriptor.properties"]
    descriptor = dict(line.split("=", 1) for line in
                      (module / "plugin-descriptor.properties").read_text().splitlines())
    assert descriptor["name"] == "analysis-common"
    assert descriptor["classname"] == "org.opensearch.analysis.common.CommonAnalysisPlugin"
    assert descriptor["version"] == descriptor["opensearch.version"] == "2.19.4"
    assert descriptor["extended.plugins"] == ""  # lang-painless is not in the integ-test zip
    assert module.stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in module.iterdir())
    assert not jar.exists()
    assert sorted(p.name for p in (cache / "dist").iterdir()) == [release.name]  # no staging
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn: a fetch would fail
    assert distribution(release) == dist  # complete: nothing to fetch
