"""Declarative validation (src/mw/validate.c, src/schema/schema.c) through the
demo routes that declare schemas: POST /validate (request_schema) and
GET /params/:id (params_schema + query_schema). 415 for non-JSON bodies,
413 past JSON_BODY_LIMIT, 400 with the byte offset for malformed JSON or a
too-deep body, 422 listing every invalid field at once (unknown members of
a body included: bodies are closed by default), and query/path values
coerced to their declared types."""
import json

import pytest

from rawhttp import assert_problem, get


def post(port, body, ctype="application/json", target="/validate"):
    headers = [("Content-Type", ctype)] if ctype is not None else []
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    return get(port, target, headers=headers, method="POST", body=body)


def errors_of(resp):
    doc = assert_problem(resp, 422)
    errs = doc["errors"]
    assert isinstance(errs, list) and errs, doc
    for e in errs:
        assert set(e) == {"in", "pointer", "message"}, e
        assert e["message"], e
    return {(e["in"], e["pointer"]) for e in errs}, doc


VALID = {"name": "Ann", "email": "ann@example.org"}


# ---------------------------------------------------------------- bodies

@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "application/jsonx", "json"])
def test_415_for_non_json(serving, ctype):
    r = post(serving.port, VALID, ctype=ctype)
    doc = assert_problem(r, 415)
    assert "application/json" in doc["detail"]


@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8",
                                   "Application/JSON", "application/vnd.api+json"])
def test_json_content_types_accepted(serving, ctype):
    r = post(serving.port, VALID, ctype=ctype)
    assert r.status == 200, r
    assert r.json() == {"valid": True, "received": VALID}


@pytest.mark.parametrize("body", [
    b'{"name": "x", "bad',
    b'{"name": "x",}',
    b'{"name": "x" "email": "y"}',
    b'{"name": "x", "name": "y"}',      # duplicate keys are refused
    b'',
    b'\xff',
    b'[1, 2',
])
def test_400_malformed_json_with_offset(serving, body):
    r = post(serving.port, body)
    doc = assert_problem(r, 400)
    off = doc["offset"]
    assert isinstance(off, int) and 0 <= off <= len(body), doc
    assert "at byte %d" % off in doc["detail"], doc


def test_400_offset_is_where_the_text_ends(serving):
    body = b'{"name": "x", "bad'
    doc = assert_problem(post(serving.port, body), 400)
    assert doc["offset"] == len(body)


def test_422_lists_every_error_at_once(serving):
    body = {"name": "", "email": "not-an-email", "age": 1.5, "role": "root",
            "id": "123", "website": "/relative", "born": "2023-02-29T00:00:00Z",
            "tags": ["ok", "Not OK", "x" * 21, "a", "b", "c"],
            "address": {"zip": "123"}, "extra": True}
    got, doc = errors_of(post(serving.port, body))
    want = {("body", p) for p in ("/name", "/email", "/age", "/role", "/id", "/website",
                                  "/born", "/tags", "/tags/1", "/tags/2", "/address/city",
                                  "/address/zip", "/extra")}
    assert got == want, doc
    assert "13 fields" in doc["detail"], doc


def test_unknown_fields_named_one_error_each(serving):
    """Bodies are closed by default: an object schema that lists properties
    refuses other members (here the nested address, whose schema does not
    say additionalProperties), one error per member, at its pointer."""
    body = dict(VALID, isAdmin=True, role_x="admin", address={"city": "Oslo", "street": "x"})
    got, doc = errors_of(post(serving.port, body))
    assert got == {("body", "/isAdmin"), ("body", "/role_x"), ("body", "/address/street")}, doc
    assert {e["message"] for e in doc["errors"]} == {"is not allowed: unknown field"}, doc
    # with the other failures, in the same 422
    got, doc = errors_of(post(serving.port, dict(body, name="")))
    assert ("body", "/name") in got and ("body", "/address/street") in got and len(got) == 4


def test_openapi_shows_the_effective_additional_properties(serving):
    spec = get(serving.port, "/openapi.json").json()
    op = spec["paths"]["/validate"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False                          # written so
    assert body["properties"]["address"]["additionalProperties"] is False  # the default
    # responses are documentation: as written
    resp = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert "additionalProperties" not in resp


def test_422_required_and_wrong_root_type(serving):
    got, _ = errors_of(post(serving.port, {}))
    assert got == {("body", "/name"), ("body", "/email")}
    got, _ = errors_of(post(serving.port, [1, 2]))
    assert got == {("body", "")}


def test_422_pointer_escaping(serving):
    got, _ = errors_of(post(serving.port, dict(VALID, **{"a/b": 1, "m~n": 2, "~/": 3})))
    assert got == {("body", "/a~1b"), ("body", "/m~0n"), ("body", "/~0~1")}


def test_lengths_count_code_points(serving):
    name = "\U0001F600" * 64  # 256 bytes, 64 characters: maxLength 64
    r = post(serving.port, dict(VALID, name=name))
    assert r.status == 200, r
    got, _ = errors_of(post(serving.port, dict(VALID, name=name + "e")))
    assert got == {("body", "/name")}


def test_integer_accepts_integral_reals(serving):
    r = post(serving.port, dict(VALID, age=30.0))
    assert r.status == 200, r
    got, _ = errors_of(post(serving.port, dict(VALID, age=30.5)))
    assert got == {("body", "/age")}


def test_nullable_by_type_list(serving):
    r = post(serving.port, dict(VALID, address={"city": "Oslo", "zip": None}))
    assert r.status == 200, r


def test_depth_limit_default(serving):
    ok = '{"name": "x", "email": "a@example.org", "address": {"city": %s}}'
    deep = "[" * 70 + "]" * 70
    doc = assert_problem(post(serving.port, ok % deep), 400)
    assert "nesting deeper than 64" in doc["detail"], doc
    assert doc["offset"] == (ok % deep).index("[") + 62  # the 65th level


def test_routes_without_schema_untouched(serving):
    r = get(serving.port, "/echo", method="POST", body=b'{"anything": [1]}',
            headers=[("Content-Type", "application/json")])
    assert r.status == 200 and r.json() == {"anything": [1]}, r


@pytest.fixture(scope="module")
def limited(keel_module):
    return keel_module(JSON_MAX_DEPTH="4", JSON_BODY_LIMIT="1kb", BODY_LIMIT="8kb")


def test_depth_limit_configured(limited):
    body = '{"name": "x", "email": "a@example.org", "address": {"city": %s}}'
    r = post(limited.port, body % "[[1]]")             # depth 4: parsed, then invalid
    errors_of(r)
    doc = assert_problem(post(limited.port, body % "[[[1]]]"), 400)  # depth 5
    assert "nesting deeper than 4" in doc["detail"], doc


def test_size_limits(limited):
    big = dict(VALID, name="n" * 1100)
    doc = assert_problem(post(limited.port, big), 413)
    assert "1024" in doc["detail"], doc
    r = post(limited.port, dict(VALID, pad="x" * 9000))  # past BODY_LIMIT: the connection layer
    assert_problem(r, 413)
    assert post(limited.port, VALID).status == 200


# ---------------------------------------------------------------- query and path

def test_query_and_path_coerced(serving):
    r = get(serving.port, "/params/42?limit=10&verbose=true&ratio=0.5&q=a+b%21&tag=a&tag=c")
    assert r.status == 200, r
    doc = r.json()
    assert doc["path"] == {"id": 42}
    assert doc["query"] == {"limit": 10, "verbose": True, "ratio": 0.5, "q": "a b!",
                            "tag": ["a", "c"]}
    assert isinstance(doc["query"]["limit"], int) and isinstance(doc["query"]["verbose"], bool)


def test_query_optional(serving):
    r = get(serving.port, "/params/7")
    assert r.status == 200 and r.json() == {"path": {"id": 7}, "query": {}}, r


def test_query_array_of_one(serving):
    r = get(serving.port, "/params/7?tag=b")
    assert r.json()["query"] == {"tag": ["b"]}


def test_query_and_path_errors_together(serving):
    r = get(serving.port, "/params/0?limit=abc&verbose=yes&ratio=0&tag=z&other=1&q=1&q=2")
    got, doc = errors_of(r)
    assert got == {("path", "/id"), ("query", "/limit"), ("query", "/verbose"),
                   ("query", "/ratio"), ("query", "/tag/0"), ("query", "/other"),
                   ("query", "/q")}, doc


@pytest.mark.parametrize("target,pointer", [
    ("/params/abc", "/id"),
    ("/params/1.5", "/id"),
    ("/params/-3", "/id"),
    ("/params/1?limit=101", "/limit"),
    ("/params/1?limit=0x10", "/limit"),
    ("/params/1?limit=", "/limit"),
    ("/params/1?verbose=1", "/verbose"),
    ("/params/1?tag=a&tag=b&tag=c&tag=a", "/tag"),
    ("/params/1?q=" + "x" * 33, "/q"),
])
def test_query_and_path_single_errors(serving, target, pointer):
    got, doc = errors_of(get(serving.port, target))
    assert [p for _, p in got] == [pointer], doc


@pytest.mark.parametrize("target", ["/params/1?q=%FF", "/params/1?q=%zz", "/params/1?q=%00",
                                    "/params/1?%FF=1"])
def test_malformed_query_400(serving, target):
    assert_problem(get(serving.port, target), 400)


def test_large_integers_stay_numbers(serving):
    r = get(serving.port, "/params/9007199254740993")
    assert r.status == 200 and r.json()["path"] == {"id": 9007199254740993}, r
