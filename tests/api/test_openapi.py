"""openapi.yaml describes what the API really answers: every field, every error."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
import yaml

from dashboard_api import analytics, bounds, create_app
from dashboard_api.routes import ENDPOINT

from .conftest import ALICE, days_ago

SPEC = yaml.safe_load((Path(__file__).parents[2] / "openapi.yaml").read_text(encoding="utf-8"))
OPERATION = SPEC["paths"][ENDPOINT]["get"]
FORMATS = {
    "date": dt.date.fromisoformat,
    "date-time": lambda text: dt.datetime.fromisoformat(text.replace("Z", "+00:00")),
    "uuid": uuid.UUID,
}


def resolve(schema: dict) -> dict:
    while "$ref" in schema:
        node = SPEC
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def problems(value, schema, path="$") -> list[str]:
    """Return how ``value`` breaks ``schema`` (the OpenAPI 3.0 subset openapi.yaml uses)."""
    schema = resolve(schema)
    if value is None:
        return [] if schema.get("nullable") or "type" not in schema else [f"{path} is null"]
    found = []
    for part in schema.get("allOf", []):
        found += problems(value, part, path)
    kind = schema.get("type")
    python_types = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
    }
    if kind and (
        not isinstance(value, python_types[kind]) or (isinstance(value, bool) and kind != "boolean")
    ):
        return [*found, f"{path}: {value!r} is not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        found.append(f"{path}: {value} < {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        found.append(f"{path}: {value} > {schema['maximum']}")
    if schema.get("format") in FORMATS:
        try:
            FORMATS[schema["format"]](value)
        except ValueError:
            found.append(f"{path}: {value!r} is not a {schema['format']}")
    if kind == "object":
        properties = schema.get("properties", {})
        found += [
            f"{path}.{key} is missing" for key in schema.get("required", []) if key not in value
        ]
        if schema.get("additionalProperties") is False:
            found += [f"{path}.{key} is not documented" for key in value if key not in properties]
        for key, item in value.items():
            if key in properties:
                found += problems(item, properties[key], f"{path}.{key}")
    if kind == "array":
        if len(value) < schema.get("minItems", 0):
            found.append(f"{path} has fewer than {schema['minItems']} items")
        for index, item in enumerate(value):
            found += problems(item, schema["items"], f"{path}[{index}]")
    return found


def check(answer, operation=OPERATION) -> None:
    """Assert that ``answer``'s status, headers and body are as the operation documents."""
    documented = operation["responses"]
    assert str(answer.status_code) in documented, answer.status_code
    response = resolve(documented[str(answer.status_code)])
    for header in response.get("headers", {}):
        assert header in answer.headers
    schema = response["content"]["application/json"]["schema"]
    assert problems(answer.get_json(), schema) == []


@pytest.fixture
def alice(shop):
    shop.connect(ALICE, "shopify", "amazon")
    shop.item(ALICE, "shopify", "S1", on_hand=0, cost="1.00", price="2.50")
    shop.item(ALICE, "shopify", "S2", on_hand=9, cost="1.00", price="2.50")
    shop.item(ALICE, "amazon", "A1", on_hand=500, cost="3.00", price="7.00")
    shop.order(ALICE, "shopify", "S-1", days_ago(1), ("S1", 3, "2.50"), ("Z", 1, "9.99"))
    shop.order(ALICE, "amazon", "A-1", days_ago(33), ("A1", 2, "7.00"))


@pytest.mark.parametrize("platform", ["all", "shopify", "amazon"])
def test_dashboards_match_the_schema(client, auth, alice, platform):
    for force in ("true", "false"):
        answer = client.get(
            ENDPOINT,
            query_string={"client_id": ALICE, "platform": platform, "force_refresh": force},
            headers=auth(),
        )
        assert answer.status_code == 200
        check(answer)


def test_empty_dashboard_matches_the_schema(client, auth, shop):
    shop.connect(ALICE, "amazon")
    answer = client.get(ENDPOINT, query_string={"client_id": ALICE}, headers=auth())
    assert answer.status_code == 200
    check(answer)


def test_errors_match_the_schema(client, auth, alice, settings):
    query = {"client_id": ALICE, "force_refresh": "true"}
    stranger = str(uuid.uuid4())
    answers = {
        400: client.get(ENDPOINT, query_string={**query, "days": "0"}, headers=auth()),
        401: client.get(ENDPOINT, query_string=query),
        403: client.get(ENDPOINT, query_string=query, headers=auth(str(uuid.uuid4()))),
        404: client.get(ENDPOINT, query_string={**query, "client_id": stranger},
                        headers=auth(stranger)),
    }  # fmt: skip
    down = create_app({**settings, "DATABASE_URL": "postgresql://127.0.0.1:9/x"}).test_client()
    answers[503] = down.get(ENDPOINT, query_string=query, headers=auth())
    for status, answer in answers.items():
        assert answer.status_code == status
        check(answer)
    check(client.get("/health"), SPEC["paths"]["/health"]["get"])
    check(down.get("/health"), SPEC["paths"]["/health"]["get"])


def test_the_validator_catches_mistakes():
    schema = {"$ref": "#/components/schemas/Sku"}
    good = {
        "platform": "amazon",
        "sku": "A1",
        "title": "",
        "units_sold": 0,
        "sales": 0,
        "stock_on_hand": 1,
        "stock_value": 3.5,
        "days_of_cover": None,
        "status": "dead_stock",
    }
    assert problems(good, schema) == []
    assert problems({**good, "status": "fine"}, schema)
    assert problems({**good, "extra": 1}, schema)
    assert problems({**good, "units_sold": 1.5}, schema)
    assert problems({k: v for k, v in good.items() if k != "sku"}, schema)


def test_parameters_and_thresholds_match_the_code():
    parameters = {p["name"]: p["schema"] for p in OPERATION["parameters"]}
    assert set(parameters) == {"client_id", "platform", "force_refresh", "days"}
    assert parameters["platform"]["enum"] == ["shopify", "amazon", "all"]
    assert parameters["days"]["maximum"] == analytics.MAX_DAYS
    assert parameters["days"]["default"] == analytics.DEFAULT_DAYS
    description = SPEC["info"]["description"]
    assert f"under {analytics.LOW_STOCK_DAYS} days of cover" in description
    assert f"over {analytics.OVERSTOCK_DAYS} days of cover" in description
    statuses = resolve({"$ref": "#/components/schemas/Sku"})["properties"]["status"]["enum"]
    assert statuses == list(analytics.STATUSES)


def test_size_and_method_errors_match_the_schema(client, auth, alice):
    query = {"client_id": ALICE, "platform": "shopify"}
    answers = {
        405: client.post(ENDPOINT, query_string=query, headers=auth()),
        413: client.get(ENDPOINT, query_string=query, headers=auth(),
                        data=b"x" * (bounds.MAX_BODY_BYTES + 1)),
        414: client.get(ENDPOINT, query_string={**query, "platform": "x" * 5000},
                        headers=auth()),
        431: client.get(ENDPOINT, query_string=query,
                        headers={**auth(), "X-Big": "b" * (bounds.MAX_HEADER_BYTES + 1)}),
    }  # fmt: skip
    for status, answer in answers.items():
        assert answer.status_code == status
        check(answer)
    health = SPEC["paths"]["/health"]["get"]
    check(client.get("/health", headers={"X-Big": "b" * (bounds.MAX_HEADER_BYTES + 1)}), health)
    check(client.post("/health"), health)


def test_an_unexpected_failure_matches_the_schema(settings, auth, alice, db):
    with db.cursor() as cur:
        cur.execute("ALTER TABLE order_lines DROP COLUMN quantity")
    app = create_app({**settings, "TESTING": False})
    try:
        answer = app.test_client().get(
            ENDPOINT, query_string={"client_id": ALICE, "force_refresh": "true"}, headers=auth()
        )
    finally:
        app.extensions["dashboard_api"].close()
    assert answer.status_code == 500
    check(answer)


def test_the_documented_bounds_are_the_codes():
    description = SPEC["info"]["description"]
    for figure in (
        f"{bounds.MAX_TARGET_BYTES:,} bytes is a 414",
        f"header over {bounds.MAX_HEADER_BYTES:,} bytes",
        f"more than {bounds.MAX_HEADER_COUNT} headers",
        f"over {bounds.MAX_HEADERS_BYTES // 1024} KiB of them",
        f"body over {bounds.MAX_BODY_BYTES // 1024} KiB",
    ):
        assert figure in " ".join(description.split()), figure
